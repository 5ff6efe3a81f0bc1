//! The three trees' entry types (local, remote, synced): plain data, no I/O.

use std::collections::BTreeMap;

use cairn_proto::{ContentId, Version, pb};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn to_db(self) -> i64 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Symlink => 3,
        }
    }

    pub fn from_db(v: i64) -> Option<Self> {
        match v {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::Symlink),
            _ => None,
        }
    }

    pub fn to_pb(self) -> pb::EntryKind {
        match self {
            Kind::File => pb::EntryKind::File,
            Kind::Dir => pb::EntryKind::Dir,
            Kind::Symlink => pb::EntryKind::Symlink,
        }
    }

    pub fn from_pb(k: pb::EntryKind) -> Option<Self> {
        match k {
            pb::EntryKind::File => Some(Kind::File),
            pb::EntryKind::Dir => Some(Kind::Dir),
            pb::EntryKind::Symlink => Some(Kind::Symlink),
            pb::EntryKind::Unspecified => None,
        }
    }
}

/// What the sync compares: two entries with equal `Content` need no transfer. Only the executable
/// bit of the mode syncs; mtime alone is not a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    File { id: ContentId, exec: bool },
    Dir,
    Symlink(String),
}

/// The on-disk facts the scanner records (and the synced tree remembers) to notice changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub mode: u32,
}

/// One path as the disk holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    pub content: Content,
    pub stat: Stat,
}

/// One path as the server's tree holds it (a tombstone when `deleted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub version: Version,
    pub deleted: bool,
    /// `None` for tombstones.
    pub content: Option<Content>,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
}

/// One path as both sides last agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedEntry {
    pub version: Version,
    pub content: Content,
    pub stat: Stat,
}

pub type LocalTree = BTreeMap<String, LocalEntry>;
pub type RemoteTree = BTreeMap<String, RemoteEntry>;
pub type SyncedTree = BTreeMap<String, SyncedEntry>;

/// The synced tree as one list sorted by path: what the one-shot commands look paths up in (see
/// [`crate::delta`]). The entries sit in one list and the paths in one string, so it takes about
/// 100 bytes per entry where a [`SyncedTree`] takes about 230 (tree nodes, one allocation per
/// path), and the state DB fills it without a second copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncedList {
    entries: Vec<SyncedEntry>,
    /// Entry i's path is `paths[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
    paths: String,
    /// An entry was pushed out of order (or twice): [`SyncedList::finish`] sorts.
    unsorted: bool,
}

impl SyncedList {
    /// Room for `entries` entries.
    pub fn with_capacity(entries: usize) -> Self {
        SyncedList {
            entries: Vec::with_capacity(entries),
            ends: Vec::with_capacity(entries),
            ..Default::default()
        }
    }

    /// Adds an entry; in path order (as the state DB gives them), or [`SyncedList::finish`]
    /// must sort.
    pub fn push(&mut self, path: &str, entry: SyncedEntry) {
        if !self.is_empty() && self.key(self.len() - 1) >= path {
            self.unsorted = true;
        }
        self.paths.push_str(path);
        self.ends.push(self.paths.len());
        self.entries.push(entry);
    }

    /// Sorted by path, each path once (the last pushed wins), with no room to spare.
    pub fn finish(mut self) -> Self {
        if self.unsorted {
            let mut order: Vec<usize> = (0..self.len()).collect();
            order.sort_by(|a, b| self.key(*a).cmp(self.key(*b)).then(b.cmp(a)));
            order.dedup_by(|a, b| self.key(*a) == self.key(*b));
            let mut out = SyncedList::with_capacity(order.len());
            for i in order {
                out.push(self.key(i), self.entries[i].clone());
            }
            self = out;
        }
        self.entries.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.paths.shrink_to_fit();
        self
    }

    fn key(&self, at: usize) -> &str {
        let start = at.checked_sub(1).map_or(0, |i| self.ends[i]);
        &self.paths[start..self.ends[at]]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `path` is in the list.
    pub fn position(&self, path: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The entry at `at` (from [`SyncedList::position`]); `None` past the end.
    pub fn at(&self, at: usize) -> Option<&SyncedEntry> {
        self.entries.get(at)
    }

    pub fn get(&self, path: &str) -> Option<&SyncedEntry> {
        self.at(self.position(path)?)
    }

    /// The paths, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.key(i))
    }

    pub fn values(&self) -> impl Iterator<Item = &SyncedEntry> {
        self.entries.iter()
    }
}

#[cfg(test)]
impl From<&SyncedTree> for SyncedList {
    fn from(t: &SyncedTree) -> Self {
        let mut l = SyncedList::with_capacity(t.len());
        for (p, e) in t {
            l.push(p, e.clone());
        }
        l.finish()
    }
}

/// Looking a path up in either form of the synced tree.
pub trait SyncedLookup: Send + Sync {
    fn entry(&self, path: &str) -> Option<&SyncedEntry>;
    fn count(&self) -> usize;
}

impl SyncedLookup for SyncedTree {
    fn entry(&self, path: &str) -> Option<&SyncedEntry> {
        self.get(path)
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl SyncedLookup for SyncedList {
    fn entry(&self, path: &str) -> Option<&SyncedEntry> {
        self.get(path)
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl LocalEntry {
    /// Does the disk hold exactly what was synced at `s` (content and stat)?
    pub fn is_as_synced(&self, s: &SyncedEntry) -> bool {
        self.stat == s.stat && self.content == s.content
    }

    /// The entry [`LocalEntry::is_as_synced`] holds true for.
    pub fn of_synced(s: &SyncedEntry) -> Self {
        LocalEntry {
            content: s.content.clone(),
            stat: s.stat,
        }
    }
}

impl Content {
    pub fn kind(&self) -> Kind {
        match self {
            Content::File { .. } => Kind::File,
            Content::Dir => Kind::Dir,
            Content::Symlink(_) => Kind::Symlink,
        }
    }
}

/// The executable bit as Cairn syncs it.
pub fn is_exec(mode: u32) -> bool {
    mode & 0o111 != 0
}

/// `mode` with its execute bits saying `exec` (unchanged when they already do).
pub fn with_exec(mode: u32, exec: bool) -> u32 {
    match (exec, is_exec(mode)) {
        (true, false) => mode | 0o111,
        (false, true) => mode & !0o111,
        _ => mode,
    }
}

impl RemoteEntry {
    /// Does the server hold exactly what was synced at `s`? (What a commit of the synced entry
    /// from this device lists as: its version, content, size, mode and mtime.)
    pub fn is_as_synced(&self, s: &SyncedEntry) -> bool {
        !self.deleted
            && self.version == s.version
            && self.content.as_ref() == Some(&s.content)
            && (self.size, self.mode, self.mtime_ns) == (s.stat.size, s.stat.mode, s.stat.mtime_ns)
    }

    /// The entry [`RemoteEntry::is_as_synced`] holds true for.
    pub fn of_synced(s: &SyncedEntry) -> Self {
        RemoteEntry {
            version: s.version,
            deleted: false,
            content: Some(s.content.clone()),
            size: s.stat.size,
            mode: s.stat.mode,
            mtime_ns: s.stat.mtime_ns,
        }
    }

    /// Reads a listing entry; `None` when the server sent something unusable (reported by the caller).
    pub fn from_pb(e: &pb::Entry) -> Option<Self> {
        let meta = e.meta.clone().unwrap_or_default();
        let content = if e.deleted {
            None
        } else {
            Some(match Kind::from_pb(meta.kind())? {
                Kind::File => Content::File {
                    id: ContentId::from_slice(&e.content_id).ok()?,
                    exec: is_exec(meta.mode),
                },
                Kind::Dir => Content::Dir,
                Kind::Symlink => Content::Symlink(meta.symlink_target.clone()),
            })
        };
        Some(RemoteEntry {
            version: Version(e.version),
            deleted: e.deleted,
            content,
            size: meta.size,
            mode: meta.mode,
            mtime_ns: meta.mtime_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(v: u64) -> SyncedEntry {
        SyncedEntry {
            version: Version(v),
            content: Content::Dir,
            stat: Stat::default(),
        }
    }

    #[test]
    fn a_synced_list_finds_what_the_map_finds_and_sorts_what_came_out_of_order() {
        let map: SyncedTree = ["a", "a.b", "a/b", "b", "é"]
            .iter()
            .zip(1..)
            .map(|(p, v)| (p.to_string(), dir(v)))
            .collect();
        let list = SyncedList::from(&map);
        assert_eq!(list.len(), 5);
        assert!(list.keys().eq(map.keys().map(String::as_str)));
        for (i, (p, e)) in map.iter().enumerate() {
            assert_eq!(list.position(p), Some(i));
            assert_eq!(list.at(i), Some(e));
        }
        for missing in ["", "a/", "a0", "c", "e"] {
            assert_eq!(list.get(missing), None, "{missing}");
        }
        assert!(list.values().eq(map.values()));

        // Out of order and twice: sorted, the last one pushed kept.
        let mut l = SyncedList::with_capacity(0);
        for (p, v) in [("b", 1), ("a/b", 2), ("b", 3), ("a", 4)] {
            l.push(p, dir(v));
        }
        let l = l.finish();
        assert!(l.keys().eq(["a", "a/b", "b"]));
        assert_eq!(l.get("b"), Some(&dir(3)));
    }
}
