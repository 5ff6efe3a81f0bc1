//! Downloading one group of files pack-wise: ranged GETs by stored object (one GET may feed many
//! files), every chunk's BLAKE3 checked before its bytes go anywhere, then per file temp file →
//! fsync → re-check the target → rename, and each folder fsynced once after its renames, before
//! anything is reported as written.

use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
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
/// One ranged GET reads at most this much (a single larger chunk is read whole): a whole 16 MiB
/// pack. Garage spent a third more CPU serving a pull in 4 MiB spans than rclone's whole
/// objects (most likely because a range that starts inside one of its 1 MiB blocks costs it the
/// whole block); in whole packs, within about a tenth. Bodies are streamed, so the size costs no
/// memory.
const MAX_SPAN: u64 = 16 << 20;
/// Complete chunks of a span are verified and written once they add up to this much (or the
/// span is complete).
const PLACE_BATCH: u64 = 1 << 20;
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
        lock(&self.failed).get_or_insert(why);
    }

    fn is_failed(&self) -> bool {
        lock(&self.failed).is_some()
    }

    /// Writes `parts`, one after the other, from offset `at`.
    fn write_at(&self, parts: &[&[u8]], at: u64) -> std::io::Result<()> {
        match &self.sink {
            Sink::Memory(buf) => {
                let mut buf = lock(buf);
                let mut at = at as usize;
                for p in parts {
                    // Manifests were checked: every piece lies within the file's size.
                    buf[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                Ok(())
            }
            Sink::Temp { file, .. } => {
                write_all_vectored_at(file, parts, at)?;
                let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
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

    /// GETs one span, verifies each chunk in it and writes it to every file that wants it. The
    /// body is read as it comes: each chunk is placed once its bytes are in, so the span holds
    /// about one chunk's frames however long it is. A GET that fails, or whose body breaks off,
    /// is retried for the chunks not yet placed.
    async fn fetch_span(&self, span: Span, objects: &[pb::StoredObject], slots: &Arc<Vec<Slot>>) {
        if span.pieces.iter().all(|p| slots[p.file].is_failed()) {
            return;
        }
        let fail = |pieces: &[Piece], why: &str| {
            for p in pieces {
                slots[p.file].fail(why.to_owned());
            }
        };
        let Some(obj) = objects.get(span.object as usize) else {
            return fail(
                &span.pieces,
                "the server named a stored object it did not send; not written",
            );
        };
        let end = span.offset + span.length;
        let body = tokio::sync::Mutex::new(Assembler::new(&span.pieces));
        let streamed = crate::remote::retry("download", || async {
            // Attempts run one after the other: the lock is only ever free.
            let mut body = body.lock().await;
            self.stream_span(&obj.url, end, slots, &mut body).await
        })
        .await;
        let body = body.into_inner();
        if let Err(e) = streamed {
            fail(&span.pieces[body.placed..], &e.to_string());
        }
    }

    /// One GET of the span from its first piece not yet placed to `end`, each piece verified and
    /// written as soon as its last byte is in.
    async fn stream_span(
        &self,
        url: &str,
        end: u64,
        slots: &Arc<Vec<Slot>>,
        body: &mut Assembler<'_>,
    ) -> Result<()> {
        let Some(from) = body.resume() else {
            return Ok(());
        };
        let mut get = self.remote.get_range(url, from, end - from).await?;
        while !body.is_done() {
            let Some(frame) = get.next().await? else {
                // The body was as long as asked, and every piece ends inside the span.
                return Err(Error::Transfer {
                    detail: "a span ended before its chunks did".into(),
                    transient: false,
                });
            };
            let ready = body.feed(frame);
            // Small chunks are placed in batches: a blocking task per frame cost more than
            // their hashing.
            let batch: u64 = body.pieces[body.placed..body.placed + ready]
                .iter()
                .map(|p| u64::from(p.length))
                .sum();
            if ready == 0 || (batch < PLACE_BATCH && body.placed + ready < body.pieces.len()) {
                continue;
            }
            let (done, run) = body.take(ready);
            let moved = Arc::clone(slots);
            let placed = tokio::task::spawn_blocking(move || place(&done, &run, &moved)).await;
            match placed {
                Ok(()) => body.placed(ready),
                Err(e) => {
                    // The task panicked: nothing it fed is trusted.
                    let slots: &[Slot] = slots;
                    for s in slots {
                        s.fail(format!("internal error while writing: {e}"));
                    }
                    body.placed = body.pieces.len();
                    return Ok(());
                }
            }
            self.progress.inc(batch);
        }
        Ok(())
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

/// A span's body as it streams in, across the attempts of its GET: which of its pieces are
/// placed, and the frames kept for the next ones. Pieces are sorted by offset ([`Span`]).
/// Frames are kept as they came from the connection, not copied into one buffer: a chunk that
/// arrived in several frames is hashed and written where they lie ([`Run`]).
struct Assembler<'a> {
    pieces: &'a [Piece],
    /// Pieces placed so far, in order.
    placed: usize,
    /// The object's bytes `base .. pos`, from the first piece not placed (empty until its bytes
    /// come): about one chunk and one frame, not the span.
    frames: VecDeque<Bytes>,
    base: u64,
    /// The object offset of the body's next byte.
    pos: u64,
}

impl<'a> Assembler<'a> {
    fn new(pieces: &'a [Piece]) -> Self {
        Assembler {
            pieces,
            placed: 0,
            frames: VecDeque::new(),
            base: 0,
            pos: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.placed == self.pieces.len()
    }

    /// Bytes held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    /// Where a (new) GET starts: the first piece not placed, or `None` when all are.
    fn resume(&mut self) -> Option<u64> {
        let next = self.pieces.get(self.placed)?;
        self.frames.clear();
        (self.base, self.pos) = (next.offset, next.offset);
        Some(next.offset)
    }

    /// Takes the body's next bytes; returns how many pieces are now complete.
    fn feed(&mut self, frame: Bytes) -> usize {
        let from = self.pos;
        self.pos += frame.len() as u64;
        // Bytes before the next piece (a gap read through) are not kept.
        if self.frames.is_empty() {
            self.base = self.base.max(from);
        }
        if self.base < self.pos {
            let skip = self.base.saturating_sub(from) as usize;
            self.frames.push_back(frame.slice(skip..));
        }
        self.pieces[self.placed..]
            .iter()
            .take_while(|p| p.offset + u64::from(p.length) <= self.pos)
            .count()
    }

    /// The next `n` complete pieces, with the bytes held (which hold theirs).
    fn take(&self, n: usize) -> (Vec<Piece>, Run) {
        let done = self.pieces[self.placed..self.placed + n].to_vec();
        (
            done,
            Run::new(self.base, self.frames.iter().cloned().collect()),
        )
    }

    /// The `n` pieces from [`Assembler::take`] are placed: only the bytes later pieces need are
    /// kept.
    fn placed(&mut self, n: usize) {
        self.placed += n;
        let Some(next) = self.pieces.get(self.placed) else {
            self.frames.clear();
            return;
        };
        while let Some(front) = self.frames.front_mut() {
            let end = self.base + front.len() as u64;
            if end <= next.offset {
                self.base = end;
                self.frames.pop_front();
            } else {
                // Pieces are sorted: the next one starts at or after the held bytes' start.
                let _ = front.split_to((next.offset - self.base) as usize);
                break;
            }
        }
        self.base = next.offset;
    }
}

/// A stored object's bytes from offset `base`, in the frames they came in.
struct Run {
    base: u64,
    frames: Vec<Bytes>,
    /// Each frame's offset in the object.
    starts: Vec<u64>,
}

impl Run {
    fn new(base: u64, frames: Vec<Bytes>) -> Self {
        let mut at = base;
        let starts = frames
            .iter()
            .map(|f| {
                let start = at;
                at += f.len() as u64;
                start
            })
            .collect();
        Run {
            base,
            frames,
            starts,
        }
    }

    /// The object's bytes `offset .. offset + len`, which the run holds, as slices of its frames.
    fn parts(&self, offset: u64, len: u32) -> Vec<&[u8]> {
        debug_assert!(offset >= self.base);
        let end = offset + u64::from(len);
        let first = self.starts.partition_point(|&s| s <= offset) - 1;
        let mut parts = Vec::new();
        for (f, &start) in self.frames[first..].iter().zip(&self.starts[first..]) {
            if start >= end {
                break;
            }
            let from = offset.saturating_sub(start) as usize;
            let to = ((end - start) as usize).min(f.len());
            parts.push(&f[from..to]);
        }
        parts
    }
}

/// Verifies each of `pieces` in `run` and writes it to its file. A chunk that does not hash to
/// its id fails every file that wanted it; nothing of it is written anywhere.
fn place(pieces: &[Piece], run: &Run, slots: &[Slot]) {
    // The same chunk wanted by several files is verified once.
    let mut last: Option<(u64, cairn_proto::ChunkId, bool)> = None;
    for p in pieces {
        let slot = &slots[p.file];
        if slot.is_failed() {
            continue;
        }
        let parts = run.parts(p.offset, p.length);
        let ok = match last {
            Some((offset, id, ok)) if offset == p.offset && id == p.id => ok,
            _ => {
                let ok = p.id.verify_parts(&parts);
                last = Some((p.offset, p.id, ok));
                ok
            }
        };
        if !ok {
            slot.fail(format!(
                "chunk {} from storage does not match its hash; not written",
                p.id
            ));
        } else if let Err(e) = slot.write_at(&parts, p.at) {
            slot.fail(format!("cannot write the temp file: {e}"));
        }
    }
}

/// `pwritev` until all of `parts` are written from offset `at`: one system call for a chunk
/// that came in many frames, where a `pwrite` per frame cost one each.
fn write_all_vectored_at(file: &std::fs::File, parts: &[&[u8]], at: u64) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    IoSlice::advance_slices(&mut left, 0); // drops leading empty parts
    let mut at = at;
    while !left.is_empty() {
        // At most IOV_MAX (1024 on Linux) slices a call.
        let n = match rustix::io::pwritev(file, &left[..left.len().min(1024)], at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        at += n as u64;
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// A poisoned lock only means another holder panicked (a panicked placement fails every file of
/// its group): what it guards is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use cairn_proto::ChunkId;
    use proptest::prelude::*;

    use super::*;

    /// Pieces sorted by offset from (gap, length, kind): kind 0 a new chunk after a gap, 1 the
    /// previous chunk again (another file wants it), 2 a chunk overlapping the previous one.
    fn pieces_of(shape: &[(u64, u32, u8)]) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for (file, &(gap, length, kind)) in shape.iter().enumerate() {
            let prev = out.last().copied();
            let (offset, length) = match (kind, prev) {
                (1, Some(p)) => (p.offset, p.length),
                (2, Some(p)) => (p.offset + u64::from(p.length) / 2, length),
                (_, Some(p)) => (p.offset + u64::from(p.length) + gap, length),
                (_, None) => (gap, length),
            };
            out.push(Piece {
                file,
                at: 0,
                id: ChunkId::from_slice(&[0; 32]).unwrap(),
                object: 0,
                offset,
                length,
            });
        }
        out
    }

    #[test]
    fn vectored_writes_land_every_part_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        // More parts than one call takes (IOV_MAX), some empty.
        let parts: Vec<&[u8]> = data.chunks(97).chain([&[][..]]).collect();
        assert!(parts.len() > 1024);
        write_all_vectored_at(&file, &parts, 10).unwrap();
        let got = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&got[..10], &[0; 10]);
        assert_eq!(&got[10..], &data[..]);
    }

    proptest! {
        /// However the body is cut into frames and wherever its GETs break off, every piece is
        /// handed over once, in order, with exactly its bytes, and the buffer never holds much
        /// more than one piece and one frame.
        #[test]
        fn a_streamed_span_places_every_piece_once_with_its_bytes(
            shape in prop::collection::vec((0u64..300, 1u32..500, 0u8..3), 1..40),
            frames in prop::collection::vec(1usize..700, 1..20),
            breaks in prop::collection::vec(0usize..60, 0..4),
            seed in any::<u64>(),
        ) {
            let pieces = pieces_of(&shape);
            let end = pieces.iter().map(|p| p.offset + u64::from(p.length)).max().unwrap();
            let object: Vec<u8> = (0..end).map(|i| (i.wrapping_mul(seed | 1) >> 7) as u8).collect();
            let mut body = Assembler::new(&pieces);
            let mut handed = Vec::new();
            let mut frame_no = 0;
            let longest = pieces.iter().map(|p| p.length as usize).max().unwrap();
            let widest = frames.iter().max().unwrap();
            let mut attempts = 0;
            while let Some(from) = body.resume() {
                attempts += 1;
                prop_assert!(attempts <= breaks.len() + 1, "an attempt without progress");
                let mut at = from as usize;
                while !body.is_done() {
                    prop_assert!(at < end as usize, "the body ended before the pieces did");
                    let n = frames[frame_no % frames.len()].min(end as usize - at);
                    frame_no += 1;
                    if breaks.contains(&frame_no) {
                        break; // the connection drops; the next attempt resumes
                    }
                    let ready = body.feed(Bytes::copy_from_slice(&object[at..at + n]));
                    at += n;
                    prop_assert!(body.held() <= longest + widest);
                    if ready == 0 {
                        continue;
                    }
                    let (done, run) = body.take(ready);
                    for p in &done {
                        let got = run.parts(p.offset, p.length).concat();
                        let want = &object[p.offset as usize..(p.offset + u64::from(p.length)) as usize];
                        prop_assert_eq!(&got[..], want, "piece of file {}", p.file);
                        handed.push(p.file);
                    }
                    body.placed(ready);
                }
            }
            prop_assert_eq!(handed, (0..pieces.len()).collect::<Vec<_>>());
        }
    }
}
