//! The scanner: walks a folder into the local tree, hashing only files whose stat changed.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_proto::{to_nfc, validate_path};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::chunker::{Chunk, ChunkParams, chunk_reader};
use crate::delta::{Merge, Order, Rows};
use crate::error::{Error, Result};
use crate::state::{Cursor, SyncedReader};
use crate::tree::{
    Content, LocalEntry, LocalTree, Stat, SyncedEntry, SyncedLookup, SyncedTree, is_exec,
};

/// The root marker's name; never synced.
pub const MARKER: &str = ".cairn";
/// Prefix of our temporary files; never synced.
pub const TMP_PREFIX: &str = ".cairn-tmp-";
/// Per-folder ignore file (gitignore syntax).
pub const IGNORE_FILE: &str = ".cairnignore";

/// Names the scanner never looks at.
pub fn is_skipped_name(name: &str) -> bool {
    name == MARKER || name.starts_with(TMP_PREFIX) || name == ".DS_Store" || name == "Thumbs.db"
}

/// The local tree and what it took to build it.
#[derive(Debug, Default)]
pub struct Scanned {
    pub tree: LocalTree,
    /// Chunks of files hashed in this scan (files whose hash was reused have none here).
    pub chunks: HashMap<String, Vec<Chunk>>,
    /// Where a path of `tree` lives on disk when that is not `root/path` (a name on disk that
    /// is not NFC); see [`Scanned::disk_path`].
    pub disk: HashMap<String, PathBuf>,
    /// The folder scanned.
    pub root: PathBuf,
    /// Per-path problems: the path is left out of this run.
    pub errors: Vec<Error>,
    /// Paths whose local state is unknown this run (unreadable, changed while read): the plan
    /// must not read their absence as a delete.
    pub skipped: std::collections::BTreeSet<String>,
    /// A folder could not be read: absences anywhere may be unknowns, so no remote deletes.
    pub incomplete: bool,
    pub files: u64,
    pub bytes_scanned: u64,
    pub bytes_hashed: u64,
    /// Entries the walk stat'ed (what a scan costs, whether or not it hashed anything).
    pub stat_calls: u64,
    /// Our own temp files the walk passed: debris of a failed or killed run (the scan never
    /// syncs them; the daemon, the folder's one writer, removes them between rounds).
    pub temps: Vec<PathBuf>,
    /// A scan of changes ([`scan_changes`]) only: the synced paths the scan did not find
    /// (deleted, unreadable, ignored now), sorted. `tree` then holds what differs from the
    /// synced tree (and the entries under names that are not NFC on disk, kept for their disk
    /// path); every other synced path is on disk exactly as synced (see [`crate::delta`]).
    pub absent: Vec<String>,
    /// A scan of changes only: the synced entries of the paths in `tree` and in `absent`.
    pub synced: SyncedTree,
    /// A scan of changes only: the files (not folders) in the whole synced tree.
    pub synced_files: u64,
}

impl Scanned {
    /// Where `path` of the local tree lives on disk (`None` when the tree has no such path).
    pub fn disk_path(&self, path: &str) -> Option<PathBuf> {
        if !self.tree.contains_key(path) {
            return None;
        }
        Some(match self.disk.get(path) {
            Some(d) => d.clone(),
            None => self.root.join(path),
        })
    }
}

/// What a partial scan looks at: some root-relative paths (a directory: its whole subtree) and
/// the directories leading to them (those are listed and stat'ed, their other children are not).
/// Paths are compared in NFC, as the tree's keys are.
#[derive(Clone, Debug, Default)]
pub struct Region {
    targets: std::collections::BTreeSet<String>,
    ancestors: std::collections::BTreeSet<String>,
}

impl Region {
    /// The region of `paths` (root-relative, `/`-separated; names as on disk or NFC). Empty
    /// paths and `.`/`..` components are dropped: the caller scans the whole folder for those.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(paths: I) -> Self {
        let mut r = Region::default();
        for p in paths {
            let p = to_nfc(p.as_ref().trim_matches('/'));
            if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                continue;
            }
            let mut at = 0;
            while let Some(i) = p[at..].find('/') {
                r.ancestors.insert(p[..at + i].to_owned());
                at += i + 1;
            }
            r.targets.insert(p);
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The paths whose subtrees the scan covers completely.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(String::as_str)
    }

    /// The directories above the targets (the scan stats them but not their other children).
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.ancestors.iter().map(String::as_str)
    }

    /// Is `path` a target or under one?
    pub fn covers(&self, path: &str) -> bool {
        let mut p = path;
        loop {
            if self.targets.contains(p) {
                return true;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return false,
            }
        }
    }

    /// Does the walk enter `path` (a target, under one, or on the way to one)?
    fn admits(&self, path: &str) -> bool {
        self.ancestors.contains(path) || self.covers(path)
    }
}

/// One walked entry before hashing.
struct Walked {
    path: String,
    /// Where it is on disk when that is not `root/path` (a name that is not NFC).
    unusual: Option<PathBuf>,
    stat: Stat,
    kind: WalkedKind,
}

enum WalkedKind {
    File,
    Dir,
    Symlink(String),
}

pub fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        size: md.len(),
        mtime_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        inode: md.ino(),
        mode: md.permissions().mode() & 0o7777,
    }
}

/// Scans `root` (already canonical). Files whose size, mtime and inode match the synced entry keep
/// its content id; others are chunked on blocking threads, `concurrency` at a time.
pub async fn scan(
    root: &Path,
    synced: &SyncedTree,
    params: ChunkParams,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<Scanned> {
    scan_region(root, None, synced, params, concurrency, progress).await
}

/// Like [`scan`], but the synced tree is read from the state DB beside the walk, and the tree
/// holds only the entries that differ from it; [`Scanned::absent`] names the synced paths not
/// found: the one-shot commands' scan, whose memory grows with what changed rather than with the
/// folder (see [`crate::delta`]).
pub async fn scan_changes(
    root: &Path,
    synced: SyncedReader,
    params: ChunkParams,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<Scanned> {
    let how = How {
        region: None,
        leave_out: Some(synced),
    };
    scan_with(root, how, &SyncedTree::new(), params, concurrency, progress).await
}

/// What a walk covers and leaves out.
struct How {
    /// Only these paths (see [`Region`]); all when `None`.
    region: Option<Region>,
    /// Entries exactly as in this synced tree are left out (a scan of changes).
    leave_out: Option<SyncedReader>,
}

/// Like [`scan`], but with `region` only the region's paths are walked: the same walker, ignore
/// rules, name checks and hash reuse, applied to the targets' subtrees and the directories above
/// them. The result holds exactly what a full scan would hold for those paths.
pub async fn scan_region(
    root: &Path,
    region: Option<&Region>,
    synced: &SyncedTree,
    params: ChunkParams,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<Scanned> {
    let how = How {
        region: region.cloned(),
        leave_out: None,
    };
    scan_with(root, how, synced, params, concurrency, progress).await
}

async fn scan_with(
    root: &Path,
    how: How,
    synced: &impl SyncedLookup,
    params: ChunkParams,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<Scanned> {
    let root_owned = root.to_owned();
    let modes = crate::localfs::keeps_modes(root);
    let leaving_out = how.leave_out.is_some();
    // A full walk finds about as many entries as were synced: room for them up front spares
    // the doubling copies of a growing list (and the holes they leave in the heap).
    let expect = if how.region.is_none() && how.leave_out.is_none() {
        synced.count() + synced.count() / 64
    } else {
        0
    };
    let w = tokio::task::spawn_blocking(move || walk(&root_owned, &how, modes, expect))
        .await
        .map_err(|e| Error::Protocol(format!("scanner thread failed: {e}")))??;
    let mut out = Scanned {
        errors: w.errors,
        skipped: w.skipped,
        incomplete: w.incomplete,
        stat_calls: w.stats,
        temps: w.temps,
        absent: w.absent,
        synced_files: w.synced_files,
        root: root.to_owned(),
        files: w.left_out_files,
        bytes_scanned: w.left_out_bytes,
        ..Default::default()
    };
    let walked = w.out;
    // A scan of changes looks its paths up in the synced entries the walk kept for them.
    let touched = w.touched;
    let synced: &dyn SyncedLookup = if leaving_out { &touched } else { synced };
    let mut to_hash = Vec::new();
    // The tree's entries, made into the map in one go at the end (full nodes: less memory).
    let mut entries = Vec::with_capacity(walked.len());
    for w in walked {
        let content = match w.kind {
            WalkedKind::Dir => Content::Dir,
            WalkedKind::Symlink(t) => Content::Symlink(t),
            WalkedKind::File => {
                out.files += 1;
                out.bytes_scanned += w.stat.size;
                match synced.entry(&w.path) {
                    Some(s)
                        if reusable(s.stat, w.stat)
                            && matches!(s.content, Content::File { .. }) =>
                    {
                        let Content::File { id, .. } = s.content else {
                            unreachable!("matched just above")
                        };
                        Content::File {
                            id,
                            exec: exec_of(modes, Some(s), w.stat),
                        }
                    }
                    _ => {
                        to_hash.push(w);
                        continue;
                    }
                }
            }
        };
        if let Some(disk) = w.unusual {
            out.disk.insert(w.path.clone(), disk);
        }
        entries.push((
            w.path,
            LocalEntry {
                content,
                stat: w.stat,
            },
        ));
    }
    progress.set_length(to_hash.iter().map(|w| w.stat.size).sum());
    let mut hashed = futures::stream::iter(to_hash.into_iter().map(|w| {
        let pb = progress.clone();
        async move {
            let disk = w.unusual.clone().unwrap_or_else(|| root.join(&w.path));
            let before = w.stat;
            let res = tokio::task::spawn_blocking(move || hash_file(&disk, before, params)).await;
            pb.inc(before.size);
            (w, res)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((w, res)) = hashed.next().await {
        if leaving_out
            && !matches!(res, Ok(Ok(_)))
            && synced.entry(&w.path).is_some()
            && let Err(at) = out.absent.binary_search(&w.path)
        {
            // Not hashed, so not in the tree: as a delta over the synced tree, absent.
            out.absent.insert(at, w.path.clone());
        }
        match res {
            Ok(Ok((chunks, content_id))) => {
                out.bytes_hashed += w.stat.size;
                out.chunks.insert(w.path.clone(), chunks);
                if let Some(disk) = w.unusual {
                    out.disk.insert(w.path.clone(), disk);
                }
                let content = Content::File {
                    id: content_id,
                    exec: exec_of(modes, synced.entry(&w.path), w.stat),
                };
                entries.push((
                    w.path,
                    LocalEntry {
                        content,
                        stat: w.stat,
                    },
                ));
            }
            Ok(Err(e)) => {
                out.skipped.insert(w.path.clone());
                out.errors.push(Error::path(w.path, e));
            }
            Err(e) => {
                out.skipped.insert(w.path.clone());
                out.errors
                    .push(Error::path(w.path, format!("hashing thread failed: {e}")));
            }
        }
    }
    out.tree = entries.into_iter().collect();
    if leaving_out {
        out.synced = touched;
    }
    Ok(out)
}

/// The executable bit of a file with `stat`. A folder that keeps no modes (vfat shows every file
/// as `rwx`) cannot say: the bit stays what was synced (off for new files), like git's
/// `core.fileMode = false`.
fn exec_of(modes: bool, synced: Option<&SyncedEntry>, stat: Stat) -> bool {
    if modes {
        return is_exec(stat.mode);
    }
    matches!(
        synced.map(|s| &s.content),
        Some(Content::File { exec: true, .. })
    )
}

/// Size, mtime and inode unchanged: the content id can be reused.
fn reusable(synced: Stat, now: Stat) -> bool {
    synced.size == now.size && synced.mtime_ns == now.mtime_ns && synced.inode == now.inode
}

/// How far behind the cutter a mapped file's pages are dropped from the resident set: the
/// hashers work on at most a few 8 MiB batches behind it.
const MAPPED_LAG: usize = 64 << 20;

/// Chunks one file; refuses it when it changed while being read.
pub fn hash_file(
    disk: &Path,
    before: Stat,
    params: ChunkParams,
) -> std::result::Result<(Vec<Chunk>, cairn_proto::ContentId), String> {
    let changed = || "changed while being read; skipped this run, it goes up next time".to_owned();
    let f = std::fs::File::open(disk).map_err(|e| format!("cannot read: {e}"))?;
    // A large file is hashed from a leased mapping (no copy out of the page cache) when the
    // kernel allows one.
    let mapped = crate::mapped::Leased::map(&f).and_then(|m| {
        // What the cutter passed (less what the hashers may still be reading) leaves the
        // resident set as it goes.
        let stop = |cut_to: usize| {
            m.drop_below(cut_to.saturating_sub(MAPPED_LAG));
            m.broken()
        };
        crate::chunker::chunk_mapped(m.bytes(), params, stop)
        // `m` goes here: unmapped, then the lease released.
    });
    let fc = match mapped {
        Some(fc) => fc,
        // No lease, or someone opened the file for writing meanwhile (they go ahead now): read
        // it from the start, like any file. An open that changes nothing does not cost the
        // file its turn; a write shows in the stat below.
        None => chunk_reader(std::io::BufReader::with_capacity(1 << 20, &f), params)
            .map_err(|e| format!("cannot read: {e}"))?,
    };
    let after = std::fs::symlink_metadata(disk)
        .map(|m| stat_of(&m))
        .map_err(|e| format!("vanished while being read: {e}"))?;
    if !reusable(before, after) || fc.size != before.size {
        return Err(changed());
    }
    Ok((fc.chunks, fc.content_id))
}

/// What the walk records of one entry: its kind and stat, `None` for what is not synced
/// (sockets, fifos, devices), or why it cannot be read.
fn stat_entry(disk: &Path) -> std::result::Result<Option<(WalkedKind, Stat)>, String> {
    let md = std::fs::symlink_metadata(disk).map_err(|e| format!("cannot stat: {e}"))?;
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        match std::fs::read_link(disk).map(|t| t.to_str().map(str::to_owned)) {
            Ok(Some(t)) => WalkedKind::Symlink(t),
            Ok(None) => return Err("symlink target is not valid UTF-8".into()),
            Err(e) => return Err(format!("cannot read symlink: {e}")),
        }
    } else if ft.is_dir() {
        WalkedKind::Dir
    } else if ft.is_file() {
        WalkedKind::File
    } else {
        return Ok(None);
    };
    let mut stat = stat_of(&md);
    if !matches!(kind, WalkedKind::File) {
        stat.size = 0;
    }
    Ok(Some((kind, stat)))
}

/// What a walk found.
struct Walk {
    out: Vec<Walked>,
    errors: Vec<Error>,
    skipped: std::collections::BTreeSet<String>,
    incomplete: bool,
    stats: u64,
    temps: Vec<PathBuf>,
    /// Leaving out what is as synced: the synced paths not found, sorted.
    absent: Vec<String>,
    /// Leaving out what is as synced: the synced entries of the paths in `out` and `absent`.
    touched: SyncedTree,
    /// Leaving out what is as synced: the files in the whole synced tree.
    synced_files: u64,
    /// Leaving out what is as synced: the files left out, and their bytes.
    left_out_files: u64,
    left_out_bytes: u64,
}

/// Is the walked entry exactly as synced at `s`: is what the scan makes of it (a file's content
/// id reused when its stat says so) [`LocalEntry::is_as_synced`]?
fn walked_as_synced(kind: &WalkedKind, stat: Stat, s: &SyncedEntry, modes: bool) -> bool {
    let content = match (kind, &s.content) {
        (WalkedKind::File, Content::File { id, .. }) if reusable(s.stat, stat) => Content::File {
            id: *id,
            exec: exec_of(modes, Some(s), stat),
        },
        (WalkedKind::Dir, _) => Content::Dir,
        (WalkedKind::Symlink(t), Content::Symlink(_)) => Content::Symlink(t.clone()),
        _ => return false,
    };
    LocalEntry { content, stat }.is_as_synced(s)
}

/// The namespace path a disk path under `root` would have (lossy for non-UTF-8 names).
pub fn rel_key(root: &Path, disk: &Path) -> Option<String> {
    let rel = disk.strip_prefix(root).ok()?;
    Some(to_nfc(
        &rel.to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/"),
    ))
}

/// Walks without following symlinks, honouring `.cairnignore` files, skipping our own names.
/// `modes`: whether the folder keeps modes ([`crate::localfs::keeps_modes`]). Leaving out what
/// is as synced, the synced rows are read in the walk's order beside it.
fn walk(root: &Path, how: &How, modes: bool, expect: usize) -> Result<Walk> {
    match &how.leave_out {
        Some(reader) => reader.rows(Order::Walk, |rows| {
            walk_with(
                root,
                how,
                modes,
                expect,
                Some((Merge::new(Order::Walk), rows)),
            )
        })?,
        None => walk_with(root, how, modes, expect, None),
    }
}

fn walk_with(
    root: &Path,
    how: &How,
    modes: bool,
    expect: usize,
    mut merging: Option<(Merge, &mut Cursor<'_>)>,
) -> Result<Walk> {
    let region = how.region.as_ref();
    let (mut left_out_files, mut left_out_bytes) = (0, 0);
    let mut touched = SyncedTree::new();
    let md = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !md.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false);
    // Sorting makes the walker read every directory it meets in full, even one the region then
    // skips: a partial walk goes unsorted (its result is sorted below).
    if region.is_none() {
        builder.sort_by_file_name(|a, b| a.cmp(b));
    }
    // Our temp files the walk passes (left by a failed or killed run), for the caller to remove.
    let temps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let walker = builder
        .filter_entry({
            let (root, region) = (root.to_owned(), region.cloned());
            let temps = temps.clone();
            move |e| {
                let name = e.file_name().to_str();
                if name.is_some_and(|n| n.starts_with(TMP_PREFIX))
                    && e.file_type().is_some_and(|t| t.is_file())
                {
                    temps
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.path().to_owned());
                }
                !name.is_some_and(is_skipped_name)
                    && region.as_ref().is_none_or(|r| {
                        e.depth() == 0 || rel_key(&root, e.path()).is_some_and(|k| r.admits(&k))
                    })
            }
        })
        .build();
    let mut out: Vec<Walked> = Vec::with_capacity(expect);
    let mut errors = Vec::new();
    // Two names on disk can only share one path when one of them is not NFC. Until the walk
    // meets such a name, `seen` stays unbuilt (a map of every path costs a tenth of the walk);
    // it is then filled with every path that passed the name checks so far: the kept ones
    // (`out`) and the few that were not (`passed`).
    let mut seen: Option<HashMap<String, PathBuf>> = None;
    let mut passed: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped = std::collections::BTreeSet::new();
    let mut incomplete = false;
    let mut stats = 0u64;
    for item in walker {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                incomplete = true;
                errors.push(Error::path(
                    root.display().to_string(),
                    format!("cannot scan: {e}; no deletes are sent this run"),
                ));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let disk = entry.into_path();
        let Some(rel) = disk.strip_prefix(root).ok().and_then(|r| r.to_str()) else {
            errors.push(Error::path(
                disk.display().to_string(),
                "name is not valid UTF-8; rename it to sync it",
            ));
            continue;
        };
        let path = if std::path::MAIN_SEPARATOR == '/' {
            to_nfc(rel)
        } else {
            to_nfc(&rel.replace(std::path::MAIN_SEPARATOR, "/"))
        };
        if let Err(e) = validate_path(&path) {
            errors.push(Error::path(path, format!("cannot be synced: {e}")));
            continue;
        }
        if seen.is_none() && path != rel {
            // What was left out, then what was kept (whose disk paths win for a path in both).
            let left_out = match &merging {
                Some((merge, rows)) => met_so_far(merge, rows.reader())?,
                None => Vec::new(),
            };
            let left_out = left_out.into_iter().map(|p| {
                let disk = root.join(&p);
                (p, disk)
            });
            let so_far = out.iter().map(|w| {
                let disk = w.unusual.clone().unwrap_or_else(|| root.join(&w.path));
                (w.path.clone(), disk)
            });
            seen = Some(left_out.chain(so_far).chain(passed.drain(..)).collect());
        }
        if let Some(other) = seen
            .as_mut()
            .and_then(|s| s.insert(path.clone(), disk.clone()))
        {
            skipped.insert(path.clone());
            errors.push(Error::path(
                path,
                format!(
                    "two names on disk normalise to the same path ({})",
                    other.display()
                ),
            ));
            continue;
        }
        stats += 1;
        match stat_entry(&disk) {
            Ok(Some((kind, stat))) => {
                // A name that is not NFC sorts by its disk bytes: out of the walk's order.
                let synced = match &mut merging {
                    Some((merge, rows)) => merge.meet(&path, path == rel, &mut **rows)?,
                    None => None,
                };
                // Left out only under a usual name: the disk path of the others is kept.
                let as_synced = synced
                    .as_ref()
                    .filter(|_| path == rel)
                    .is_some_and(|s| walked_as_synced(&kind, stat, s, modes));
                if as_synced {
                    if matches!(kind, WalkedKind::File) {
                        left_out_files += 1;
                        left_out_bytes += stat.size;
                    }
                    continue;
                }
                if let Some(s) = synced {
                    touched.insert(path.clone(), s);
                }
                // A usual name's disk path is dropped here: `root/path` again when needed.
                out.push(Walked {
                    unusual: (path != rel).then_some(disk),
                    path,
                    stat,
                    kind,
                });
                continue;
            }
            // Sockets, fifos, devices: nothing to sync, not worth an error.
            Ok(None) => {}
            Err(why) => {
                skipped.insert(path.clone());
                errors.push(Error::path(path.clone(), why));
            }
        }
        if seen.is_none() {
            passed.push((path, disk));
        }
    }
    if region.is_some() {
        out.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let temps = std::mem::take(&mut *temps.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut absent, mut synced_files) = (Vec::new(), 0);
    if let Some((merge, rows)) = merging {
        let merged = merge.finish(rows)?;
        synced_files = merged.files;
        absent = merged.absent_into(&mut touched);
    }
    Ok(Walk {
        out,
        errors,
        skipped,
        incomplete,
        stats,
        temps,
        absent,
        touched,
        synced_files,
        left_out_files,
        left_out_bytes,
    })
}

/// The synced paths a walk merging with `merge` has met so far, read again from the state DB:
/// the walk keeps none of those it left out, and needs them once it meets a name that is not NFC.
fn met_so_far(merge: &Merge, reader: &SyncedReader) -> Result<Vec<String>> {
    let Some(last) = merge.last() else {
        return Ok(merge.late().map(str::to_owned).collect());
    };
    let in_order = reader.rows(Order::Walk, |rows| -> Result<Vec<String>> {
        let mut out = Vec::new();
        while let Some((p, _)) = rows.next_row()? {
            if Order::Walk.cmp(&p, last).is_gt() {
                break;
            }
            if merge.met(&p) {
                out.push(p);
            }
        }
        Ok(out)
    })??;
    Ok(in_order
        .into_iter()
        .chain(merge.late().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests;
