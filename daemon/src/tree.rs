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

/// Looking a path up in the synced tree (the scanner takes a map or what a scan of changes kept).
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
