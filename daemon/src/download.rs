//! The pull executor: fetch verified chunks into temp files, re-check, rename; mkdir; careful deletes.

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use cairn_proto::{ChunkId, ContentId, Version, content_id_of, pb};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::casefold::{Intent, Placer, probe_case_insensitive};
use crate::error::{Error, Result};
use crate::localfs::{self, Current, DirHandle};
use crate::planner::Op;
use crate::remote::Remote;
use crate::scanner::stat_of;
use crate::state::{FolderId, State, SyncedChange};
use crate::tree::{Content, LocalEntry, RemoteTree, SyncedEntry, SyncedTree};

mod group;
mod plan;

/// Files per GetManifests call; the next batch's manifests are fetched while this one downloads.
const MANIFEST_BATCH: usize = 1000;
/// A group is fetched pack-wise as a whole (its chunks sorted by stored object and merged into
/// ranged GETs); these bound its open temp files and the small files it holds in memory. At
/// 32 MiB a pull of 500 × 256 KiB peaked at 116–119 MiB of RSS (three groups of files held
/// whole); at 16 MiB, one pack's worth, 68–70 MiB in the same time (docs/BENCHMARKS.md).
const GROUP_FILES: usize = 500;
const GROUP_BYTES: u64 = 16 << 20;
/// Groups downloading at once: one group's fsyncs overlap the next one's GETs.
const GROUPS_IN_FLIGHT: usize = 3;

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
    /// Paths written under another name than their own (case twins in a folder that ignores
    /// letter case): nothing failed, but the user must be told.
    #[serde(skip)]
    pub renamed: Vec<Error>,
}

pub struct Pull<'a> {
    pub remote: &'a Remote,
    pub root: &'a Path,
    /// The local tree the plan was made from: a path is recorded as synced only while the disk
    /// still shows what the scan saw.
    pub local: &'a crate::tree::LocalTree,
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
        // Only a run that touches the disk asks the folder whether it folds case.
        let touches = ops.iter().any(|op| {
            matches!(
                op,
                Op::Download { .. }
                    | Op::MkdirLocal { .. }
                    | Op::MoveLocal { .. }
                    | Op::DeleteLocal { .. }
                    | Op::RecordSynced { .. }
            )
        });
        let placer = Placer::new(
            self.root,
            touches && probe_case_insensitive(self.root),
            synced,
        );
        let placer = &placer;
        let mut files = Vec::new();
        let mut changes = Vec::new();
        for op in ops {
            match op {
                Op::Download { path, version, .. } => {
                    match remote_tree.get(path).and_then(|r| r.content.as_ref()) {
                        Some(Content::Symlink(t)) => {
                            match self.write_symlink(path, t, synced, placer) {
                                Ok((conflict, stat)) => {
                                    stats.conflicts += u64::from(conflict);
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
                            }
                        }
                        _ => files.push(pb::PathVersion {
                            path: path.clone(),
                            version: version.0,
                        }),
                    }
                }
                Op::MkdirLocal { path, version } => match self.mkdir(path, synced, placer) {
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
                    self.delete_local(path, synced, placer, &mut stats, &mut changes);
                }
                Op::RecordSynced { path, version } => {
                    let disk = placer
                        .place(path, Intent::Find)
                        .and_then(|rel| localfs::disk_path(self.root, &rel));
                    if let (Some(r), Ok(md)) = (
                        remote_tree.get(path).and_then(|r| r.content.clone()),
                        disk.and_then(|d| {
                            std::fs::symlink_metadata(&d).map_err(|e| Error::io(d, e))
                        }),
                    ) {
                        // The synced exec bit is read from the mode: it must be the
                        // content's, also where the disk keeps no modes.
                        let mut stat = stat_of(&md);
                        // Changed since the scan (an edit racing this round): recording the
                        // remote's content with the new stat would hide the edit from every
                        // later scan. Leave it for the next round to see.
                        let seen = self.local.get(path).map(|e| e.stat);
                        if matches!(r, Content::File { .. })
                            && !seen.is_some_and(|s| localfs::same_stat(s, stat))
                        {
                            continue;
                        }
                        if let Content::File { exec, .. } = r {
                            stat.mode = crate::tree::with_exec(stat.mode, exec);
                        }
                        changes.push(SyncedChange::Put(
                            path.clone(),
                            SyncedEntry {
                                version: *version,
                                content: r,
                                stat,
                            },
                        ));
                    }
                }
                Op::ForgetSynced { path } => changes.push(SyncedChange::Remove(path.clone())),
                Op::MoveLocal { from, to, version } => {
                    match self.move_local(from, to, remote_tree, synced, placer) {
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
                        // The source changed or vanished, the target is taken, or the rename
                        // failed (the target's folder is not one yet: a link this round
                        // replaces, say): download instead, after this round's folders are
                        // made, and delete the source as the server did when it is still as
                        // synced (kept otherwise, as a delete-local would). Left for the next
                        // round, it kept its folders from this round's deletions, which then
                        // went up again as new folders (planner seeds 33017 and 30435).
                        Ok(None) => {
                            files.push(pb::PathVersion {
                                path: to.clone(),
                                version: version.0,
                            });
                            self.delete_local(from, synced, placer, &mut stats, &mut changes);
                        }
                        // Only after the rename (its mode, time or fsync): the file is in place.
                        Err(e) => stats.errors.push(e),
                    }
                }
                Op::Upload { .. } | Op::DeleteRemote { .. } | Op::MoveRemote { .. } => {}
            }
        }
        self.state.apply(self.folder, &changes)?;
        let remote = self.remote;
        let mut batches = files.chunks(MANIFEST_BATCH).map(<[_]>::to_vec);
        let mut resp = match batches.next() {
            Some(b) => Some(remote.get_manifests(b).await?),
            None => None,
        };
        while let Some(r) = resp {
            let following = batches.next();
            let prefetch = async {
                match following {
                    Some(b) => Some(remote.get_manifests(b).await),
                    None => None,
                }
            };
            let (done, next) = tokio::join!(
                self.download_batch(r, (remote_tree, synced), placer, &mut stats),
                prefetch
            );
            done?;
            resp = next.transpose()?;
        }
        stats.renamed = placer.take_notices();
        Ok(stats)
    }

    async fn download_batch(
        &mut self,
        resp: pb::GetManifestsResponse,
        (remote_tree, synced): (&RemoteTree, &SyncedTree),
        placer: &Placer<'_>,
        stats: &mut PullStats,
    ) -> Result<()> {
        // Places are decided in path order before any download starts, so which of two case
        // twins keeps its name does not depend on which download finishes first.
        let mut targets = Vec::new();
        for m in &resp.files {
            let path = m.entry.as_ref().map_or("", |e| e.path.as_str());
            let target = cairn_proto::validate_path(path)
                .map_err(|e| Error::path(path, format!("refused: {e}")))
                .and_then(|()| placer.place(path, Intent::Write))
                .and_then(|rel| target(m, rel));
            match target {
                Ok(t) => targets.push(t),
                Err(e) => stats.errors.push(e),
            }
        }
        // Files whose chunks rest side by side go into one group (fewer, longer GETs).
        targets.sort_by_key(|t| t.pieces.first().map(|p| (p.object, p.offset)));
        let sizes: Vec<u64> = targets.iter().map(|t| t.meta.size).collect();
        let this = &*self;
        let (targets, objects) = (&targets, &resp.objects);
        let results: Vec<Vec<Result<Written>>> =
            futures::stream::iter(plan::groups(&sizes, GROUP_FILES, GROUP_BYTES))
                .map(|g| this.fetch_group(&targets[g], objects, synced))
                .buffered(GROUPS_IN_FLIGHT)
                .collect()
                .await;
        let mut changes = Vec::new();
        let mut folders = HashSet::new();
        for r in results.into_iter().flatten() {
            match r {
                Ok(w) => {
                    stats.files_written += 1;
                    stats.chunks_downloaded += w.chunks;
                    stats.bytes_downloaded += w.bytes;
                    stats.conflicts += u64::from(w.conflict);
                    self.synced_folders_of(
                        &w.path,
                        remote_tree,
                        placer,
                        &mut folders,
                        &mut changes,
                    );
                    changes.push(SyncedChange::Put(w.path, w.entry));
                }
                Err(e) => stats.errors.push(e),
            }
        }
        // Every file here was renamed and its folder fsynced before its group returned.
        self.state.apply(self.folder, &changes)
    }

    /// Records the folders above a downloaded file that are folders both here and on the server
    /// as synced at the server's version (each once per batch: `done`). A folder the download
    /// had to create (deleted here, say, while a file was written into it elsewhere) is then not
    /// taken for a folder made here, which a later change of that path on the server would keep
    /// as a conflict copy, bringing back what it held.
    fn synced_folders_of(
        &self,
        path: &str,
        remote_tree: &RemoteTree,
        placer: &Placer<'_>,
        done: &mut HashSet<String>,
        changes: &mut Vec<SyncedChange>,
    ) {
        for (i, _) in path.match_indices('/') {
            let folder = &path[..i];
            if !done.insert(folder.to_owned()) {
                continue;
            }
            let Some(r) = remote_tree
                .get(folder)
                .filter(|r| matches!(r.content, Some(Content::Dir)))
            else {
                continue;
            };
            let md = placer
                .place(folder, Intent::Find)
                .and_then(|rel| localfs::disk_path(self.root, &rel))
                .ok()
                .and_then(|d| std::fs::symlink_metadata(d).ok());
            if let Some(md) = md.filter(|m| m.file_type().is_dir()) {
                let entry = SyncedEntry {
                    version: r.version,
                    content: Content::Dir,
                    stat: stat_of(&md),
                };
                changes.push(SyncedChange::Put(folder.to_owned(), entry));
            }
        }
    }

    /// Re-checks the target right before the rename; a changed local entry is kept as a conflict
    /// copy. `rel` is where the entry goes on disk (root-relative), `tmp` a name in `dir`. The
    /// caller fsyncs `dir` before it records the entry as synced.
    fn install(
        &self,
        rel: &str,
        tmp: &str,
        disk: &Path,
        dir: &DirHandle,
        (synced, scanned): (Option<&SyncedEntry>, Option<&LocalEntry>),
    ) -> Result<bool> {
        let conflict = match localfs::current_as_scanned(disk, synced, scanned)? {
            Current::Absent => false,
            Current::AsSynced
                if !disk.is_dir()
                    || std::fs::symlink_metadata(disk)
                        .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                false
            }
            // A synced folder the server replaced: the round deleted what in it was only
            // synced, so an empty one goes (rmdir refuses a folder that is not empty, so nothing
            // written since can be lost), and one still holding changes here is kept as a copy.
            Current::AsSynced if dir.remove(localfs::file_name(rel), true).is_ok() => false,
            Current::AsSynced | Current::Different => {
                localfs::move_to_conflict_copy(self.root, dir, rel, self.device)?;
                true
            }
        };
        dir.rename(tmp, localfs::file_name(rel))
            .map_err(|e| Error::path(rel, format!("cannot move the download into place: {e}")))?;
        Ok(conflict)
    }

    /// Creates the link; returns whether a local entry was kept as a conflict copy, and the
    /// link's stat.
    fn write_symlink(
        &self,
        path: &str,
        target: &str,
        synced: &SyncedTree,
        placer: &Placer<'_>,
    ) -> Result<(bool, crate::tree::Stat)> {
        if !localfs::symlink_target_ok(path, target) {
            return Err(Error::path(
                path,
                format!("symlink target {target:?} is absolute or leaves the folder; not created"),
            ));
        }
        localfs::disk_path(self.root, path)?;
        let rel = placer.place(path, Intent::Write)?;
        let disk = localfs::disk_path(self.root, &rel)?;
        let dir = localfs::ensure_parents(self.root, &rel)?;
        let (tmp, f) = dir.create_temp()?;
        drop(f);
        let made = dir
            .remove(&tmp, false)
            .and_then(|()| dir.symlink(target, &tmp));
        made.map_err(|e| Error::io(dir.path().join(&tmp), e))?;
        let conflict = self
            .install(
                &rel,
                &tmp,
                &disk,
                &dir,
                (synced.get(path), self.local.get(path)),
            )
            .inspect_err(|_| {
                let _ = dir.remove(&tmp, false);
            })?;
        dir.fsync()?;
        let stat = std::fs::symlink_metadata(&disk)
            .map(|m| stat_of(&m))
            .unwrap_or_default();
        Ok((conflict, stat))
    }

    fn mkdir(
        &self,
        path: &str,
        synced: &SyncedTree,
        placer: &Placer<'_>,
    ) -> Result<(crate::tree::Stat, bool)> {
        localfs::disk_path(self.root, path)?;
        let rel = placer.place(path, Intent::Write)?;
        let disk = localfs::disk_path(self.root, &rel)?;
        let dir = localfs::ensure_parents(self.root, &rel)?;
        let name = localfs::file_name(&rel);
        let mut conflict = false;
        match std::fs::symlink_metadata(&disk) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                match localfs::current_as_scanned(&disk, synced.get(path), self.local.get(path))? {
                    Current::AsSynced => {
                        dir.remove(name, false).map_err(|e| Error::io(&disk, e))?
                    }
                    _ => {
                        localfs::move_to_conflict_copy(self.root, &dir, &rel, self.device)?;
                        conflict = true;
                    }
                }
                dir.mkdir(name).map_err(|e| Error::io(&disk, e))?;
            }
            Err(_) => dir.mkdir(name).map_err(|e| Error::io(&disk, e))?,
        }
        let md = std::fs::symlink_metadata(&disk).map_err(|e| Error::io(&disk, e))?;
        Ok((stat_of(&md), conflict))
    }

    /// Renames `from` to `to` when `from` is still exactly as synced and `to` is free, then sets
    /// the remote entry's mode and mtime. `None`: the precondition failed or the rename could not
    /// be made (the caller downloads instead); an error only once the file is in place.
    fn move_local(
        &self,
        from: &str,
        to: &str,
        remote_tree: &RemoteTree,
        synced: &SyncedTree,
        placer: &Placer<'_>,
    ) -> Result<Option<SyncedEntry>> {
        localfs::disk_path(self.root, from)?;
        localfs::disk_path(self.root, to)?;
        let (from_rel, to_rel) = (
            placer.place(from, Intent::Find)?,
            placer.place(to, Intent::Write)?,
        );
        let (src, dst) = (
            localfs::disk_path(self.root, &from_rel)?,
            localfs::disk_path(self.root, &to_rel)?,
        );
        let Some(r) = remote_tree
            .get(to)
            .filter(|r| matches!(r.content, Some(Content::File { .. })))
        else {
            return Ok(None);
        };
        if !matches!(
            localfs::current_as_scanned(&src, synced.get(from), self.local.get(from))?,
            Current::AsSynced
        ) || std::fs::symlink_metadata(&dst).is_ok()
        {
            return Ok(None);
        }
        let renamed = localfs::ensure_parents(self.root, &from_rel).and_then(|src_dir| {
            let dir = localfs::ensure_parents(self.root, &to_rel)?;
            src_dir
                .rename_to(
                    localfs::file_name(&from_rel),
                    &dir,
                    localfs::file_name(&to_rel),
                )
                .map_err(|e| Error::path(to, format!("cannot rename {from:?} here: {e}")))?;
            Ok(dir)
        });
        let dir = match renamed {
            Ok(dir) => dir,
            Err(e) => {
                tracing::info!("{to}: not moved here ({e}); downloading instead");
                return Ok(None);
            }
        };
        let f = std::fs::File::options()
            .write(true)
            .custom_flags(libc_nofollow())
            .open(&dst)
            .map_err(|e| Error::io(&dst, e))?;
        let mode_kept = set_mode(&f, r.mode).map_err(|e| Error::io(&dst, e))?;
        f.set_modified(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.mtime_ns.max(0) as u64),
        )
        .map_err(|e| Error::io(&dst, e))?;
        drop(f);
        dir.fsync()?;
        let mut stat = std::fs::symlink_metadata(&dst)
            .map(|m| stat_of(&m))
            .map_err(|e| Error::io(&dst, e))?;
        if !mode_kept {
            stat.mode = r.mode & 0o777;
        }
        // The remote entry was checked to be a file just above.
        let content = r.content.clone().expect("a live file");
        Ok(Some(SyncedEntry {
            version: r.version,
            content,
            stat,
        }))
    }

    /// A delete-local: the path goes if it still matches the synced entry, and its synced
    /// record goes either way (what was kept is a local change now).
    fn delete_local(
        &self,
        path: &str,
        synced: &SyncedTree,
        placer: &Placer<'_>,
        stats: &mut PullStats,
        changes: &mut Vec<SyncedChange>,
    ) {
        match self.delete(path, synced, placer) {
            Ok(deleted) => stats.deleted += u64::from(deleted),
            Err(e) => stats.errors.push(e),
        }
        changes.push(SyncedChange::Remove(path.to_owned()));
    }

    /// Deletes only what still matches the synced entry; anything else is kept.
    fn delete(&self, path: &str, synced: &SyncedTree, placer: &Placer<'_>) -> Result<bool> {
        localfs::disk_path(self.root, path)?;
        let rel = placer.place(path, Intent::Find)?;
        let disk = localfs::disk_path(self.root, &rel)?;
        match localfs::current_as_scanned(&disk, synced.get(path), self.local.get(path))? {
            Current::Absent => Ok(false),
            Current::Different => {
                tracing::info!("{path}: deleted on the server but changed here; kept");
                Ok(false)
            }
            Current::AsSynced => {
                let is_dir = std::fs::symlink_metadata(&disk).is_ok_and(|m| m.file_type().is_dir());
                let dir = localfs::ensure_parents(self.root, &rel)?;
                let r = dir.remove(localfs::file_name(&rel), is_dir);
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

/// Sets a file's permission bits. A filesystem that keeps none (vfat, some FUSE mounts) refuses
/// `chmod`; the content is what matters there, so that refusal is not an error. Returns whether
/// the mode was set.
fn set_mode(f: &std::fs::File, mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    match f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777)) {
        Err(e)
            if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(
                    rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::PERM
                )
            ) =>
        {
            tracing::debug!("this filesystem keeps no permission bits: {e}");
            Ok(false)
        }
        r => r.map(|()| true),
    }
}

/// `O_NOFOLLOW` for `OpenOptions::custom_flags`: opening a moved file must not follow a link
/// someone put at its new name.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Checks a manifest against its entry's content id and size and lists the chunks it needs.
fn target(m: &pb::FileManifest, rel: String) -> Result<group::Target> {
    let entry = m
        .entry
        .as_ref()
        .ok_or_else(|| Error::Protocol("GetManifests sent a file without its entry".into()))?;
    let path = entry.path.as_str();
    let meta = entry.meta.clone().unwrap_or_default();
    let expected = ContentId::from_slice(&entry.content_id)
        .map_err(|e| Error::path(path, format!("server sent a bad content id: {e}")))?;
    let ids: Vec<ChunkId> = m
        .chunks
        .iter()
        .map(|c| ChunkId::from_slice(&c.id))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::path(path, format!("server sent a bad chunk id: {e}")))?;
    let lengths = m.chunks.iter().map(|c| u64::from(c.length));
    if content_id_of(ids.iter().zip(lengths.clone())) != expected
        || lengths.sum::<u64>() != meta.size
    {
        return Err(Error::path(
            path,
            "the server's manifest does not match the file's content id or size; not written",
        ));
    }
    let mut at = 0;
    let pieces = m
        .chunks
        .iter()
        .zip(ids)
        .map(|(c, id)| {
            let p = plan::Piece {
                file: 0,
                at,
                id,
                object: c.object,
                offset: c.offset,
                length: c.length,
            };
            at += u64::from(c.length);
            p
        })
        .collect();
    Ok(group::Target {
        path: path.to_owned(),
        rel,
        expected,
        version: Version(entry.version),
        meta,
        pieces,
    })
}
