//! One folder's control task: it alone owns the folder's remote tree, cursor and state DB
//! connection. Each round drains the log, scans, plans with all three trees, executes both sides,
//! and repeats until the plan is empty.
//!
//! Between rounds the task keeps the local and synced trees in memory ([`FolderCache`]). The first
//! round, the periodic safety-net scan, a watcher overflow and any failed round scan the whole
//! folder and rebuild them. Otherwise a round scans only the paths the watcher reported (and what
//! the last round touched), and plans only the paths that changed on either side: a one-file edit
//! costs work for that file, not for the folder.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use cairn_proto::{Seq, pb};
use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::cache::{FolderCache, problems_of, touches_ignore_rules};
use crate::chunker::ChunkParams;
use crate::commands::{known_locally, open_remote, params_of, workers};
use crate::config::Config;
use crate::download::Pull;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::ignore_rules::IgnoreRules;
use crate::planner::{Op, moves, plan};
use crate::reconcile::reconcile;
use crate::remote::Remote;
use crate::scanner::{MARKER, Region, Scanned, scan, scan_region};
use crate::state::{FolderId, State};
use crate::status::{FolderStatus, PathError, SyncState};
use crate::tree::{Content, RemoteEntry, RemoteTree, SyncedTree};
use crate::upload::Push;
use crate::watch::{Trigger, follow_remote, jitter, watch_local};

mod held;
use held::{ALLOWANCE_POLL, Guard};

/// Rounds per wake-up before waiting for the next one (a plan that never empties, e.g. a file
/// that keeps changing while read, must not spin).
const MAX_ROUNDS: usize = 8;
/// A round that left per-path errors is retried after this long.
const RETRY_AFTER: Duration = Duration::from_millis(1000);
/// Periodic scans when the watcher is unavailable.
const FALLBACK_SCAN: Duration = Duration::from_secs(2);
const CHANGES_PAGE: u32 = 1000;

/// One synced folder, as the daemon runs it.
pub struct FolderSync {
    pub root: PathBuf,
    pub namespace: String,
    pub folder: FolderId,
    pub events: Events,
    pub scan_interval: Duration,
    state: State,
    remote: Remote,
    info: pb::NamespaceInfo,
    params: ChunkParams,
    remote_tree: RemoteTree,
    /// The log position `remote_tree` reflects; persisted once a round applied it.
    cursor: Seq,
    /// The local and synced trees between rounds; `None`: the next round scans everything.
    cache: Option<FolderCache>,
    /// The next round must scan the whole folder (periodic safety net, lost watch events).
    full_needed: bool,
    /// Root-relative paths to scan again in the next round (watch events, what rounds touched).
    dirty: BTreeSet<String>,
    /// Paths the next round must plan even if nothing about them is seen to change: what the
    /// last round worked on (outside these, the last plan was empty).
    pending: BTreeSet<String>,
    /// The mass-delete guard: what it holds, what the user allowed.
    guard: Guard,
    /// Names in the remote tree some devices cannot hold (`None`: recompute, the tree changed).
    warnings: Option<Vec<PathError>>,
    /// Case twins this folder keeps under another name (the latest, bounded).
    renamed: Vec<PathError>,
    /// The per-path errors of the last round that had any, until a round ends without: shown
    /// while the retries run.
    failing: Vec<PathError>,
}

/// What one round did.
pub struct Round {
    pub ops: usize,
    pub errors: Vec<Error>,
    /// Paths the server refused because a folder above them was replaced by a file elsewhere
    /// after this round read the log ([`crate::upload::PushStats::waiting`]): the next round's
    /// pull resolves them, so they are errors only if they outlast the rounds of a wake-up.
    pub waiting: Vec<Error>,
    /// Whether the round scanned the whole folder.
    pub full: bool,
    /// Entries the round's scan stat'ed.
    pub stat_calls: u64,
    /// Paths the round planned.
    pub planned: usize,
    /// Deletions the delete guard held back, or that wait a moment to settle (not in `ops`).
    pub held: usize,
}

impl FolderSync {
    /// Connects and pages through the namespace's tree (the starting remote tree).
    pub async fn open(
        cfg: &Config,
        folder: FolderId,
        root: PathBuf,
        namespace: String,
        events: Events,
    ) -> Result<Self> {
        let state = State::open(&cfg.dirs.state_db())?;
        let (remote, info, remote_tree, head, errors) = open_remote(cfg, &namespace).await?;
        for e in errors {
            events.emit("error", json!({ "folder": root, "error": e.to_string() }));
        }
        let params = params_of(&info)?;
        let mut state = state;
        state.record_changes();
        let guard = Guard::new(cfg.delete_guard, &state, folder)?;
        Ok(FolderSync {
            root,
            namespace,
            folder,
            events,
            scan_interval: cfg.scan_interval,
            state,
            remote,
            info,
            params,
            remote_tree,
            cursor: head,
            cache: None,
            full_needed: true,
            dirty: BTreeSet::new(),
            pending: BTreeSet::new(),
            guard,
            warnings: None,
            renamed: Vec::new(),
            failing: Vec::new(),
        })
    }

    /// Marks root-relative paths as changed on disk: the next round scans them again.
    pub fn touch(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for p in paths {
            let p = p.to_string_lossy().trim_matches('/').to_owned();
            if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                self.full_needed = true;
            } else {
                self.dirty.insert(p);
            }
        }
    }

    /// The next round scans the whole folder (what a watcher overflow or the periodic scan asks).
    pub fn rescan(&mut self) {
        self.full_needed = true;
    }

    /// Runs until `shutdown` turns true. A round in progress finishes first (every local write is
    /// temp-then-rename, every commit one transaction), so nothing is left half-applied.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(follow_remote(self.remote.clone(), self.cursor, tx.clone()));
        let mut watch_failed = None;
        let _watcher = match watch_local(&self.root, tx.clone()) {
            Ok(w) => Some(w),
            Err(detail) => {
                self.events
                    .emit("error", json!({ "folder": self.root, "error": detail }));
                watch_failed = Some(detail);
                None
            }
        };
        let mut next_scan = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut offline_backoff = Duration::from_millis(200);
        let mut first = true;
        let mut allowance_poll = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Only while deletions are held: has `cairn resume --allow-deletes` let them through?
            if self.guard.holding() && allowance_poll <= Instant::now() {
                allowance_poll = Instant::now() + ALLOWANCE_POLL;
                match self.guard.allowance_arrived(&self.state, self.folder) {
                    Ok(true) => retry_at = Some(Instant::now()),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot read the delete guard's allowance: {e}"),
                }
            }
            let due = retry_at.is_some_and(|t| t <= Instant::now()) || next_scan <= Instant::now();
            if due {
                retry_at = None;
                let interval = if watch_failed.is_some() {
                    self.scan_interval.min(FALLBACK_SCAN)
                } else {
                    self.scan_interval
                };
                // The safety-net scan runs on its own clock: wake-ups for watch events (partial
                // rounds) must not keep postponing it.
                if next_scan <= Instant::now() {
                    self.full_needed = true;
                    next_scan = Instant::now() + interval;
                }
                match self.sync_until_quiet().await {
                    Ok((errors, _)) if self.guard.holding() => {
                        offline_backoff = Duration::from_millis(200);
                        let detail = self.guard.detail(&self.root).unwrap_or_default();
                        self.report(SyncState::Paused, &errors, detail);
                        self.events.emit("idle", json!({ "folder": self.root, "cursor": self.cursor.0, "held": true, "errors": errors.len() }));
                        if !errors.is_empty() {
                            retry_at = Some(Instant::now() + RETRY_AFTER);
                        }
                        allowance_poll = Instant::now();
                    }
                    Ok((errors, worked)) if errors.is_empty() => {
                        offline_backoff = Duration::from_millis(200);
                        let detail = watch_failed.clone().unwrap_or_default();
                        // A few deletions may still be settling (they run within a second).
                        let state = if self.guard.settle_deadline().is_some() {
                            SyncState::Syncing
                        } else {
                            SyncState::UpToDate
                        };
                        self.report(state, &[], detail);
                        if worked || first {
                            self.events.emit(
                                "idle",
                                json!({ "folder": self.root, "cursor": self.cursor.0 }),
                            );
                        }
                        first = false;
                    }
                    Ok((errors, _)) => {
                        offline_backoff = Duration::from_millis(200);
                        self.report(
                            SyncState::Error,
                            &errors,
                            "some paths could not be synced; retrying".into(),
                        );
                        self.events.emit("idle", json!({ "folder": self.root, "cursor": self.cursor.0, "errors": errors.len() }));
                        retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                    Err(Paused(why)) => {
                        self.report(SyncState::Paused, &[], why);
                        retry_at = Some(Instant::now() + FALLBACK_SCAN);
                    }
                    Err(Failed(e)) => {
                        let state = if e.is_transient() {
                            SyncState::Offline
                        } else {
                            SyncState::Error
                        };
                        self.events.emit(
                            "error",
                            json!({ "folder": self.root, "error": e.to_string() }),
                        );
                        self.report(state, &[], e.to_string());
                        retry_at = Some(Instant::now() + jitter(offline_backoff));
                        offline_backoff = (offline_backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if let Some(t) = self.guard.settle_deadline() {
                retry_at = Some(retry_at.map_or(t, |r| r.min(t)));
            }
            let mut wake = retry_at.map_or(next_scan, |t| t.min(next_scan));
            if self.guard.holding() {
                wake = wake.min(allowance_poll);
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                t = rx.recv() => {
                    let mut t = t;
                    // Fold every queued wake-up into this one.
                    while let Some(trigger) = t {
                        match trigger {
                            Trigger::WatchFailed(d) => {
                                self.events.emit("error", json!({ "folder": self.root, "error": d }));
                                watch_failed = Some(d);
                                // Periodic full scans from now on, starting with one now.
                                self.full_needed = true;
                                next_scan = Instant::now();
                            }
                            Trigger::RemoteDown(d) => {
                                // Say so at once: the round this wakes may wait a long time on
                                // a dead link before its own error arrives.
                                tracing::info!("{}: {d}", self.root.display());
                                self.report(SyncState::Offline, &[], d);
                            }
                            Trigger::Local(paths) => self.touch(paths),
                            Trigger::Rescan => self.full_needed = true,
                            Trigger::Remote => {}
                        }
                        t = rx.try_recv().ok();
                    }
                    retry_at = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        follower.abort();
        self.events.emit("stopped", json!({ "folder": self.root }));
    }

    fn report(&mut self, state: SyncState, errors: &[Error], detail: String) {
        let errors: Vec<PathError> = errors.iter().map(path_error).collect();
        match state {
            SyncState::Error => self.failing = errors.clone(),
            SyncState::UpToDate => self.failing.clear(),
            _ => {}
        }
        let remote = &self.remote_tree;
        let names = self.warnings.get_or_insert_with(|| {
            let live = remote.iter().filter(|(_, e)| e.content.is_some());
            crate::portability::warnings(live.map(|(p, _)| p.as_str()))
                .iter()
                .map(warning)
                .collect()
        });
        let s = FolderStatus {
            state,
            files_left: 0,
            bytes_left: 0,
            errors,
            warnings: self.renamed.iter().chain(names.iter()).cloned().collect(),
            detail,
        };
        if let Err(e) = self.state.write_status(self.folder, &s) {
            tracing::warn!("cannot record the folder's status: {e}");
        }
    }

    /// Rounds until the plan is empty (or `MAX_ROUNDS`); returns the last round's per-path errors
    /// and whether any round had work.
    async fn sync_until_quiet(&mut self) -> std::result::Result<(Vec<Error>, bool), Stop> {
        let mut last = Vec::new();
        let mut worked = false;
        for _ in 0..MAX_ROUNDS {
            let round = self.round().await?;
            if round.ops == 0 {
                // A quiet round after refusals did not take them up: they are errors now.
                let mut errors = round.errors;
                errors.extend(last);
                return Ok((errors, worked));
            }
            worked = true;
            // Errors go to the status now: a path that fails (the store down, say) would fail
            // again in each of the rounds left, each after its retries, with nothing shown.
            if !round.errors.is_empty() {
                let mut errors = round.errors;
                errors.extend(round.waiting);
                return Ok((errors, worked));
            }
            // Refused under a folder replaced elsewhere: the next round's pull keeps the folder
            // as a conflict copy and its contents go up from there, so it runs now, not after
            // the error retry delay, and nothing is shown unless they are still refused after
            // the last round of this wake-up.
            last = round.waiting;
        }
        Ok((last, worked))
    }

    /// Brings `remote_tree` up to the log head (our own commits included); the paths the log
    /// touched become pending (so even a drain that fails half-way loses none of them).
    async fn drain_changes(&mut self) -> Result<()> {
        loop {
            let r = self
                .remote
                .list_changes(self.cursor, CHANGES_PAGE, 0)
                .await?;
            for e in &r.entries {
                if let Err(why) = cairn_proto::validate_path(&e.path) {
                    tracing::warn!("the server's log names a path refused here: {why}");
                    continue;
                }
                self.pending.insert(e.path.clone());
                self.warnings = None;
                match RemoteEntry::from_pb(e) {
                    Some(entry) => {
                        self.remote_tree.insert(e.path.clone(), entry);
                    }
                    None => tracing::warn!(
                        "{}: the server sent an entry this client cannot read",
                        e.path
                    ),
                }
            }
            self.cursor = Seq(r.cursor.max(self.cursor.0));
            if !r.more || r.entries.is_empty() {
                return Ok(());
            }
        }
    }

    /// One scan → plan → execute pass: over the whole folder when the cache is missing or a full
    /// scan is due, otherwise over what changed (watch events, log entries, the last round's work).
    pub async fn round(&mut self) -> std::result::Result<Round, Stop> {
        if let Err(e) = check_root(&self.root) {
            self.cache = None;
            return Err(e);
        }
        self.drain_changes().await?;
        // Whatever an earlier, failed round left in the journal is covered by the full scan that
        // follows a failure.
        self.state.take_changes();
        let full = self.cache.is_none() || self.full_needed;
        let res = if full {
            self.full_round().await
        } else {
            self.partial_round().await
        };
        if res.is_err() {
            // A round that stopped half-way may have written anything: start over from disk.
            self.cache = None;
            self.full_needed = true;
        }
        res
    }

    /// Scans the whole folder, reloads the synced tree and plans over everything.
    async fn full_round(&mut self) -> std::result::Result<Round, Stop> {
        self.cache = None;
        self.full_needed = false;
        self.dirty.clear();
        self.pending.clear();
        let db_version = self.state.data_version()?;
        let mut synced_all = self.state.synced(self.folder)?;
        // Chunks the server lost (scrub) that files here hold unchanged go up again. Only
        // devices that may upload ask; a failure waits for the next full scan.
        let may_upload = !matches!(pb::Role::try_from(self.info.role), Ok(pb::Role::View));
        if may_upload {
            match crate::heal::heal(&self.remote, &self.root, || Ok(&synced_all), self.params).await
            {
                Ok(h) if h.healed > 0 => {
                    tracing::info!(chunks = h.healed, "uploaded chunks the server had lost")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not heal lost chunks; next full scan retries")
                }
            }
        }
        let mut scanned = scan(
            &self.root,
            &synced_all,
            self.params,
            workers(),
            &ProgressBar::hidden(),
        )
        .await?;
        let stat_calls = scanned.stat_calls;
        remove_temps(std::mem::take(&mut scanned.temps));
        let trees = (&scanned.tree, &self.remote_tree);
        // No synced record of a path the server has moved on from (a lost state database):
        // match it against the server's history before planning.
        reconcile(
            &self.remote,
            &mut self.state,
            self.folder,
            trees,
            &mut synced_all,
        )
        .await?;
        let rules = IgnoreRules::load(&self.root, &scanned.tree);
        let mut remote = self.remote_tree.clone();
        let mut synced = synced_all.clone();
        let root = self.root.clone();
        moves::filter_ignored(&mut remote, &mut synced, |p, d| {
            rules.is_ignored(&root, p, d)
        });
        let errors = if scanned.incomplete {
            std::mem::take(&mut scanned.errors)
        } else {
            let problems = problems_of(&self.root, std::mem::take(&mut scanned.errors));
            let planned = scanned.tree.len();
            let (round, ops, scanned) = self
                .execute(
                    scanned,
                    (remote, synced, &synced_all),
                    Vec::new(),
                    true,
                    stat_calls,
                    planned,
                )
                .await?;
            let mut cache =
                FolderCache::new(&self.root, scanned, synced_all, rules, problems, db_version);
            let touched = cache.apply_synced(self.folder, self.state.take_changes());
            self.cache = Some(cache);
            self.after_round(&ops, touched);
            return Ok(round);
        };
        // A folder could not be read: run this round, keep no cache (the next one scans again).
        let planned = scanned.tree.len();
        let (round, _, _) = self
            .execute(
                scanned,
                (remote, synced, &synced_all),
                errors,
                true,
                stat_calls,
                planned,
            )
            .await?;
        self.full_needed = true;
        Ok(round)
    }

    /// Scans only the dirty paths, patches the cached local tree, plans over the paths that
    /// changed on either side or are still pending.
    async fn partial_round(&mut self) -> std::result::Result<Round, Stop> {
        let mut cache = self.cache.take().expect("partial rounds run with a cache");
        let mut paths = std::mem::take(&mut self.pending);
        // Another connection wrote to the state DB (e.g. a `cairn push` of this folder).
        let db_version = self.state.data_version()?;
        if db_version != cache.db_version {
            let fresh = self.state.synced(self.folder)?;
            paths.append(&mut cache.reload_synced(fresh, db_version));
        }
        let region = Region::new(std::mem::take(&mut self.dirty));
        let mut stat_calls = 0;
        let mut chunks = Default::default();
        if !region.is_empty() {
            let mut part = scan_region(
                &self.root,
                Some(&region),
                &cache.synced,
                self.params,
                workers(),
                &ProgressBar::hidden(),
            )
            .await?;
            stat_calls = part.stat_calls;
            remove_temps(std::mem::take(&mut part.temps));
            let changed = if part.incomplete {
                None
            } else {
                Some(cache.merge(&self.root, &region, &mut part))
            };
            match changed {
                Some(changed) if !touches_ignore_rules(&changed) => {
                    paths.extend(changed);
                    chunks = part.chunks;
                }
                // A directory could not be read, or the ignore rules changed: scan everything.
                _ => return self.full_round().await,
            }
        }
        // The round's view: the planned paths only (the planner and pairing look at nothing else).
        let mut scanned = Scanned {
            skipped: cache.skipped.clone(),
            chunks,
            ..Default::default()
        };
        let mut remote = RemoteTree::new();
        let mut synced = SyncedTree::new();
        for p in &paths {
            if let Some(e) = cache.local.get(p) {
                scanned.tree.insert(p.clone(), e.clone());
                scanned
                    .disk
                    .insert(p.clone(), cache.disk_path(&self.root, p));
            }
            if let Some(e) = self.remote_tree.get(p) {
                remote.insert(p.clone(), e.clone());
            }
            if let Some(e) = cache.synced.get(p) {
                synced.insert(p.clone(), e.clone());
            }
        }
        scanned.chunks.retain(|p, _| scanned.tree.contains_key(p));
        let root = self.root.clone();
        moves::filter_ignored(&mut remote, &mut synced, |p, d| {
            cache.rules.is_ignored(&root, p, d)
        });
        let errors = cache.problem_errors();
        let res = self
            .execute(
                scanned,
                (remote, synced, &cache.synced),
                errors,
                false,
                stat_calls,
                paths.len(),
            )
            .await;
        let touched = cache.apply_synced(self.folder, self.state.take_changes());
        self.cache = Some(cache);
        let (round, ops, _) = res?;
        self.after_round(&ops, touched);
        Ok(round)
    }

    /// What the next round must look at again: every path this round worked on (the executors
    /// changed the disk and the synced tree there), conflict copies' folders, unknown paths.
    fn after_round(&mut self, ops: &[Op], synced_touched: BTreeSet<String>) {
        let mut next = synced_touched;
        for op in ops {
            next.insert(op.path().to_owned());
            match op {
                // Conflict copies the executors made appear in the synced changes (push) or as
                // watch events for the rename (pull).
                Op::MoveRemote { from, .. } | Op::MoveLocal { from, .. } => {
                    next.insert(from.clone());
                }
                _ => {}
            }
        }
        if let Some(c) = &self.cache {
            next.extend(c.skipped.iter().cloned());
        }
        // Held and settling deletions are planned again every round, until they run or are undone.
        next.extend(self.guard.waiting_paths().cloned());
        self.dirty.extend(next.iter().cloned());
        self.pending = next;
    }

    /// Plans over the given trees (remote, synced, and the folder's whole synced tree, which the
    /// delete guard measures against) and executes both sides, less what the guard holds.
    async fn execute(
        &mut self,
        mut scanned: Scanned,
        (remote, synced, all_synced): (RemoteTree, SyncedTree, &SyncedTree),
        mut errors: Vec<Error>,
        full: bool,
        stat_calls: u64,
        planned: usize,
    ) -> std::result::Result<(Round, Vec<Op>, Scanned), Stop> {
        let ops: Vec<Op> = plan(&scanned.tree, &remote, &synced)
            .into_iter()
            .filter(|op| known_locally(op, &scanned))
            .collect();
        let ops = moves::pair(ops, &scanned.tree, &remote, &synced);
        let planned_ops = ops.len();
        let (ops, held_changed) = self.guard.hold(ops, &synced, all_synced);
        if held_changed {
            self.guard
                .persist(&self.state, self.folder, self.events, &self.root)?;
        }
        let held = planned_ops - ops.len();
        let work = ops
            .iter()
            .filter(|op| !matches!(op, Op::RecordSynced { .. } | Op::ForgetSynced { .. }))
            .count();
        let quiet = |errors| Round {
            ops: 0,
            errors,
            waiting: Vec::new(),
            full,
            stat_calls,
            planned,
            held,
        };
        if ops.is_empty() {
            self.guard.ran(&ops, &synced);
            self.persist_cursor()?;
            return Ok((quiet(errors), ops, scanned));
        }
        let (files_left, bytes_left) = left(&ops, &scanned, &remote);
        // A retry of paths that failed keeps showing why they failed until a round gets through.
        let status = if self.failing.is_empty() {
            FolderStatus {
                state: SyncState::Syncing,
                files_left,
                bytes_left,
                errors: Vec::new(),
                warnings: Vec::new(),
                detail: String::new(),
            }
        } else {
            FolderStatus {
                state: SyncState::Error,
                files_left,
                bytes_left,
                errors: self.failing.clone(),
                warnings: Vec::new(),
                detail: "some paths could not be synced; retrying".into(),
            }
        };
        self.state.write_status(self.folder, &status)?;
        let (up, down): (Vec<Op>, Vec<Op>) = ops.iter().cloned().partition(Op::is_upload_side);
        let bar = ProgressBar::hidden();
        let mut push = Push {
            remote: &self.remote,
            root: &self.root,
            params: self.params,
            pack_threshold: self.info.pack_threshold.max(1),
            pack_target: self.info.pack_target.max(1),
            state: &mut self.state,
            folder: self.folder,
            progress: &bar,
        };
        let mut ps = push.run(&up, &mut scanned).await?;
        let device = if self.info.device.is_empty() {
            "this device".to_owned()
        } else {
            self.info.device.clone()
        };
        let mut pull = Pull {
            remote: &self.remote,
            root: &self.root,
            local: &scanned.tree,
            device: &device,
            state: &mut self.state,
            folder: self.folder,
            progress: &bar,
        };
        let mut ds = pull.run(&down, &remote, &synced).await?;
        errors.append(&mut ps.errors);
        errors.append(&mut ds.errors);
        for r in std::mem::take(&mut ds.renamed) {
            self.events.emit(
                "warning",
                json!({ "folder": self.root, "path": path_error(&r).path, "warning": r.to_string() }),
            );
            self.renamed.push(warning(&r));
        }
        let excess = self.renamed.len().saturating_sub(MAX_RENAMED);
        self.renamed.drain(..excess);
        self.emit_round(&ops, &errors, &scanned, &remote);
        self.events.emit(
            "round",
            json!({
                "folder": self.root, "ops": work, "chunks_uploaded": ps.chunks_uploaded, "bytes_uploaded": ps.bytes_uploaded,
                "committed": ps.committed, "moved_remote": ps.moved, "moved_local": ds.moved, "files_written": ds.files_written,
                "chunks_downloaded": ds.chunks_downloaded, "bytes_downloaded": ds.bytes_downloaded,
                "conflicts": ps.conflicts + ds.conflicts, "errors": errors.len(),
                "full_scan": full, "stat_calls": stat_calls, "planned": planned, "held": held,
            }),
        );
        self.guard.ran(&ops, &synced);
        self.persist_cursor()?;
        // Bookkeeping-only rounds (RecordSynced) count as quiet once applied.
        let round = Round {
            ops: work,
            errors,
            waiting: std::mem::take(&mut ps.waiting),
            full,
            stat_calls,
            planned,
            held,
        };
        Ok((round, ops, scanned))
    }

    fn persist_cursor(&self) -> Result<()> {
        self.state
            .set_device_and_cursor(self.folder, &self.info.device, self.cursor)
    }

    /// One event per executed path (failed paths get an `error` event instead).
    fn emit_round(
        &self,
        ops: &[Op],
        errors: &[Error],
        scanned: &crate::scanner::Scanned,
        remote: &RemoteTree,
    ) {
        let failed: std::collections::HashSet<&str> = errors
            .iter()
            .filter_map(|e| match e {
                Error::Path { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        for op in ops {
            let path = op.path();
            if failed.contains(path) {
                continue;
            }
            let (kind, extra) = match op {
                Op::Upload { conflict: true, .. } => ("conflict", json!({ "side": "local" })),
                Op::Upload { .. } => (
                    "uploaded",
                    json!({ "size": scanned.tree.get(path).map_or(0, |e| e.stat.size) }),
                ),
                Op::Download { conflict: true, .. } => ("conflict", json!({ "side": "remote" })),
                Op::Download { .. } => (
                    "downloaded",
                    json!({ "size": remote.get(path).map_or(0, |e| e.size) }),
                ),
                Op::MkdirLocal { .. } => ("downloaded", json!({ "dir": true })),
                Op::DeleteRemote { .. } => ("deleted", json!({ "side": "remote" })),
                Op::DeleteLocal { .. } => ("deleted", json!({ "side": "local" })),
                Op::MoveRemote { from, .. } => ("moved", json!({ "from": from, "side": "remote" })),
                Op::MoveLocal { from, .. } => ("moved", json!({ "from": from, "side": "local" })),
                Op::RecordSynced { .. } | Op::ForgetSynced { .. } => continue,
            };
            let mut v = extra;
            v["folder"] = json!(self.root);
            v["path"] = json!(path);
            self.events.emit(kind, v);
        }
        for e in errors {
            self.events.emit(
                "error",
                json!({ "folder": self.root, "path": path_error(e).path, "error": e.to_string() }),
            );
        }
    }
}

/// Why a round stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The root or its marker is missing: sync nothing (above all, propagate no deletes).
    Paused(String),
    Failed(Error),
}
use Stop::{Failed, Paused};

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Failed(e)
    }
}

fn check_root(root: &std::path::Path) -> std::result::Result<(), Stop> {
    if !root.is_dir() {
        return Err(Paused(format!(
            "{} is missing (unmounted?); paused, nothing is deleted",
            root.display()
        )));
    }
    if std::fs::symlink_metadata(root.join(MARKER)).is_err() {
        return Err(Paused(format!(
            "the root marker {} is gone; paused, nothing is deleted — run `cairn add` again if this is the right folder",
            root.join(MARKER).display()
        )));
    }
    Ok(())
}

fn path_error(e: &Error) -> PathError {
    match e {
        Error::Path { path, reason } => PathError {
            path: path.clone(),
            reason: reason.clone(),
            warning: false,
        },
        other => PathError {
            path: String::new(),
            reason: other.to_string(),
            warning: false,
        },
    }
}

fn warning(e: &Error) -> PathError {
    PathError {
        warning: true,
        ..path_error(e)
    }
}

/// Case-twin renames `cairn status` keeps listing (the newest).
const MAX_RENAMED: usize = 100;

/// Files and bytes the plan still has to move.
fn left(ops: &[Op], scanned: &crate::scanner::Scanned, remote: &RemoteTree) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for op in ops {
        match op {
            Op::Upload { path, .. }
                if matches!(
                    scanned.tree.get(path).map(|e| &e.content),
                    Some(Content::File { .. })
                ) =>
            {
                files += 1;
                bytes += scanned.tree.get(path).map_or(0, |e| e.stat.size);
            }
            Op::Download { path, .. } => {
                files += 1;
                bytes += remote.get(path).map_or(0, |e| e.size);
            }
            _ => {}
        }
    }
    (files, bytes)
}

/// Temp files a scan passed: no write is in flight between rounds (this task is the folder's
/// one writer), so they are debris of a round that failed to clean up (a disk that failed the
/// unlink too) or of a killed run. The first round after a start scans the whole folder, so a
/// killed run's debris goes then.
fn remove_temps(paths: Vec<std::path::PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the stale temp file {}: {e}", p.display());
        }
    }
}
