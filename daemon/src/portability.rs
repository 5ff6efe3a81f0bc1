//! Names that are legal in a namespace and sync as they are, but that some devices could not hold
//! as they are: Windows-reserved or Windows-invalid names, and case twins (`A.txt` beside
//! `a.txt`). Pure: the daemon reports these as warnings (push and pull summaries, `cairn status`),
//! it never drops or renames them for that reason alone.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use cairn_proto::{case_conflict_name, case_fold_key, windows_name_problem};

use crate::error::Error;

/// One warning per path that a Windows device could not create, and per case twin after the
/// first spelling of its name in its folder (byte order). Sorted by path.
pub fn warnings<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<Error> {
    let mut paths: Vec<&str> = paths.into_iter().collect();
    // The callers pass a tree's paths, which are in byte order already.
    if !paths.is_sorted() {
        paths.sort_unstable();
    }
    let mut out = Warnings::default();
    for p in paths {
        out.add(p);
    }
    out.finish()
}

/// [`warnings`] for paths given one at a time, in byte order, without holding them all.
///
/// It keeps the folders above the current path, each with the names met in it so far (folded
/// name → the first spelling). In byte order a folder's whole subtree comes in one run, so its
/// names are dropped when the run ends: the memory follows the depth and the folders' sizes, not
/// the tree's. Only names met twice are kept in `names`: (parent, folded name) → spellings.
#[derive(Debug, Default)]
pub struct Warnings {
    out: Vec<Error>,
    open: Vec<(String, HashMap<String, String>)>,
    names: BTreeMap<(String, String), Vec<String>>,
}

impl Warnings {
    /// The next path, after every path added so far in byte order.
    pub fn add(&mut self, p: &str) {
        if let Some(why) = windows_name_problem(p) {
            self.out.push(Error::path(
                p,
                format!("{why}; it syncs as is, but a Windows device could not hold it"),
            ));
        }
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        while self
            .open
            .last()
            .is_some_and(|(dir, _)| !is_within(parent, dir))
        {
            self.open.pop();
        }
        if self.open.last().is_none_or(|(dir, _)| dir != parent) {
            self.open.push((parent.to_owned(), HashMap::new()));
        }
        let Some((_, seen)) = self.open.last_mut() else {
            unreachable!("a folder was pushed just above")
        };
        match seen.entry(fold_key(name).into_owned()) {
            Entry::Vacant(v) => {
                v.insert(p.to_owned());
            }
            Entry::Occupied(o) => self
                .names
                .entry((parent.to_owned(), o.key().clone()))
                .or_insert_with(|| vec![o.get().clone()])
                .push(p.to_owned()),
        }
    }

    /// The warnings, sorted by path.
    pub fn finish(mut self) -> Vec<Error> {
        for spellings in self.names.values_mut() {
            spellings.sort_unstable();
            spellings.dedup();
            if let [first, rest @ ..] = spellings.as_slice() {
                for p in rest {
                    self.out.push(Error::path(
                        p.as_str(),
                        format!(
                            "differs from {first:?} only in letter case: both sync, but a folder \
                             that ignores case (macOS, Windows, vfat) keeps this one as {:?}",
                            case_conflict_name(p, 1)
                        ),
                    ));
                }
            }
        }
        self.out.sort_by_key(|e| match e {
            Error::Path { path, .. } => path.clone(),
            _ => String::new(),
        });
        self.out
    }
}

/// Is folder `path` `dir` or inside it (`""` is the root)?
fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// [`case_fold_key`], without its two allocations for the common name that is ASCII and lower
/// case already (its own key).
fn fold_key(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(case_fold_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths_of(w: &[Error]) -> Vec<String> {
        w.iter()
            .map(|e| match e {
                Error::Path { path, .. } => path.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn windows_names_and_case_twins_are_reported_once_each() {
        let w = warnings([
            "docs/CON.txt",
            "A.txt",
            "a.txt",
            "Dir",
            "dir",
            "dir/ok",
            "Dir/ok",
            "trailing.",
            "x:y",
            "plain.md",
        ]);
        // `dir/ok` and `Dir/ok` are twins only through their folders, which are reported.
        assert_eq!(
            paths_of(&w),
            ["a.txt", "dir", "docs/CON.txt", "trailing.", "x:y"]
        );
        assert!(
            w[0].to_string().contains("a (case conflict).txt"),
            "{}",
            w[0]
        );
        assert!(w[2].to_string().contains("Windows"), "{}", w[2]);
    }

    #[test]
    fn case_twins_are_found_across_the_subtrees_between_them_in_any_input_order() {
        let mut paths = vec![
            "x/Zed",
            "x/a/1",
            "x/a/2/deep",
            "x/zed",
            "x/READ.ME",
            "x/Read",
            "x/read",
            "x/read.me",
            "x/read/deep",
            "x/read/deep/f",
            "y/Read",
            "y/read",
            "z",
        ];
        let expect = ["x/read", "x/read.me", "x/zed", "y/read"];
        assert_eq!(paths_of(&warnings(paths.iter().copied())), expect);
        paths.sort_unstable();
        assert_eq!(paths_of(&warnings(paths.iter().copied())), expect);
    }
}
