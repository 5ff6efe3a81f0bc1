//! The one-shot commands' local and remote trees as deltas over the synced tree.
//!
//! A no-change push of 100,000 files used to hold three trees of 100,000 entries each, when
//! almost every path holds the same on disk, on the server and in the state DB. Instead, the scan
//! and the listing each read the synced rows from the state DB beside their own paths, in the
//! same order ([`Merge`]), and keep only the entries that differ from the synced tree (`changed`,
//! which includes paths it lacks), the synced paths they did not find (`absent`) and the synced
//! entries of both; every other synced path holds exactly what was synced
//! ([`LocalEntry::is_as_synced`], [`RemoteEntry::is_as_synced`]; a side may also keep an entry
//! that is as synced, which costs nothing but its room). No side holds the whole synced tree.
//! [`restrict`] then cuts the three trees down to the paths where a side differs, rebuilding
//! the unchanged side of such a path from the synced entry. The planner decides path by path and
//! plans nothing for a path where all three agree, so it makes the same plan from the restricted
//! trees (checked by the tests below and by the randomized planner runs).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::error::Result;
use crate::tree::{LocalEntry, LocalTree, RemoteEntry, RemoteTree, SyncedEntry, SyncedTree};

/// An order of paths. The state DB reads rows in either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Byte order: the server's listing and the state DB's index.
    Bytes,
    /// The walk's order: a folder, then its whole subtree, then its next sibling (`a`, `a/x`,
    /// `a.b`). Byte order with `/` below every other byte; no path holds a control character.
    Walk,
}

impl Order {
    pub fn cmp(self, a: &str, b: &str) -> Ordering {
        let walk = |c: u8| if c == b'/' { 1 } else { c };
        match self {
            Order::Bytes => a.cmp(b),
            Order::Walk => a.bytes().map(walk).cmp(b.bytes().map(walk)),
        }
    }
}

/// One synced row: a path and its entry.
pub type Row = (String, SyncedEntry);

/// Where a [`Merge`] reads synced rows: in its order, and one path at a time.
pub trait Rows {
    /// The next row in the merge's order; `None` at the end.
    fn next_row(&mut self) -> Result<Option<Row>>;
    /// The synced entry at `path`.
    fn look_up(&mut self, path: &str) -> Result<Option<SyncedEntry>>;
}

/// A side's paths met against the synced rows read in the same order: one pass over both, with
/// only the rows between the last path met and the next one in memory. A path met out of order
/// (a name that is not NFC on disk sorts by its disk bytes) is looked up instead, and a row
/// passed before it was met is not called absent: the order makes the merge cheap, never wrong.
#[derive(Debug)]
pub struct Merge {
    order: Order,
    /// Rows read and not yet passed, in order.
    ahead: VecDeque<Row>,
    /// The rows have ended.
    ended: bool,
    /// The last path met in order.
    last: Option<String>,
    /// Rows passed without being met, in order.
    passed: Vec<Row>,
    /// Synced paths met out of order.
    late: HashSet<String>,
    /// Files (not folders) among the rows read.
    files: u64,
}

/// What a merge found once every row was read.
#[derive(Debug, Default)]
pub struct Merged {
    /// The synced rows the side lacks, in byte order.
    pub absent: Vec<Row>,
    /// Synced files (not folders) in the whole synced tree: what the delete guard counts.
    pub files: u64,
}

impl Merged {
    /// The absent paths (sorted), their synced entries moved into `synced`.
    pub fn absent_into(self, synced: &mut SyncedTree) -> Vec<String> {
        let paths = self.absent.iter().map(|(p, _)| p.clone()).collect();
        synced.extend(self.absent);
        paths
    }
}

impl Merge {
    pub fn new(order: Order) -> Self {
        Merge {
            order,
            ahead: VecDeque::new(),
            ended: false,
            last: None,
            passed: Vec::new(),
            late: HashSet::new(),
            files: 0,
        }
    }

    fn read(&mut self, rows: &mut impl Rows) -> Result<bool> {
        match rows.next_row()? {
            Some(row) => {
                // Rows out of the merge's order would be missed and called absent: refuse them.
                // Every row passed or met is at or before the last path met.
                let before = self.ahead.back().map(|(p, _)| p).or(self.last.as_ref());
                if let Some(before) = before
                    && self.order.cmp(before, &row.0) != Ordering::Less
                {
                    return Err(crate::error::Error::Protocol(format!(
                        "the synced rows came out of order ({before:?} before {:?})",
                        row.0
                    )));
                }
                self.files += u64::from(!matches!(row.1.content, crate::tree::Content::Dir));
                self.ahead.push_back(row);
                Ok(true)
            }
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// The side holds `path`: its synced entry, if it was synced. `in_order` says whether the
    /// side's order can be trusted for it (the walk's cannot for a name that is not NFC).
    pub fn meet(
        &mut self,
        path: &str,
        in_order: bool,
        rows: &mut impl Rows,
    ) -> Result<Option<SyncedEntry>> {
        let order = self.order;
        let after_last = self
            .last
            .as_deref()
            .is_none_or(|l| order.cmp(l, path) == Ordering::Less);
        if !(in_order && after_last) {
            let found = rows.look_up(path)?;
            if found.is_some() {
                self.late.insert(path.to_owned());
            }
            return Ok(found);
        }
        let found = loop {
            if self.ahead.is_empty() && (self.ended || !self.read(rows)?) {
                break None;
            }
            let Some((p, _)) = self.ahead.front() else {
                unreachable!("a row was read just above")
            };
            match order.cmp(p, path) {
                Ordering::Less => {
                    let row = self.ahead.pop_front().expect("the front was just read");
                    self.passed.push(row);
                }
                Ordering::Equal => break self.ahead.pop_front().map(|(_, e)| e),
                Ordering::Greater => break None,
            }
        };
        self.last = Some(path.to_owned());
        Ok(found)
    }

    /// Was the synced `path`, at or before the last path met in order, met?
    pub fn met(&self, path: &str) -> bool {
        self.late.contains(path)
            || self
                .passed
                .binary_search_by(|(p, _)| self.order.cmp(p, path))
                .is_err()
    }

    /// The synced paths met out of order.
    pub fn late(&self) -> impl Iterator<Item = &str> {
        self.late.iter().map(String::as_str)
    }

    /// The last path met in order.
    pub fn last(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Reads the rest of the rows: what the side lacks, and the count of synced files.
    pub fn finish(mut self, rows: &mut impl Rows) -> Result<Merged> {
        while !self.ended {
            self.read(rows)?;
        }
        let late = self.late;
        let mut absent: Vec<_> = self
            .passed
            .into_iter()
            .chain(self.ahead)
            .filter(|(p, _)| !late.contains(p))
            .collect();
        if self.order != Order::Bytes {
            absent.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Merged {
            absent,
            files: self.files,
        })
    }
}

/// Rows from a synced tree held in memory (the tests', and the randomized planner runs').
#[cfg(test)]
pub struct TreeRows<'a> {
    tree: &'a SyncedTree,
    sorted: std::vec::IntoIter<(&'a String, &'a SyncedEntry)>,
}

#[cfg(test)]
impl<'a> TreeRows<'a> {
    pub fn new(tree: &'a SyncedTree, order: Order) -> Self {
        let mut sorted: Vec<_> = tree.iter().collect();
        sorted.sort_by(|a, b| order.cmp(a.0, b.0));
        TreeRows {
            tree,
            sorted: sorted.into_iter(),
        }
    }
}

#[cfg(test)]
impl Rows for TreeRows<'_> {
    fn next_row(&mut self) -> Result<Option<Row>> {
        Ok(self.sorted.next().map(|(p, e)| (p.clone(), e.clone())))
    }
    fn look_up(&mut self, path: &str) -> Result<Option<SyncedEntry>> {
        Ok(self.tree.get(path).cloned())
    }
}

/// A whole tree as a delta over `synced`: its entries that are not `as_synced`, the synced paths
/// it lacks, and the synced entries of both. What the scan and the listing build as they go,
/// spelled out for the tests.
#[cfg(test)]
pub fn split<E: Clone>(
    full: &BTreeMap<String, E>,
    synced: &SyncedTree,
    as_synced: impl Fn(&E, &SyncedEntry) -> bool,
) -> (BTreeMap<String, E>, Vec<String>, SyncedTree) {
    let mut rows = TreeRows::new(synced, Order::Bytes);
    let mut merge = Merge::new(Order::Bytes);
    let mut changed = BTreeMap::new();
    let mut touched = SyncedTree::new();
    for (p, e) in full {
        let s = merge.meet(p, true, &mut rows).expect("rows in memory");
        if !s.as_ref().is_some_and(|s| as_synced(e, s)) {
            changed.insert(p.clone(), e.clone());
            touched.extend(s.map(|s| (p.clone(), s)));
        }
    }
    let absent = merge
        .finish(&mut rows)
        .expect("rows in memory")
        .absent_into(&mut touched);
    (changed, absent, touched)
}

/// Cuts the trees down to the paths where the local or the remote side differs from the synced
/// tree: each side's `changed` entries gain the synced paths among those where the side itself is
/// unchanged (rebuilt from the synced entry), and the synced tree returned holds those paths
/// only. `synced` holds (at least) the synced entries of every path either side changed or lacks
/// (what the scan and the listing keep); `absent` lists are sorted.
pub fn restrict(
    synced: &SyncedTree,
    (local, local_absent): (&mut LocalTree, &[String]),
    (remote, remote_absent): (&mut RemoteTree, &[String]),
) -> SyncedTree {
    let paths: BTreeMap<&String, &SyncedEntry> = local
        .keys()
        .chain(local_absent)
        .chain(remote.keys())
        .chain(remote_absent)
        .filter_map(|p| synced.get_key_value(p))
        .collect();
    let lacks = |list: &[String], p: &String| list.binary_search(p).is_ok();
    let mut out = SyncedTree::new();
    for (p, s) in paths {
        if !local.contains_key(p) && !lacks(local_absent, p) {
            local.insert(p.clone(), LocalEntry::of_synced(s));
        }
        if !remote.contains_key(p) && !lacks(remote_absent, p) {
            remote.insert(p.clone(), RemoteEntry::of_synced(s));
        }
        out.insert(p.clone(), s.clone());
    }
    out
}

/// Every path of a side given as a delta over the synced tree, in byte order: the synced paths
/// (`synced`, in byte order) it does not lack, merged with its changed ones.
pub fn paths<'a, E>(
    synced: impl Iterator<Item = String> + 'a,
    changed: &'a BTreeMap<String, E>,
    absent: &'a [String],
) -> impl Iterator<Item = String> + 'a {
    let mut kept = synced
        .filter(|k| absent.binary_search(k).is_err())
        .peekable();
    let mut changed = changed.keys().peekable();
    std::iter::from_fn(move || match (kept.peek(), changed.peek()) {
        (Some(k), Some(c)) if k < *c => kept.next(),
        (Some(k), Some(c)) if k == *c => {
            kept.next();
            changed.next().cloned()
        }
        (_, Some(_)) => changed.next().cloned(),
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
            let (mut lc, la, mut touched) = split(&local, &synced, LocalEntry::is_as_synced);
            let (mut rc, ra, rt) = split(&remote, &synced, RemoteEntry::is_as_synced);
            touched.extend(rt);
            // The delta names each side in full.
            let all: Vec<String> = paths(synced.keys().cloned(), &lc, &la).collect();
            prop_assert_eq!(all, local.keys().cloned().collect::<Vec<_>>());
            let all: Vec<String> = paths(synced.keys().cloned(), &rc, &ra).collect();
            prop_assert_eq!(all, remote.keys().cloned().collect::<Vec<_>>());
            let rs = restrict(&touched, (&mut lc, &la), (&mut rc, &ra));
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
        let (mut lc, la, lt) = split(&local, &synced, LocalEntry::is_as_synced);
        let (mut rc, ra, rt) = split(&remote, &synced, RemoteEntry::is_as_synced);
        assert!(lc.is_empty() && la.is_empty() && rc.is_empty() && ra.is_empty());
        assert!(lt.is_empty() && rt.is_empty());
        assert!(restrict(&synced, (&mut lc, &la), (&mut rc, &ra)).is_empty());
    }

    fn dir() -> SyncedEntry {
        SyncedEntry {
            version: Version(1),
            content: Content::Dir,
            stat: Stat::default(),
        }
    }

    #[test]
    fn a_merge_finds_what_it_meets_in_either_order_and_names_the_rest_absent() {
        let mut synced: SyncedTree = ["a", "a.b", "a/b", "c"]
            .iter()
            .map(|p| (p.to_string(), dir()))
            .collect();
        let file = SyncedEntry {
            version: Version(1),
            content: content(1),
            stat: stat(1),
        };
        synced.insert("f".into(), file);
        for order in [Order::Bytes, Order::Walk] {
            let mut rows = TreeRows::new(&synced, order);
            let mut merge = Merge::new(order);
            assert_eq!(merge.meet("a", true, &mut rows).unwrap(), Some(dir()));
            // Passes "a.b" (bytes) or "a/b" (walk) unmet.
            let second = if order == Order::Bytes { "a/b" } else { "a.b" };
            assert!(merge.meet(second, true, &mut rows).unwrap().is_some());
            assert_eq!(merge.meet("b", true, &mut rows).unwrap(), None);
            assert!(merge.met("a") && merge.met(second));
            // Out of order: looked up, and not absent although it was passed.
            assert!(merge.meet("a", true, &mut rows).unwrap().is_some());
            assert_eq!(merge.meet("c", false, &mut rows).unwrap(), Some(dir()));
            assert_eq!(merge.last(), Some("b"));
            let merged = merge.finish(&mut rows).unwrap();
            let absent: Vec<&str> = merged.absent.iter().map(|(p, _)| p.as_str()).collect();
            let other = if order == Order::Bytes { "a.b" } else { "a/b" };
            assert_eq!(absent, [other, "f"], "{order:?}");
            assert_eq!(merged.files, 1);
        }
    }

    /// The walk's order, spelled out: a folder's children sorted by name, each folder followed
    /// by its subtree.
    fn dfs(paths: &std::collections::BTreeSet<String>, dir: &str, out: &mut Vec<String>) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut children: Vec<&str> = paths
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .collect();
        children.sort_unstable();
        for name in children {
            let p = format!("{prefix}{name}");
            out.push(p.clone());
            dfs(paths, &p, out);
        }
    }

    proptest! {
        #[test]
        fn the_walk_order_is_a_depth_first_walk_with_sorted_names(
            raw in proptest::collection::btree_set("[a.0/ -]{1,3}(/[a.0 -]{1,3}){0,3}", 1..40)
        ) {
            // Every folder above a path is there too, as the walk meets it.
            let mut paths = std::collections::BTreeSet::new();
            for p in raw.iter().filter(|p| cairn_proto::validate_path(p).is_ok()) {
                let mut at = 0;
                while let Some(i) = p[at..].find('/') {
                    paths.insert(p[..at + i].to_owned());
                    at += i + 1;
                }
                paths.insert(p.clone());
            }
            let mut walked = Vec::new();
            dfs(&paths, "", &mut walked);
            let mut sorted: Vec<String> = paths.iter().cloned().collect();
            sorted.sort_by(|a, b| Order::Walk.cmp(a, b));
            prop_assert_eq!(sorted, walked);
        }
    }
}
