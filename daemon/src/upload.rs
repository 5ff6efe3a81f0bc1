//! The push executor: find missing chunks, pack them, PUT them, confirm, commit in batches.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use cairn_proto::{ChunkId, Version, pb};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::chunker::{Chunk, ChunkParams};
use crate::error::{Error, Result};
use crate::localfs::{self, same_stat};
use crate::planner::Op;
use crate::remote::Remote;
use crate::scanner::{Scanned, hash_file, stat_of};
use crate::state::{FolderId, State, SyncedChange};
use crate::tree::{Content, LocalEntry, SyncedEntry, with_exec};

const FIND_MISSING_BATCH: usize = 10_000;
const PREPARE_BATCH: usize = 1000;
const COMMIT_BATCH: usize = 1000;
const PUTS_IN_FLIGHT: usize = 6;
/// Uploaded objects are confirmed in groups of at most this many objects or bytes: big enough to
/// keep requests few, small enough that verification trails the uploads closely.
const CONFIRM_OBJECTS: usize = 64;
const CONFIRM_BYTES: u64 = 16 << 20;

#[derive(Debug, Default, serde::Serialize)]
pub struct PushStats {
    pub chunks: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    pub bytes_deduplicated: u64,
    pub committed: u64,
    pub deleted: u64,
    pub conflicts: u64,
    /// Local renames committed as moves (no chunk travelled).
    pub moved: u64,
    /// Changes the server refused because the namespace's quota would be exceeded.
    pub quota_exceeded: u64,
    /// Files refused because a chunk the server reported present was garbage-collected before
    /// the commit (its grace period ran out): uploaded again once in the same run.
    #[serde(skip)]
    pub collected: Vec<String>,
    #[serde(skip)]
    pub errors: Vec<Error>,
    /// Paths the server refused because a folder above them is a file or link there now
    /// (replaced elsewhere after this run last read the log). Not errors yet: the next pull
    /// keeps the folder as a conflict copy, and they go up from there. The one-shot push reports
    /// them as errors; the daemon runs its next round at once.
    #[serde(skip)]
    pub waiting: Vec<Error>,
    /// Why the PUT of a chunk's object failed, per chunk (for the file's error message).
    #[serde(skip)]
    pub put_failures: HashMap<ChunkId, String>,
}

/// Everything the executor needs about the run.
pub struct Push<'a> {
    pub remote: &'a Remote,
    pub root: &'a Path,
    pub params: ChunkParams,
    pub pack_threshold: u32,
    pub pack_target: u32,
    pub state: &'a mut State,
    pub folder: FolderId,
    pub progress: &'a ProgressBar,
}

/// Where a chunk's bytes can be read from: a file and an offset.
#[derive(Clone)]
struct Source {
    file: usize,
    offset: u64,
    length: u32,
}

/// One PrepareUpload's objects and where their bytes come from.
struct Batch<'a> {
    files: &'a [FileUp],
    sources: &'a HashMap<ChunkId, Source>,
    objects: &'a [Vec<ChunkId>],
    targets: &'a [pb::UploadTarget],
    /// Object bodies whose PUT is over, reused for the next objects (at most one per PUT in
    /// flight): a fresh 16 MiB pack buffer is 4,096 page faults, about a third of a second of
    /// system time per GiB pushed.
    spare: &'a Mutex<Vec<BytesMut>>,
}

impl Batch<'_> {
    /// Counts what the server verified; the chunks of objects it refused go to `failed`.
    fn record_outcomes(
        &self,
        group: &[usize],
        outcomes: Vec<pb::UploadOutcome>,
        stats: &mut PushStats,
        failed: &mut HashSet<ChunkId>,
    ) {
        let by_upload: HashMap<&str, usize> = group
            .iter()
            .map(|&i| (self.targets[i].upload_id.as_str(), i))
            .collect();
        for o in outcomes {
            let Some(&i) = by_upload.get(o.upload_id.as_str()) else {
                continue;
            };
            let obj = &self.objects[i];
            if o.ok {
                stats.chunks_uploaded += obj.len() as u64;
                stats.bytes_uploaded += obj
                    .iter()
                    .map(|id| u64::from(self.sources[id].length))
                    .sum::<u64>();
            } else {
                tracing::warn!("server refused an uploaded object: {}", o.error);
                failed.extend(obj.iter().copied());
            }
        }
    }
}

struct FileUp {
    path: String,
    disk: PathBuf,
    chunks: Vec<Chunk>,
}

impl Push<'_> {
    /// Runs the upload-side ops of a plan. Per-path failures land in `stats.errors`.
    pub async fn run(&mut self, ops: &[Op], scanned: &mut Scanned) -> Result<PushStats> {
        let mut stats = self.run_once(ops, scanned).await?;
        if stats.collected.is_empty() {
            return Ok(stats);
        }
        let lost: HashSet<String> = std::mem::take(&mut stats.collected).into_iter().collect();
        tracing::info!(
            files = lost.len(),
            "the server collected chunks it had reported present; uploading them again"
        );
        let again: Vec<Op> = ops
            .iter()
            .filter(|op| lost.contains(op.path()))
            .cloned()
            .collect();
        let second = self.run_once(&again, scanned).await?;
        stats.chunks_uploaded += second.chunks_uploaded;
        stats.bytes_uploaded += second.bytes_uploaded;
        stats.bytes_deduplicated = stats
            .bytes_deduplicated
            .saturating_sub(second.bytes_uploaded);
        stats.committed += second.committed;
        stats.conflicts += second.conflicts;
        stats.quota_exceeded += second.quota_exceeded;
        stats.errors.extend(second.errors);
        stats.waiting.extend(second.waiting);
        for path in second.collected {
            stats.errors.push(Error::path(
                path,
                "the server collected its chunks twice while it was uploading; it goes up next time",
            ));
        }
        Ok(stats)
    }

    async fn run_once(&mut self, ops: &[Op], scanned: &mut Scanned) -> Result<PushStats> {
        let mut stats = PushStats::default();
        let files = self.collect_files(ops, scanned, &mut stats).await;
        let failed = self.upload_chunks(&files, &mut stats).await?;
        let failed_paths: HashSet<&str> = files
            .iter()
            .filter(|f| f.chunks.iter().any(|c| failed.contains(&c.id)))
            .map(|f| f.path.as_str())
            .collect();
        let mut manifests: HashMap<&str, &[Chunk]> = HashMap::new();
        for f in &files {
            if failed_paths.contains(f.path.as_str()) {
                // A PUT that failed says why (the store unreachable, say); otherwise the server
                // refused the bytes it got (the file changed while it was read).
                let why = f
                    .chunks
                    .iter()
                    .find_map(|c| stats.put_failures.get(&c.id))
                    .map_or_else(
                        || "its chunks could not be uploaded (the file changed, or storage refused them); it goes up next time".to_owned(),
                        |e| format!("its chunks could not be uploaded to storage: {e}; it goes up next time"),
                    );
                stats.errors.push(Error::path(&f.path, why));
            } else {
                manifests.insert(&f.path, &f.chunks);
                stats.chunks += f.chunks.len() as u64;
            }
        }
        let todo: Vec<&Op> = ops
            .iter()
            .filter(|op| match op {
                Op::Upload { path, .. } => {
                    let is_file = matches!(
                        scanned.tree.get(path).map(|e| &e.content),
                        Some(Content::File { .. })
                    );
                    !is_file || manifests.contains_key(path.as_str())
                }
                _ => true,
            })
            .collect();
        for batch in todo.chunks(COMMIT_BATCH) {
            self.commit_batch(batch, scanned, &manifests, &mut stats)
                .await?;
        }
        stats.bytes_deduplicated = files
            .iter()
            .filter(|f| manifests.contains_key(f.path.as_str()))
            .flat_map(|f| f.chunks.iter())
            .map(|c| u64::from(c.length))
            .sum::<u64>()
            .saturating_sub(stats.bytes_uploaded);
        Ok(stats)
    }

    /// The files to upload, with their chunks (re-chunked when the scan reused a hash).
    async fn collect_files(
        &self,
        ops: &[Op],
        scanned: &mut Scanned,
        stats: &mut PushStats,
    ) -> Vec<FileUp> {
        let mut files = Vec::new();
        for op in ops {
            let Op::Upload { path, .. } = op else {
                continue;
            };
            let Some(LocalEntry {
                content: Content::File { id, .. },
                stat,
            }) = scanned.tree.get(path).cloned()
            else {
                continue;
            };
            let Some(disk) = scanned.disk_path(path) else {
                continue;
            };
            let chunks = match scanned.chunks.remove(path) {
                Some(c) => c,
                None => {
                    let (d, params) = (disk.clone(), self.params);
                    match tokio::task::spawn_blocking(move || hash_file(&d, stat, params)).await {
                        Ok(Ok((c, cid))) if cid == id => c,
                        Ok(Ok(_)) => {
                            stats.errors.push(Error::path(
                                path,
                                "changed while being read; it goes up next time",
                            ));
                            continue;
                        }
                        Ok(Err(e)) => {
                            stats.errors.push(Error::path(path, e));
                            continue;
                        }
                        Err(e) => {
                            stats
                                .errors
                                .push(Error::path(path, format!("hashing thread failed: {e}")));
                            continue;
                        }
                    }
                }
            };
            files.push(FileUp {
                path: path.clone(),
                disk,
                chunks,
            });
        }
        files
    }

    /// Uploads every chunk the server lacks; returns the ids that could not be uploaded.
    async fn upload_chunks(
        &self,
        files: &[FileUp],
        stats: &mut PushStats,
    ) -> Result<HashSet<ChunkId>> {
        let mut sources: HashMap<ChunkId, Source> = HashMap::new();
        let mut order = Vec::new();
        for (i, f) in files.iter().enumerate() {
            for c in &f.chunks {
                sources.entry(c.id).or_insert_with(|| {
                    order.push(c.id);
                    Source {
                        file: i,
                        offset: c.offset,
                        length: c.length,
                    }
                });
            }
        }
        let mut missing = Vec::new();
        for batch in order.chunks(FIND_MISSING_BATCH) {
            let m = self.remote.find_missing(batch).await?;
            missing.extend(batch.iter().filter(|id| m.contains(id)).copied());
        }
        let objects = group_objects(&missing, &sources, self.pack_threshold, self.pack_target);
        self.progress.set_length(
            objects
                .iter()
                .flatten()
                .map(|id| u64::from(sources[id].length))
                .sum(),
        );
        let mut failed = HashSet::new();
        let spare = Mutex::new(Vec::new());
        for batch in objects.chunks(PREPARE_BATCH) {
            let req = batch
                .iter()
                .map(|o| pb::UploadObject {
                    chunks: o
                        .iter()
                        .map(|id| pb::ChunkRef {
                            id: id.to_vec(),
                            length: sources[id].length,
                        })
                        .collect(),
                })
                .collect();
            let targets = self.remote.prepare_upload(req).await?;
            let up = Batch {
                files,
                sources: &sources,
                objects: batch,
                targets: &targets,
                spare: &spare,
            };
            self.put_and_confirm(&up, stats, &mut failed).await?;
        }
        Ok(failed)
    }

    /// PUTs a batch's objects and confirms them in groups as they land, so the server verifies
    /// one group while the next is still uploading.
    async fn put_and_confirm(
        &self,
        up: &Batch<'_>,
        stats: &mut PushStats,
        failed: &mut HashSet<ChunkId>,
    ) -> Result<()> {
        let mut puts = futures::stream::iter(
            up.objects
                .iter()
                .zip(up.targets)
                .enumerate()
                .map(|(i, (obj, t))| async move { (i, self.put_object(up, obj, t).await) }),
        )
        .buffer_unordered(PUTS_IN_FLIGHT);
        let mut confirms = futures::stream::FuturesUnordered::new();
        let (mut ready, mut ready_bytes, mut puts_done) = (Vec::new(), 0u64, false);
        loop {
            tokio::select! {
                put = puts.next(), if !puts_done => match put {
                    Some((i, Ok(()))) => {
                        ready.push(i);
                        ready_bytes += up.targets[i].length;
                    }
                    Some((i, Err(e))) => {
                        tracing::warn!("upload object failed: {e}");
                        failed.extend(up.objects[i].iter().copied());
                        let why = e.to_string();
                        for id in &up.objects[i] {
                            stats.put_failures.insert(*id, why.clone());
                        }
                    }
                    None => puts_done = true,
                },
                Some(done) = confirms.next(), if !confirms.is_empty() => {
                    let (group, outcomes): (Vec<usize>, Result<Vec<pb::UploadOutcome>>) = done;
                    up.record_outcomes(&group, outcomes?, stats, failed);
                }
                else => break,
            }
            if !ready.is_empty()
                && (puts_done || ready.len() >= CONFIRM_OBJECTS || ready_bytes >= CONFIRM_BYTES)
            {
                let group: Vec<usize> = std::mem::take(&mut ready);
                ready_bytes = 0;
                let ids = group
                    .iter()
                    .map(|&i| up.targets[i].upload_id.clone())
                    .collect();
                confirms.push(async move { (group, self.remote.confirm_upload(ids).await) });
            }
        }
        Ok(())
    }

    /// Reads the object's chunks back from their files, re-verifies them, PUTs the bytes.
    async fn put_object(
        &self,
        up: &Batch<'_>,
        obj: &[ChunkId],
        t: &pb::UploadTarget,
    ) -> Result<()> {
        let (files, sources) = (up.files, up.sources);
        let reads: Vec<(ChunkId, PathBuf, Source)> = obj
            .iter()
            .map(|id| {
                (
                    *id,
                    files[sources[id].file].disk.clone(),
                    sources[id].clone(),
                )
            })
            .collect();
        let buf = lock(up.spare).pop().unwrap_or_default();
        let body = tokio::task::spawn_blocking(move || read_object(&reads, buf))
            .await
            .map_err(|e| Error::Protocol(format!("reader thread failed: {e}")))??;
        if body.len() as u64 != t.length {
            return Err(Error::Protocol(format!(
                "server expects {} bytes for an object of {}",
                t.length,
                body.len()
            )));
        }
        let n = body.len() as u64;
        let put = self.remote.put(&t.url, body.clone()).await;
        // Unique once the client has let go of every copy; otherwise it is simply dropped.
        if let Ok(buf) = body.try_into_mut() {
            lock(up.spare).push(buf);
        }
        put?;
        self.progress.inc(n);
        Ok(())
    }

    async fn commit_batch(
        &mut self,
        batch: &[&Op],
        scanned: &Scanned,
        manifests: &HashMap<&str, &[Chunk]>,
        stats: &mut PushStats,
    ) -> Result<()> {
        let mut items = Vec::new();
        let mut sent = Vec::new();
        let mut changes = Vec::new();
        for op in batch {
            match op {
                Op::Upload {
                    path, base_version, ..
                } => {
                    let Some(e) = scanned.tree.get(path) else {
                        continue;
                    };
                    if let Content::Symlink(t) = &e.content
                        && !localfs::symlink_target_ok(path, t)
                    {
                        stats.errors.push(Error::path(
                            path,
                            format!(
                                "symlink target {t:?} is absolute or leaves the folder; not synced"
                            ),
                        ));
                        continue;
                    }
                    let manifest = manifests.get(path.as_str()).copied().unwrap_or_default();
                    items.push(pb::CommitItem {
                        path: path.clone(),
                        base_version: base_version.0,
                        meta: Some(meta_of(e, manifest)),
                        ..Default::default()
                    });
                    sent.push(*op);
                }
                Op::DeleteRemote { path, base_version } => {
                    items.push(pb::CommitItem {
                        path: path.clone(),
                        base_version: base_version.0,
                        delete: true,
                        ..Default::default()
                    });
                    sent.push(*op);
                }
                Op::MoveRemote {
                    from,
                    to,
                    from_version,
                    base_version,
                } => {
                    let Some(e) = scanned.tree.get(to) else {
                        continue;
                    };
                    items.push(pb::CommitItem {
                        path: to.clone(),
                        base_version: base_version.0,
                        meta: Some(meta_of(e, &[])),
                        move_from: from.clone(),
                        move_from_version: from_version.0,
                        ..Default::default()
                    });
                    sent.push(*op);
                }
                Op::RecordSynced { path, version } => {
                    if let Some(e) = scanned.tree.get(path) {
                        changes.push(SyncedChange::Put(path.clone(), synced_of(e, *version)));
                    }
                }
                Op::ForgetSynced { path } => changes.push(SyncedChange::Remove(path.clone())),
                _ => {}
            }
        }
        let results = if items.is_empty() {
            Vec::new()
        } else {
            self.remote.commit(items).await?
        };
        for (op, r) in sent.iter().zip(results) {
            self.record_result(op, r, scanned, &mut changes, stats);
        }
        self.state.apply(self.folder, &changes)
    }

    fn record_result(
        &self,
        op: &Op,
        r: pb::CommitResult,
        scanned: &Scanned,
        changes: &mut Vec<SyncedChange>,
        stats: &mut PushStats,
    ) {
        use pb::CommitStatus as S;
        let path = op.path().to_owned();
        let status = r.status();
        match (op, status) {
            (Op::MoveRemote { from, .. }, S::Committed | S::Unchanged) => {
                stats.moved += 1;
                changes.push(SyncedChange::Remove(from.clone()));
                if let Some(e) = scanned.tree.get(&path) {
                    changes.push(SyncedChange::Put(path, synced_of(e, Version(r.version))));
                }
            }
            (Op::MoveRemote { .. }, S::Rejected | S::Unspecified) => {
                // The next round re-plans: the rename then goes up as a delete and an upload.
                stats.errors.push(Error::path(
                    &path,
                    format!("the server refused the move: {}", r.error),
                ));
            }
            (Op::Upload { .. }, S::Rejected) if r.error.contains("never uploaded") => {
                stats.collected.push(path);
            }
            (_, S::ParentReplaced) => {
                stats.waiting.push(Error::path(
                    &path,
                    format!("the server refused it: {}", r.error),
                ));
            }
            (_, S::QuotaExceeded) => {
                stats.quota_exceeded += 1;
                stats.errors.push(Error::path(&path, &r.error));
            }
            (_, S::Rejected | S::Unspecified) => {
                stats.errors.push(Error::path(
                    &path,
                    format!("the server refused it: {}", r.error),
                ));
            }
            // A folder the server kept because entries were written into it elsewhere: it is
            // synced at the server's version, so that what the pull writes into it is not taken
            // for a folder made here (which a later change of the folder would keep as a copy).
            (Op::DeleteRemote { .. }, S::DeleteSkipped)
                if r.current.as_ref().is_some_and(|e| {
                    !e.deleted
                        && e.meta
                            .as_ref()
                            .is_some_and(|m| m.kind == pb::EntryKind::Dir as i32)
                }) =>
            {
                let kept = SyncedEntry {
                    version: Version(r.version),
                    content: Content::Dir,
                    stat: Default::default(),
                };
                changes.push(SyncedChange::Put(path, kept));
            }
            (Op::DeleteRemote { .. }, _) => {
                stats.deleted += u64::from(status == S::Committed);
                changes.push(SyncedChange::Remove(path));
            }
            (_, S::Committed | S::Unchanged) => {
                stats.committed += u64::from(status == S::Committed);
                if let Some(e) = scanned.tree.get(&path) {
                    changes.push(SyncedChange::Put(path, synced_of(e, Version(r.version))));
                }
            }
            (_, S::Conflict) => {
                stats.conflicts += 1;
                // The next pull brings the winner to the original path.
                changes.push(SyncedChange::Remove(path.clone()));
                match self.rename_to_copy(&path, &r.path, scanned) {
                    Ok(Some(e)) => {
                        changes.push(SyncedChange::Put(r.path, synced_of(&e, Version(r.version))))
                    }
                    Ok(None) => {}
                    Err(e) => stats.errors.push(e),
                }
            }
            (_, S::DeleteSkipped) => changes.push(SyncedChange::Remove(path)),
        }
    }

    /// Renames the local entry to the conflict copy's path, if it is still what was uploaded.
    fn rename_to_copy(
        &self,
        path: &str,
        copy: &str,
        scanned: &Scanned,
    ) -> Result<Option<LocalEntry>> {
        let (Some(e), Some(from)) = (scanned.tree.get(path), scanned.disk_path(path)) else {
            return Ok(None);
        };
        let to = localfs::disk_path(self.root, copy)?;
        let now = std::fs::symlink_metadata(&from).map_err(|err| Error::io(&from, err))?;
        // A file is what the scan saw if its stat is; a link if it still points where it did
        // (the scan records a link's size as 0, lstat its target's length).
        let unchanged = match &e.content {
            Content::File { .. } => same_stat(e.stat, stat_of(&now)),
            Content::Symlink(t) => {
                std::fs::read_link(&from).is_ok_and(|r| r.as_os_str() == t.as_str())
            }
            Content::Dir => true,
        };
        if !unchanged {
            return Err(Error::path(
                path,
                format!("stored on the server as {copy:?}, but changed here since; kept as is"),
            ));
        }
        if std::fs::symlink_metadata(&to).is_ok() {
            return Err(Error::path(
                path,
                format!("stored on the server as {copy:?}, but that name is taken here"),
            ));
        }
        // Both folders are opened without following links, as every local write is.
        let from_rel = from
            .strip_prefix(self.root)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| Error::path(path, "is not under the synced folder"))?;
        let src_dir = localfs::ensure_parents(self.root, from_rel)?;
        let dir = localfs::ensure_parents(self.root, copy)?;
        src_dir
            .rename_to(localfs::file_name(from_rel), &dir, localfs::file_name(copy))
            .map_err(|err| Error::path(path, format!("cannot rename to {copy:?}: {err}")))?;
        Ok(Some(e.clone()))
    }
}

/// Groups missing chunks into upload objects: a large chunk alone, small ones packed.
fn group_objects(
    missing: &[ChunkId],
    sources: &HashMap<ChunkId, Source>,
    threshold: u32,
    target: u32,
) -> Vec<Vec<ChunkId>> {
    let mut objects = Vec::new();
    let mut pack: Vec<ChunkId> = Vec::new();
    let mut pack_len = 0u64;
    for id in missing {
        let len = sources[id].length;
        if len >= threshold {
            objects.push(vec![*id]);
            continue;
        }
        if !pack.is_empty() && pack_len + u64::from(len) > u64::from(target) {
            objects.push(std::mem::take(&mut pack));
            pack_len = 0;
        }
        pack.push(*id);
        pack_len += u64::from(len);
    }
    if !pack.is_empty() {
        objects.push(pack);
    }
    objects
}

/// Reads and re-verifies an object's chunks from their files (blocking).
/// Reads an object's chunks into `buf` (a spare body, or empty), each checked against its id.
fn read_object(reads: &[(ChunkId, PathBuf, Source)], mut buf: BytesMut) -> Result<Bytes> {
    let total: usize = reads.iter().map(|r| r.2.length as usize).sum();
    buf.clear();
    buf.resize(total, 0);
    let mut at = 0;
    let mut open: Option<(PathBuf, std::fs::File)> = None;
    for (id, disk, src) in reads {
        if open.as_ref().is_none_or(|(p, _)| p != disk) {
            open = Some((
                disk.clone(),
                std::fs::File::open(disk).map_err(|e| Error::io(disk, e))?,
            ));
        }
        // `open` was set just above for this disk path.
        let (_, f) = open.as_ref().expect("file opened above");
        let dst = &mut buf[at..at + src.length as usize];
        f.read_exact_at(dst, src.offset)
            .map_err(|e| Error::io(disk, e))?;
        if !id.verify(dst) {
            return Err(Error::path(
                disk.display().to_string(),
                "changed since it was scanned",
            ));
        }
        at += src.length as usize;
    }
    Ok(buf.freeze())
}

fn meta_of(e: &LocalEntry, manifest: &[Chunk]) -> pb::FileMeta {
    // The mode's execute bits say what the content says (on a folder that keeps no modes the
    // scanner takes the bit from the synced state, not from the disk's blanket `rwx`).
    let mut mode = e.stat.mode & 0o777;
    let (kind, target) = match &e.content {
        Content::File { exec, .. } => {
            mode = with_exec(mode, *exec);
            (pb::EntryKind::File, String::new())
        }
        Content::Dir => (pb::EntryKind::Dir, String::new()),
        Content::Symlink(t) => (pb::EntryKind::Symlink, t.clone()),
    };
    pb::FileMeta {
        kind: kind as i32,
        size: if kind == pb::EntryKind::File {
            e.stat.size
        } else {
            0
        },
        mode,
        mtime_ns: e.stat.mtime_ns,
        manifest: manifest
            .iter()
            .map(|c| pb::ChunkRef {
                id: c.id.to_vec(),
                length: c.length,
            })
            .collect(),
        symlink_target: target,
    }
}

pub fn synced_of(e: &LocalEntry, version: Version) -> SyncedEntry {
    let mut stat = e.stat;
    // The state DB reads the synced exec bit from the mode: it must be the content's, also on a
    // folder that keeps no modes (where the disk shows `rwx` for every file).
    if let Content::File { exec, .. } = e.content {
        stat.mode = with_exec(stat.mode, exec);
    }
    SyncedEntry {
        version,
        content: e.content.clone(),
        stat,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_chunks_travel_alone_and_small_ones_share_packs() {
        let ids: Vec<ChunkId> = (0..5u8).map(|i| ChunkId([i; 32])).collect();
        let lens = [600, 100, 100, 100, 700];
        let sources: HashMap<ChunkId, Source> = ids
            .iter()
            .zip(lens)
            .map(|(id, l)| {
                (
                    *id,
                    Source {
                        file: 0,
                        offset: 0,
                        length: l,
                    },
                )
            })
            .collect();
        let objs = group_objects(&ids, &sources, 512, 250);
        assert_eq!(
            objs,
            vec![
                vec![ids[0]],
                vec![ids[1], ids[2]],
                vec![ids[4]],
                vec![ids[3]]
            ]
        );
    }
}
