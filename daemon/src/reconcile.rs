//! Reconciling by hashes: a path on disk that the state database has no synced record of (a
//! lost or damaged database, a folder added again) is matched against the server's history.
//!
//! Without a synced record the planner cannot tell "deleted elsewhere since" from "new here": a
//! file that is live on disk and a tombstone on the server would be uploaded again, and a file
//! the server has edited since would become a conflict copy. So before planning, each such path
//! is looked up in the server's versions of it; when one of them holds exactly the local content,
//! the path was in sync at that version, and that is recorded as its synced entry. The planner
//! then sees an unchanged local file: a later delete or edit on the server wins, as it would
//! have with the database intact. Nothing can be lost by this: the only content it lets the
//! server's side replace is content the server already keeps as a version.

use futures::StreamExt;

use cairn_proto::Version;

use crate::error::Result;
use crate::remote::Remote;
use crate::state::{FolderId, State, SyncedChange};
use crate::tree::{LocalEntry, LocalTree, RemoteEntry, RemoteTree, SyncedEntry, SyncedTree};

/// History look-ups in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;

/// The paths worth asking the server about: on disk, with no synced record, and the server's
/// current entry differs from the disk (a tombstone, or other content). A path the server never
/// had is new, and one it holds as it is here needs no history. Sorted.
pub fn candidates(local: &LocalTree, remote: &RemoteTree, synced: &SyncedTree) -> Vec<String> {
    local
        .iter()
        .filter(|(path, l)| {
            !synced.contains_key(*path)
                && remote
                    .get(*path)
                    .is_some_and(|r| r.content.as_ref() != Some(&l.content))
        })
        .map(|(path, _)| path.clone())
        .collect()
}

/// The newest of a path's versions whose content is exactly the local one, if any.
pub fn known_version(local: &LocalEntry, versions: &[RemoteEntry]) -> Option<Version> {
    versions
        .iter()
        .filter(|v| v.content.as_ref() == Some(&local.content))
        .map(|v| v.version)
        .max()
}

/// Looks the candidates up, records each adopted path as synced at the version that holds its
/// content (in the state database and in `synced`), and returns how many were adopted.
pub async fn reconcile(
    remote: &Remote,
    state: &mut State,
    folder: FolderId,
    (local, remote_tree): (&LocalTree, &RemoteTree),
    synced: &mut SyncedTree,
) -> Result<usize> {
    let paths = candidates(local, remote_tree, synced);
    if paths.is_empty() {
        return Ok(0);
    }
    let looked_up: Vec<Result<(String, Vec<RemoteEntry>)>> =
        futures::stream::iter(paths.into_iter().map(|path| async move {
            let versions = remote.list_versions(&path).await?;
            let versions = versions.iter().filter_map(RemoteEntry::from_pb).collect();
            Ok((path, versions))
        }))
        .buffered(LOOKUPS_IN_FLIGHT)
        .collect()
        .await;
    let mut changes = Vec::new();
    for item in looked_up {
        let (path, versions) = item?;
        let l = &local[&path];
        if let Some(version) = known_version(l, &versions) {
            changes.push(SyncedChange::Put(
                path,
                SyncedEntry {
                    version,
                    content: l.content.clone(),
                    stat: l.stat,
                },
            ));
        }
    }
    state.apply(folder, &changes)?;
    for c in &changes {
        if let SyncedChange::Put(path, entry) = c {
            tracing::info!(
                path,
                version = entry.version.0,
                "no synced record; the server holds this content as an earlier version"
            );
            synced.insert(path.clone(), entry.clone());
        }
    }
    Ok(changes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Op, plan};
    use crate::tree::{Content, Stat};
    use cairn_proto::ContentId;

    fn file(n: u8) -> Content {
        Content::File {
            id: ContentId::from_slice(&[n; 32]).unwrap(),
            exec: false,
        }
    }

    fn local(content: Content) -> LocalEntry {
        LocalEntry {
            content,
            stat: Stat::default(),
        }
    }

    fn remote(version: u64, content: Option<Content>) -> RemoteEntry {
        RemoteEntry {
            version: Version(version),
            deleted: content.is_none(),
            content,
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
        }
    }

    #[test]
    fn only_unsynced_paths_that_differ_from_the_server_are_looked_up() {
        let mut l = LocalTree::new();
        let mut r = RemoteTree::new();
        let mut s = SyncedTree::new();
        l.insert("deleted-there".into(), local(file(1)));
        r.insert("deleted-there".into(), remote(2, None));
        l.insert("same".into(), local(file(2)));
        r.insert("same".into(), remote(1, Some(file(2))));
        l.insert("new".into(), local(file(3)));
        l.insert("known".into(), local(file(4)));
        r.insert("known".into(), remote(3, None));
        s.insert(
            "known".into(),
            SyncedEntry {
                version: Version(2),
                content: file(4),
                stat: Stat::default(),
            },
        );
        assert_eq!(candidates(&l, &r, &s), vec!["deleted-there".to_owned()]);
    }

    #[test]
    fn the_newest_version_with_the_local_content_is_chosen() {
        let versions = [
            remote(1, Some(file(1))),
            remote(2, Some(file(2))),
            remote(3, Some(file(1))),
            remote(4, None),
        ];
        assert_eq!(known_version(&local(file(1)), &versions), Some(Version(3)));
        assert_eq!(known_version(&local(file(9)), &versions), None);
    }

    #[test]
    fn an_adopted_file_deleted_on_the_server_is_deleted_here_not_uploaded() {
        let mut l = LocalTree::new();
        let mut r = RemoteTree::new();
        l.insert("y".into(), local(file(1)));
        r.insert("y".into(), remote(2, None));
        // Without a record the file looks new: it would be uploaded over the tombstone.
        assert!(matches!(
            plan(&l, &r, &SyncedTree::new())[..],
            [Op::Upload { .. }]
        ));
        let mut s = SyncedTree::new();
        let v = known_version(&l["y"], &[remote(1, Some(file(1))), remote(2, None)]).unwrap();
        s.insert(
            "y".into(),
            SyncedEntry {
                version: v,
                content: file(1),
                stat: Stat::default(),
            },
        );
        assert_eq!(plan(&l, &r, &s), vec![Op::DeleteLocal { path: "y".into() }]);
    }

    #[test]
    fn an_adopted_file_edited_on_the_server_is_downloaded_not_conflicted() {
        let mut l = LocalTree::new();
        let mut r = RemoteTree::new();
        l.insert("x".into(), local(file(1)));
        r.insert("x".into(), remote(2, Some(file(2))));
        let mut s = SyncedTree::new();
        s.insert(
            "x".into(),
            SyncedEntry {
                version: Version(1),
                content: file(1),
                stat: Stat::default(),
            },
        );
        assert_eq!(
            plan(&l, &r, &s),
            vec![Op::Download {
                path: "x".into(),
                version: Version(2),
                conflict: false
            }]
        );
    }
}
