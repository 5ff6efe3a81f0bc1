//! Move pairing and ignore filtering: pure passes over a plan and the trees (no I/O).
//!
//! A rename shows up in a plan as a delete of the old path and a create of the new one. When the
//! content is the same and the old path was still at its synced version, the pair becomes one
//! move: `MoveRemote` (commit with `move_from`, no chunk travels) or `MoveLocal` (rename here
//! instead of downloading).

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::{ContentId, Version};

use super::{Op, sort_ops};
use crate::tree::{Content, LocalTree, RemoteTree, SyncedTree};

fn file_id(c: Option<&Content>) -> Option<ContentId> {
    match c {
        Some(Content::File { id, .. }) => Some(*id),
        _ => None,
    }
}

/// Replaces delete + create pairs of one file's content by moves. Deterministic: candidates are
/// matched in path order.
pub fn pair(ops: Vec<Op>, local: &LocalTree, remote: &RemoteTree, synced: &SyncedTree) -> Vec<Op> {
    // Local renames: DeleteRemote{from} + Upload{to, new on both sides}.
    let mut deleted_here: BTreeMap<ContentId, Vec<(String, Version)>> = BTreeMap::new();
    // Remote renames: DeleteLocal{from} + Download{to} of content we hold at `from`.
    let mut deleted_there: BTreeMap<ContentId, Vec<String>> = BTreeMap::new();
    for op in &ops {
        match op {
            Op::DeleteRemote { path, base_version } => {
                let s = synced.get(path);
                let remote_same = s.is_some_and(|s| {
                    remote.get(path).is_some_and(|r| {
                        r.version == s.version && r.content.as_ref() == Some(&s.content)
                    })
                });
                if let (Some(id), true) = (file_id(s.map(|s| &s.content)), remote_same) {
                    deleted_here
                        .entry(id)
                        .or_default()
                        .push((path.clone(), *base_version));
                }
            }
            Op::DeleteLocal { path } => {
                let l = local.get(path).map(|e| &e.content);
                let as_synced = synced.get(path).is_some_and(|s| Some(&s.content) == l);
                if let (Some(id), true) = (file_id(l), as_synced) {
                    deleted_there.entry(id).or_default().push(path.clone());
                }
            }
            _ => {}
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in &ops {
        let paired = match op {
            Op::Upload {
                path,
                base_version,
                conflict: false,
            } if !synced.contains_key(path) => file_id(local.get(path).map(|e| &e.content))
                .and_then(|id| deleted_here.get_mut(&id))
                .and_then(Vec::pop)
                .map(|(from, from_version)| Op::MoveRemote {
                    from,
                    to: path.clone(),
                    from_version,
                    base_version: *base_version,
                }),
            Op::Download {
                path,
                version,
                conflict: false,
            } if !local.contains_key(path) => {
                file_id(remote.get(path).and_then(|r| r.content.as_ref()))
                    .and_then(|id| deleted_there.get_mut(&id))
                    .and_then(Vec::pop)
                    .map(|from| Op::MoveLocal {
                        from,
                        to: path.clone(),
                        version: *version,
                    })
            }
            _ => None,
        };
        match paired {
            Some(m) => {
                if let Op::MoveRemote { from, .. } | Op::MoveLocal { from, .. } = &m {
                    used.insert(from.clone());
                }
                out.push(m);
            }
            None => out.push(op.clone()),
        }
    }
    out.retain(|op| {
        !(matches!(op, Op::DeleteRemote { .. } | Op::DeleteLocal { .. })
            && used.contains(op.path()))
    });
    sort_ops(&mut out);
    out
}

/// Drops every path `ignored` says no to from the remote and synced trees, so an ignored path is
/// neither downloaded nor deleted remotely (the scanner already leaves it out of the local tree).
pub fn filter_ignored(
    remote: &mut RemoteTree,
    synced: &mut SyncedTree,
    ignored: impl Fn(&str, bool) -> bool,
) {
    remote.retain(|p, r| !ignored(p, matches!(r.content, Some(Content::Dir))));
    synced.retain(|p, s| !ignored(p, matches!(s.content, Content::Dir)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::plan;
    use crate::tree::{LocalEntry, RemoteEntry, Stat, SyncedEntry};

    fn file(n: u8) -> Content {
        Content::File {
            id: ContentId([n; 32]),
            exec: false,
        }
    }
    fn l(p: &str, c: Content) -> (String, LocalEntry) {
        (
            p.into(),
            LocalEntry {
                content: c,
                stat: Stat::default(),
            },
        )
    }
    fn r(p: &str, v: u64, c: Option<Content>) -> (String, RemoteEntry) {
        (
            p.into(),
            RemoteEntry {
                version: Version(v),
                deleted: c.is_none(),
                content: c,
                size: 0,
                mode: 0o644,
                mtime_ns: 0,
            },
        )
    }
    fn s(p: &str, v: u64, c: Content) -> (String, SyncedEntry) {
        (
            p.into(),
            SyncedEntry {
                version: Version(v),
                content: c,
                stat: Stat::default(),
            },
        )
    }

    #[test]
    fn a_local_rename_becomes_one_remote_move() {
        let local: LocalTree = [l("new", file(1))].into();
        let remote: RemoteTree = [r("old", 4, Some(file(1)))].into();
        let synced: SyncedTree = [s("old", 4, file(1))].into();
        let ops = pair(plan(&local, &remote, &synced), &local, &remote, &synced);
        assert_eq!(
            ops,
            vec![Op::MoveRemote {
                from: "old".into(),
                to: "new".into(),
                from_version: Version(4),
                base_version: Version(0)
            }]
        );
    }

    #[test]
    fn a_rename_over_a_remotely_edited_file_is_not_a_move() {
        let local: LocalTree = [l("new", file(1))].into();
        let remote: RemoteTree = [r("old", 5, Some(file(2)))].into();
        let synced: SyncedTree = [s("old", 4, file(1))].into();
        let ops = pair(plan(&local, &remote, &synced), &local, &remote, &synced);
        assert!(
            ops.iter().all(|o| !matches!(o, Op::MoveRemote { .. })),
            "{ops:?}"
        );
    }

    #[test]
    fn a_remote_rename_becomes_a_local_rename() {
        let local: LocalTree = [l("old", file(1))].into();
        let remote: RemoteTree = [r("old", 5, None), r("new", 6, Some(file(1)))].into();
        let synced: SyncedTree = [s("old", 4, file(1))].into();
        let ops = pair(plan(&local, &remote, &synced), &local, &remote, &synced);
        assert_eq!(
            ops,
            vec![Op::MoveLocal {
                from: "old".into(),
                to: "new".into(),
                version: Version(6)
            }]
        );
    }

    #[test]
    fn ignored_paths_leave_the_remote_and_synced_trees() {
        let mut remote: RemoteTree =
            [r("keep", 1, Some(file(1))), r("tmp/x", 2, Some(file(2)))].into();
        let mut synced: SyncedTree = [s("tmp/x", 2, file(2))].into();
        filter_ignored(&mut remote, &mut synced, |p, _| p.starts_with("tmp/"));
        assert_eq!(remote.keys().collect::<Vec<_>>(), vec!["keep"]);
        assert!(synced.is_empty());
    }
}
