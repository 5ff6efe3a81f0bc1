//! The pure planner: local, remote and synced trees in, a deterministic list of operations out.
//!
//! No I/O, no clock, no async. The executors re-check each operation's precondition before acting.

use std::cmp::Ordering;

use cairn_proto::Version;

use crate::tree::{
    Content, LocalEntry, LocalTree, RemoteEntry, RemoteTree, SyncedEntry, SyncedTree,
};

/// One step towards agreement. Paths are namespace-relative (NFC, `/`-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Commit the local entry. `conflict`: the remote changed too (differently), so the base is
    /// stale on purpose and the server stores the content as a conflict copy.
    Upload {
        path: String,
        base_version: Version,
        conflict: bool,
    },
    /// Commit a tombstone: the path was deleted here since the last sync.
    DeleteRemote { path: String, base_version: Version },
    /// Write the remote file or symlink here. `conflict`: the local entry changed too; the
    /// executor keeps it as a conflict copy.
    Download {
        path: String,
        version: Version,
        conflict: bool,
    },
    /// Create the remote directory here.
    MkdirLocal { path: String, version: Version },
    /// Remove the local entry (the remote deleted it; the local one did not change).
    DeleteLocal { path: String },
    /// Both sides already hold the same thing: remember it as synced.
    RecordSynced { path: String, version: Version },
    /// Both sides deleted the path: forget the synced entry.
    ForgetSynced { path: String },
    /// A local rename: commit `to` as a move of `from` (no chunk travels). `from_version` is the
    /// synced (and still current remote) version of `from`; `base_version` that of `to` (0).
    MoveRemote {
        from: String,
        to: String,
        from_version: Version,
        base_version: Version,
    },
    /// A remote rename: the local file at `from` already holds `to`'s content, so rename it here
    /// instead of downloading.
    MoveLocal {
        from: String,
        to: String,
        version: Version,
    },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Upload { path, .. }
            | Op::DeleteRemote { path, .. }
            | Op::Download { path, .. }
            | Op::MkdirLocal { path, .. }
            | Op::DeleteLocal { path }
            | Op::RecordSynced { path, .. }
            | Op::ForgetSynced { path }
            | Op::MoveRemote { to: path, .. }
            | Op::MoveLocal { to: path, .. } => path,
        }
    }

    /// Where the op sorts: removals first, children before parents; everything else after,
    /// parents first. A move sorts as the removal of its source: it must empty the source's
    /// folder before that folder's own removal runs (a folder that is not empty is kept, and
    /// the next round uploads it again).
    fn sort_key(&self) -> (bool, &str) {
        match self {
            Op::MoveRemote { from, .. } | Op::MoveLocal { from, .. } => (true, from),
            Op::DeleteRemote { path, .. } | Op::DeleteLocal { path } => (true, path),
            _ => (false, self.path()),
        }
    }

    /// Push runs these; pull runs the others (plus the bookkeeping ones, which both run).
    pub fn is_upload_side(&self) -> bool {
        matches!(
            self,
            Op::Upload { .. }
                | Op::DeleteRemote { .. }
                | Op::MoveRemote { .. }
                | Op::RecordSynced { .. }
                | Op::ForgetSynced { .. }
        )
    }

    pub fn is_download_side(&self) -> bool {
        matches!(
            self,
            Op::Download { .. }
                | Op::MkdirLocal { .. }
                | Op::DeleteLocal { .. }
                | Op::MoveLocal { .. }
                | Op::RecordSynced { .. }
                | Op::ForgetSynced { .. }
        )
    }
}

/// Plans one path at a time over the union of the three trees; same input, same output.
pub fn plan(local: &LocalTree, remote: &RemoteTree, synced: &SyncedTree) -> Vec<Op> {
    let mut ops: Vec<Op> = union(local, remote, synced)
        .filter_map(|(p, le, re, se)| plan_path(p, le, re, se))
        .collect();
    defer_uploads_under_moved_folders(&mut ops, local);
    defer_folder_copies_over_removals(&mut ops, local);
    sort_ops(&mut ops);
    ops
}

/// One path's entries in the three trees.
type Entries<'a> = (
    &'a str,
    Option<&'a LocalEntry>,
    Option<&'a RemoteEntry>,
    Option<&'a SyncedEntry>,
);

/// Every path of the three trees once, in order, with its entry in each: one merge of the three
/// sorted maps, without a set of all paths or a look-up per path and tree.
fn union<'a>(
    local: &'a LocalTree,
    remote: &'a RemoteTree,
    synced: &'a SyncedTree,
) -> impl Iterator<Item = Entries<'a>> {
    let (mut l, mut r, mut s) = (
        local.iter().peekable(),
        remote.iter().peekable(),
        synced.iter().peekable(),
    );
    std::iter::from_fn(move || {
        let path: &String = [
            l.peek().map(|e| e.0),
            r.peek().map(|e| e.0),
            s.peek().map(|e| e.0),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let le = l.next_if(|(p, _)| *p == path).map(|(_, e)| e);
        let re = r.next_if(|(p, _)| *p == path).map(|(_, e)| e);
        let se = s.next_if(|(p, _)| *p == path).map(|(_, e)| e);
        Some((path.as_str(), le, re, se))
    })
}

/// A local folder whose path takes a file or a link this round is moved aside with everything
/// in it: the push renames it to its conflict copy (`Upload { conflict }`), or the pull does
/// before writing the remote entry (`Download`). Uploads under it wait for the next round, which
/// finds them in the copy: sent now, they would land under a file on the server, where no device
/// can write them (and a conflict copy made there would never be cleaned up).
fn defer_uploads_under_moved_folders(ops: &mut Vec<Op>, local: &LocalTree) {
    let moved: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Upload {
                path,
                conflict: true,
                ..
            }
            | Op::Download { path, .. }
                if is_local_dir(local, path) =>
            {
                Some(format!("{path}/"))
            }
            _ => None,
        })
        .collect();
    if moved.is_empty() {
        return;
    }
    ops.retain(|op| {
        !(matches!(op, Op::Upload { .. }) && moved.iter().any(|m| op.path().starts_with(m)))
    });
}

/// A local folder that goes up as a conflict copy is renamed to it by the push, which runs
/// before the pull. Removals the same plan makes under it (a file deleted or moved away
/// elsewhere, still as synced here) would then find nothing at their paths, and what they should
/// have removed would go up in the copy: content deleted elsewhere back on every device (planner
/// seed 47936). Such a folder waits for the next round, which plans it again once they ran.
/// Uploads under it wait already ([`defer_uploads_under_moved_folders`]).
fn defer_folder_copies_over_removals(ops: &mut Vec<Op>, local: &LocalTree) {
    let removing: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteLocal { path } => Some(path.as_str()),
            Op::MoveLocal { from, .. } => Some(from.as_str()),
            _ => None,
        })
        .collect();
    let waiting: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Upload {
                path,
                conflict: true,
                ..
            } if is_local_dir(local, path)
                && removing
                    .iter()
                    .any(|r| *r != path && crate::cache::is_under(r, path)) =>
            {
                Some(path.clone())
            }
            _ => None,
        })
        .collect();
    ops.retain(|op| {
        !(matches!(op, Op::Upload { conflict: true, .. }) && waiting.iter().any(|w| w == op.path()))
    });
}

fn is_local_dir(local: &LocalTree, path: &str) -> bool {
    matches!(local.get(path).map(|e| &e.content), Some(Content::Dir))
}

/// The deterministic order: removals (and moves, by source) by path descending (children
/// first), then the rest by path ascending (a parent is a prefix of its children, so it sorts
/// first).
pub fn sort_ops(ops: &mut [Op]) {
    ops.sort_by(|a, b| match (a.sort_key(), b.sort_key()) {
        ((true, pa), (true, pb)) => pb.cmp(pa),
        ((false, pa), (false, pb)) => pa.cmp(pb),
        ((true, _), (false, _)) => Ordering::Less,
        ((false, _), (true, _)) => Ordering::Greater,
    });
}

fn plan_path(
    path: &str,
    le: Option<&LocalEntry>,
    re: Option<&RemoteEntry>,
    se: Option<&SyncedEntry>,
) -> Option<Op> {
    let l = le.map(|e| &e.content);
    let r = re.and_then(|e| e.content.as_ref());
    let s = se.map(|e| &e.content);
    let remote_version = re.map_or(Version(0), |e| e.version);
    if l == r {
        return match le {
            Some(le) if needs_record(le, se, remote_version) => Some(Op::RecordSynced {
                path: path.to_owned(),
                version: remote_version,
            }),
            Some(_) => None,
            None => se.map(|_| Op::ForgetSynced {
                path: path.to_owned(),
            }),
        };
    }
    let path = path.to_owned();
    let local_changed = l != s;
    let remote_changed = r != s;
    let take_remote = |path: String| match r {
        Some(Content::Dir) => Op::MkdirLocal {
            path,
            version: remote_version,
        },
        Some(_) => Op::Download {
            path,
            version: remote_version,
            conflict: local_changed && l.is_some(),
        },
        None => Op::DeleteLocal { path },
    };
    Some(match (local_changed, remote_changed, l, r) {
        // Only the remote moved, or a local delete meets a remote edit: the edit wins.
        (false, _, _, _) | (true, true, None, Some(_)) => take_remote(path),
        // Only the local side moved, or a local edit meets a remote delete: the edit wins.
        (true, false, Some(_), _) | (true, true, Some(_), None) => Op::Upload {
            path,
            base_version: remote_version,
            conflict: false,
        },
        (true, false, None, _) => Op::DeleteRemote {
            path,
            base_version: remote_version,
        },
        // Both changed, differently: commit on the stale base; the server makes a conflict copy.
        (true, true, Some(_), Some(_)) => Op::Upload {
            path,
            base_version: se.map_or(Version(0), |e| e.version),
            conflict: true,
        },
        // l == r == None was handled above.
        (true, true, None, None) => return None,
    })
}

/// Both sides agree; does the synced entry need refreshing (new version, new stat)?
fn needs_record(local: &LocalEntry, synced: Option<&SyncedEntry>, remote_version: Version) -> bool {
    let Some(s) = synced else { return true };
    if s.version != remote_version || s.content != local.content {
        return true;
    }
    // Only a file's stat is ever read back (the scanner reuses its hash when it matches, the
    // executors compare it before overwriting). A directory's mtime changes whenever a child
    // does, and a symlink's stat differs between the scan (size 0) and the executors' `lstat`
    // (size = target length): comparing those would re-record them every round, forever.
    matches!(local.content, Content::File { .. }) && s.stat != local.stat
}

pub mod moves;

#[cfg(test)]
mod random;
#[cfg(test)]
mod tests;
