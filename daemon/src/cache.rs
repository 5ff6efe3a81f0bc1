//! What a folder's control task remembers between rounds: the local tree as last scanned, the
//! synced tree as last committed, the ignore rules and the scanner's open problems.
//!
//! A full scan rebuilds it. A watch event patches it: the touched paths are scanned again with the
//! same scanner ([`crate::scanner::scan_region`]) and [`FolderCache::merge`] replaces exactly the
//! part of the local tree that scan covered. The synced tree changes only through the changes the
//! executors committed to the state DB ([`crate::state::State::take_changes`]), or by a reload
//! when another connection wrote to the DB.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::ignore_rules::IgnoreRules;
use crate::scanner::{IGNORE_FILE, Region, Scanned, rel_key};
use crate::state::{FolderId, SyncedChange};
use crate::tree::{Content, LocalTree, SyncedTree};

/// (path as reported, reason) of one scanner problem.
pub type Problem = (String, String);

pub struct FolderCache {
    pub local: LocalTree,
    /// Where a local path lives on disk, for the few whose name on disk is not their path (not
    /// NFC); the others are at `root/path`.
    pub disk: HashMap<String, PathBuf>,
    /// Exactly the folder's rows of the state DB.
    pub synced: SyncedTree,
    pub rules: IgnoreRules,
    /// Paths whose local state is unknown (see [`Scanned::skipped`]).
    pub skipped: BTreeSet<String>,
    /// Scanner problems by the path they concern; reported every round until that path is
    /// scanned again.
    pub problems: BTreeMap<String, Vec<Problem>>,
    /// The DB's `data_version` when `synced` was known to match it.
    pub db_version: i64,
}

impl FolderCache {
    /// From a complete full scan (`scanned.incomplete` false; its errors already taken out as
    /// `problems`).
    pub fn new(
        root: &Path,
        scanned: Scanned,
        synced: SyncedTree,
        rules: IgnoreRules,
        problems: BTreeMap<String, Vec<Problem>>,
        db_version: i64,
    ) -> Self {
        FolderCache {
            local: scanned.tree,
            disk: unusual_names(root, scanned.disk),
            synced,
            rules,
            skipped: scanned.skipped,
            problems,
            db_version,
        }
    }

    /// Folds in a scan of `region` (taking its tree, disk paths, skipped paths and errors; the
    /// chunks stay in `part`). Returns every path whose local entry may have changed.
    pub fn merge(&mut self, root: &Path, region: &Region, part: &mut Scanned) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        for t in region.targets() {
            changed.insert(t.to_owned());
            self.remove_subtree(t, &mut changed);
        }
        // Parents first: a directory on the way that is gone, ignored or no longer a directory
        // has no children any more.
        for a in region.ancestors() {
            self.skipped.remove(a);
            self.problems.remove(a);
            if !matches!(part.tree.get(a).map(|e| &e.content), Some(Content::Dir)) {
                changed.insert(a.to_owned());
                self.remove_subtree(a, &mut changed);
            }
        }
        for (p, e) in std::mem::take(&mut part.tree) {
            self.disk.remove(&p);
            changed.insert(p.clone());
            self.local.insert(p, e);
        }
        self.disk
            .extend(unusual_names(root, std::mem::take(&mut part.disk)));
        self.skipped.append(&mut part.skipped);
        for (k, v) in problems_of(root, std::mem::take(&mut part.errors)) {
            self.problems.entry(k).or_default().extend(v);
        }
        changed
    }

    /// Drops `top` and everything under it from the local tree and the problem lists.
    fn remove_subtree(&mut self, top: &str, changed: &mut BTreeSet<String>) {
        let keys: Vec<String> = subtree(&self.local, top).cloned().collect();
        for k in keys {
            self.local.remove(&k);
            self.disk.remove(&k);
            changed.insert(k);
        }
        self.skipped.retain(|k| !is_under(k, top));
        self.problems.retain(|k, _| !is_under(k, top));
    }

    /// Applies what the executors committed; returns the paths it touched.
    pub fn apply_synced(
        &mut self,
        folder: FolderId,
        changes: Vec<(FolderId, SyncedChange)>,
    ) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        for (f, c) in changes {
            if f != folder {
                continue;
            }
            match c {
                SyncedChange::Put(p, e) => {
                    touched.insert(p.clone());
                    self.synced.insert(p, e);
                }
                SyncedChange::Remove(p) => {
                    self.synced.remove(&p);
                    touched.insert(p);
                }
            }
        }
        touched
    }

    /// Replaces the synced tree by `fresh` (read from the DB); returns the paths that differ.
    pub fn reload_synced(&mut self, fresh: SyncedTree, db_version: i64) -> BTreeSet<String> {
        let mut differ: BTreeSet<String> = fresh
            .iter()
            .filter(|(p, e)| self.synced.get(*p) != Some(*e))
            .map(|(p, _)| p.clone())
            .collect();
        differ.extend(
            self.synced
                .keys()
                .filter(|p| !fresh.contains_key(*p))
                .cloned(),
        );
        self.synced = fresh;
        self.db_version = db_version;
        differ
    }

    /// Where `path` (in the local tree) lives on disk.
    pub fn disk_path(&self, root: &Path, path: &str) -> PathBuf {
        self.disk
            .get(path)
            .cloned()
            .unwrap_or_else(|| root.join(path))
    }

    /// Every open scanner problem, as errors.
    pub fn problem_errors(&self) -> Vec<Error> {
        self.problems
            .values()
            .flatten()
            .map(|(p, r)| Error::path(p, r.clone()))
            .collect()
    }
}

/// The disk paths that are not simply `root/path`.
fn unusual_names(root: &Path, disk: HashMap<String, PathBuf>) -> HashMap<String, PathBuf> {
    disk.into_iter()
        .filter(|(p, d)| *d != root.join(p))
        .collect()
}

/// Does a change to any of these paths change the ignore rules (so only a full scan is right)?
pub fn touches_ignore_rules<'a>(paths: impl IntoIterator<Item = &'a String>) -> bool {
    paths
        .into_iter()
        .any(|p| p.rsplit('/').next() == Some(IGNORE_FILE))
}

/// `path` is `top` or below it.
pub fn is_under(path: &str, top: &str) -> bool {
    path.strip_prefix(top)
        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

/// The keys of `tree` that are `top` or below it, in order.
pub fn subtree<'a, V>(
    tree: &'a BTreeMap<String, V>,
    top: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    tree.range::<str, _>((std::ops::Bound::Included(top), std::ops::Bound::Unbounded))
        .map(|(k, _)| k)
        .take_while(move |k| k.starts_with(top))
        .filter(move |k| is_under(k, top))
}

/// Scanner errors keyed by the path they concern (root-relative, NFC).
pub fn problems_of(root: &Path, errors: Vec<Error>) -> BTreeMap<String, Vec<Problem>> {
    let mut out: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    for e in errors {
        let (key, problem) = match e {
            Error::Path { path, reason } => {
                let key = if Path::new(&path).is_absolute() {
                    rel_key(root, Path::new(&path)).unwrap_or_else(|| path.clone())
                } else {
                    path.clone()
                };
                (key, (path, reason))
            }
            other => (String::new(), (String::new(), other.to_string())),
        };
        out.entry(key).or_default().push(problem);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{LocalEntry, Stat};

    fn dir() -> LocalEntry {
        LocalEntry {
            content: Content::Dir,
            stat: Stat::default(),
        }
    }
    fn file(n: u8) -> LocalEntry {
        LocalEntry {
            content: Content::File {
                id: cairn_proto::ContentId([n; 32]),
                exec: false,
            },
            stat: Stat::default(),
        }
    }
    fn cache(local: LocalTree) -> FolderCache {
        FolderCache {
            local,
            disk: HashMap::new(),
            synced: SyncedTree::new(),
            rules: IgnoreRules::load(Path::new("/nonexistent"), &LocalTree::new()),
            skipped: BTreeSet::new(),
            problems: BTreeMap::new(),
            db_version: 0,
        }
    }

    #[test]
    fn subtree_takes_the_path_and_its_children_but_not_its_siblings() {
        let t: BTreeMap<String, ()> = ["a", "a b", "a/x", "a/y/z", "a0", "ab", "b"]
            .into_iter()
            .map(|k| (k.to_owned(), ()))
            .collect();
        assert_eq!(
            subtree(&t, "a").map(String::as_str).collect::<Vec<_>>(),
            vec!["a", "a/x", "a/y/z"]
        );
    }

    #[test]
    fn a_merge_replaces_the_region_and_keeps_the_rest() {
        let mut c = cache(
            [
                ("d".to_owned(), dir()),
                ("d/f".to_owned(), file(1)),
                ("d/g".to_owned(), file(2)),
                ("gone".to_owned(), dir()),
                ("gone/x".to_owned(), file(3)),
                ("other".to_owned(), file(4)),
            ]
            .into(),
        );
        // d/f was edited, gone/x was reported but its whole directory is gone.
        let region = Region::new(["d/f", "gone/x"]);
        let mut part = Scanned::default();
        part.tree.insert("d".into(), dir());
        part.tree.insert("d/f".into(), file(9));
        let changed = c.merge(Path::new("/r"), &region, &mut part);
        assert_eq!(
            c.local.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["d", "d/f", "d/g", "other"]
        );
        assert_eq!(c.local["d/f"], file(9));
        assert_eq!(
            changed.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["d", "d/f", "gone", "gone/x"]
        );
    }

    #[test]
    fn a_directory_target_is_replaced_with_its_whole_subtree() {
        let mut c = cache(
            [
                ("d".to_owned(), dir()),
                ("d/old".to_owned(), file(1)),
                ("d/sub/deep".to_owned(), file(2)),
            ]
            .into(),
        );
        let region = Region::new(["d"]);
        let mut part = Scanned::default();
        part.tree.insert("d".into(), dir());
        part.tree.insert("d/new".into(), file(3));
        c.merge(Path::new("/r"), &region, &mut part);
        assert_eq!(
            c.local.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["d", "d/new"]
        );
    }
}
