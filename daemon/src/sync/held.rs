//! The delete guard inside one folder's control task: what it holds now, the allowance the user
//! gave (read from the state DB on a short timer while something is held), the deletions of the
//! last minute and the few that wait a moment before they run (so an `rm -rf` that reaches the
//! watcher in small batches is judged as a whole).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::error::Result;
use crate::events::Events;
use crate::guard::{Decision, Held, Limits, decide, deletes_a_file, is_deletion, synced_files};
use crate::planner::Op;
use crate::state::{FolderId, State};
use crate::tree::SyncedTree;

/// Deletions applied this long ago or less count against the limits together with a new plan's.
const DELETE_WINDOW: Duration = Duration::from_secs(60);
/// How long deletions under the floor wait for more to arrive before they run.
const SETTLE: Duration = Duration::from_secs(1);
/// How often a folder that holds deletions looks for `cairn resume --allow-deletes`.
pub(super) const ALLOWANCE_POLL: Duration = Duration::from_millis(250);

pub(super) struct Guard {
    limits: Limits,
    /// The paths of the deletions held now (empty: nothing held).
    held: BTreeSet<String>,
    /// The last verdict while `held` is not empty.
    verdict: Option<Held>,
    /// Changes whenever `held` does; what the state DB row and an allowance name. Starts at the
    /// clock (or past an earlier daemon's), so an allowance given to an earlier daemon never
    /// matches.
    generation: i64,
    /// Deletions the user allowed, for the next round only.
    allowed: BTreeSet<String>,
    /// Files deleted by recent rounds: (when, how many).
    recent: VecDeque<(Instant, u64)>,
    /// Deletions planned but not run or held yet, with when each was first planned.
    seen: BTreeMap<String, Instant>,
    /// The deletions waiting to settle after the last round.
    settling: BTreeSet<String>,
    /// Changes above a waiting deletion (a file that replaces the folder being emptied), which
    /// wait with it: the server takes a file over a folder only once nothing is left in it.
    above: BTreeSet<String>,
    /// How long deletions under the floor wait ([`SETTLE`]; tests shorten it).
    settle: Duration,
    /// An earlier daemon held deletions for this folder: the first round holds its deletions
    /// too (a restart must not release what the user has not allowed).
    inherited: bool,
}

impl Guard {
    /// A fresh guard. A row left by an earlier daemon is dropped with its allowance (the first
    /// round holds again whatever deletions it finds, under a new generation).
    pub(super) fn new(limits: Limits, state: &State, folder: FolderId) -> Result<Self> {
        let old = state.held(folder)?;
        state.clear_held(folder)?;
        Ok(Guard {
            limits,
            held: BTreeSet::new(),
            verdict: None,
            // Past the old row's, so an allowance given for it can never match a new held set.
            generation: crate::status::now_ms().max(old.as_ref().map_or(0, |r| r.generation)),
            allowed: BTreeSet::new(),
            recent: VecDeque::new(),
            seen: BTreeMap::new(),
            settling: BTreeSet::new(),
            above: BTreeSet::new(),
            settle: SETTLE,
            inherited: old.is_some(),
        })
    }

    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Deletions held or settling, and what waits above them: the next rounds must plan them
    /// again.
    pub(super) fn waiting_paths(&self) -> impl Iterator<Item = &String> {
        self.held.iter().chain(&self.settling).chain(&self.above)
    }

    /// When the earliest settling deletion may run (a round is due then).
    pub(super) fn settle_deadline(&self) -> Option<Instant> {
        self.settling
            .iter()
            .filter_map(|p| self.seen.get(p))
            .min()
            .map(|t| *t + self.settle)
    }

    /// The status detail while something is held.
    pub(super) fn detail(&self, root: &Path) -> Option<String> {
        self.verdict
            .as_ref()
            .filter(|_| self.holding())
            .map(|h| h.describe(root, &self.limits))
    }

    /// Looks for an allowance of exactly the held set; true when the next round may apply it.
    pub(super) fn allowance_arrived(&mut self, state: &State, folder: FolderId) -> Result<bool> {
        if !self.holding() || !self.allowed.is_empty() {
            return Ok(false);
        }
        let allowed = state
            .held(folder)?
            .is_some_and(|r| r.generation == self.generation && r.allowed == self.generation);
        if allowed {
            self.allowed = self.held.clone();
        }
        Ok(allowed)
    }

    /// Judges a round's plan: returns what runs now, and whether what is held changed (then the
    /// caller [`Guard::persist`]s it). `all_synced` is the folder's whole synced tree, `synced`
    /// the round's part of it.
    pub(super) fn hold(
        &mut self,
        ops: Vec<Op>,
        synced: &SyncedTree,
        all_synced: &SyncedTree,
    ) -> (Vec<Op>, bool) {
        let now = Instant::now();
        let recent = self.recent_files(now);
        let deleting = self.note_deletions(&ops, now);
        let holding = self.holding() || std::mem::take(&mut self.inherited);
        let decision = decide(
            &ops,
            (synced, &self.allowed),
            recent,
            holding,
            || synced_files(all_synced.values()),
            &self.limits,
        );
        let (verdict, settle) = match decision {
            Decision::Run => (None, false),
            Decision::Hold(h) => (Some(h), false),
            Decision::Settle => (None, true),
        };
        let fresh = |p: &str| {
            self.seen
                .get(p)
                .is_some_and(|t| now.duration_since(*t) < self.settle)
        };
        let waits = |op: &Op| {
            deleting.contains(op.path()) && (verdict.is_some() || (settle && fresh(op.path())))
        };
        let (waiting, run): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| waits(op));
        let waiting: BTreeSet<String> = waiting.iter().map(|op| op.path().to_owned()).collect();
        // Run, a file replacing the folder above a waiting deletion would reach the server while
        // the folder still holds what is being deleted, and become a conflict copy.
        let is_above = |op: &Op| {
            let prefix = format!("{}/", op.path());
            waiting
                .range::<str, _>((
                    std::ops::Bound::Excluded(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some_and(|p| p.starts_with(&prefix))
        };
        let (above, run): (Vec<Op>, Vec<Op>) = run.into_iter().partition(|op| is_above(op));
        self.above = above.iter().map(|op| op.path().to_owned()).collect();
        let (held, settling) = if verdict.is_some() {
            (waiting, BTreeSet::new())
        } else {
            (BTreeSet::new(), waiting)
        };
        self.settling = settling;
        let changed = held != self.held;
        if changed {
            self.generation += 1;
            self.held = held;
        }
        self.verdict = verdict;
        (run, changed)
    }

    /// Files deleted within the window before `now` (older entries are dropped).
    fn recent_files(&mut self, now: Instant) -> u64 {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > DELETE_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.iter().map(|(_, n)| n).sum()
    }

    /// The plan's deletions not yet allowed; records when each was first planned (a path no
    /// longer planned for deletion is forgotten).
    fn note_deletions(&mut self, ops: &[Op], now: Instant) -> BTreeSet<String> {
        let deleting: BTreeSet<String> = ops
            .iter()
            .filter(|op| is_deletion(op) && !self.allowed.contains(op.path()))
            .map(|op| op.path().to_owned())
            .collect();
        self.seen.retain(|p, _| deleting.contains(p));
        for p in &deleting {
            self.seen.entry(p.clone()).or_insert(now);
        }
        deleting
    }

    /// Writes what is held now to the state DB (where `cairn status` and `cairn resume` read it)
    /// and tells the event stream.
    pub(super) fn persist(
        &self,
        state: &State,
        folder: FolderId,
        events: Events,
        root: &Path,
    ) -> Result<()> {
        match self.verdict.as_ref().filter(|_| self.holding()) {
            Some(v) => {
                state.set_held(folder, v, self.generation)?;
                events.emit(
                    "held",
                    json!({ "folder": root, "deletions": v.ops, "files": v.files, "folder_files": v.folder_files }),
                );
                Ok(())
            }
            None => state.clear_held(folder),
        }
    }

    /// After a round ran `ops`: its deletions join the window, unless they were the allowed ones
    /// (the user confirmed a mass delete: the window starts over). The allowance is used up.
    pub(super) fn ran(&mut self, ops: &[Op], synced: &SyncedTree) {
        if !self.allowed.is_empty() {
            self.allowed.clear();
            self.recent.clear();
            return;
        }
        let files = ops.iter().filter(|op| deletes_a_file(op, synced)).count() as u64;
        if files > 0 {
            self.recent.push_back((Instant::now(), files));
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::{ContentId, Version};

    use super::*;
    use crate::tree::{Content, Stat, SyncedEntry};

    fn synced(files: usize) -> SyncedTree {
        (0..files)
            .map(|i| {
                let e = SyncedEntry {
                    version: Version(1),
                    content: Content::File {
                        id: ContentId([i as u8; 32]),
                        exec: false,
                    },
                    stat: Stat::default(),
                };
                (format!("f/{i}"), e)
            })
            .collect()
    }

    fn deleting(range: std::ops::Range<usize>) -> Vec<Op> {
        range
            .map(|i| Op::DeleteRemote {
                path: format!("f/{i}"),
                base_version: Version(1),
            })
            .collect()
    }

    fn setup() -> (tempfile::TempDir, State, FolderId) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state.db")).unwrap();
        let folder = state.folder(Path::new("/r"), "ns", "http://s").unwrap();
        (dir, state, folder)
    }

    const QUIET: Events = Events {
        json: false,
        quiet: true,
    };

    #[test]
    fn a_held_set_runs_once_allowed_then_the_guard_judges_afresh() {
        let (_dir, state, folder) = setup();
        let tree = synced(40);
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        let (run, changed) = g.hold(deleting(0..40), &tree, &tree);
        assert!(run.is_empty() && changed && g.holding());
        g.persist(&state, folder, QUIET, Path::new("/r")).unwrap();
        assert!(!g.allowance_arrived(&state, folder).unwrap());

        let row = state.held(folder).unwrap().expect("a row");
        assert_eq!(row.held.files, 40);
        assert!(state.allow_held(folder, row.generation).unwrap());
        assert!(g.allowance_arrived(&state, folder).unwrap());
        let (run, changed) = g.hold(deleting(0..40), &tree, &tree);
        assert_eq!((run.len(), changed, g.holding()), (40, true, false));
        g.persist(&state, folder, QUIET, Path::new("/r")).unwrap();
        g.ran(&run, &tree);
        assert_eq!(state.held(folder).unwrap(), None);

        // The allowance is used up: the next mass delete is held again.
        let (run, _) = g.hold(deleting(0..40), &tree, &tree);
        assert!(run.is_empty() && g.holding());
    }

    #[test]
    fn a_few_deletions_settle_first_and_a_burst_arriving_meanwhile_is_held_whole() {
        let (_dir, state, folder) = setup();
        let tree = synced(40);
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        // The watcher's first batch: 3 files. They wait.
        let (run, _) = g.hold(deleting(0..3), &tree, &tree);
        assert!(run.is_empty() && !g.holding());
        assert!(g.settle_deadline().is_some());
        assert_eq!(g.waiting_paths().count(), 3);
        // The rest of the burst: 40 of 40, held together.
        let (run, _) = g.hold(deleting(0..40), &tree, &tree);
        assert!(run.is_empty() && g.holding());
        assert_eq!(g.verdict.as_ref().map(|h| h.files), Some(40));
        assert_eq!(g.settle_deadline(), None);

        // Alone, a few deletions run once settled.
        let (_dir, state, folder) = setup();
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        g.settle = Duration::ZERO;
        let (run, _) = g.hold(deleting(0..3), &tree, &tree);
        assert_eq!(run.len(), 3);
    }

    #[test]
    fn a_file_replacing_the_folder_of_settling_deletions_waits_with_them() {
        let (_dir, state, folder) = setup();
        let tree = synced(40);
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        let upload = |path: &str| Op::Upload {
            path: path.into(),
            base_version: Version(1),
            conflict: false,
        };
        // `rm -r f; echo > f`, and an unrelated edit beside it.
        let mut ops = deleting(0..3);
        ops.extend([upload("f"), upload("fx"), upload("g")]);
        let (run, _) = g.hold(ops.clone(), &tree, &tree);
        let ran: Vec<&str> = run.iter().map(Op::path).collect();
        assert_eq!(
            ran,
            ["fx", "g"],
            "f waits with f/0..3; fx is not above them"
        );
        assert!(g.waiting_paths().any(|p| p == "f"), "and is planned again");
        // Settled: the deletions run, and the file after them (the plan's order).
        g.settle = Duration::ZERO;
        let (run, _) = g.hold(ops, &tree, &tree);
        let ran: Vec<&str> = run.iter().map(Op::path).collect();
        assert_eq!(ran, ["f/0", "f/1", "f/2", "f", "fx", "g"]);
        assert_eq!(g.waiting_paths().count(), 0);
    }

    #[test]
    fn deletions_held_stay_held_through_the_window_and_a_restart() {
        let (_dir, state, folder) = setup();
        let tree = synced(40);
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        g.settle = Duration::ZERO;
        g.hold(deleting(0..30), &tree, &tree);
        g.persist(&state, folder, QUIET, Path::new("/r")).unwrap();
        // 27 files restored: the 3 left would pass on their own, but stay held.
        let (run, _) = g.hold(deleting(0..3), &tree, &tree);
        assert!(run.is_empty() && g.holding());
        // A new daemon holds them too, under a new generation (no old allowance carries over).
        let old = state.held(folder).unwrap().unwrap().generation;
        let mut g = Guard::new(Limits::default(), &state, folder).unwrap();
        g.settle = Duration::ZERO;
        let (run, changed) = g.hold(deleting(0..3), &tree, &tree);
        assert!(run.is_empty() && changed && g.holding());
        g.persist(&state, folder, QUIET, Path::new("/r")).unwrap();
        assert_ne!(state.held(folder).unwrap().unwrap().generation, old);
        // Restoring every file releases the folder.
        let (run, changed) = g.hold(Vec::new(), &tree, &tree);
        assert!(run.is_empty() && changed && !g.holding());
    }
}
