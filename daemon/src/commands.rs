//! One-shot commands: push and pull a folder (scan → plan → execute), list versions.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_proto::{Seq, validate_path};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::chunker::ChunkParams;
use crate::config::Config;
use crate::delta::{Merge, Order, Rows};
use crate::download::Pull;
use crate::error::{Error, Result};
use crate::guard::{self, Held};
use crate::planner::{Op, plan};
use crate::reconcile::reconcile;
use crate::remote::Remote;
use crate::scanner::{Scanned, scan_changes};
use crate::state::{FolderId, State, SyncedReader};
use crate::tree::{Content, RemoteEntry, RemoteTree, SyncedTree};
use crate::upload::Push;
use crate::{delta, portability};

/// Output settings.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub quiet: bool,
    pub json: bool,
}

impl Ui {
    fn bar(&self, what: &'static str) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if !self.quiet && std::io::stderr().is_terminal() {
            pb.set_draw_target(ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                // The template is static and valid.
                .expect("valid progress template")
                .progress_chars("=> "),
            );
        }
        pb.set_message(what);
        pb
    }
}

#[derive(Debug, serde::Serialize)]
pub struct PushSummary {
    pub files: u64,
    pub bytes_scanned: u64,
    pub bytes_hashed: u64,
    pub chunks: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    pub bytes_deduplicated: u64,
    pub committed: u64,
    pub deleted: u64,
    pub conflicts: u64,
    /// Changes refused because the namespace's quota would be exceeded (exit code 12).
    pub quota_exceeded: u64,
    /// Chunks the server had lost (scrub) that this push uploaded again from local files.
    pub chunks_healed: u64,
    pub seconds: f64,
    pub errors: Vec<String>,
    /// Deletions the delete guard held (nothing deleted on the server; `--allow-deletes`).
    pub held_deletes: u64,
    /// Paths that were pushed but that some devices cannot hold as named (Windows-invalid names,
    /// case twins): not errors, nothing was left out.
    pub warnings: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct PullSummary {
    pub files: u64,
    pub files_written: u64,
    pub chunks_downloaded: u64,
    pub bytes_downloaded: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub seconds: f64,
    pub errors: Vec<String>,
    /// Deletions the delete guard held (nothing deleted here; `--allow-deletes`).
    pub held_deletes: u64,
    /// Case twins written under another name here, and names some devices cannot hold.
    pub warnings: Vec<String>,
}

/// The folder's canonical root; it must exist and be a directory.
pub(crate) fn canonical_root(dir: &Path) -> Result<PathBuf> {
    let root = dir.canonicalize().map_err(|e| {
        Error::Config(format!(
            "folder {} cannot be used: {e} — create it first or check the path",
            dir.display()
        ))
    })?;
    if !root.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    Ok(root)
}

/// Connects and reads the namespace and the remote tree. Entries with unusable paths are reported.
pub(crate) async fn open_remote(
    cfg: &Config,
    namespace: &str,
) -> Result<(
    Remote,
    cairn_proto::pb::NamespaceInfo,
    RemoteTree,
    Seq,
    Vec<Error>,
)> {
    let remote = Remote::connect(cfg, namespace).await?;
    let info = remote.get_namespace().await?;
    let l = list(&remote, None).await?;
    Ok((remote, info, l.changed, l.head, l.errors))
}

/// The server's tree as listed.
struct Listing {
    /// Without `leave_out`, the whole tree; with it, the entries not as synced there (see
    /// [`crate::delta`]).
    changed: RemoteTree,
    /// With `leave_out`: its paths the server's tree lacks (or sent unusable), sorted.
    absent: Vec<String>,
    /// With `leave_out`: the synced entries of the paths in `changed` and `absent`.
    synced: SyncedTree,
    head: Seq,
    /// Entries with unusable paths, left out.
    errors: Vec<Error>,
    /// Live files in the whole tree.
    files: u64,
}

/// Lists the server's tree and the log head. With `leave_out`, the synced rows are read beside
/// the listing (both in byte order) and entries exactly as synced are left out
/// ([`Listing::changed`] is a delta over the synced tree).
async fn list(remote: &Remote, leave_out: Option<SyncedReader>) -> Result<Listing> {
    let mut entries = Vec::new();
    let mut merging = match leave_out {
        Some(reader) => Some((Merge::new(Order::Bytes), reader.pages()?)),
        None => None,
    };
    let mut touched = SyncedTree::new();
    // The state DB failed while a page was merged (the callback cannot return it).
    let mut failed = None;
    let mut errors = Vec::new();
    let mut files = 0;
    let head = remote
        .list_tree(|page| {
            for e in page {
                if let Err(err) = validate_path(&e.path) {
                    errors.push(Error::path(
                        &e.path,
                        format!("the server sent a path that is refused here: {err}"),
                    ));
                    continue;
                }
                let Some(r) = RemoteEntry::from_pb(&e) else {
                    errors.push(Error::path(
                        &e.path,
                        "the server sent an entry this client cannot read",
                    ));
                    continue;
                };
                files += u64::from(matches!(r.content, Some(Content::File { .. })));
                let synced = match &mut merging {
                    Some((merge, rows)) => merge.meet(&e.path, true, rows).unwrap_or_else(|err| {
                        failed.get_or_insert(err);
                        None
                    }),
                    None => None,
                };
                if !synced.as_ref().is_some_and(|s| r.is_as_synced(s)) {
                    touched.extend(synced.map(|s| (e.path.clone(), s)));
                    entries.push((e.path, r));
                }
            }
        })
        .await?;
    if let Some(err) = failed {
        return Err(err);
    }
    let mut absent = Vec::new();
    if let Some((merge, mut rows)) = merging {
        absent = merge.finish(&mut rows)?.absent_into(&mut touched);
    }
    Ok(Listing {
        // Built in one go from the whole list: a map filled in bulk has full nodes (one filled
        // by inserting in order leaves them about half empty), so it takes less memory.
        changed: entries.into_iter().collect(),
        absent,
        synced: touched,
        head,
        errors,
        files,
    })
}

/// The portability warnings for every path of a side given as a delta over the synced tree
/// (those `keep` keeps), with the synced paths read from the state DB in byte order.
fn warnings_over<E>(
    reader: &SyncedReader,
    (changed, absent): (&BTreeMap<String, E>, &[String]),
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Error>> {
    reader.rows(Order::Bytes, |rows| {
        let mut failed = None;
        let mut out = portability::Warnings::default();
        {
            let synced = std::iter::from_fn(|| {
                rows.next_row()
                    .unwrap_or_else(|e| {
                        failed = Some(e);
                        None
                    })
                    .map(|(p, _)| p)
            });
            for p in delta::paths(synced, changed, absent).filter(|p| keep(p)) {
                out.add(&p);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out.finish()),
        }
    })?
}

pub(crate) fn params_of(info: &cairn_proto::pb::NamespaceInfo) -> Result<ChunkParams> {
    let p = ChunkParams {
        min: info.chunk_min,
        avg: info.chunk_avg,
        max: info.chunk_max,
    };
    if p.min == 0 || p.min > p.avg || p.avg > p.max {
        return Err(Error::Protocol(format!(
            "namespace {} has unusable chunk parameters {p:?}",
            info.name
        )));
    }
    Ok(p)
}

/// Keeps ops whose local side the scan saw: an unreadable path is not a deleted one.
pub(crate) fn known_locally(op: &Op, scanned: &crate::scanner::Scanned) -> bool {
    let p = op.path();
    let under_skipped = scanned.skipped.iter().any(|s| {
        p == s
            || p.strip_prefix(s.as_str())
                .is_some_and(|r| r.starts_with('/'))
    });
    let unsure_delete =
        scanned.incomplete && matches!(op, Op::DeleteRemote { .. } | Op::ForgetSynced { .. });
    !(under_skipped || unsure_delete)
}

pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What a one-shot push or pull plans from: the three trees restricted to the paths where the
/// disk or the server differs from the synced tree (see [`crate::delta`]).
struct Sides {
    state: State,
    folder: FolderId,
    synced: SyncedTree,
    scanned: Scanned,
    remote_tree: RemoteTree,
    head: Seq,
    /// The listing's and the scan's per-path errors.
    errors: Vec<Error>,
    /// What the whole trees said: the synced files (for the delete guard), the live files on the
    /// server, and the portability warnings for every path of the side being written.
    synced_files: u64,
    remote_files: u64,
    warnings: Vec<Error>,
}

/// The side a one-shot command writes to, whose paths it warns about (names a Windows device
/// could not hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writes {
    Server,
    Disk,
}

/// Scans `root` against its synced tree while the server's tree is listed: one waits on the
/// disk, the other on the server. Neither reads the other, so this is the sequential order's
/// result, sooner. Both keep only what differs from the synced tree, and the three trees are
/// then cut down to the paths where something does (see [`crate::delta`]).
async fn scan_beside_listing(
    cfg: &Config,
    remote: &Remote,
    root: &Path,
    namespace: &str,
    params: ChunkParams,
    (bar, writes): (ProgressBar, Writes),
) -> Result<Sides> {
    let state = State::open(&cfg.dirs.state_db())?;
    let folder = state.folder(root, namespace, &cfg.server)?;
    let listing = tokio::spawn({
        let (remote, synced) = (remote.clone(), state.synced_reader(folder)?);
        async move { list(&remote, Some(synced)).await }
    });
    let scanned = match state.synced_reader(folder) {
        Ok(synced) => scan_changes(root, synced, params, workers(), &bar).await,
        Err(e) => Err(e),
    };
    bar.finish_and_clear();
    let mut scanned = match scanned {
        Ok(s) => s,
        Err(e) => {
            listing.abort();
            return Err(e);
        }
    };
    let mut listing = listing
        .await
        .map_err(|e| Error::Protocol(format!("listing the server's tree failed: {e}")))??;
    let mut errors = std::mem::take(&mut listing.errors);
    errors.append(&mut scanned.errors);
    let reader = state.synced_reader(folder)?;
    let warnings = match writes {
        // What a push sends: every local path.
        Writes::Server => warnings_over(&reader, (&scanned.tree, &scanned.absent), |_| true)?,
        // What a pull writes: every live remote path.
        Writes::Disk => {
            let changed = &listing.changed;
            let live = |p: &str| changed.get(p).is_none_or(|e| e.content.is_some());
            warnings_over(&reader, (changed, &listing.absent), live)?
        }
    };
    drop(reader);
    let synced_files = scanned.synced_files;
    let mut synced = std::mem::take(&mut scanned.synced);
    synced.extend(std::mem::take(&mut listing.synced));
    let mut remote_tree = listing.changed;
    let synced = delta::restrict(
        &synced,
        (&mut scanned.tree, &scanned.absent),
        (&mut remote_tree, &listing.absent),
    );
    Ok(Sides {
        state,
        folder,
        synced,
        scanned,
        remote_tree,
        head: listing.head,
        errors,
        synced_files,
        remote_files: listing.files,
        warnings,
    })
}

pub async fn push(
    cfg: &Config,
    dir: &Path,
    namespace: &str,
    ui: Ui,
    allow_deletes: bool,
) -> Result<PushSummary> {
    let started = Instant::now();
    let root = canonical_root(dir)?;
    let remote = Remote::connect(cfg, namespace).await?;
    let info = remote.get_namespace().await?;
    let params = params_of(&info)?;
    let bar = (ui.bar("hashing"), Writes::Server);
    let Sides {
        mut state,
        folder,
        mut synced,
        mut scanned,
        remote_tree,
        head,
        mut errors,
        synced_files,
        remote_files: _,
        warnings,
    } = scan_beside_listing(cfg, &remote, &root, namespace, params, bar).await?;
    let trees = (&scanned.tree, &remote_tree);
    reconcile(&remote, &mut state, folder, trees, &mut synced).await?;
    let ops: Vec<Op> = plan(&scanned.tree, &remote_tree, &synced)
        .into_iter()
        .filter(Op::is_upload_side)
        .filter(|op| known_locally(op, &scanned))
        .collect();
    let trees = (&scanned.tree, &remote_tree, &synced);
    let guard = (synced_files, &cfg.delete_guard);
    let (ops, held) = guard::one_shot(ops, trees, guard, allow_deletes);
    if let Some(h) = &held {
        errors.push(held_error(h, cfg, "push", dir, namespace));
    }
    // The plan is made: what follows reads the local tree only (and the state DB).
    drop((remote_tree, synced));
    tracing::debug!(ops = ops.len(), "push plan");
    let up_bar = ui.bar("uploading");
    let mut exec = Push {
        remote: &remote,
        root: &root,
        params,
        pack_threshold: info.pack_threshold.max(1),
        pack_target: info.pack_target.max(1),
        state: &mut state,
        folder,
        progress: &up_bar,
    };
    let mut stats = exec.run(&ops, &mut scanned).await?;
    up_bar.finish_and_clear();
    let healed = match crate::heal::heal(&remote, &root, || state.synced(folder), params).await {
        Ok(h) => h.healed,
        Err(e) => {
            errors.push(Error::path(
                "(healing lost chunks)",
                format!("{e}; the next push tries again"),
            ));
            0
        }
    };
    state.set_device_and_cursor(folder, &info.device, head.max(state.cursor(folder)?))?;
    errors.append(&mut stats.errors);
    // A one-shot push does not pull: what waits for one is this run's failure to report.
    errors.append(&mut stats.waiting);
    Ok(PushSummary {
        files: scanned.files,
        bytes_scanned: scanned.bytes_scanned,
        bytes_hashed: scanned.bytes_hashed,
        chunks: stats.chunks,
        chunks_uploaded: stats.chunks_uploaded,
        bytes_uploaded: stats.bytes_uploaded,
        bytes_deduplicated: stats.bytes_deduplicated,
        committed: stats.committed,
        deleted: stats.deleted,
        conflicts: stats.conflicts,
        quota_exceeded: stats.quota_exceeded,
        chunks_healed: healed,
        seconds: started.elapsed().as_secs_f64(),
        errors: errors.iter().map(ToString::to_string).collect(),
        held_deletes: held.map_or(0, |h| h.ops),
        warnings: warnings.iter().map(ToString::to_string).collect(),
    })
}

/// What the one-shot commands say when the delete guard held deletions.
fn held_error(h: &Held, cfg: &Config, verb: &str, dir: &Path, namespace: &str) -> Error {
    let kept = if verb == "push" {
        "on the server"
    } else {
        "here"
    };
    Error::Config(format!(
        "{}; nothing was deleted {kept} — if they are meant, run `cairn {verb} {} --namespace {namespace} --allow-deletes`",
        h.summary(&cfg.delete_guard),
        dir.display()
    ))
}

pub async fn pull(
    cfg: &Config,
    dir: &Path,
    namespace: &str,
    ui: Ui,
    allow_deletes: bool,
) -> Result<PullSummary> {
    let started = Instant::now();
    let remote = Remote::connect(cfg, namespace).await?;
    let info = remote.get_namespace().await?;
    let params = params_of(&info)?;
    // Like `rclone copy` or `git clone`: a missing target folder is created, but only once the
    // server has answered, and removed again if the listing then fails: a failed pull leaves
    // nothing behind.
    let created = !dir.exists();
    if created {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create folder {}: {e} — check the path and permissions",
                dir.display()
            ))
        })?;
    }
    let root = canonical_root(dir)?;
    let bar = (ui.bar("scanning"), Writes::Disk);
    let sides = scan_beside_listing(cfg, &remote, &root, namespace, params, bar);
    let Sides {
        mut state,
        folder,
        mut synced,
        scanned,
        remote_tree,
        head,
        mut errors,
        synced_files,
        remote_files,
        warnings,
    } = match sides.await {
        Ok(s) => s,
        Err(e) => {
            if created {
                // Only an empty folder goes: whatever else appeared in it stays.
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    let trees = (&scanned.tree, &remote_tree);
    reconcile(&remote, &mut state, folder, trees, &mut synced).await?;
    // Both sides changed: pull keeps the local version as a conflict copy and takes the remote one.
    let ops: Vec<Op> = plan(&scanned.tree, &remote_tree, &synced)
        .into_iter()
        .filter_map(|op| match op {
            Op::Upload {
                path,
                conflict: true,
                ..
            } => {
                let r = remote_tree.get(&path)?;
                let version = r.version;
                match r.content {
                    Some(crate::tree::Content::Dir) => Some(Op::MkdirLocal { path, version }),
                    Some(_) => Some(Op::Download {
                        path,
                        version,
                        conflict: true,
                    }),
                    None => None,
                }
            }
            op if op.is_download_side() && known_locally(&op, &scanned) => Some(op),
            _ => None,
        })
        .collect();
    let trees = (&scanned.tree, &remote_tree, &synced);
    let guard = (synced_files, &cfg.delete_guard);
    let (ops, held) = guard::one_shot(ops, trees, guard, allow_deletes);
    if let Some(h) = &held {
        errors.push(held_error(h, cfg, "pull", dir, namespace));
    }
    tracing::debug!(ops = ops.len(), "pull plan");
    let bar = ui.bar("downloading");
    let device = if info.device.is_empty() {
        "this device".to_owned()
    } else {
        info.device.clone()
    };
    let mut exec = Pull {
        remote: &remote,
        root: &root,
        local: &scanned.tree,
        device: &device,
        state: &mut state,
        folder,
        progress: &bar,
    };
    let mut stats = exec.run(&ops, &remote_tree, &synced).await?;
    bar.finish_and_clear();
    state.set_device_and_cursor(folder, &info.device, head)?;
    errors.append(&mut stats.errors);
    Ok(PullSummary {
        files: remote_files,
        files_written: stats.files_written,
        chunks_downloaded: stats.chunks_downloaded,
        bytes_downloaded: stats.bytes_downloaded,
        deleted: stats.deleted,
        conflicts: stats.conflicts,
        seconds: started.elapsed().as_secs_f64(),
        errors: errors.iter().map(ToString::to_string).collect(),
        held_deletes: held.map_or(0, |h| h.ops),
        warnings: stats
            .renamed
            .iter()
            .chain(&warnings)
            .map(ToString::to_string)
            .collect(),
    })
}
