//! The model's file system: a flat map of entries whose parents are folders, with stats that
//! change the way the scanner and the executors can tell; and the content numbers model files
//! are named by.
//!
//! Stats: a write gives the entry a new `generation`, which stands for its inode and mtime; a
//! rename keeps it (as `rename(2)` keeps both); a chmod only changes the mode.

use std::collections::BTreeMap;

use cairn_proto::ContentId;

use crate::tree::{Content, LocalEntry, LocalTree, Stat, SyncedEntry, SyncedTree};

/// Content number `n` as a content id (model files are named by their content number).
pub fn content_id(n: u32) -> ContentId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_le_bytes());
    ContentId(b)
}

pub fn content_no(id: &ContentId) -> u32 {
    let mut n = [0u8; 4];
    n.copy_from_slice(&id.0[..4]);
    u32::from_le_bytes(n)
}

pub fn file(n: u32, exec: bool) -> Content {
    Content::File {
        id: content_id(n),
        exec,
    }
}

/// `Some(n)` when `c` is a file with content `n`.
pub fn file_no(c: &Content) -> Option<u32> {
    match c {
        Content::File { id, .. } => Some(content_no(id)),
        _ => None,
    }
}

/// A compact, readable form: `#7`, `#7x` (executable), `dir`, `->t`.
pub fn show(c: &Content) -> String {
    match c {
        Content::File { id, exec } => {
            format!("#{}{}", content_no(id), if *exec { "x" } else { "" })
        }
        Content::Dir => "dir".into(),
        Content::Symlink(t) => format!("->{t}"),
    }
}

pub fn is_under(path: &str, ancestor: &str) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

pub fn at_or_under(path: &str, ancestor: &str) -> bool {
    path == ancestor || is_under(path, ancestor)
}

/// The folders above `path`, outermost first.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

// ---------------------------------------------------------------------------------------------
// The disk

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub content: Content,
    /// Stands for the inode and mtime: new on every write.
    pub generation: u64,
}

impl Node {
    /// What `symlink_metadata` says (a link's size is its target's length, a folder's a block).
    pub fn stat(&self) -> Stat {
        let (size, mode) = match &self.content {
            Content::File { id, exec } => (
                u64::from(content_no(id)) + 1,
                if *exec { 0o755 } else { 0o644 },
            ),
            Content::Dir => (4096, 0o755),
            Content::Symlink(t) => (t.len() as u64, 0o777),
        };
        Stat {
            size,
            mtime_ns: self.generation as i64,
            inode: self.generation,
            mode,
        }
    }
}

/// A case-sensitive file system as a flat map; every entry's parent is a directory.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub nodes: BTreeMap<String, Node>,
    next_generation: u64,
}

impl Disk {
    pub fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }

    pub fn is_dir(&self, p: &str) -> bool {
        matches!(self.get(p).map(|n| &n.content), Some(Content::Dir))
    }

    pub fn has_children(&self, p: &str) -> bool {
        self.subtree(p).any(|(k, _)| k != p)
    }

    /// `p` and everything under it.
    pub fn subtree<'a>(&'a self, p: &'a str) -> impl Iterator<Item = (&'a String, &'a Node)> {
        self.nodes
            .range(p.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(p))
            .filter(move |(k, _)| at_or_under(k, p))
    }

    /// Writes `content` at `p` (whose parent must be a directory) with a new generation.
    pub fn put(&mut self, p: &str, content: Content) {
        self.next_generation += 1;
        let node = Node {
            content,
            generation: self.next_generation,
        };
        self.nodes.insert(p.to_owned(), node);
    }

    /// `mkdir -p` of `p`'s parents; fails (creating nothing) when one of them is not a directory.
    /// Returns the folders it created.
    pub fn ensure_parents(&mut self, p: &str) -> Result<Vec<String>, String> {
        let missing: Vec<String> = ancestors(p)
            .filter(|a| !self.nodes.contains_key(*a))
            .map(str::to_owned)
            .collect();
        if let Some(a) =
            ancestors(p).find(|a| self.get(a).is_some_and(|n| n.content != Content::Dir))
        {
            return Err(format!("{a} is not a directory here"));
        }
        for a in &missing {
            self.put(a, Content::Dir);
        }
        Ok(missing)
    }

    /// Removes `p` and its subtree; returns what was removed.
    pub fn remove_tree(&mut self, p: &str) -> Vec<(String, Node)> {
        let keys: Vec<String> = self.subtree(p).map(|(k, _)| k.clone()).collect();
        keys.into_iter()
            .map(|k| {
                let n = self.nodes.remove(&k).expect("listed just above");
                (k, n)
            })
            .collect()
    }

    /// `rename(2)` of `from` (with its subtree) to the free path `to`; generations are kept.
    pub fn rename(&mut self, from: &str, to: &str) {
        for (k, n) in self.remove_tree(from) {
            let new = format!("{to}{}", &k[from.len()..]);
            self.nodes.insert(new, n);
        }
    }

    /// The scanner's view: `synced` lends its content id to a file whose stat still matches.
    pub fn scan(&self, synced: &SyncedTree) -> LocalTree {
        self.nodes
            .iter()
            .map(|(p, n)| {
                let mut stat = n.stat();
                // The walk records no size for folders and links.
                if !matches!(n.content, Content::File { .. }) {
                    stat.size = 0;
                }
                let content = match (&n.content, synced.get(p)) {
                    (Content::File { exec, .. }, Some(s)) if reusable(s, stat) => {
                        match &s.content {
                            Content::File { id, .. } => Content::File {
                                id: *id,
                                exec: *exec,
                            },
                            _ => n.content.clone(),
                        }
                    }
                    _ => n.content.clone(),
                };
                (p.clone(), LocalEntry { content, stat })
            })
            .collect()
    }

    /// The contents as the planner compares them (no stats).
    pub fn contents(&self) -> BTreeMap<String, Content> {
        self.nodes
            .iter()
            .map(|(p, n)| (p.clone(), n.content.clone()))
            .collect()
    }
}

fn reusable(s: &SyncedEntry, now: Stat) -> bool {
    s.stat.size == now.size && s.stat.mtime_ns == now.mtime_ns && s.stat.inode == now.inode
}
