//! A model device: a disk, a synced tree, a remote tree and a cursor, and one sync round as the
//! daemon runs it, each step a small model of the real code the planner's output meets:
//! - a round (`sync.rs::execute`): drain the log, scan, `plan`, `moves::pair`, push the upload
//!   side, then pull the download side against the plan's remote and synced trees;
//! - the scan (`scanner.rs`): every entry, a file's content id reused when size, mtime and inode
//!   match its synced entry;
//! - push (`upload.rs`): commits and `record_result`, the rename of a conflicted entry to the
//!   server's copy name (only if it is still what was scanned);
//! - pull (`download.rs`, `localfs.rs`): every precondition re-check (`current`), conflict copies
//!   made here, deletes that keep changed entries and non-empty folders, file downloads after
//!   everything else, fetched by (path, version).
//!
//! Not modelled: partial rounds, ignore rules, unreadable paths, failing requests, retention.

use cairn_proto::{Version, conflict_copy_name, validate_path};

use super::disk::{Disk, Node, at_or_under, file_no};
use super::scenario::Rng;
use super::server::{CommitRes, Server, Status};
use crate::planner::{Op, moves, plan};
use crate::tree::{
    Content, LocalEntry, LocalTree, RemoteTree, Stat, SyncedEntry, SyncedTree, is_exec,
};

/// A change to the state database's synced entries.
#[derive(Clone, Debug)]
enum Change {
    Put(String, SyncedEntry),
    Remove(String),
}

/// What a round planned, kept until its push and pull ran.
#[derive(Clone, Debug)]
pub struct Pending {
    pub ops: Vec<Op>,
    local: LocalTree,
    remote: RemoteTree,
    synced: SyncedTree,
    pushed: bool,
}

/// Known executor bugs the model reproduces when asked to. All off: the executors as they
/// should be (what the seeded tests check); on: as the code is today (the ignored tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// `upload.rs` `rename_to_copy` compares a symlink's scanned stat (size 0) with its `lstat`
    /// (size = target length): a conflicted symlink is never renamed to its copy, and every
    /// round commits one more copy of it.
    pub symlink_copy_rename: bool,
    /// `download.rs` records a `RecordSynced` path with the stat it has *now*, not the one the
    /// plan saw: a file written in between gets the old content id with the new stat, so the
    /// scanner never hashes it again and the next download overwrites it as unchanged.
    pub record_current_stat: bool,
    /// `download.rs` leaves a local move's source in place when the move falls back to a
    /// download, and does not fall back when the rename cannot be made: the folders the round
    /// deletes around the source stay ("not empty here") and go up again as new folders.
    pub keep_failed_move_source: bool,
}

#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub quirks: Quirks,
    pub disk: Disk,
    pub synced: SyncedTree,
    pub remote: RemoteTree,
    pub cursor: usize,
    pub pending: Option<Pending>,
    /// Conflict copies the pull made here, for the trace.
    kept: Vec<String>,
}

/// How the executors order a round's ops: as planned, or shuffled wherever they commute.
pub enum Order<'a> {
    Planned,
    Shuffled(&'a mut Rng),
}

/// Lines for the failure report (only collected when asked for).
pub type Trace = Option<Vec<String>>;

fn note(trace: &mut Trace, line: impl FnOnce() -> String) {
    if let Some(t) = trace {
        t.push(line());
    }
}

impl Device {
    pub fn new(name: String, quirks: Quirks) -> Self {
        Device {
            name,
            quirks,
            disk: Disk::default(),
            synced: SyncedTree::new(),
            remote: RemoteTree::new(),
            cursor: 0,
            pending: None,
            kept: Vec::new(),
        }
    }

    /// Drains the log, scans, plans and pairs moves (`FolderSync::round` up to `execute`).
    /// Returns the plan; a round whose push or pull did not run yet is dropped (as a failed
    /// round is: the next one starts from the disk).
    pub fn plan(&mut self, server: &Server) -> &[Op] {
        self.drain(server);
        let local = self.disk.scan(&self.synced);
        let ops = plan(&local, &self.remote, &self.synced);
        let ops = moves::pair(ops, &local, &self.remote, &self.synced);
        self.check_delta_plan(&local, &ops);
        self.pending = Some(Pending {
            ops,
            local,
            remote: self.remote.clone(),
            synced: self.synced.clone(),
            pushed: false,
        });
        &self.pending.as_ref().expect("set just above").ops
    }

    /// The one-shot commands plan from the trees cut down to the paths where a side differs
    /// from the synced tree (`crate::delta`): the same plan, on every state these runs reach.
    /// Once with the commands' own test of "as synced", once with one that only looks at what
    /// the planner reads (version and content), which leaves out far more of the remote side.
    fn check_delta_plan(&self, local: &LocalTree, ops: &[Op]) {
        use crate::delta::{restrict, split};
        use crate::tree::RemoteEntry;
        let plans_alike = |remote_as_synced: &dyn Fn(&RemoteEntry, &SyncedEntry) -> bool| {
            let (mut lc, la, mut touched) = split(local, &self.synced, LocalEntry::is_as_synced);
            let (mut rc, ra, rt) = split(&self.remote, &self.synced, remote_as_synced);
            touched.extend(rt);
            let rs = restrict(&touched, (&mut lc, &la), (&mut rc, &ra));
            moves::pair(plan(&lc, &rc, &rs), &lc, &rc, &rs) == ops
        };
        assert!(
            plans_alike(&RemoteEntry::is_as_synced),
            "the restricted trees plan differently"
        );
        let same_version = |r: &RemoteEntry, s: &SyncedEntry| {
            !r.deleted && r.version == s.version && r.content.as_ref() == Some(&s.content)
        };
        assert!(
            plans_alike(&same_version),
            "the restricted trees plan differently (version and content only)"
        );
    }

    /// `drain_changes`: the remote tree catches up with the log.
    pub fn drain(&mut self, server: &Server) {
        for (p, v) in &server.log[self.cursor..] {
            self.remote.insert(p.clone(), server.entry(p, *v));
        }
        self.cursor = server.log.len();
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                // The state DB keeps a file's executable bit in its mode and reads it back so.
                Change::Put(p, mut e) => {
                    if let Content::File { exec, .. } = &mut e.content {
                        *exec = is_exec(e.stat.mode);
                    }
                    self.synced.insert(p, e);
                }
                Change::Remove(p) => {
                    self.synced.remove(&p);
                }
            }
        }
    }

    /// `Push::run` over the pending plan's upload side.
    pub fn push(&mut self, server: &mut Server, order: Order<'_>, trace: &mut Trace) {
        let Some(p) = self.pending.as_mut().filter(|p| !p.pushed) else {
            return;
        };
        p.pushed = true;
        let p = p.clone();
        let ops: Vec<Op> = p
            .ops
            .iter()
            .filter(|o| o.is_upload_side())
            .cloned()
            .collect();
        let ops = arrange(ops, order);
        let mut bookkeeping = Vec::new();
        let mut results = Vec::new();
        for op in &ops {
            match op {
                Op::Upload {
                    path, base_version, ..
                } => {
                    let Some(e) = p.local.get(path) else { continue };
                    // A file that changed since the scan cannot be read back as scanned; it
                    // still goes up when its chunks are stored already (nothing to read).
                    if let Some(n) = file_no(&e.content)
                        && self
                            .disk
                            .get(path)
                            .is_none_or(|now| !same_stat(now.stat(), e.stat))
                        && !server.has_content(n)
                    {
                        note(trace, || {
                            format!("  {path}: changed since the scan, not sent")
                        });
                        continue;
                    }
                    let r = server.put(&self.name, path, base_version.0, &e.content);
                    results.push((op, r));
                }
                Op::DeleteRemote { path, base_version } => {
                    results.push((op, server.delete(path, base_version.0)));
                }
                Op::MoveRemote {
                    from,
                    to,
                    from_version,
                    base_version,
                } => {
                    let Some(e) = p.local.get(to) else { continue };
                    let r = server.move_file(
                        &self.name,
                        from,
                        to,
                        from_version.0,
                        base_version.0,
                        &e.content,
                    );
                    results.push((op, r));
                }
                Op::RecordSynced { path, version } => {
                    if let Some(e) = p.local.get(path) {
                        bookkeeping.push(Change::Put(path.clone(), synced_of(e, *version)));
                    }
                }
                Op::ForgetSynced { path } => bookkeeping.push(Change::Remove(path.clone())),
                _ => unreachable!("only upload-side ops are pushed"),
            }
        }
        let mut changes = bookkeeping;
        for (op, r) in results {
            note(trace, || {
                format!(
                    "  {} -> {:?} {}@{}",
                    show_op(op),
                    r.status,
                    r.path,
                    r.version
                )
            });
            self.record_result(op, r, &p.local, &mut changes, trace);
        }
        self.apply(changes);
    }

    /// `Push::record_result`.
    fn record_result(
        &mut self,
        op: &Op,
        r: CommitRes,
        local: &LocalTree,
        changes: &mut Vec<Change>,
        trace: &mut Trace,
    ) {
        let path = op.path().to_owned();
        let put = |path: String, v: u64| {
            local
                .get(&path)
                .map(|e| Change::Put(path.clone(), synced_of(e, Version(v))))
        };
        match (op, r.status) {
            (Op::MoveRemote { from, .. }, Status::Committed | Status::Unchanged) => {
                changes.push(Change::Remove(from.clone()));
                changes.extend(put(path, r.version));
            }
            (_, Status::Rejected) => {}
            (Op::DeleteRemote { .. }, Status::DeleteSkipped) if r.live_dir => {
                let kept = SyncedEntry {
                    version: Version(r.version),
                    content: Content::Dir,
                    stat: Stat::default(),
                };
                changes.push(Change::Put(path, kept));
            }
            (Op::DeleteRemote { .. }, _) | (_, Status::DeleteSkipped) => {
                changes.push(Change::Remove(path));
            }
            (_, Status::Committed | Status::Unchanged) => changes.extend(put(path, r.version)),
            (_, Status::Conflict) => {
                changes.push(Change::Remove(path.clone()));
                match self.rename_to_copy(&path, &r.path, local) {
                    Ok(e) => changes.push(Change::Put(r.path, synced_of(&e, Version(r.version)))),
                    Err(why) => note(trace, || format!("  {path}: {why}")),
                }
            }
        }
    }

    /// `Push::rename_to_copy`: only an entry that is still what was scanned, to a free name.
    fn rename_to_copy(
        &mut self,
        path: &str,
        copy: &str,
        local: &LocalTree,
    ) -> Result<LocalEntry, String> {
        let e = local.get(path).ok_or("not scanned")?;
        let now = self.disk.get(path).ok_or("vanished since the scan")?;
        let compared = match e.content {
            Content::File { .. } => true,
            Content::Symlink(_) => self.quirks.symlink_copy_rename,
            Content::Dir => false,
        };
        if compared && !same_stat(e.stat, now.stat()) {
            return Err(format!("stored as {copy:?}, but changed here since; kept"));
        }
        if self.disk.get(copy).is_some() {
            return Err(format!("stored as {copy:?}, but that name is taken here"));
        }
        self.disk.ensure_parents(copy)?;
        self.disk.rename(path, copy);
        Ok(e.clone())
    }

    /// `Pull::run` over the pending plan's download side, against the plan's remote and synced
    /// trees; file downloads fetch `(path, version)` from the server after everything else.
    pub fn pull(&mut self, server: &Server, mut order: Order<'_>, trace: &mut Trace) {
        let Some(p) = self.pending.take() else { return };
        let ops: Vec<Op> = p
            .ops
            .iter()
            .filter(|o| o.is_download_side())
            .cloned()
            .collect();
        let reorder = |ops, order: &mut Order<'_>| match order {
            Order::Planned => ops,
            Order::Shuffled(rng) => arrange(ops, Order::Shuffled(rng)),
        };
        let ops = reorder(ops, &mut order);
        let mut files: Vec<Op> = Vec::new();
        let mut changes = Vec::new();
        for op in &ops {
            let outcome: Result<(), String> = match op {
                Op::Download { path, version, .. } => {
                    match p.remote.get(path).and_then(|r| r.content.as_ref()) {
                        Some(Content::Symlink(t)) => self
                            .install(
                                path,
                                Content::Symlink(t.clone()),
                                p.synced.get(path),
                                server.now,
                            )
                            .map(|stat| {
                                let e = SyncedEntry {
                                    version: *version,
                                    content: Content::Symlink(t.clone()),
                                    stat,
                                };
                                changes.push(Change::Put(path.clone(), e));
                            }),
                        _ => {
                            files.push(op.clone());
                            Ok(())
                        }
                    }
                }
                Op::MkdirLocal { path, version } => self
                    .mkdir(path, p.synced.get(path), server.now)
                    .map(|stat| {
                        let e = SyncedEntry {
                            version: *version,
                            content: Content::Dir,
                            stat,
                        };
                        changes.push(Change::Put(path.clone(), e));
                    }),
                Op::DeleteLocal { path } => {
                    let r = self.delete(path, p.synced.get(path));
                    changes.push(Change::Remove(path.clone()));
                    r
                }
                Op::RecordSynced { path, version } => {
                    // Recorded only while the entry exists, as the real pull does.
                    let now = self.disk.get(path).map(Node::stat);
                    let stat = if self.quirks.record_current_stat {
                        now
                    } else {
                        now.and(p.local.get(path).map(|e| e.stat))
                    };
                    if let (Some(r), Some(stat)) =
                        (p.remote.get(path).and_then(|r| r.content.clone()), stat)
                    {
                        let e = SyncedEntry {
                            version: *version,
                            content: r,
                            stat,
                        };
                        changes.push(Change::Put(path.clone(), e));
                    }
                    Ok(())
                }
                Op::ForgetSynced { path } => {
                    changes.push(Change::Remove(path.clone()));
                    Ok(())
                }
                Op::MoveLocal { from, to, version } => {
                    match self.move_local(from, to, &p.remote, p.synced.get(from)) {
                        Ok(Some(e)) => {
                            changes.push(Change::Remove(from.clone()));
                            changes.push(Change::Put(
                                to.clone(),
                                SyncedEntry {
                                    version: *version,
                                    ..e
                                },
                            ));
                            Ok(())
                        }
                        Ok(None) => {
                            note(trace, || {
                                format!("  {to}: move precondition failed, downloading")
                            });
                            files.push(Op::Download {
                                path: to.clone(),
                                version: *version,
                                conflict: false,
                            });
                            if self.quirks.keep_failed_move_source {
                                Ok(())
                            } else {
                                // As the real pull: the source goes as the server's delete
                                // would.
                                let r = self.delete(from, p.synced.get(from));
                                changes.push(Change::Remove(from.clone()));
                                r
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => unreachable!("only download-side ops are pulled"),
            };
            if let Err(why) = outcome {
                note(trace, || format!("  {}: {why}", show_op(op)));
            }
            self.flush_kept(trace);
        }
        self.apply(changes);
        let files = reorder(files, &mut order);
        let mut changes = Vec::new();
        for op in &files {
            let Op::Download { path, version, .. } = op else {
                unreachable!("only downloads are deferred")
            };
            let Some(Some(content @ Content::File { .. })) =
                server.version(path, version.0).cloned()
            else {
                note(trace, || {
                    format!("  {path}@{version}: not a file on the server")
                });
                continue;
            };
            match self.install(path, content.clone(), p.synced.get(path), server.now) {
                Ok(stat) => {
                    changes.push(Change::Put(
                        path.clone(),
                        SyncedEntry {
                            version: *version,
                            content,
                            stat,
                        },
                    ));
                    // `Pull::synced_folders_of`.
                    for (i, _) in path.match_indices('/') {
                        let folder = &path[..i];
                        let remote_dir = p.remote.get(folder).and_then(|r| {
                            matches!(r.content, Some(Content::Dir)).then_some(r.version)
                        });
                        if let (Some(v), true) = (remote_dir, self.disk.is_dir(folder)) {
                            let e = SyncedEntry {
                                version: v,
                                content: Content::Dir,
                                stat: self.disk.get(folder).expect("a folder").stat(),
                            };
                            changes.push(Change::Put(folder.to_owned(), e));
                        }
                    }
                }
                Err(why) => note(trace, || format!("  {}: {why}", show_op(op))),
            }
            self.flush_kept(trace);
        }
        self.apply(changes);
    }

    fn flush_kept(&mut self, trace: &mut Trace) {
        for line in self.kept.drain(..) {
            note(trace, || line);
        }
    }

    /// `localfs::current`: absent, as the synced entry says, or different.
    fn current(&self, p: &str, synced: Option<&SyncedEntry>) -> Current {
        let Some(n) = self.disk.get(p) else {
            return Current::Absent;
        };
        let Some(s) = synced else {
            return Current::Different;
        };
        let same = match (&s.content, &n.content) {
            (Content::File { .. }, Content::File { .. }) => same_stat(s.stat, n.stat()),
            (Content::Dir, Content::Dir) => true,
            (Content::Symlink(a), Content::Symlink(b)) => a == b,
            _ => false,
        };
        if same {
            Current::AsSynced
        } else {
            Current::Different
        }
    }

    /// `ensure_parents`, then `Pull::install`: a changed entry (or a folder still holding
    /// anything) at the target is kept as a conflict copy first; an empty synced folder is
    /// removed. Returns the new entry's stat.
    fn install(
        &mut self,
        p: &str,
        c: Content,
        synced: Option<&SyncedEntry>,
        now: i64,
    ) -> Result<Stat, String> {
        self.disk.ensure_parents(p)?;
        match self.current(p, synced) {
            Current::Absent => {}
            Current::AsSynced if !self.disk.is_dir(p) => {}
            Current::AsSynced if !self.disk.has_children(p) => {
                self.disk.remove_tree(p);
            }
            Current::AsSynced | Current::Different => {
                self.move_to_conflict_copy(p, now)?;
            }
        }
        self.disk.put(p, c);
        Ok(self.disk.get(p).expect("just written").stat())
    }

    /// `localfs::move_to_conflict_copy`.
    fn move_to_conflict_copy(&mut self, p: &str, now: i64) -> Result<String, String> {
        for attempt in 1..100 {
            let copy = conflict_copy_name(p, &self.name, now, attempt);
            validate_path(&copy).map_err(|e| e.to_string())?;
            if self.disk.get(&copy).is_none() {
                self.disk.rename(p, &copy);
                self.kept.push(format!("  {p}: kept here as {copy:?}"));
                return Ok(copy);
            }
        }
        Err("no free conflict-copy name".into())
    }

    /// `Pull::mkdir`.
    fn mkdir(&mut self, p: &str, synced: Option<&SyncedEntry>, now: i64) -> Result<Stat, String> {
        self.disk.ensure_parents(p)?;
        match self.disk.get(p).map(|n| &n.content) {
            Some(Content::Dir) => {}
            Some(_) => {
                match self.current(p, synced) {
                    Current::AsSynced => {
                        self.disk.remove_tree(p);
                    }
                    _ => {
                        self.move_to_conflict_copy(p, now)?;
                    }
                }
                self.disk.put(p, Content::Dir);
            }
            None => self.disk.put(p, Content::Dir),
        }
        Ok(self.disk.get(p).expect("a directory now").stat())
    }

    /// `Pull::delete`: only what still matches the synced entry; a non-empty folder stays.
    fn delete(&mut self, p: &str, synced: Option<&SyncedEntry>) -> Result<(), String> {
        match self.current(p, synced) {
            Current::Absent => Ok(()),
            Current::Different => Err("changed here; kept".into()),
            Current::AsSynced if self.disk.is_dir(p) && self.disk.has_children(p) => {
                Err("folder not empty here; kept".into())
            }
            Current::AsSynced => {
                self.disk.remove_tree(p);
                Ok(())
            }
        }
    }

    /// `Pull::move_local`: `None` when the precondition fails (the caller downloads instead).
    fn move_local(
        &mut self,
        from: &str,
        to: &str,
        remote: &RemoteTree,
        synced: Option<&SyncedEntry>,
    ) -> Result<Option<SyncedEntry>, String> {
        let Some(r) = remote
            .get(to)
            .filter(|r| matches!(r.content, Some(Content::File { .. })))
        else {
            return Ok(None);
        };
        if !matches!(self.current(from, synced), Current::AsSynced) || self.disk.get(to).is_some() {
            return Ok(None);
        }
        // As `Pull::move_local`: a rename that cannot be made (the target's folder is a link
        // this round replaces, say) falls back to the download.
        if self.quirks.keep_failed_move_source {
            self.disk.ensure_parents(to)?;
        } else if self.disk.ensure_parents(to).is_err() {
            return Ok(None);
        }
        self.disk.rename(from, to);
        // chmod + set mtime: the content is the remote's, the stat a new one.
        let content = r.content.clone().expect("a live file");
        self.disk.put(to, content.clone());
        Ok(Some(SyncedEntry {
            version: r.version,
            content,
            stat: self.disk.get(to).expect("just renamed").stat(),
        }))
    }
}

enum Current {
    Absent,
    AsSynced,
    Different,
}

/// `localfs::same_stat`: size, mtime and inode (not the mode).
fn same_stat(a: Stat, b: Stat) -> bool {
    a.size == b.size && a.mtime_ns == b.mtime_ns && a.inode == b.inode
}

fn synced_of(e: &LocalEntry, version: Version) -> SyncedEntry {
    SyncedEntry {
        version,
        content: e.content.clone(),
        stat: e.stat,
    }
}

/// The paths an op touches: its path, and a move's source.
fn op_paths(op: &Op) -> [&str; 2] {
    match op {
        Op::MoveRemote { from, to, .. } | Op::MoveLocal { from, to, .. } => [from, to],
        _ => [op.path(), op.path()],
    }
}

fn related(a: &Op, b: &Op) -> bool {
    op_paths(a).iter().any(|x| {
        op_paths(b)
            .iter()
            .any(|y| at_or_under(x, y) || at_or_under(y, x))
    })
}

/// The ops in the planned order, or in a random order that keeps the planned order between
/// every two ops whose paths are equal or nested (the only ones that do not commute).
fn arrange(ops: Vec<Op>, order: Order<'_>) -> Vec<Op> {
    let Order::Shuffled(rng) = order else {
        return ops;
    };
    let mut left: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(left.len());
    while out.len() < left.len() {
        let ready: Vec<usize> = (0..left.len())
            .filter(|&i| {
                left[i].as_ref().is_some_and(|op| {
                    left[..i]
                        .iter()
                        .flatten()
                        .all(|earlier| !related(earlier, op))
                })
            })
            .collect();
        let i = ready[rng.below(ready.len())];
        out.push(left[i].take().expect("ready ops are left"));
    }
    out
}

pub fn show_op(op: &Op) -> String {
    match op {
        Op::Upload {
            path,
            base_version,
            conflict,
        } => format!(
            "upload{} {path} base {base_version}",
            if *conflict { " (conflict)" } else { "" }
        ),
        Op::DeleteRemote { path, base_version } => {
            format!("delete-remote {path} base {base_version}")
        }
        Op::Download {
            path,
            version,
            conflict,
        } => format!(
            "download{} {path}@{version}",
            if *conflict { " (conflict)" } else { "" }
        ),
        Op::MkdirLocal { path, version } => format!("mkdir-local {path}@{version}"),
        Op::DeleteLocal { path } => format!("delete-local {path}"),
        Op::RecordSynced { path, version } => format!("record {path}@{version}"),
        Op::ForgetSynced { path } => format!("forget {path}"),
        Op::MoveRemote {
            from,
            to,
            from_version,
            base_version,
        } => format!("move-remote {from}@{from_version} -> {to} base {base_version}"),
        Op::MoveLocal { from, to, version } => format!("move-local {from} -> {to}@{version}"),
    }
}
