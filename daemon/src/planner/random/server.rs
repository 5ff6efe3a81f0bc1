//! The model's server: versions, tombstones and the sync log, with the commit semantics of
//! `server/src/commit.rs` (optimistic concurrency, conflict copies named by
//! `conflict_copy_name`, UNCHANGED, DELETE_SKIPPED, moves, and a live tree that stays a tree).

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::{Version, conflict_copy_name};

use super::disk::{content_no, file_no};
use crate::tree::{Content, RemoteEntry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Committed,
    Unchanged,
    Conflict,
    DeleteSkipped,
    Rejected,
}

#[derive(Clone, Debug)]
pub struct CommitRes {
    pub status: Status,
    /// The conflict copy's path for `Conflict`, the item's path otherwise.
    pub path: String,
    pub version: u64,
    /// The path's newest version is a live folder (`CommitResult.current`'s kind, as the
    /// daemon reads it for DELETE_SKIPPED).
    pub live_dir: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Server {
    /// Every path's versions, oldest first (version n at index n - 1); `None`: a tombstone.
    pub files: BTreeMap<String, Vec<Option<Content>>>,
    /// The sync log: (path, version), seq n at index n - 1.
    pub log: Vec<(String, u64)>,
    /// The commit time conflict-copy names carry (the runner's step counter).
    pub now: i64,
}

impl Server {
    pub fn head(&self, p: &str) -> Option<(u64, Option<&Content>)> {
        self.files
            .get(p)
            .map(|v| (v.len() as u64, v.last().and_then(Option::as_ref)))
    }

    pub fn version(&self, p: &str, v: u64) -> Option<&Option<Content>> {
        self.files.get(p)?.get((v as usize).checked_sub(1)?)
    }

    /// The live tree.
    pub fn live(&self) -> BTreeMap<String, Content> {
        self.files
            .iter()
            .filter_map(|(p, v)| Some((p.clone(), v.last()?.clone()?)))
            .collect()
    }

    /// Every file content any version holds.
    pub fn history(&self) -> BTreeSet<u32> {
        self.files
            .values()
            .flatten()
            .flatten()
            .filter_map(file_no)
            .collect()
    }

    /// Whether FindMissing would call this content's chunks stored (no upload needed).
    pub fn has_content(&self, n: u32) -> bool {
        self.files
            .values()
            .flatten()
            .flatten()
            .any(|c| file_no(c) == Some(n))
    }

    pub fn entry(&self, p: &str, v: u64) -> RemoteEntry {
        let content = self.version(p, v).cloned().flatten();
        RemoteEntry {
            version: Version(v),
            deleted: content.is_none(),
            size: content.as_ref().map_or(0, |c| match c {
                Content::File { id, .. } => u64::from(content_no(id)) + 1,
                _ => 0,
            }),
            mode: match &content {
                Some(Content::File { exec: true, .. } | Content::Dir) => 0o755,
                Some(Content::Symlink(_)) => 0o777,
                _ => 0o644,
            },
            mtime_ns: 0,
            content,
        }
    }

    /// Appends a version and its log entry.
    pub fn append(&mut self, p: &str, c: Option<Content>) -> u64 {
        let versions = self.files.entry(p.to_owned()).or_default();
        versions.push(c);
        let v = versions.len() as u64;
        self.log.push((p.to_owned(), v));
        v
    }

    fn res(status: Status, path: &str, version: u64) -> CommitRes {
        CommitRes {
            status,
            path: path.to_owned(),
            version,
            live_dir: false,
        }
    }

    /// `folders_for`: false (the write is refused) when a proper ancestor of `p` is a live file
    /// or link; otherwise deleted ancestors are created again.
    fn folders_for(&mut self, p: &str) -> bool {
        let folders: Vec<&str> = p.match_indices('/').map(|(i, _)| &p[..i]).collect();
        if folders
            .iter()
            .any(|f| matches!(self.head(f), Some((_, Some(c))) if *c != Content::Dir))
        {
            return false;
        }
        for f in folders {
            if matches!(self.head(f), Some((_, None))) {
                self.append(f, Some(Content::Dir));
            }
        }
        true
    }

    /// `has_live_entries_under`.
    fn has_live_entries_under(&self, p: &str) -> bool {
        let prefix = format!("{p}/");
        self.files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, v)| v.last().is_some_and(Option::is_some))
    }

    /// `apply_put`: nothing under a live file (REJECTED), deleted folders above made again; same
    /// data → UNCHANGED (a mode change counts on an up-to-date base only); a stale base on a live
    /// path, or a file or link over a folder that still holds live entries → a conflict copy;
    /// otherwise a new version.
    pub fn put(&mut self, device: &str, p: &str, base: u64, c: &Content) -> CommitRes {
        if !self.folders_for(p) {
            return Self::res(Status::Rejected, p, 0);
        }
        let cur = self.head(p).map(|(v, content)| (v, content.cloned()));
        let over_full_folder = matches!(&cur, Some((_, Some(Content::Dir))))
            && *c != Content::Dir
            && self.has_live_entries_under(p);
        match cur {
            Some((v, Some(cur))) if same_data(&cur, c) && (cur == *c || base != v) => {
                Self::res(Status::Unchanged, p, v)
            }
            Some((v, Some(_))) if base != v || over_full_folder => {
                let copy = (1..1000)
                    .map(|attempt| conflict_copy_name(p, device, self.now, attempt))
                    .find(|name| !self.files.contains_key(name))
                    .expect("a free conflict-copy name among a thousand");
                let v = self.append(&copy, Some(c.clone()));
                Self::res(Status::Conflict, &copy, v)
            }
            _ => {
                let v = self.append(p, Some(c.clone()));
                Self::res(Status::Committed, p, v)
            }
        }
    }

    /// `apply_delete`: a folder only while nothing live is left in it.
    pub fn delete(&mut self, p: &str, base: u64) -> CommitRes {
        match self.head(p) {
            None => Self::res(Status::Unchanged, p, 0),
            Some((v, None)) => Self::res(Status::Unchanged, p, v),
            Some((v, Some(c)))
                if v == base && !(*c == Content::Dir && self.has_live_entries_under(p)) =>
            {
                let v = self.append(p, None);
                Self::res(Status::Committed, p, v)
            }
            Some((v, Some(c))) => CommitRes {
                live_dir: *c == Content::Dir,
                ..Self::res(Status::DeleteSkipped, p, v)
            },
        }
    }

    /// `apply_move` as the daemon sends it: `from_version` set, the mode from the local entry,
    /// no manifest.
    pub fn move_file(
        &mut self,
        device: &str,
        from: &str,
        to: &str,
        from_version: u64,
        base: u64,
        local: &Content,
    ) -> CommitRes {
        if !self.folders_for(to) {
            return Self::res(Status::Rejected, to, 0);
        }
        match self.head(from) {
            Some((v, Some(Content::File { id, .. }))) if v == from_version => {
                let exec = matches!(local, Content::File { exec: true, .. });
                let moved = Content::File { id: *id, exec };
                self.append(from, None);
                self.put(device, to, base, &moved)
            }
            // The source moved on: a plain create at `to` whose meta has no manifest, which
            // the server refuses for a non-empty file.
            _ => Self::res(Status::Rejected, to, 0),
        }
    }
}

/// `validate::Content::same_data`: kind, bytes and link target (mode aside).
fn same_data(a: &Content, b: &Content) -> bool {
    match (a, b) {
        (Content::File { id: x, .. }, Content::File { id: y, .. }) => x == y,
        _ => a == b,
    }
}
