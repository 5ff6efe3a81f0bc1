//! Case-insensitive folders: where each namespace path lands on disk when the folder already
//! holds another entry whose name differs from it only in letter case (a twin: `A.txt` and
//! `a.txt`, both legal in a namespace). The twin is materialized as `a (case conflict).txt`, never
//! written over the other, and the user is told. The next upload-side plan (a push, or the
//! daemon's next round) sees a delete of `a.txt` and a new `a (case conflict).txt` with the same
//! content and pairs them into a move, so the namespace itself drops the twin (as Dropbox does).
//!
//! Whether a folder folds case is asked of the folder itself (a probe file), not assumed per
//! platform: vfat on Linux folds, APFS usually does, ext4 does per directory with `+F`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cairn_proto::{case_conflict_name, case_fold_key, to_nfc};

use crate::error::{Error, Result};
use crate::localfs::file_name;
use crate::scanner::TMP_PREFIX;
use crate::tree::SyncedTree;

/// Does `root` fold letter case? Creates, looks up in other case, removes a probe file. A folder
/// that cannot be probed (read-only) is treated as folding: the checks that follow are only
/// slower, never wrong, on a folder that does not.
pub fn probe_case_insensitive(root: &Path) -> bool {
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let upper = root.join(format!("{TMP_PREFIX}CASEPROBE{tag}"));
    let lower = root.join(format!("{TMP_PREFIX}caseprobe{tag}"));
    if std::fs::File::create_new(&upper).is_err() {
        return true;
    }
    let folds = std::fs::symlink_metadata(&lower).is_ok();
    let _ = std::fs::remove_file(&upper);
    folds
}

/// What a placement is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// The path is about to be written: a twin gets a free (or its own earlier) alias, and the
    /// user is told.
    Write,
    /// The path's existing entry is looked up (delete, move source, record).
    Find,
}

/// Places the namespace paths of one pull run on disk. On a folder that does not fold case every
/// path is its own disk path.
pub struct Placer<'a> {
    root: &'a Path,
    folds: bool,
    synced: &'a SyncedTree,
    /// Namespace path → root-relative disk path, as decided this run.
    placed: RefCell<BTreeMap<String, String>>,
    /// Per disk folder (root-relative): fold key → spelling, read from disk once, plus what this
    /// run placed there.
    names: RefCell<HashMap<String, HashMap<String, String>>>,
    notices: RefCell<Vec<Error>>,
}

impl<'a> Placer<'a> {
    pub fn new(root: &'a Path, folds: bool, synced: &'a SyncedTree) -> Self {
        Placer {
            root,
            folds,
            synced,
            placed: RefCell::default(),
            names: RefCell::default(),
            notices: RefCell::default(),
        }
    }

    /// What the run had to tell the user: every path kept under another name.
    pub fn take_notices(&self) -> Vec<Error> {
        std::mem::take(&mut self.notices.borrow_mut())
    }

    /// The root-relative disk path of namespace path `path` (already validated).
    pub fn place(&self, path: &str, intent: Intent) -> Result<String> {
        if !self.folds {
            return Ok(path.to_owned());
        }
        if let Some(p) = self.placed.borrow().get(path) {
            return Ok(p.clone());
        }
        let (parent, name) = match path.rfind('/') {
            Some(i) => (self.place(&path[..i], intent)?, &path[i + 1..]),
            None => (String::new(), path),
        };
        let join = |n: &str| {
            if parent.is_empty() {
                n.to_owned()
            } else {
                format!("{parent}/{n}")
            }
        };
        self.load(&parent);
        let chosen = {
            let names = self.names.borrow();
            let here = &names[&parent];
            let alias = |other: &str| {
                (1..100)
                    .map(|attempt| file_name(&case_conflict_name(name, attempt)).to_owned())
                    .find(|cand| match here.get(&case_fold_key(cand)) {
                        None => true,
                        Some(sp) => sp == cand && self.is_ours(&join(cand), path),
                    })
                    .map(|cand| (cand, other.to_owned()))
            };
            match here.get(&case_fold_key(name)) {
                None => Ok((name.to_owned(), None)),
                Some(sp) if sp == name => Ok((name.to_owned(), None)),
                Some(other) => match alias(other) {
                    Some((cand, other)) => Ok((cand, Some(other))),
                    None => Err(Error::path(
                        path,
                        format!(
                            "{other:?} holds this name in another letter case here, and no free \"(case conflict)\" name is left"
                        ),
                    )),
                },
            }
        };
        let (disk_name, twin) = chosen?;
        let disk = join(&disk_name);
        if intent == Intent::Write {
            if let Some(other) = twin {
                self.notices.borrow_mut().push(Error::path(
                    path,
                    format!(
                        "this folder ignores letter case and {other:?} already holds the name: kept here as {disk:?} \
                         (nothing is overwritten; the next push or daemon round renames it on the server too)"
                    ),
                ));
            }
            self.names
                .borrow_mut()
                .get_mut(&parent)
                .expect("listed above")
                .insert(case_fold_key(&disk_name), disk_name);
        }
        self.placed
            .borrow_mut()
            .insert(path.to_owned(), disk.clone());
        Ok(disk)
    }

    /// Reads folder `dir` (root-relative) once per run.
    fn load(&self, dir: &str) {
        if !self.names.borrow().contains_key(dir) {
            let mut here = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(self.root.join(dir)) {
                for e in entries.flatten() {
                    if let Some(n) = e.file_name().to_str()
                        && !n.starts_with(TMP_PREFIX)
                    {
                        let n = to_nfc(n);
                        here.entry(case_fold_key(&n)).or_insert(n);
                    }
                }
            }
            self.names.borrow_mut().insert(dir.to_owned(), here);
        }
    }

    /// Is the entry at disk path `disk` the one this device synced for namespace path `path`?
    fn is_ours(&self, disk: &str, path: &str) -> bool {
        self.synced.get(path).is_some_and(|s| {
            std::fs::symlink_metadata(self.root.join(disk)).is_ok_and(|m| m.ino() == s.stat.inode)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placer_on<'a>(root: &'a Path, synced: &'a SyncedTree) -> Placer<'a> {
        // The rename logic is the same whatever the disk; `folds` only switches it on.
        Placer::new(root, true, synced)
    }

    #[test]
    fn a_twin_placed_in_the_same_run_gets_a_case_conflict_name() {
        let d = tempfile::tempdir().unwrap();
        let synced = SyncedTree::new();
        let p = placer_on(d.path(), &synced);
        assert_eq!(p.place("A.txt", Intent::Write).unwrap(), "A.txt");
        assert_eq!(
            p.place("a.txt", Intent::Write).unwrap(),
            "a (case conflict).txt"
        );
        // Stable within the run.
        assert_eq!(
            p.place("a.txt", Intent::Find).unwrap(),
            "a (case conflict).txt"
        );
        let n = p.take_notices();
        assert_eq!(n.len(), 1);
        assert!(
            n[0].to_string().contains("a (case conflict).txt"),
            "{}",
            n[0]
        );
    }

    #[test]
    fn the_name_on_disk_keeps_it_and_children_follow_a_renamed_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("Docs")).unwrap();
        std::fs::write(d.path().join("Docs/x"), b"x").unwrap();
        std::fs::write(d.path().join("a (case conflict)"), b"someone else's").unwrap();
        let synced = SyncedTree::new();
        let p = placer_on(d.path(), &synced);
        assert_eq!(
            p.place("docs/y", Intent::Write).unwrap(),
            "docs (case conflict)/y"
        );
        assert_eq!(p.place("Docs/x", Intent::Write).unwrap(), "Docs/x");
        assert_eq!(
            p.place("DOCS", Intent::Write).unwrap(),
            "DOCS (case conflict 2)"
        );
        // A free alias is one that folds to no name here: `A` would land on `a (case conflict)`.
        std::fs::write(d.path().join("a"), b"a").unwrap();
        let p = placer_on(d.path(), &synced);
        assert_eq!(p.place("A", Intent::Write).unwrap(), "A (case conflict 2)");
    }

    #[test]
    fn a_folder_that_does_not_fold_keeps_every_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("A.txt"), b"x").unwrap();
        let synced = SyncedTree::new();
        let p = Placer::new(d.path(), false, &synced);
        assert_eq!(p.place("a.txt", Intent::Write).unwrap(), "a.txt");
        assert!(p.take_notices().is_empty());
    }

    #[test]
    fn the_probe_sees_that_an_ordinary_linux_folder_keeps_case() {
        let d = tempfile::tempdir().unwrap();
        assert!(!probe_case_insensitive(d.path()));
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "probe removed"
        );
    }
}
