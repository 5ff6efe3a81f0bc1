//! Commit: apply validated items in one transaction with optimistic concurrency and conflict copies.
//!
//! Policy: an item whose content equals the path's live content is UNCHANGED. A pure mtime change
//! is ignored (mtimes differ across devices and would churn the log); a mode change on an
//! up-to-date base is a new version. A stale base never overwrites: the content goes to a conflict
//! copy next to the path.
//!
//! The live paths stay a tree, also when two devices change a folder and its contents at once:
//! - nothing is written under a live file or link (the item is refused with PARENT_REPLACED: the
//!   writer's next pull finds the file and keeps its folder as a conflict copy);
//! - a write under a deleted folder creates the folder again;
//! - a file or link replaces a folder only while nothing live is left in it (otherwise it
//!   becomes a conflict copy beside the folder, as with a stale base);
//! - a folder is deleted only while nothing live is left in it (otherwise DELETE_SKIPPED, as
//!   for a changed base).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};

use cairn_proto::pb::{CommitItem, CommitResult, CommitStatus, Entry, EntryKind};
use cairn_proto::{conflict_copy_name, validate_path};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior};

use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::model::{ENTRY_COLUMNS, decode_manifest, encode_manifest, entry_from_row};
use crate::validate::{self, Content};

/// The most items one Commit may carry.
pub const MAX_ITEMS: usize = 10_000;

/// Who commits, and when.
pub(crate) struct Ctx {
    pub namespace_id: i64,
    pub device: String,
    pub now_ms: i64,
    /// Paths this transaction found (or made) to be live folders, so that a commit of many
    /// files in one folder looks each folder up once. A path leaves the set when the transaction
    /// writes anything but a folder there.
    pub live_folders: RefCell<HashSet<String>>,
    /// Whether the transaction appended anything to the sync log.
    pub appended: Cell<bool>,
}

impl Ctx {
    pub fn new(namespace_id: i64, device: String, now_ms: i64) -> Self {
        Self {
            namespace_id,
            device,
            now_ms,
            live_folders: RefCell::default(),
            appended: Cell::new(false),
        }
    }
}

/// The newest version of a path.
pub(crate) struct Current {
    pub file_id: i64,
    pub version: u64,
    pub deleted: bool,
    pub kind: i32,
    pub content_id: Vec<u8>,
    pub symlink_target: String,
    pub mode: u32,
    pub manifest: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub seq: u64,
}

/// Applies `items` in one transaction; returns their results in order and the new head seq when
/// anything was appended to the log.
pub async fn commit(
    db: &Db,
    namespace_id: i64,
    device: String,
    items: Vec<CommitItem>,
) -> Result<(Vec<CommitResult>, Option<u64>)> {
    if items.len() > MAX_ITEMS {
        return Err(Error::InvalidArgument(format!(
            "a commit carries at most {MAX_ITEMS} items, got {}",
            items.len()
        )));
    }
    db.write(move |conn| {
        let ctx = Ctx::new(namespace_id, device, db::now_ms());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            results.push(apply_item(&tx, &ctx, item)?);
        }
        // Not only Committed and Conflict items append: a folder made again above an item does
        // too, whatever the item's own result.
        let head = if ctx.appended.get() {
            Some(max_seq(&tx, ctx.namespace_id)?)
        } else {
            None
        };
        tx.commit()?;
        Ok((results, head))
    })
    .await
}

pub(crate) fn max_seq(tx: &Transaction<'_>, ns: i64) -> Result<u64> {
    let s: Option<i64> = tx.query_row(
        "SELECT MAX(seq) FROM sync_log WHERE namespace_id = ?1",
        [ns],
        |r| r.get(0),
    )?;
    Ok(s.unwrap_or(0) as u64)
}

pub(crate) fn result(status: CommitStatus, path: &str) -> CommitResult {
    CommitResult {
        status: status as i32,
        path: path.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn rejected(path: &str, error: String) -> CommitResult {
    CommitResult {
        error,
        ..result(CommitStatus::Rejected, path)
    }
}

fn quota_exceeded(path: &str, error: String) -> CommitResult {
    CommitResult {
        error,
        ..result(CommitStatus::QuotaExceeded, path)
    }
}

fn apply_item(tx: &Transaction<'_>, ctx: &Ctx, item: &CommitItem) -> Result<CommitResult> {
    if let Err(e) = validate_path(&item.path) {
        return Ok(rejected(&item.path, e.to_string()));
    }
    if item.delete {
        if !item.move_from.is_empty() {
            return Ok(rejected(
                &item.path,
                "an item cannot be both a delete and a move".into(),
            ));
        }
        return apply_delete(tx, ctx, &item.path, item.base_version);
    }
    if !item.move_from.is_empty() {
        return apply_move(tx, ctx, item);
    }
    let content = match validate::content(&item.path, item.meta.as_ref()) {
        Ok(c) => c,
        Err(m) => return Ok(rejected(&item.path, m)),
    };
    if let Err(m) = check_chunks(tx, ctx.namespace_id, &content)? {
        return Ok(rejected(&item.path, m));
    }
    apply_put(
        tx,
        ctx,
        &item.path,
        item.base_version,
        &content,
        Origin::Edit,
    )
}

/// Every chunk must have been verified into this namespace, with the declared length.
fn check_chunks(tx: &Transaction<'_>, ns: i64, content: &Content) -> Result<Result<(), String>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.length FROM namespace_chunks nc JOIN chunks c ON c.id = nc.chunk_id
         WHERE nc.namespace_id = ?1 AND nc.chunk_id = ?2",
    )?;
    for (id, len) in &content.manifest {
        let stored: Option<u32> = stmt
            .query_row((ns, &id.as_bytes()[..]), |r| r.get(0))
            .optional()?;
        match stored {
            None => {
                return Ok(Err(format!(
                    "chunk {id} was never uploaded to this namespace"
                )));
            }
            Some(s) if s != *len => return Ok(Err(format!("chunk {id} is {s} bytes, not {len}"))),
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

pub(crate) fn current(tx: &Transaction<'_>, ns: i64, path: &str) -> Result<Option<Current>> {
    let mut stmt = tx.prepare_cached(
        "SELECT f.id, v.version, v.deleted, v.kind, v.content_id, v.symlink_target, v.mode, v.manifest, v.size, v.seq, v.mtime_ns
         FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
         WHERE f.namespace_id = ?1 AND f.path = ?2",
    )?;
    Ok(stmt
        .query_row((ns, path), |r| {
            Ok(Current {
                file_id: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                deleted: r.get(2)?,
                kind: r.get(3)?,
                content_id: r.get(4)?,
                symlink_target: r.get(5)?,
                mode: r.get(6)?,
                manifest: r.get(7)?,
                size: r.get::<_, i64>(8)? as u64,
                seq: r.get::<_, i64>(9)? as u64,
                mtime_ns: r.get(10)?,
            })
        })
        .optional()?)
}

/// The path's newest version as an `Entry` (no manifest).
pub(crate) fn entry(tx: &rusqlite::Connection, ns: i64, path: &str) -> Result<Option<Entry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
         WHERE f.namespace_id = ?1 AND f.path = ?2"
    );
    Ok(tx
        .prepare_cached(&sql)?
        .query_row((ns, path), |r| entry_from_row(r, false))
        .optional()?)
}

/// Why a version is written, beyond an ordinary edit (for the log).
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    Edit,
    Moved { from: &'a str },
    Conflict { of: &'a str },
    Restored { version: u64 },
}

impl Origin<'_> {
    /// (action, action_detail) as stored in `versions`.
    fn describe(self, cur: Option<&Current>, tombstone: bool) -> (&'static str, String) {
        match self {
            _ if tombstone => ("deleted", String::new()),
            Origin::Moved { from } => ("moved", from.to_owned()),
            Origin::Conflict { of } => ("conflict", of.to_owned()),
            Origin::Restored { version } => ("restored", version.to_string()),
            Origin::Edit if cur.is_none_or(|c| c.deleted) => ("created", String::new()),
            Origin::Edit => ("modified", String::new()),
        }
    }
}

/// The quota error for growing the namespace's current files by `delta` bytes, if it would
/// exceed its quota.
fn over_quota(tx: &Transaction<'_>, ns: i64, delta: i64) -> Result<Option<String>> {
    if delta <= 0 {
        return Ok(None);
    }
    let (quota, used): (Option<i64>, i64) = tx.query_row(
        "SELECT quota_bytes, logical_bytes FROM namespaces WHERE id = ?1",
        [ns],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(quota.filter(|q| used + delta > *q).map(|q| {
        format!(
            "the namespace's quota is {q} bytes and {used} are in use; this change needs {delta} more — \
             delete files, or ask the server's admin to raise the quota (`cairn-server namespace set --quota`)"
        )
    }))
}

/// Bytes the current files grow by when `content` replaces `cur` (negative when they shrink).
fn size_delta(cur: Option<&Current>, content: Option<&Content>) -> i64 {
    let old = cur.filter(|c| !c.deleted).map_or(0, |c| c.size as i64);
    content.map_or(0, |c| c.size as i64) - old
}

/// Appends a version (and its log row) to `path`; `content` None makes a tombstone of `cur`.
/// Returns (version, seq).
pub(crate) fn append(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    path: &str,
    cur: Option<&Current>,
    content: Option<&Content>,
    origin: Origin<'_>,
) -> Result<(u64, u64)> {
    ctx.appended.set(true);
    if content.is_none_or(|c| c.kind != EntryKind::Dir) {
        ctx.live_folders.borrow_mut().remove(path);
    }
    let version = cur.map_or(1, |c| c.version + 1);
    let file_id = match cur {
        Some(c) => {
            tx.execute(
                "UPDATE files SET head_version = ?1 WHERE id = ?2",
                (version as i64, c.file_id),
            )?;
            tx.prepare_cached(
                "UPDATE versions SET superseded_at_ms = ?1 WHERE file_id = ?2 AND version = ?3",
            )?
            .execute((ctx.now_ms, c.file_id, c.version as i64))?;
            c.file_id
        }
        None => {
            tx.execute(
                "INSERT INTO files (namespace_id, path, head_version) VALUES (?1, ?2, ?3)",
                (ctx.namespace_id, path, version as i64),
            )?;
            tx.last_insert_rowid()
        }
    };
    tx.execute(
        "INSERT INTO sync_log (namespace_id, file_id, version) VALUES (?1, ?2, ?3)",
        (ctx.namespace_id, file_id, version as i64),
    )?;
    let seq = tx.last_insert_rowid();
    let (kind, size, mode, mtime_ns, manifest, content_id, target, deleted) = match content {
        Some(c) => (
            c.kind as i32,
            c.size,
            c.mode,
            c.mtime_ns,
            encode_manifest(&c.manifest),
            c.content_id.clone(),
            c.symlink_target.clone(),
            false,
        ),
        // A tombstone keeps the kind of what it deletes.
        None => (
            cur.map_or(EntryKind::File as i32, |c| c.kind),
            0,
            0,
            0,
            Vec::new(),
            Vec::new(),
            String::new(),
            true,
        ),
    };
    let (action, detail) = origin.describe(cur, deleted);
    tx.prepare_cached(
        "INSERT INTO versions (file_id, version, kind, size, mode, mtime_ns, manifest, content_id, symlink_target,
                               device, committed_at_ms, deleted, seq, action, action_detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(rusqlite::params![
        file_id, version as i64, kind, size as i64, mode, mtime_ns, manifest, content_id, target,
        ctx.device, ctx.now_ms, deleted, seq, action, detail
    ])?;
    let delta = size_delta(cur, content);
    if delta != 0 {
        tx.prepare_cached(
            "UPDATE namespaces SET logical_bytes = logical_bytes + ?1 WHERE id = ?2",
        )?
        .execute((delta, ctx.namespace_id))?;
    }
    if let Some(c) = content {
        let distinct: BTreeSet<_> = c.manifest.iter().map(|(id, _)| *id).collect();
        let mut inc =
            tx.prepare_cached("UPDATE chunks SET refcount = refcount + 1 WHERE id = ?1")?;
        for id in distinct {
            inc.execute([&id.as_bytes()[..]])?;
        }
    }
    Ok((version, seq as u64))
}

pub(crate) fn committed(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    status: CommitStatus,
    path: &str,
    version: u64,
    seq: u64,
    current_of: &str,
) -> Result<CommitResult> {
    Ok(CommitResult {
        version,
        seq,
        current: entry(tx, ctx.namespace_id, current_of)?,
        ..result(status, path)
    })
}

pub(crate) fn apply_put(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    path: &str,
    base: u64,
    content: &Content,
    origin: Origin<'_>,
) -> Result<CommitResult> {
    if let Some(r) = folders_for(tx, ctx, path)? {
        return Ok(r);
    }
    let cur = current(tx, ctx.namespace_id, path)?;
    // A file or link over a folder that still holds live entries (changed elsewhere since this
    // device emptied it) would leave them under a file: it goes beside the folder instead.
    let over_full_folder = match &cur {
        Some(c)
            if !c.deleted && c.kind == EntryKind::Dir as i32 && content.kind != EntryKind::Dir =>
        {
            has_live_entries_under(tx, ctx.namespace_id, path)?
        }
        _ => false,
    };
    match &cur {
        Some(c)
            if !c.deleted
                && content.same_data(c.kind, &c.content_id, &c.symlink_target)
                && (c.mode == content.mode || base != c.version) =>
        {
            committed(
                tx,
                ctx,
                CommitStatus::Unchanged,
                path,
                c.version,
                c.seq,
                path,
            )
        }
        Some(c) if !c.deleted && (base != c.version || over_full_folder) => {
            let Some(copy) = free_conflict_name(tx, ctx, path)? else {
                return Ok(rejected(
                    path,
                    format!("{path:?}: stale base and no usable conflict-copy name"),
                ));
            };
            if let Some(m) = over_quota(tx, ctx.namespace_id, size_delta(None, Some(content)))? {
                return Ok(quota_exceeded(path, m));
            }
            let origin = Origin::Conflict { of: path };
            let (v, seq) = append(tx, ctx, &copy, None, Some(content), origin)?;
            committed(tx, ctx, CommitStatus::Conflict, &copy, v, seq, path)
        }
        _ => {
            let delta = size_delta(cur.as_ref(), Some(content));
            if let Some(m) = over_quota(tx, ctx.namespace_id, delta)? {
                return Ok(quota_exceeded(path, m));
            }
            let (v, seq) = append(tx, ctx, path, cur.as_ref(), Some(content), origin)?;
            committed(tx, ctx, CommitStatus::Committed, path, v, seq, path)
        }
    }
}

/// Makes the folders above `path` fit a write there. The write is refused (the result) when one
/// of them is a live file or link on the server (replaced elsewhere while this device wrote
/// inside it). Otherwise a deleted one is created again (deleted elsewhere while this device
/// wrote inside it), so that every live entry stays inside live folders.
pub(crate) fn folders_for(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    path: &str,
) -> Result<Option<CommitResult>> {
    let mut deleted = Vec::new();
    for (i, _) in path.match_indices('/') {
        let folder = &path[..i];
        if ctx.live_folders.borrow().contains(folder) {
            continue;
        }
        match current(tx, ctx.namespace_id, folder)? {
            Some(c) if !c.deleted && c.kind != EntryKind::Dir as i32 => {
                return Ok(Some(CommitResult {
                    error: format!(
                        "{path:?} is under {folder:?}, which is no longer a folder on the server \
                         (it was replaced elsewhere); the next pull keeps the folder here as a \
                         conflict copy, and its contents go up from there"
                    ),
                    ..result(CommitStatus::ParentReplaced, path)
                }));
            }
            Some(c) if c.deleted => deleted.push((folder, c)),
            Some(_) => {
                ctx.live_folders.borrow_mut().insert(folder.to_owned());
            }
            None => {}
        }
    }
    for (folder, c) in deleted {
        let dir = Content {
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ns: ctx.now_ms.saturating_mul(1_000_000),
            manifest: Vec::new(),
            content_id: Vec::new(),
            symlink_target: String::new(),
        };
        append(tx, ctx, folder, Some(&c), Some(&dir), Origin::Edit)?;
        ctx.live_folders.borrow_mut().insert(folder.to_owned());
    }
    Ok(None)
}

/// Whether any live entry lies under the folder `path`.
fn has_live_entries_under(tx: &Transaction<'_>, ns: i64, path: &str) -> Result<bool> {
    // Paths under `p` sort between "p/" and "p0" ('0' follows '/').
    let (lo, hi) = (format!("{path}/"), format!("{path}0"));
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
             WHERE f.namespace_id = ?1 AND f.path > ?2 AND f.path < ?3 AND v.deleted = 0 LIMIT 1",
        )?
        .exists((ns, lo, hi))?)
}

/// The first conflict-copy name (attempt 1, 2, ...) that no file of the namespace holds yet.
fn free_conflict_name(tx: &Transaction<'_>, ctx: &Ctx, path: &str) -> Result<Option<String>> {
    let mut taken =
        tx.prepare_cached("SELECT 1 FROM files WHERE namespace_id = ?1 AND path = ?2")?;
    for attempt in 1..1000 {
        let name = conflict_copy_name(
            path,
            &ctx.device,
            crate::clock::name_secs(ctx.now_ms),
            attempt,
        );
        if validate_path(&name).is_err() {
            return Ok(None);
        }
        if !taken.exists((ctx.namespace_id, &name))? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn apply_delete(tx: &Transaction<'_>, ctx: &Ctx, path: &str, base: u64) -> Result<CommitResult> {
    match current(tx, ctx.namespace_id, path)? {
        None => Ok(result(CommitStatus::Unchanged, path)),
        Some(c) if c.deleted => committed(
            tx,
            ctx,
            CommitStatus::Unchanged,
            path,
            c.version,
            c.seq,
            path,
        ),
        // A folder goes only once nothing live is left in it: entries written into it elsewhere
        // since this device emptied it keep it, as a changed base keeps a file.
        Some(c)
            if c.version == base
                && !(c.kind == EntryKind::Dir as i32
                    && has_live_entries_under(tx, ctx.namespace_id, path)?) =>
        {
            let (v, seq) = append(tx, ctx, path, Some(&c), None, Origin::Edit)?;
            committed(tx, ctx, CommitStatus::Committed, path, v, seq, path)
        }
        Some(c) => committed(
            tx,
            ctx,
            CommitStatus::DeleteSkipped,
            path,
            c.version,
            c.seq,
            path,
        ),
    }
}

/// A move: when the source is still at the version the client saw, tombstone it and create the
/// destination with the source's content. Otherwise leave the source alone and treat the item as a
/// plain create at the destination (its meta must then be complete and valid).
///
/// Bases: with `move_from_version` set, it is the source's base and `base_version` the
/// destination's; without it, `base_version` is the source's base (as the proto says) and the
/// destination is expected to be empty (base 0).
fn apply_move(tx: &Transaction<'_>, ctx: &Ctx, item: &CommitItem) -> Result<CommitResult> {
    let (path, from) = (&item.path, &item.move_from);
    if let Err(e) = validate_path(from) {
        return Ok(rejected(path, format!("move source: {e}")));
    }
    if from == path {
        return Ok(rejected(
            path,
            format!("{path:?} cannot be moved onto itself"),
        ));
    }
    let (src_base, dest_base) = if item.move_from_version != 0 {
        (item.move_from_version, item.base_version)
    } else {
        (item.base_version, 0)
    };
    // Checked before the source is tombstoned, which a refused destination must not do.
    if let Some(r) = folders_for(tx, ctx, path)? {
        return Ok(r);
    }
    let src = current(tx, ctx.namespace_id, from)?;
    if let Some(s) = src.as_ref().filter(|s| !s.deleted && s.version == src_base) {
        let kind = EntryKind::try_from(s.kind).unwrap_or(EntryKind::File);
        let meta = item.meta.as_ref();
        let manifest = decode_manifest(&s.manifest)?;
        let content = Content {
            kind,
            size: s.size,
            mode: meta.map_or(s.mode, |m| m.mode & 0o7777),
            mtime_ns: meta.map_or(s.mtime_ns, |m| m.mtime_ns),
            manifest,
            content_id: s.content_id.clone(),
            symlink_target: s.symlink_target.clone(),
        };
        // The destination's folder differs from the source's: re-check where the link points.
        if kind == EntryKind::Symlink
            && let Err(m) = validate::symlink_target(path, &s.symlink_target)
        {
            return Ok(rejected(path, m));
        }
        append(tx, ctx, from, Some(s), None, Origin::Edit)?;
        return apply_put(tx, ctx, path, dest_base, &content, Origin::Moved { from });
    }
    let content = match validate::content(path, item.meta.as_ref()) {
        Ok(c) => c,
        Err(m) => {
            return Ok(rejected(
                path,
                format!("move source {from:?} is not at version {src_base}, and {m}"),
            ));
        }
    };
    if let Err(m) = check_chunks(tx, ctx.namespace_id, &content)? {
        return Ok(rejected(path, m));
    }
    apply_put(tx, ctx, path, dest_base, &content, Origin::Edit)
}
