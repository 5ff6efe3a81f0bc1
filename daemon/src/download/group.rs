//! Downloading one group of files pack-wise: ranged GETs by stored object (one GET may feed many
//! files), every chunk's BLAKE3 checked before its bytes go anywhere, then per file temp file →
//! fsync → re-check the target → rename, and each folder fsynced once after its renames, before
//! anything is reported as written.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_proto::{ContentId, Version, pb};
use futures::StreamExt;

use super::plan::{self, Piece, Span};
use super::{Pull, Written, set_mode};
use crate::error::{Error, Result};
use crate::faults::Site;
use crate::localfs::{self, DirHandle};
use crate::scanner::stat_of;
use crate::tree::{Content, SyncedEntry, SyncedTree, is_exec};

/// Files up to this size are assembled in memory and written once complete; larger ones are
/// written at their offsets straight into their temp file as spans arrive (a 4 GiB file streams).
const MEMORY_FILE: u64 = 1 << 20;
/// Ranged GETs in flight per group. Large files are groups of their own, so this is also the
/// number of parallel GETs per large file.
const SPANS_IN_FLIGHT: usize = 6;
/// Files being written and fsynced at once per group: ext4 commits concurrent fsyncs together
/// (measured here: 1.6 ms per 4 KiB file one at a time, 0.44 ms with 8 threads).
const FILES_FINISHING: usize = 12;
/// One ranged GET reads at most this much (a single larger chunk is read whole).
const MAX_SPAN: u64 = 4 << 20;
/// Bytes no file of the group wants that a GET may read through rather than split in two:
/// a request costs 3–44 ms on Garage, 256 KiB of extra transfer far less.
const MAX_GAP: u64 = 256 << 10;
/// A large file's temp file is flushed (fdatasync) each time this much more has been written to
/// it. Without it the whole file waited for its one fsync at the end: 1.25 s of a 5.1 s pull of
/// 4 × 256 MiB (measured by leaving the fsync out; docs/BENCHMARKS.md).
const WRITEBACK: u64 = 32 << 20;

/// A file of the group, its manifest checked against its content id and size.
pub(super) struct Target {
    /// The namespace path.
    pub path: String,
    /// Where it goes on disk, root-relative (differs from `path` for a case twin).
    pub rel: String,
    pub expected: ContentId,
    pub version: Version,
    pub meta: pb::FileMeta,
    pub pieces: Vec<Piece>,
}

/// Where a file's verified bytes go until it is complete.
enum Sink {
    Memory(Mutex<Vec<u8>>),
    Temp {
        dir: DirHandle,
        tmp: String,
        file: std::fs::File,
    },
}

struct Slot {
    sink: Sink,
    /// The first thing that went wrong for this file; it is then not installed.
    failed: Mutex<Option<String>>,
    /// Bytes written to the temp file since its last early flush (see [`WRITEBACK`]).
    unsynced: AtomicU64,
}

impl Slot {
    fn fail(&self, why: String) {
        // A poisoned lock only means another writer panicked; the message slot is still usable.
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(why);
    }

    fn is_failed(&self) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        match &self.sink {
            Sink::Memory(buf) => {
                let mut buf = buf.lock().unwrap_or_else(|p| p.into_inner());
                // Manifests were checked: every piece lies within the file's size.
                buf[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            Sink::Temp { file, .. } => {
                file.write_all_at(bytes, at)?;
                let len = bytes.len() as u64;
                // Flush as the file fills, so that its fsync before the rename finds little
                // left to write: the disk works while the network does.
                if self.unsynced.fetch_add(len, Ordering::Relaxed) + len >= WRITEBACK
                    && self.unsynced.swap(0, Ordering::Relaxed) >= WRITEBACK
                {
                    file.sync_data()?;
                }
                Ok(())
            }
        }
    }
}

/// A complete temp file, fsynced, waiting for its rename.
struct Ready {
    dir: DirHandle,
    tmp: String,
    mode_kept: bool,
}

impl Pull<'_> {
    /// Downloads `targets` (one group); one result per target, in order.
    pub(super) async fn fetch_group(
        &self,
        targets: &[Target],
        objects: &[pb::StoredObject],
        synced: &SyncedTree,
    ) -> Vec<Result<Written>> {
        let slots = Arc::new(self.open_slots(targets));
        let pieces = targets
            .iter()
            .enumerate()
            .flat_map(|(file, t)| t.pieces.iter().map(move |p| Piece { file, ..*p }));
        let spans = plan::spans(pieces.collect(), MAX_SPAN, MAX_GAP);
        futures::stream::iter(spans)
            .for_each_concurrent(SPANS_IN_FLIGHT, |span| {
                self.fetch_span(span, objects, &slots)
            })
            .await;
        // Every span task has finished (and dropped its clone) before this point.
        let Ok(slots) = Arc::try_unwrap(slots) else {
            return fail_all(
                targets,
                "internal error: a download task outlived its group",
            );
        };
        let ready: Vec<Result<Ready>> = futures::stream::iter(targets.iter().zip(slots))
            .map(|(t, slot)| self.finish(t, slot))
            .buffered(FILES_FINISHING)
            .collect()
            .await;
        self.install_all(targets, ready, synced).await
    }

    /// A sink per target: memory for small files, an open temp file for larger ones. A target
    /// whose temp file cannot be made starts out failed.
    fn open_slots(&self, targets: &[Target]) -> Vec<Slot> {
        targets
            .iter()
            .map(|t| {
                let sink = if t.meta.size <= MEMORY_FILE {
                    Ok(Sink::Memory(Mutex::new(vec![0; t.meta.size as usize])))
                } else {
                    localfs::ensure_parents(self.root, &t.rel).and_then(|dir| {
                        let (tmp, file) = dir.create_temp()?;
                        // The file's blocks are reserved before a byte is fetched: a disk too
                        // full for it says so now, not after the download, and the spans that
                        // land out of order fill blocks already laid out.
                        if let Err(e) = reserve(&file, t.meta.size) {
                            let _ = dir.remove(&tmp, false);
                            return Err(Error::Config(format!(
                                "cannot reserve {} bytes for it in {}: {e}; free space there \
                                 and pull again",
                                t.meta.size,
                                dir.path().display()
                            )));
                        }
                        Ok(Sink::Temp { dir, tmp, file })
                    })
                };
                match sink {
                    Ok(sink) => Slot {
                        sink,
                        failed: Mutex::new(None),
                        unsynced: AtomicU64::new(0),
                    },
                    Err(e) => Slot {
                        sink: Sink::Memory(Mutex::new(Vec::new())),
                        failed: Mutex::new(Some(e.to_string())),
                        unsynced: AtomicU64::new(0),
                    },
                }
            })
            .collect()
    }

    /// GETs one span, verifies each chunk in it and writes it to every file that wants it.
    async fn fetch_span(&self, span: Span, objects: &[pb::StoredObject], slots: &Arc<Vec<Slot>>) {
        if span.pieces.iter().all(|p| slots[p.file].is_failed()) {
            return;
        }
        let fail = |why: &str| {
            for p in &span.pieces {
                slots[p.file].fail(why.to_owned());
            }
        };
        let Some(obj) = objects.get(span.object as usize) else {
            return fail("the server named a stored object it did not send; not written");
        };
        let body = match self
            .remote
            .get_range(&obj.url, span.offset, span.length)
            .await
        {
            Ok(b) => b,
            Err(e) => return fail(&e.to_string()),
        };
        let wanted: u64 = span.pieces.iter().map(|p| u64::from(p.length)).sum();
        let moved = Arc::clone(slots);
        let placed = tokio::task::spawn_blocking(move || place(&span, &body, &moved)).await;
        if let Err(e) = placed {
            // The task panicked: nothing it fed is trusted.
            let slots: &[Slot] = slots;
            for s in slots {
                s.fail(format!("internal error while writing: {e}"));
            }
        }
        self.progress.inc(wanted);
    }

    /// Writes a complete small file's temp file, sets mode and mtime, fsyncs; a failed file's
    /// temp file is removed.
    async fn finish(&self, t: &Target, slot: Slot) -> Result<Ready> {
        let failed = slot.failed.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = failed {
            if let Sink::Temp { dir, tmp, .. } = slot.sink {
                let _ = dir.remove(&tmp, false);
            }
            return Err(Error::path(&t.path, why));
        }
        let (root, rel, mode) = (self.root.to_owned(), t.rel.clone(), t.meta.mode);
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(t.meta.mtime_ns.max(0) as u64);
        let sink = slot.sink;
        tokio::task::spawn_blocking(move || -> Result<Ready> {
            let (dir, tmp, mut file, bytes) = match sink {
                Sink::Temp { dir, tmp, file } => (dir, tmp, file, None),
                Sink::Memory(buf) => {
                    let dir = localfs::ensure_parents(&root, &rel)?;
                    let (tmp, file) = dir.create_temp()?;
                    let bytes = buf.into_inner().unwrap_or_else(|p| p.into_inner());
                    (dir, tmp, file, Some(bytes))
                }
            };
            let path: PathBuf = dir.path().join(&tmp);
            let sealed = (|| -> std::io::Result<bool> {
                if let Some(b) = &bytes {
                    file.write_all(b)?;
                }
                let kept = set_mode(&file, mode)?;
                file.set_modified(mtime)?;
                crate::faults::io(Site::Fsync, root.join(&rel))?;
                file.sync_all()?;
                Ok(kept)
            })();
            match sealed {
                Ok(mode_kept) => Ok(Ready {
                    dir,
                    tmp,
                    mode_kept,
                }),
                Err(e) => {
                    let _ = dir.remove(&tmp, false);
                    Err(Error::io(path, e))
                }
            }
        })
        .await
        .map_err(|e| Error::path(&t.path, format!("internal error while writing: {e}")))?
    }

    /// Renames every ready file into place (after re-checking its target), then fsyncs each
    /// folder that received one, once, and only then reports the files as written.
    async fn install_all(
        &self,
        targets: &[Target],
        ready: Vec<Result<Ready>>,
        synced: &SyncedTree,
    ) -> Vec<Result<Written>> {
        let mut folders: HashMap<(u64, u64), DirHandle> = HashMap::new();
        // Per file: (a conflict copy was kept, its mode was kept, its folder's identity).
        type Installed = (bool, bool, (u64, u64));
        let mut installed: Vec<Result<Installed>> = Vec::new();
        for (t, r) in targets.iter().zip(ready) {
            installed.push(r.and_then(|r| {
                let disk = localfs::disk_path(self.root, &t.rel)?;
                let conflict = self
                    .install(
                        &t.rel,
                        &r.tmp,
                        &disk,
                        &r.dir,
                        (synced.get(&t.path), self.local.get(&t.path)),
                    )
                    .inspect_err(|_| {
                        let _ = r.dir.remove(&r.tmp, false);
                    })?;
                let key = r.dir.identity()?;
                folders.entry(key).or_insert(r.dir);
                Ok((conflict, r.mode_kept, key))
            }));
        }
        let synced_folders = tokio::task::spawn_blocking(move || {
            folders
                .into_iter()
                .map(|(k, d)| (k, d.fsync().map_err(|e| e.to_string())))
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        targets
            .iter()
            .zip(installed)
            .map(|(t, r)| {
                let (conflict, mode_kept, key) = r?;
                match synced_folders.get(&key) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(Error::path(&t.path, e.clone())),
                    None => return Err(Error::path(&t.path, "the folder was not fsynced")),
                }
                self.written(t, conflict, mode_kept)
            })
            .collect()
    }

    /// What an installed file is recorded as.
    fn written(&self, t: &Target, conflict: bool, mode_kept: bool) -> Result<Written> {
        let disk = localfs::disk_path(self.root, &t.rel)?;
        let mut stat = std::fs::symlink_metadata(&disk)
            .map(|md| stat_of(&md))
            .map_err(|e| Error::io(&disk, e))?;
        if !mode_kept {
            // The synced state's exec bit is read from this mode: it must be the content's.
            stat.mode = t.meta.mode & 0o777;
        }
        Ok(Written {
            path: t.path.clone(),
            entry: SyncedEntry {
                version: t.version,
                content: Content::File {
                    id: t.expected,
                    exec: is_exec(t.meta.mode),
                },
                stat,
            },
            chunks: t.pieces.len() as u64,
            bytes: t.meta.size,
            conflict,
        })
    }
}

/// Verifies each piece of a fetched span and writes it to its file. A chunk that does not hash
/// to its id fails every file that wanted it; nothing of it is written anywhere.
fn place(span: &Span, body: &[u8], slots: &[Slot]) {
    // The same chunk wanted by several files is verified once.
    let mut last: Option<(u64, cairn_proto::ChunkId, bool)> = None;
    for p in &span.pieces {
        let slot = &slots[p.file];
        if slot.is_failed() {
            continue;
        }
        let bytes = &body[span.slice_of(p)];
        let ok = match last {
            Some((offset, id, ok)) if offset == p.offset && id == p.id => ok,
            _ => {
                let ok = p.id.verify(bytes);
                last = Some((p.offset, p.id, ok));
                ok
            }
        };
        if !ok {
            slot.fail(format!(
                "chunk {} from storage does not match its hash; not written",
                p.id
            ));
        } else if let Err(e) = slot.write_at(bytes, p.at) {
            slot.fail(format!("cannot write the temp file: {e}"));
        }
    }
}

fn fail_all(targets: &[Target], why: &str) -> Vec<Result<Written>> {
    targets
        .iter()
        .map(|t| Err(Error::path(&t.path, why)))
        .collect()
}

/// Allocates `size` bytes to `file` up front (`fallocate`). Filesystems that cannot (vfat over
/// FUSE, tmpfs on old kernels) just skip it; only a real refusal, a full disk or quota, is an
/// error.
fn reserve(file: &std::fs::File, size: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
