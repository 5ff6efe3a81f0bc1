//! The pull executor: fetch verified chunks into temp files, re-check, rename; mkdir; careful deletes.

use std::io::Write;
use std::path::Path;

use cairn_proto::{ChunkId, ContentId, Version, content_id_of, pb};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::localfs::{self, Current};
use crate::planner::Op;
use crate::remote::Remote;
use crate::scanner::stat_of;
use crate::state::{FolderId, State, SyncedChange};
use crate::tree::{Content, RemoteTree, SyncedEntry, SyncedTree, is_exec};

const MANIFEST_BATCH: usize = 200;
const FILES_IN_FLIGHT: usize = 4;
/// Adjacent chunks of one object merge into one ranged GET up to this size.
const MAX_RANGE: u64 = 8 * 1024 * 1024;

#[derive(Debug, Default, serde::Serialize)]
pub struct PullStats {
    pub files_written: u64,
    pub chunks_downloaded: u64,
    pub bytes_downloaded: u64,
    pub deleted: u64,
    pub conflicts: u64,
    /// Remote renames applied as local renames (nothing downloaded).
    pub moved: u64,
    #[serde(skip)]
    pub errors: Vec<Error>,
}

pub struct Pull<'a> {
    pub remote: &'a Remote,
    pub root: &'a Path,
    pub device: &'a str,
    pub state: &'a mut State,
    pub folder: FolderId,
    pub progress: &'a ProgressBar,
}

/// What one file download produced.
struct Written {
    path: String,
    entry: SyncedEntry,
    chunks: u64,
    bytes: u64,
    conflict: bool,
}

impl Pull<'_> {
    pub async fn run(
        &mut self,
        ops: &[Op],
        remote_tree: &RemoteTree,
        synced: &SyncedTree,
    ) -> Result<PullStats> {
        let mut stats = PullStats::default();
        let mut files = Vec::new();
        let mut changes = Vec::new();
        for op in ops {
            match op {
                Op::Download { path, version, .. } => {
                    match remote_tree.get(path).and_then(|r| r.content.as_ref()) {
                        Some(Content::Symlink(t)) => match self.write_symlink(path, t, synced) {
                            Ok(conflict) => {
                                stats.conflicts += u64::from(conflict);
                                let stat = std::fs::symlink_metadata(self.root.join(path))
                                    .map(|m| stat_of(&m))
                                    .unwrap_or_default();
                                changes.push(SyncedChange::Put(
                                    path.clone(),
                                    SyncedEntry {
                                        version: *version,
                                        content: Content::Symlink(t.clone()),
                                        stat,
                                    },
                                ));
                            }
                            Err(e) => stats.errors.push(e),
                        },
                        _ => files.push(pb::PathVersion {
                            path: path.clone(),
                            version: version.0,
                        }),
                    }
                }
                Op::MkdirLocal { path, version } => match self.mkdir(path, synced) {
                    Ok((stat, conflict)) => {
                        stats.conflicts += u64::from(conflict);
                        changes.push(SyncedChange::Put(
                            path.clone(),
                            SyncedEntry {
                                version: *version,
                                content: Content::Dir,
                                stat,
                            },
                        ));
                    }
                    Err(e) => stats.errors.push(e),
                },
                Op::DeleteLocal { path } => {
                    match self.delete(path, synced) {
                        Ok(deleted) => stats.deleted += u64::from(deleted),
                        Err(e) => stats.errors.push(e),
                    }
                    changes.push(SyncedChange::Remove(path.clone()));
                }
                Op::RecordSynced { path, version } => {
                    if let (Some(r), Ok(md)) = (
                        remote_tree.get(path).and_then(|r| r.content.clone()),
                        std::fs::symlink_metadata(self.root.join(path)),
                    ) {
                        changes.push(SyncedChange::Put(
                            path.clone(),
                            SyncedEntry {
                                version: *version,
                                content: r,
                                stat: stat_of(&md),
                            },
                        ));
                    }
                }
                Op::ForgetSynced { path } => changes.push(SyncedChange::Remove(path.clone())),
                Op::MoveLocal { from, to, version } => {
                    match self.move_local(from, to, remote_tree, synced) {
                        Ok(Some(entry)) => {
                            stats.moved += 1;
                            changes.push(SyncedChange::Remove(from.clone()));
                            changes.push(SyncedChange::Put(
                                to.clone(),
                                SyncedEntry {
                                    version: *version,
                                    ..entry
                                },
                            ));
                        }
                        // The source changed or vanished: download instead.
                        Ok(None) => files.push(pb::PathVersion {
                            path: to.clone(),
                            version: version.0,
                        }),
                        Err(e) => stats.errors.push(e),
                    }
                }
                Op::Upload { .. } | Op::DeleteRemote { .. } | Op::MoveRemote { .. } => {}
            }
        }
        self.state.apply(self.folder, &changes)?;
        for batch in files.chunks(MANIFEST_BATCH) {
            self.download_batch(batch.to_vec(), synced, &mut stats)
                .await?;
        }
        Ok(stats)
    }

    async fn download_batch(
        &mut self,
        files: Vec<pb::PathVersion>,
        synced: &SyncedTree,
        stats: &mut PullStats,
    ) -> Result<()> {
        let resp = self.remote.get_manifests(files).await?;
        let objects = &resp.objects;
        let this = &*self;
        let results: Vec<(String, Result<Written>)> =
            futures::stream::iter(resp.files.iter().map(|m| {
                let path = m.entry.as_ref().map(|e| e.path.clone()).unwrap_or_default();
                async move { (path, this.download_file(m, objects, synced).await) }
            }))
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect()
            .await;
        let mut changes = Vec::new();
        for (_, r) in results {
            match r {
                Ok(w) => {
                    stats.files_written += 1;
                    stats.chunks_downloaded += w.chunks;
                    stats.bytes_downloaded += w.bytes;
                    stats.conflicts += u64::from(w.conflict);
                    changes.push(SyncedChange::Put(w.path, w.entry));
                }
                Err(e) => stats.errors.push(e),
            }
        }
        self.state.apply(self.folder, &changes)
    }

    async fn download_file(
        &self,
        m: &pb::FileManifest,
        objects: &[pb::StoredObject],
        synced: &SyncedTree,
    ) -> Result<Written> {
        let entry = m
            .entry
            .as_ref()
            .ok_or_else(|| Error::Protocol("GetManifests sent a file without its entry".into()))?;
        let path = entry.path.as_str();
        let meta = entry.meta.clone().unwrap_or_default();
        let expected = ContentId::from_slice(&entry.content_id)
            .map_err(|e| Error::path(path, format!("server sent a bad content id: {e}")))?;
        let ids: Vec<(ChunkId, u64)> = m
            .chunks
            .iter()
            .map(|c| ChunkId::from_slice(&c.id).map(|id| (id, u64::from(c.length))))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::path(path, format!("server sent a bad chunk id: {e}")))?;
        if content_id_of(ids.iter().map(|(id, l)| (id, *l))) != expected
            || ids.iter().map(|c| c.1).sum::<u64>() != meta.size
        {
            return Err(Error::path(
                path,
                "the server's manifest does not match the file's content id or size; not written",
            ));
        }
        let disk = localfs::disk_path(self.root, path)?;
        let dir = localfs::ensure_parents(self.root, path)?;
        let tmp = localfs::temp_path(&dir);
        let res = self.fill_temp(path, &tmp, m, objects, &meta).await;
        let res = match res {
            Ok(()) => self.install(path, &tmp, &disk, &dir, synced.get(path)),
            Err(e) => Err(e),
        };
        let conflict = match res {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let stat = std::fs::symlink_metadata(&disk)
            .map(|md| stat_of(&md))
            .map_err(|e| Error::io(&disk, e))?;
        let content = Content::File {
            id: expected,
            exec: is_exec(meta.mode),
        };
        Ok(Written {
            path: path.to_owned(),
            entry: SyncedEntry {
                version: Version(entry.version),
                content,
                stat,
            },
            chunks: m.chunks.len() as u64,
            bytes: meta.size,
            conflict,
        })
    }

    /// Downloads and verifies every chunk into `tmp`, then fsyncs it and sets mode and mtime.
    async fn fill_temp(
        &self,
        path: &str,
        tmp: &Path,
        m: &pb::FileManifest,
        objects: &[pb::StoredObject],
        meta: &pb::FileMeta,
    ) -> Result<()> {
        let mut f = std::fs::File::create_new(tmp).map_err(|e| Error::io(tmp, e))?;
        for range in ranges(&m.chunks) {
            let first = &m.chunks[range.start];
            let obj = objects
                .get(first.object as usize)
                .ok_or_else(|| Error::path(path, "server named a stored object it did not send"))?;
            let len: u64 = m.chunks[range.clone()]
                .iter()
                .map(|c| u64::from(c.length))
                .sum();
            let body = self
                .remote
                .get_range(&obj.url, first.offset, len)
                .await
                .map_err(|e| Error::path(path, e))?;
            let mut at = 0usize;
            for c in &m.chunks[range] {
                let bytes = &body[at..at + c.length as usize];
                // Ids were validated in download_file.
                let id = ChunkId::from_slice(&c.id).map_err(|e| Error::path(path, e))?;
                if !id.verify(bytes) {
                    return Err(Error::path(
                        path,
                        format!("chunk {id} from storage does not match its hash; not written"),
                    ));
                }
                f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
                at += c.length as usize;
            }
            self.progress.inc(len);
        }
        f.sync_all().map_err(|e| Error::io(tmp, e))?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode & 0o777))
            .map_err(|e| Error::io(tmp, e))?;
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(meta.mtime_ns.max(0) as u64);
        f.set_modified(mtime).map_err(|e| Error::io(tmp, e))?;
        Ok(())
    }

    /// Re-checks the target right before the rename; a changed local entry is kept as a conflict copy.
    fn install(
        &self,
        path: &str,
        tmp: &Path,
        disk: &Path,
        dir: &Path,
        synced: Option<&SyncedEntry>,
    ) -> Result<bool> {
        let conflict = match localfs::current(disk, synced)? {
            Current::Absent => false,
            Current::AsSynced
                if !disk.is_dir()
                    || std::fs::symlink_metadata(disk)
                        .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                false
            }
            Current::AsSynced | Current::Different => {
                localfs::move_to_conflict_copy(self.root, path, self.device)?;
                true
            }
        };
        std::fs::rename(tmp, disk)
            .map_err(|e| Error::path(path, format!("cannot move the download into place: {e}")))?;
        localfs::fsync_dir(dir)?;
        Ok(conflict)
    }

    fn write_symlink(&self, path: &str, target: &str, synced: &SyncedTree) -> Result<bool> {
        if !localfs::symlink_target_ok(path, target) {
            return Err(Error::path(
                path,
                format!("symlink target {target:?} is absolute or leaves the folder; not created"),
            ));
        }
        let disk = localfs::disk_path(self.root, path)?;
        let dir = localfs::ensure_parents(self.root, path)?;
        let tmp = localfs::temp_path(&dir);
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io(&tmp, e))?;
        self.install(path, &tmp, &disk, &dir, synced.get(path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }

    fn mkdir(&self, path: &str, synced: &SyncedTree) -> Result<(crate::tree::Stat, bool)> {
        let disk = localfs::disk_path(self.root, path)?;
        localfs::ensure_parents(self.root, path)?;
        let mut conflict = false;
        match std::fs::symlink_metadata(&disk) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                match localfs::current(&disk, synced.get(path))? {
                    Current::AsSynced => {
                        std::fs::remove_file(&disk).map_err(|e| Error::io(&disk, e))?
                    }
                    _ => {
                        localfs::move_to_conflict_copy(self.root, path, self.device)?;
                        conflict = true;
                    }
                }
                std::fs::create_dir(&disk).map_err(|e| Error::io(&disk, e))?;
            }
            Err(_) => std::fs::create_dir(&disk).map_err(|e| Error::io(&disk, e))?,
        }
        let md = std::fs::symlink_metadata(&disk).map_err(|e| Error::io(&disk, e))?;
        Ok((stat_of(&md), conflict))
    }

    /// Renames `from` to `to` when `from` is still exactly as synced and `to` is free, then sets
    /// the remote entry's mode and mtime. `None`: the precondition failed (the caller downloads).
    fn move_local(
        &self,
        from: &str,
        to: &str,
        remote_tree: &RemoteTree,
        synced: &SyncedTree,
    ) -> Result<Option<SyncedEntry>> {
        let (src, dst) = (
            localfs::disk_path(self.root, from)?,
            localfs::disk_path(self.root, to)?,
        );
        let Some(r) = remote_tree
            .get(to)
            .filter(|r| matches!(r.content, Some(Content::File { .. })))
        else {
            return Ok(None);
        };
        if !matches!(localfs::current(&src, synced.get(from))?, Current::AsSynced)
            || std::fs::symlink_metadata(&dst).is_ok()
        {
            return Ok(None);
        }
        let dir = localfs::ensure_parents(self.root, to)?;
        std::fs::rename(&src, &dst)
            .map_err(|e| Error::path(to, format!("cannot rename {from:?} here: {e}")))?;
        use std::os::unix::fs::PermissionsExt;
        let f = std::fs::File::options()
            .write(true)
            .open(&dst)
            .map_err(|e| Error::io(&dst, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(r.mode & 0o777))
            .map_err(|e| Error::io(&dst, e))?;
        f.set_modified(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.mtime_ns.max(0) as u64),
        )
        .map_err(|e| Error::io(&dst, e))?;
        drop(f);
        localfs::fsync_dir(&dir)?;
        let stat = std::fs::symlink_metadata(&dst)
            .map(|m| stat_of(&m))
            .map_err(|e| Error::io(&dst, e))?;
        // The remote entry was checked to be a file just above.
        let content = r.content.clone().expect("a live file");
        Ok(Some(SyncedEntry {
            version: r.version,
            content,
            stat,
        }))
    }

    /// Deletes only what still matches the synced entry; anything else is kept.
    fn delete(&self, path: &str, synced: &SyncedTree) -> Result<bool> {
        let disk = localfs::disk_path(self.root, path)?;
        match localfs::current(&disk, synced.get(path))? {
            Current::Absent => Ok(false),
            Current::Different => {
                tracing::info!("{path}: deleted on the server but changed here; kept");
                Ok(false)
            }
            Current::AsSynced => {
                let is_dir = std::fs::symlink_metadata(&disk).is_ok_and(|m| m.file_type().is_dir());
                let r = if is_dir {
                    std::fs::remove_dir(&disk)
                } else {
                    std::fs::remove_file(&disk)
                };
                match r {
                    Ok(()) => Ok(true),
                    Err(e) if is_dir => {
                        tracing::info!(
                            "{path}: deleted on the server, but the folder here is not empty ({e}); kept"
                        );
                        Ok(false)
                    }
                    Err(e) => Err(Error::io(disk, e)),
                }
            }
        }
    }
}

/// Splits a manifest into runs of chunks that are adjacent in one object (one ranged GET each).
fn ranges(chunks: &[pb::ChunkLocation]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=chunks.len() {
        let split = i == chunks.len() || {
            let (prev, cur) = (&chunks[i - 1], &chunks[i]);
            let run: u64 = chunks[start..=i].iter().map(|c| u64::from(c.length)).sum();
            cur.object != prev.object
                || cur.offset != prev.offset + u64::from(prev.length)
                || run > MAX_RANGE
        };
        if split {
            out.push(start..i);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(object: u32, offset: u64, length: u32) -> pb::ChunkLocation {
        pb::ChunkLocation {
            id: vec![0; 32],
            length,
            object,
            offset,
        }
    }

    #[test]
    fn adjacent_chunks_of_one_object_share_a_ranged_get() {
        let c = [
            loc(0, 0, 10),
            loc(0, 10, 5),
            loc(1, 0, 3),
            loc(0, 100, 2),
            loc(0, 102, 2),
        ];
        assert_eq!(ranges(&c), vec![0..2, 2..3, 3..5]);
        assert!(ranges(&[]).is_empty());
    }
}
