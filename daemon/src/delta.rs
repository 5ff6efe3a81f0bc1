//! The one-shot commands' local and remote trees as deltas over the synced tree.
//!
//! A no-change push of 100,000 files used to hold three trees of 100,000 entries each, when
//! almost every path holds the same on disk, on the server and in the state DB. Instead, the scan
//! and the listing keep only the entries that differ from the synced tree (`changed`, which
//! includes paths it lacks) and name the synced paths they did not find (`absent`); every other
//! synced path holds exactly what was synced ([`LocalEntry::is_as_synced`],
//! [`RemoteEntry::is_as_synced`]; a side may also keep an entry that is as synced, which costs
//! nothing but its room). [`restrict`] then cuts the three trees down to the paths where
//! a side differs, rebuilding the unchanged side of such a path from the synced entry. The
//! planner decides path by path and plans nothing for a path where all three agree, so it makes
//! the same plan from the restricted trees (checked by the tests below and by the randomized
//! planner runs).

use std::collections::BTreeMap;

use crate::tree::{
    LocalEntry, LocalTree, RemoteEntry, RemoteTree, SyncedEntry, SyncedList, SyncedTree,
};

/// Which paths of a [`SyncedList`] a side holds: one bit per synced entry.
#[derive(Clone, Debug)]
pub struct Found<'a> {
    synced: &'a SyncedList,
    bits: Vec<u64>,
}

impl<'a> Found<'a> {
    /// Nothing found yet.
    pub fn new(synced: &'a SyncedList) -> Self {
        Found {
            synced,
            bits: vec![0; synced.len().div_ceil(64)],
        }
    }

    /// The side holds `path`: marks it if it was synced, and returns its synced entry.
    pub fn mark(&mut self, path: &str) -> Option<&'a SyncedEntry> {
        let at = self.synced.position(path)?;
        if let Some(word) = self.bits.get_mut(at / 64) {
            *word |= 1 << (at % 64);
        }
        self.synced.at(at)
    }

    fn has(&self, at: usize) -> bool {
        self.bits
            .get(at / 64)
            .is_some_and(|w| w & (1 << (at % 64)) != 0)
    }

    /// The synced paths marked.
    pub fn found(&self) -> impl Iterator<Item = &'a str> {
        self.synced
            .keys()
            .enumerate()
            .filter(|(at, _)| self.has(*at))
            .map(|(_, p)| p)
    }

    /// The synced paths not marked: what the side lacks. Sorted, as the list is.
    pub fn absent(&self) -> Vec<String> {
        self.synced
            .keys()
            .enumerate()
            .filter(|(at, _)| !self.has(*at))
            .map(|(_, p)| p.to_owned())
            .collect()
    }
}

/// A whole tree as a delta over `synced`: its entries that are not `as_synced`, and the synced
/// paths it lacks. What the scan and the listing build as they go, spelled out for the tests.
#[cfg(test)]
pub fn split<E: Clone>(
    full: &BTreeMap<String, E>,
    synced: &SyncedList,
    as_synced: impl Fn(&E, &SyncedEntry) -> bool,
) -> (BTreeMap<String, E>, Vec<String>) {
    let changed = full
        .iter()
        .filter(|(p, e)| !synced.get(p).is_some_and(|s| as_synced(e, s)))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    let mut found = Found::new(synced);
    for p in full.keys() {
        found.mark(p);
    }
    (changed, found.absent())
}

/// Cuts the trees down to the paths where the local or the remote side differs from `synced`:
/// each side's `changed` entries gain the synced paths among those where the side itself is
/// unchanged (rebuilt from the synced entry), and the synced tree returned holds those paths
/// only. `absent` lists are sorted ([`Found::absent`] makes them so).
pub fn restrict(
    synced: &SyncedList,
    (local, local_absent): (&mut LocalTree, &[String]),
    (remote, remote_absent): (&mut RemoteTree, &[String]),
) -> SyncedTree {
    let paths: BTreeMap<String, &SyncedEntry> = local
        .keys()
        .chain(local_absent)
        .chain(remote.keys())
        .chain(remote_absent)
        .filter_map(|p| Some((p.clone(), synced.get(p)?)))
        .collect();
    let lacks = |list: &[String], p: &String| list.binary_search(p).is_ok();
    let mut out = Vec::with_capacity(paths.len());
    for (p, s) in paths {
        if !local.contains_key(&p) && !lacks(local_absent, &p) {
            local.insert(p.clone(), LocalEntry::of_synced(s));
        }
        if !remote.contains_key(&p) && !lacks(remote_absent, &p) {
            remote.insert(p.clone(), RemoteEntry::of_synced(s));
        }
        out.push((p, s.clone()));
    }
    out.into_iter().collect()
}

/// Every path of a side given as a delta over `synced`, in order: the synced paths it does not
/// lack, merged with its changed ones.
pub fn paths<'a, E>(
    synced: &'a SyncedList,
    changed: &'a BTreeMap<String, E>,
    absent: &'a [String],
) -> impl Iterator<Item = &'a str> {
    let mut kept = synced
        .keys()
        .filter(|k| absent.binary_search_by(|a| a.as_str().cmp(k)).is_err())
        .peekable();
    let mut changed = changed.keys().map(String::as_str).peekable();
    std::iter::from_fn(move || match (kept.peek(), changed.peek()) {
        (Some(k), Some(c)) if k < c => kept.next(),
        (Some(k), Some(c)) if k == c => {
            kept.next();
            changed.next()
        }
        (_, Some(_)) => changed.next(),
        (Some(_), None) => kept.next(),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use cairn_proto::{ContentId, Version};
    use proptest::prelude::*;

    use super::*;
    use crate::planner::{moves, plan};
    use crate::reconcile;
    use crate::tree::{Content, Stat};

    const PATHS: [&str; 7] = ["a", "a.b", "a/b", "a/b/c", "a0", "b", "c"];

    fn content(n: u8) -> Content {
        match n {
            0 => Content::Dir,
            1..=3 => Content::File {
                id: ContentId([n; 32]),
                exec: n == 3,
            },
            _ => Content::Symlink(format!("t{n}")),
        }
    }

    fn stat(n: u8) -> Stat {
        Stat {
            size: u64::from(n),
            mtime_ns: i64::from(n) * 10,
            inode: u64::from(n),
            mode: 0o644,
        }
    }

    /// Per path: absent, or (content, stat, version) numbers. Small ranges, so the three sides
    /// often agree (the case the delta leaves out).
    fn side() -> impl Strategy<Value = Vec<Option<(u8, u8, u64)>>> {
        proptest::collection::vec(
            proptest::option::weighted(0.8, (0u8..5, 0u8..2, 1u64..3)),
            PATHS.len(),
        )
    }

    fn trees(
        l: &[Option<(u8, u8, u64)>],
        r: &[Option<(u8, u8, u64)>],
        s: &[Option<(u8, u8, u64)>],
        tomb: &[bool],
    ) -> (LocalTree, RemoteTree, SyncedTree) {
        let mut local = LocalTree::new();
        let mut remote = RemoteTree::new();
        let mut synced = SyncedTree::new();
        for (i, p) in PATHS.iter().enumerate() {
            if let Some((c, st, _)) = l[i] {
                let e = LocalEntry {
                    content: content(c),
                    stat: stat(st),
                };
                local.insert(p.to_string(), e);
            }
            if let Some((c, st, v)) = s[i] {
                let e = SyncedEntry {
                    version: Version(v),
                    content: content(c),
                    stat: stat(st),
                };
                synced.insert(p.to_string(), e);
            }
            if let Some((c, st, v)) = r[i] {
                let live = !tomb[i];
                let e = RemoteEntry {
                    version: Version(v),
                    deleted: !live,
                    content: live.then(|| content(c)),
                    size: stat(st).size,
                    mode: stat(st).mode,
                    mtime_ns: stat(st).mtime_ns,
                };
                remote.insert(p.to_string(), e);
            }
        }
        (local, remote, synced)
    }

    proptest! {
        #[test]
        fn the_restricted_trees_plan_what_the_whole_ones_plan(
            l in side(), r in side(), s in side(),
            tomb in proptest::collection::vec(proptest::bool::weighted(0.1), PATHS.len()),
        ) {
            let (local, remote, synced) = trees(&l, &r, &s, &tomb);
            let list = SyncedList::from(&synced);
            let (mut lc, la) = split(&local, &list, LocalEntry::is_as_synced);
            let (mut rc, ra) = split(&remote, &list, RemoteEntry::is_as_synced);
            // The delta names each side in full.
            let all: Vec<&str> = paths(&list, &lc, &la).collect();
            prop_assert_eq!(all, local.keys().map(String::as_str).collect::<Vec<_>>());
            let all: Vec<&str> = paths(&list, &rc, &ra).collect();
            prop_assert_eq!(all, remote.keys().map(String::as_str).collect::<Vec<_>>());
            let rs = restrict(&list, (&mut lc, &la), (&mut rc, &ra));
            // Restricted: sub-trees of the whole ones.
            for (p, e) in &lc { prop_assert_eq!(Some(e), local.get(p)); }
            for (p, e) in &rc { prop_assert_eq!(Some(e), remote.get(p)); }
            for (p, e) in &rs { prop_assert_eq!(Some(e), synced.get(p)); }
            prop_assert_eq!(
                reconcile::candidates(&lc, &rc, &rs),
                reconcile::candidates(&local, &remote, &synced)
            );
            let whole = plan(&local, &remote, &synced);
            prop_assert_eq!(&plan(&lc, &rc, &rs), &whole);
            prop_assert_eq!(
                moves::pair(plan(&lc, &rc, &rs), &lc, &rc, &rs),
                moves::pair(whole, &local, &remote, &synced)
            );
        }
    }

    #[test]
    fn a_folder_where_all_three_agree_restricts_to_nothing() {
        let s = |v| SyncedEntry {
            version: Version(v),
            content: content(1),
            stat: stat(1),
        };
        let synced: SyncedTree = PATHS.iter().map(|p| (p.to_string(), s(4))).collect();
        let local: LocalTree = synced
            .iter()
            .map(|(p, s)| (p.clone(), LocalEntry::of_synced(s)))
            .collect();
        let remote: RemoteTree = synced
            .iter()
            .map(|(p, s)| (p.clone(), RemoteEntry::of_synced(s)))
            .collect();
        let list = SyncedList::from(&synced);
        let (mut lc, la) = split(&local, &list, LocalEntry::is_as_synced);
        let (mut rc, ra) = split(&remote, &list, RemoteEntry::is_as_synced);
        assert!(lc.is_empty() && la.is_empty() && rc.is_empty() && ra.is_empty());
        assert!(restrict(&list, (&mut lc, &la), (&mut rc, &ra)).is_empty());
    }

    #[test]
    fn absent_names_the_synced_paths_not_found() {
        let synced: SyncedTree = ["a", "a.b", "a/b", "c"]
            .iter()
            .map(|p| {
                let e = SyncedEntry {
                    version: Version(1),
                    content: Content::Dir,
                    stat: Stat::default(),
                };
                (p.to_string(), e)
            })
            .collect();
        let list = SyncedList::from(&synced);
        let mut found = Found::new(&list);
        assert_eq!(found.mark("c"), list.get("c"));
        assert_eq!(found.mark("x"), None);
        assert!(found.mark("a").is_some());
        assert!(found.found().eq(["a", "c"]));
        assert_eq!(found.absent(), ["a.b", "a/b"]);
    }
}
