//! The delete guard inside one folder's control task: what it holds now, the allowance the user
//! gave (read from the state DB on a short timer while something is held), and the deletions of
//! the last minute (so an `rm -rf` that reaches the watcher in small batches still adds up).

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::error::Result;
use crate::events::Events;
use crate::guard::{Held, Limits, deletes_a_file, judge, split, synced_files};
use crate::planner::Op;
use crate::state::{FolderId, State};
use crate::tree::SyncedTree;

/// Deletions applied this long ago or less count against the limits together with a new plan's.
const DELETE_WINDOW: Duration = Duration::from_secs(60);
/// How often a folder that holds deletions looks for `cairn resume --allow-deletes`.
pub(super) const ALLOWANCE_POLL: Duration = Duration::from_millis(250);

pub(super) struct Guard {
    limits: Limits,
    /// The paths of the deletions held now (empty: nothing held).
    held: BTreeSet<String>,
    /// The last verdict while `held` is not empty.
    verdict: Option<Held>,
    /// Changes whenever `held` does; what the state DB row and an allowance name. Starts at the
    /// clock, so an allowance left by an earlier daemon never matches.
    generation: i64,
    /// Deletions the user allowed, for the next round only.
    allowed: BTreeSet<String>,
    /// Files deleted by recent rounds: (when, how many).
    recent: VecDeque<(Instant, u64)>,
}

impl Guard {
    /// A fresh guard; a row left by an earlier daemon (and its allowance) is dropped: this one
    /// judges the folder again.
    pub(super) fn new(limits: Limits, state: &State, folder: FolderId) -> Result<Self> {
        state.clear_held(folder)?;
        Ok(Guard {
            limits,
            held: BTreeSet::new(),
            verdict: None,
            generation: crate::status::now_ms(),
            allowed: BTreeSet::new(),
            recent: VecDeque::new(),
        })
    }

    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    pub(super) fn held_paths(&self) -> impl Iterator<Item = &String> {
        self.held.iter()
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
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > DELETE_WINDOW)
        {
            self.recent.pop_front();
        }
        let recent = self.recent.iter().map(|(_, n)| n).sum();
        let verdict = judge(
            &ops,
            synced,
            &self.allowed,
            recent,
            || synced_files(all_synced),
            &self.limits,
        );
        let (run, held) = split(ops, verdict.is_some(), &self.allowed);
        let held: BTreeSet<String> = held.iter().map(|op| op.path().to_owned()).collect();
        let changed = held != self.held;
        if changed {
            self.generation += 1;
            self.held = held;
        }
        self.verdict = verdict;
        (run, changed)
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
