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
    let mut out = Vec::new();
    // (parent, folded name) → the first spelling met. Only names met twice are kept in `names`:
    // (parent, folded name) → spellings (sorted below).
    let mut seen: HashMap<(&str, Cow<'_, str>), &str> = HashMap::new();
    let mut names: BTreeMap<(&str, Cow<'_, str>), Vec<&str>> = BTreeMap::new();
    for p in paths {
        if let Some(why) = windows_name_problem(p) {
            out.push(Error::path(
                p,
                format!("{why}; it syncs as is, but a Windows device could not hold it"),
            ));
        }
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        match seen.entry((parent, fold_key(name))) {
            Entry::Vacant(v) => {
                v.insert(p);
            }
            Entry::Occupied(o) => names
                .entry(o.key().clone())
                .or_insert_with(|| vec![*o.get()])
                .push(p),
        }
    }
    for spellings in names.values_mut() {
        spellings.sort_unstable();
        spellings.dedup();
        if let [first, rest @ ..] = spellings.as_slice() {
            for p in rest {
                out.push(Error::path(
                    *p,
                    format!(
                        "differs from {first:?} only in letter case: both sync, but a folder that \
                         ignores case (macOS, Windows, vfat) keeps this one as {:?}",
                        case_conflict_name(p, 1)
                    ),
                ));
            }
        }
    }
    out.sort_by_key(|e| match e {
        Error::Path { path, .. } => path.clone(),
        _ => String::new(),
    });
    out
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
}
