//! The mass-delete guard, as pure logic: does a plan delete more than the folder's limits allow?
//!
//! A plan's deletions in both directions count (`DeleteRemote`: this device deleted files;
//! `DeleteLocal`: another device did). What counts is files and symlinks: a deleted folder's files
//! are operations of their own, so they count one by one, and the folder itself does not. Moves
//! are not deletions (the move pairing has turned them into `MoveRemote` / `MoveLocal` before the
//! guard looks). When the limits are passed, every deletion of the plan is held — folders too —
//! and the rest of the plan runs.

use std::collections::BTreeSet;

use crate::planner::{Op, moves};
use crate::tree::{Content, LocalTree, RemoteTree, SyncedEntry, SyncedTree};

/// When a plan's deletions are held (config.toml `[delete_guard]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hold when more than this share (percent) of the folder's synced files would go.
    pub max_percent: u64,
    /// Hold when more than this many files would go, whatever the folder's size.
    pub max_files: u64,
    /// The percent rule applies only from this many deleted files on, so that deleting 3 of a
    /// folder's 4 files does not need a confirmation.
    pub percent_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_percent: 50,
            max_files: 1000,
            percent_floor: 10,
        }
    }
}

/// What the guard holds back from one plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Files (and symlinks) among the held deletions, counted against the limits.
    pub files: u64,
    /// Every held operation, folders included.
    pub ops: u64,
    /// The folder's synced files when the guard tripped (files deleted earlier in the window
    /// included), for the message.
    pub folder_files: u64,
}

impl Held {
    /// What is held and why, for messages: "40 deletions held (40 of the folder's 40 files; ...)".
    pub fn summary(&self, limits: &Limits) -> String {
        format!(
            "delete guard: {} deletions held ({} of the folder's {} files; the limit is more than {}% or more than {} files at once)",
            self.ops, self.files, self.folder_files, limits.max_percent, limits.max_files,
        )
    }

    /// The status detail of a daemon's folder whose deletions are held: the count and the way out.
    pub fn describe(&self, root: &std::path::Path, limits: &Limits) -> String {
        format!(
            "{} — run `cairn resume {} --allow-deletes` to apply them, or restore the files",
            self.summary(limits),
            root.display()
        )
    }
}

/// Whether the operation removes something (on the server or here).
pub fn is_deletion(op: &Op) -> bool {
    matches!(op, Op::DeleteRemote { .. } | Op::DeleteLocal { .. })
}

/// Whether the operation deletes a file or symlink (what the limits count); a folder's own entry
/// does not count.
pub fn deletes_a_file(op: &Op, synced: &SyncedTree) -> bool {
    is_deletion(op)
        && !synced
            .get(op.path())
            .is_some_and(|e| matches!(e.content, Content::Dir))
}

/// Files (not folders) in `synced`: what "the folder's files" means for the percent rule.
pub fn synced_files<'a>(synced: impl IntoIterator<Item = &'a SyncedEntry>) -> u64 {
    synced
        .into_iter()
        .filter(|e| !matches!(e.content, Content::Dir))
        .count() as u64
}

/// Whether deleting `deleting` files passes the limits, given that `recent` files were already
/// deleted a moment ago (they count too, so a slow `rm -rf` cannot trickle under the limits) and
/// the folder now has `folder_files` synced files (the ones about to go included).
pub fn exceeds(limits: &Limits, deleting: u64, recent: u64, folder_files: u64) -> bool {
    if deleting == 0 {
        return false;
    }
    let total = deleting.saturating_add(recent);
    let before = folder_files.saturating_add(recent);
    let share = u128::from(total) * 100 > u128::from(limits.max_percent) * u128::from(before);
    total > limits.max_files || (total >= limits.percent_floor && share)
}

/// A plan's deletions that the guard judges: every deletion not already allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Files and symlinks: what the limits count.
    pub files: u64,
    /// Every deletion, folders included.
    pub ops: u64,
}

/// Counts the deletions of `ops` whose paths are not in `allowed`.
pub fn tally(ops: &[Op], synced: &SyncedTree, allowed: &BTreeSet<String>) -> Tally {
    let mut t = Tally::default();
    for op in ops.iter().filter(|op| is_deletion(op)) {
        if !allowed.contains(op.path()) {
            t.ops += 1;
            t.files += u64::from(deletes_a_file(op, synced));
        }
    }
    t
}

/// Judges a plan. `allowed` are paths whose deletions the user already confirmed (`cairn resume
/// --allow-deletes`): they neither count nor are held. `folder_files` is asked only when the
/// plan deletes something (counting a large folder is not free). Returns what to hold, if anything.
pub fn judge(
    ops: &[Op],
    synced: &SyncedTree,
    allowed: &BTreeSet<String>,
    recent: u64,
    folder_files: impl FnOnce() -> u64,
    limits: &Limits,
) -> Option<Held> {
    let t = tally(ops, synced, allowed);
    if t.files == 0 {
        return None;
    }
    let folder_files = folder_files();
    exceeds(limits, t.files, recent, folder_files).then_some(Held {
        files: t.files,
        ops: t.ops,
        folder_files: folder_files + recent,
    })
}

/// What the daemon does with one round's deletions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// They run.
    Run,
    /// Every deletion not allowed is held.
    Hold(Held),
    /// Too few files to judge a share yet (under the floor): deletions seen only a moment ago
    /// wait for more to arrive, so that a burst the watcher reports in pieces is judged whole.
    Settle,
}

/// The daemon's rule over one round: past the limits, hold; while something is already held,
/// hold every deletion too (held deletions stay held until allowed or undone, even when the
/// deletions that tipped the scale have left the window); under the floor, settle first.
pub fn decide(
    ops: &[Op],
    (synced, allowed): (&SyncedTree, &BTreeSet<String>),
    recent: u64,
    holding: bool,
    folder_files: impl FnOnce() -> u64,
    limits: &Limits,
) -> Decision {
    let t = tally(ops, synced, allowed);
    if t.ops == 0 {
        return Decision::Run;
    }
    // Counted once, and only if needed.
    let (mut source, mut counted) = (Some(folder_files), None);
    let mut folder_files =
        || *counted.get_or_insert_with(|| source.take().map_or(0, |count| count()));
    if let Some(h) = judge(ops, synced, allowed, recent, &mut folder_files, limits) {
        return Decision::Hold(h);
    }
    if holding {
        return Decision::Hold(Held {
            files: t.files,
            ops: t.ops,
            folder_files: folder_files() + recent,
        });
    }
    if t.files > 0 && t.files + recent < limits.percent_floor {
        return Decision::Settle;
    }
    Decision::Run
}

/// Splits a plan into what runs now and what the guard holds: with a verdict, every deletion not
/// in `allowed`; without one, nothing. Both halves keep the plan's order.
pub fn split(ops: Vec<Op>, held: bool, allowed: &BTreeSet<String>) -> (Vec<Op>, Vec<Op>) {
    if !held {
        return (ops, Vec::new());
    }
    ops.into_iter()
        .partition(|op| !is_deletion(op) || allowed.contains(op.path()))
}

/// The guard of the one-shot `push` and `pull`, over a whole plan of one side: judged with
/// renames paired (a move is not a deletion); unless `allow`, a verdict holds every deletion of
/// the plan as it is (a held rename's source stays: a copy, never a loss). Returns what to run
/// and what was held. `folder_files`: the files of the whole synced tree (the trees given may be
/// restricted to the paths that changed, see [`crate::delta`]).
pub fn one_shot(
    ops: Vec<Op>,
    trees: (&LocalTree, &RemoteTree, &SyncedTree),
    (folder_files, limits): (u64, &Limits),
    allow: bool,
) -> (Vec<Op>, Option<Held>) {
    let (local, remote, synced) = trees;
    if allow || !ops.iter().any(is_deletion) {
        return (ops, None);
    }
    let paired = moves::pair(ops.clone(), local, remote, synced);
    let none = BTreeSet::new();
    let verdict = judge(&paired, synced, &none, 0, || folder_files, limits);
    let (run, held) = split(ops, verdict.is_some(), &none);
    let verdict = verdict.map(|v| Held {
        ops: held.len() as u64,
        ..v
    });
    (run, verdict)
}

#[cfg(test)]
mod tests {
    use cairn_proto::{ContentId, Version};

    use super::*;
    use crate::tree::{Stat, SyncedEntry};

    fn folder(files: usize, dirs: &[&str]) -> SyncedTree {
        let mut t = SyncedTree::new();
        for i in 0..files {
            t.insert(
                format!("d/{i}"),
                SyncedEntry {
                    version: Version(1),
                    content: Content::File {
                        id: ContentId([i as u8; 32]),
                        exec: false,
                    },
                    stat: Stat::default(),
                },
            );
        }
        for d in dirs {
            t.insert(
                (*d).to_owned(),
                SyncedEntry {
                    version: Version(1),
                    content: Content::Dir,
                    stat: Stat::default(),
                },
            );
        }
        t
    }

    fn del_remote(p: &str) -> Op {
        Op::DeleteRemote {
            path: p.into(),
            base_version: Version(1),
        }
    }

    fn del_local(p: &str) -> Op {
        Op::DeleteLocal { path: p.into() }
    }

    fn deleting(n: usize) -> Vec<Op> {
        (0..n).map(|i| del_remote(&format!("d/{i}"))).collect()
    }

    fn verdict(ops: &[Op], synced: &SyncedTree, recent: u64) -> Option<Held> {
        judge(
            ops,
            synced,
            &BTreeSet::new(),
            recent,
            || synced_files(synced.values()),
            &Limits::default(),
        )
    }

    #[test]
    fn emptying_a_folder_of_forty_files_is_held() {
        let synced = folder(40, &["d"]);
        let mut ops = deleting(40);
        ops.push(del_remote("d"));
        let held = verdict(&ops, &synced, 0).expect("held");
        assert_eq!(
            held,
            Held {
                files: 40,
                ops: 41,
                folder_files: 40
            }
        );
    }

    #[test]
    fn half_of_the_folder_is_allowed_and_one_more_file_is_not() {
        let synced = folder(40, &[]);
        assert_eq!(verdict(&deleting(20), &synced, 0), None);
        assert!(verdict(&deleting(21), &synced, 0).is_some());
    }

    #[test]
    fn small_folders_stay_usable_below_the_floor_of_ten() {
        let synced = folder(4, &[]);
        assert_eq!(verdict(&deleting(4), &synced, 0), None, "all of 4 files");
        let synced = folder(12, &[]);
        assert_eq!(verdict(&deleting(9), &synced, 0), None, "9 of 12 files");
        assert!(
            verdict(&deleting(10), &synced, 0).is_some(),
            "10 of 12 files"
        );
    }

    #[test]
    fn more_than_a_thousand_files_is_held_however_large_the_folder() {
        let synced = folder(1001, &[]);
        assert!(!exceeds(&Limits::default(), 1000, 0, 100_000));
        assert!(exceeds(&Limits::default(), 1001, 0, 100_000));
        assert!(verdict(&deleting(1001), &synced, 0).is_some());
    }

    #[test]
    fn folders_do_not_count_but_their_files_do() {
        // Removing ten empty folders from a folder of one file deletes no file.
        let dirs: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let synced = folder(1, &refs);
        let ops: Vec<Op> = refs.iter().map(|d| del_remote(d)).collect();
        assert_eq!(verdict(&ops, &synced, 0), None);
    }

    #[test]
    fn a_mass_delete_from_another_device_is_held_the_same_way() {
        let synced = folder(30, &[]);
        let ops: Vec<Op> = (0..30).map(|i| del_local(&format!("d/{i}"))).collect();
        assert_eq!(verdict(&ops, &synced, 0).map(|h| h.files), Some(30));
    }

    #[test]
    fn moves_are_not_deletions() {
        let synced = folder(30, &[]);
        let ops: Vec<Op> = (0..30)
            .map(|i| Op::MoveRemote {
                from: format!("d/{i}"),
                to: format!("e/{i}"),
                from_version: Version(1),
                base_version: Version(0),
            })
            .collect();
        assert_eq!(verdict(&ops, &synced, 0), None);
    }

    #[test]
    fn deletions_trickling_in_over_several_rounds_add_up() {
        // 8 files per round (under the floor each time) out of 40: the third round trips.
        let limits = Limits::default();
        assert!(!exceeds(&limits, 8, 0, 40));
        assert!(!exceeds(&limits, 8, 8, 32));
        assert!(exceeds(&limits, 8, 16, 24));
    }

    #[test]
    fn allowed_paths_neither_count_nor_are_held() {
        let synced = folder(40, &[]);
        let ops = deleting(40);
        let allowed: BTreeSet<String> = (0..40).map(|i| format!("d/{i}")).collect();
        let limits = Limits::default();
        assert_eq!(judge(&ops, &synced, &allowed, 0, || 40, &limits), None);
        // One new deletion beyond the allowed ones is judged on its own.
        let mut more = ops.clone();
        more.push(del_remote("d/x"));
        assert_eq!(judge(&more, &synced, &allowed, 0, || 41, &limits), None);
        let (run, held) = split(more, true, &allowed);
        assert_eq!((run.len(), held), (40, vec![del_remote("d/x")]));
    }

    #[test]
    fn a_held_plan_keeps_everything_but_its_deletions() {
        let ops = vec![
            del_remote("d/1"),
            del_local("d/2"),
            Op::Upload {
                path: "new".into(),
                base_version: Version(0),
                conflict: false,
            },
        ];
        let (run, held) = split(ops.clone(), true, &BTreeSet::new());
        assert_eq!(run, vec![ops[2].clone()]);
        assert_eq!(held, ops[..2].to_vec());
        let (run, held) = split(ops.clone(), false, &BTreeSet::new());
        assert_eq!((run, held.len()), (ops, 0));
    }

    #[test]
    fn a_one_shot_push_counts_renames_as_moves_but_holds_every_deletion_once_tripped() {
        use crate::tree::{LocalEntry, LocalTree, RemoteEntry, RemoteTree};
        let synced = folder(20, &[]);
        let remote: RemoteTree = synced
            .iter()
            .map(|(p, s)| {
                let r = RemoteEntry {
                    version: s.version,
                    deleted: false,
                    content: Some(s.content.clone()),
                    size: 0,
                    mode: 0o644,
                    mtime_ns: 0,
                };
                (p.clone(), r)
            })
            .collect();
        let local_entry = |p: &str| LocalEntry {
            content: synced[p].content.clone(),
            stat: Stat::default(),
        };
        // All 20 files renamed d/i -> e/i: 20 deletes + 20 uploads unpaired, 20 moves paired.
        let local: LocalTree = (0..20)
            .map(|i| (format!("e/{i}"), local_entry(&format!("d/{i}"))))
            .collect();
        let mut ops = crate::planner::plan(&local, &remote, &synced);
        ops.retain(Op::is_upload_side);
        let limits = Limits::default();
        let (run, held) = one_shot(
            ops.clone(),
            (&local, &remote, &synced),
            (synced_files(synced.values()), &limits),
            false,
        );
        assert_eq!((run.len(), held), (40, None), "a rename deletes nothing");

        // 15 of 20 files deleted and the other 5 renamed: held, renames' sources included.
        let local: LocalTree = (15..20)
            .map(|i| (format!("e/{i}"), local_entry(&format!("d/{i}"))))
            .collect();
        let mut ops = crate::planner::plan(&local, &remote, &synced);
        ops.retain(Op::is_upload_side);
        let (run, held) = one_shot(
            ops.clone(),
            (&local, &remote, &synced),
            (synced_files(synced.values()), &limits),
            false,
        );
        let held = held.expect("15 of 20 files is past 50%");
        assert_eq!((held.files, held.ops), (15, 20));
        assert!(run.iter().all(|op| !is_deletion(op)) && run.len() == 5);
        // --allow-deletes: the plan runs as it is.
        let (run, held) = one_shot(
            ops.clone(),
            (&local, &remote, &synced),
            (synced_files(synced.values()), &limits),
            true,
        );
        assert_eq!((run, held), (ops, None));
    }

    #[test]
    fn held_deletions_stay_held_and_a_few_deletions_settle_before_they_run() {
        let synced = folder(40, &["d"]);
        let none = BTreeSet::new();
        let limits = Limits::default();
        let decide = |ops: &[Op], recent, holding| {
            decide(ops, (&synced, &none), recent, holding, || 40, &limits)
        };
        assert_eq!(decide(&[], 0, false), Decision::Run);
        // Under the floor: wait a moment for the rest of a burst.
        assert_eq!(decide(&deleting(3), 0, false), Decision::Settle);
        assert_eq!(decide(&deleting(3), 6, false), Decision::Settle);
        // At the floor and under half: the share can be judged, and passes.
        assert_eq!(decide(&deleting(3), 7, false), Decision::Run);
        assert_eq!(decide(&deleting(12), 0, false), Decision::Run);
        // Folders alone never wait.
        assert_eq!(decide(&[del_remote("d")], 0, false), Decision::Run);
        // Past the limits, or while something is held: hold.
        assert!(matches!(decide(&deleting(21), 0, false), Decision::Hold(h) if h.files == 21));
        assert!(matches!(decide(&deleting(3), 0, true), Decision::Hold(h) if h.files == 3));
    }

    #[test]
    fn the_folder_size_is_only_counted_when_something_is_deleted() {
        let ops = vec![Op::Upload {
            path: "new".into(),
            base_version: Version(0),
            conflict: false,
        }];
        let r = judge(
            &ops,
            &SyncedTree::new(),
            &BTreeSet::new(),
            0,
            || panic!("counted the folder for a plan without deletions"),
            &Limits::default(),
        );
        assert_eq!(r, None);
    }
}
