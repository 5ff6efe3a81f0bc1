//! `.cairnignore` rules as a predicate over namespace paths, so the planner's input can drop
//! ignored paths from the remote and synced trees too (the scanner already skips them locally).

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::scanner::{IGNORE_FILE, is_skipped_name};
use crate::tree::LocalTree;

/// The rules of every `.cairnignore` the scan found, each scoped to its folder.
pub struct IgnoreRules {
    /// (folder prefix with a trailing `/`, or "" for the root; its matcher).
    rules: Vec<(String, Gitignore)>,
}

impl IgnoreRules {
    /// Reads the `.cairnignore` files present in the local tree (unreadable ones are skipped: the
    /// scanner honoured the same files, so a broken one only loses its remote-side filtering).
    pub fn load(root: &Path, local: &LocalTree) -> Self {
        let mut rules = Vec::new();
        for path in local
            .keys()
            .filter(|p| p.rsplit('/').next() == Some(IGNORE_FILE))
        {
            let dir = path.strip_suffix(IGNORE_FILE).unwrap_or_default();
            let mut b = GitignoreBuilder::new(root.join(dir));
            if b.add(root.join(path)).is_some() {
                tracing::warn!(
                    "{path}: cannot read all of it; some remote paths may not be filtered"
                );
            }
            match b.build() {
                Ok(g) => rules.push((dir.to_owned(), g)),
                Err(e) => tracing::warn!("{path}: {e}"),
            }
        }
        IgnoreRules { rules }
    }

    /// Is `path` (namespace-relative) ignored, by Cairn's built-in names or a `.cairnignore`?
    pub fn is_ignored(&self, root: &Path, path: &str, is_dir: bool) -> bool {
        if path.split('/').any(is_skipped_name) {
            return true;
        }
        self.rules.iter().any(|(dir, g)| {
            path.starts_with(dir.as_str())
                && path.len() > dir.len()
                && g.matched_path_or_any_parents(root.join(path), is_dir)
                    .is_ignore()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, LocalEntry, Stat};

    #[test]
    fn a_nested_ignore_file_applies_below_its_folder_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join(".cairnignore"), "*.log\n").unwrap();
        std::fs::write(d.path().join("sub/.cairnignore"), "build/\n").unwrap();
        let e = LocalEntry {
            content: Content::Dir,
            stat: Stat::default(),
        };
        let local: LocalTree = [
            (".cairnignore".to_owned(), e.clone()),
            ("sub/.cairnignore".to_owned(), e),
        ]
        .into();
        let r = IgnoreRules::load(d.path(), &local);
        assert!(r.is_ignored(d.path(), "x.log", false));
        assert!(r.is_ignored(d.path(), "sub/deep/y.log", false));
        assert!(r.is_ignored(d.path(), "sub/build/out.o", false));
        assert!(!r.is_ignored(d.path(), "build/out.o", false));
        assert!(!r.is_ignored(d.path(), "sub/keep.txt", false));
        assert!(r.is_ignored(d.path(), "a/.cairn-tmp-0123", false));
    }
}
