//! History: the log, the trash, restores, usage, and the chunks scrub lost (ListWanted).
//!
//! A restore is a commit like any other: a new version whose manifest is an old version's, so no
//! byte is copied and every device receives it through the sync log. It is applied against the
//! path's current head inside one transaction, so a concurrent edit is never overwritten silently:
//! the restore becomes the head and the edit stays an older version (a device still holding the
//! edit uncommitted gets a conflict copy, as with any stale base).

use std::collections::{BTreeMap, HashSet};

use cairn_proto::pb::{
    CommitResult, CommitStatus, Entry, EntryKind, PathVersion, TrashItem, Usage, WantedChunk,
};
use cairn_proto::{ChunkId, validate_path};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::commit::{self, Ctx, Origin, apply_put, committed, current, rejected};
use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::model::{ENTRY_COLUMNS, decode_manifest, entry_from_row};
use crate::queries::page_limit;
use crate::validate::Content;

/// `path = ''` (everything), the path itself, or anything under it as a folder.
const UNDER: &str = "(?2 = '' OR f.path = ?2 OR (f.path > ?2 || '/' AND f.path < ?2 || '0'))";

/// Log entries under `path`, newest first, before `before_seq` (0: from the newest).
pub async fn log(
    db: &Db,
    ns: i64,
    path: String,
    before_seq: u64,
    limit: u32,
) -> Result<(Vec<Entry>, u64)> {
    let path = normalize(&path)?;
    let limit = page_limit(limit);
    db.read(move |conn| {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM sync_log l JOIN files f ON f.id = l.file_id
             JOIN versions v ON v.file_id = l.file_id AND v.version = l.version
             WHERE l.namespace_id = ?1 AND {UNDER} AND (?3 = 0 OR l.seq < ?3)
             ORDER BY l.seq DESC LIMIT ?4"
        );
        let entries = conn
            .prepare_cached(&sql)?
            .query_map((ns, &path, before_seq as i64, limit + 1), |r| {
                entry_from_row(r, false)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let next = if entries.len() > limit as usize {
            entries[limit as usize - 1].seq
        } else {
            0
        };
        Ok((entries.into_iter().take(limit as usize).collect(), next))
    })
    .await
}

/// Deleted files and symlinks under `path` whose last content is still retained.
pub async fn trash(db: &Db, ns: i64, path: String, limit: u32) -> Result<Vec<TrashItem>> {
    let path = normalize(&path)?;
    let limit = page_limit(limit) as usize;
    db.read(move |conn| {
        let retention: i64 = conn.query_row(
            "SELECT retention_ms FROM namespaces WHERE id = ?1",
            [ns],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {ENTRY_COLUMNS}, f.id FROM files f
             JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
             WHERE f.namespace_id = ?1 AND {UNDER} AND v.deleted = 1 AND v.kind != ?3
             ORDER BY v.committed_at_ms DESC"
        );
        let mut tombs = conn.prepare_cached(&sql)?;
        let last_sql = format!(
            "SELECT {ENTRY_COLUMNS}, v.superseded_at_ms FROM files f JOIN versions v ON v.file_id = f.id
             WHERE f.id = ?1 AND v.deleted = 0 ORDER BY v.version DESC LIMIT 1"
        );
        let mut last = conn.prepare_cached(&last_sql)?;
        let mut rows = tombs.query((ns, &path, EntryKind::Dir as i32))?;
        let mut items = Vec::new();
        while let Some(row) = rows.next()? {
            if items.len() == limit {
                break;
            }
            let deleted = entry_from_row(row, false)?;
            let file_id: i64 = row.get(15)?;
            let found = last
                .query_row([file_id], |r| {
                    Ok((entry_from_row(r, false)?, r.get::<_, Option<i64>>(15)?))
                })
                .optional()?;
            if let Some((entry, superseded)) = found {
                items.push(TrashItem {
                    expires_at_ms: superseded.unwrap_or(deleted.committed_at_ms) + retention,
                    deleted: Some(deleted),
                    last: Some(entry),
                });
            }
        }
        Ok(items)
    })
    .await
}

/// What a restore asks for.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    pub path: String,
    pub version: u64,
    pub at_ms: i64,
    pub dry_run: bool,
}

/// Restores a file's version, a file or folder to a time, or undeletes a file. Returns one result
/// per path that changed (or could not be restored) and the new log head when anything changed.
pub async fn restore(
    db: &Db,
    ns: i64,
    device: String,
    spec: RestoreSpec,
) -> Result<(Vec<CommitResult>, Option<u64>)> {
    let path = normalize(&spec.path)?;
    if path.is_empty() && spec.at_ms == 0 {
        return Err(Error::InvalidArgument(
            "restore needs a path, or a time (at_ms) to restore the whole namespace to".into(),
        ));
    }
    if spec.version != 0 && spec.at_ms != 0 {
        return Err(Error::InvalidArgument(
            "restore takes a version or a time, not both".into(),
        ));
    }
    db.write(move |conn| {
        let ctx = Ctx::new(ns, device, db::now_ms());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let results = restore_in(&tx, &ctx, &path, &spec)?;
        let changed = results.iter().any(|r| {
            matches!(
                CommitStatus::try_from(r.status),
                Ok(CommitStatus::Committed)
            )
        });
        let head = if changed && !spec.dry_run {
            Some(commit::max_seq(&tx, ns)?)
        } else {
            None
        };
        if spec.dry_run {
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok((results, head))
    })
    .await
}

fn normalize(path: &str) -> Result<String> {
    let p = cairn_proto::to_nfc(path.trim_matches('/'));
    if p.is_empty() {
        return Ok(p);
    }
    validate_path(&p).map_err(|e| Error::InvalidArgument(format!("path {path:?}: {e}")))?;
    Ok(p)
}

/// One stored version, as restore needs it.
struct Stored {
    version: u64,
    deleted: bool,
    content: Content,
}

fn stored_version(
    tx: &Transaction<'_>,
    file_id: i64,
    where_: &str,
    arg: i64,
) -> Result<Option<Stored>> {
    let sql = format!(
        "SELECT version, deleted, kind, size, mode, mtime_ns, manifest, content_id, symlink_target
         FROM versions WHERE file_id = ?1 AND {where_} ORDER BY version DESC LIMIT 1"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row((file_id, arg), |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, bool>(1)?,
                r.get::<_, i32>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, u32>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, String>(8)?,
            ))
        })
        .optional()?;
    let Some((version, deleted, kind, size, mode, mtime_ns, manifest, content_id, target)) = row
    else {
        return Ok(None);
    };
    Ok(Some(Stored {
        version,
        deleted,
        content: Content {
            kind: EntryKind::try_from(kind).unwrap_or(EntryKind::File),
            size,
            mode,
            mtime_ns,
            manifest: decode_manifest(&manifest)?,
            content_id,
            symlink_target: target,
        },
    }))
}

fn file_id(tx: &Transaction<'_>, ns: i64, path: &str) -> Result<Option<i64>> {
    Ok(tx
        .prepare_cached("SELECT id FROM files WHERE namespace_id = ?1 AND path = ?2")?
        .query_row((ns, path), |r| r.get(0))
        .optional()?)
}

fn restore_in(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    path: &str,
    spec: &RestoreSpec,
) -> Result<Vec<CommitResult>> {
    let ns = ctx.namespace_id;
    let file = if path.is_empty() {
        None
    } else {
        file_id(tx, ns, path)?
    };
    let is_dir = match file {
        Some(id) => {
            let kind: i32 = tx.query_row(
                "SELECT kind FROM versions WHERE file_id = ?1 ORDER BY version DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )?;
            kind == EntryKind::Dir as i32
        }
        None => true,
    };
    if spec.at_ms != 0 && is_dir {
        return restore_folder(tx, ctx, path, spec.at_ms);
    }
    let Some(id) = file else {
        return Err(Error::NotFound(format!(
            "path {path:?} has no versions in this namespace (was it ever synced?)"
        )));
    };
    let target = if spec.version != 0 {
        let Some(s) = stored_version(tx, id, "version = ?2", spec.version as i64)? else {
            return Err(Error::NotFound(format!(
                "{path:?} has no version {} (it may be older than the retention period; see `cairn versions`)",
                spec.version
            )));
        };
        if s.deleted {
            return Err(Error::InvalidArgument(format!(
                "version {} of {path:?} is a delete; pick a version with content (`cairn versions`)",
                spec.version
            )));
        }
        s
    } else if spec.at_ms != 0 {
        match at_time(tx, id, spec.at_ms)? {
            AtTime::Existed(s) => s,
            AtTime::Absent => {
                return Err(Error::NotFound(format!(
                    "{path:?} did not exist at that time"
                )));
            }
            AtTime::Forgotten => {
                return Err(Error::NotFound(format!(
                    "{path:?}: no version from that time is retained any more"
                )));
            }
        }
    } else {
        let Some(s) = stored_version(tx, id, "deleted = 0 AND version > ?2", 0)? else {
            return Err(Error::NotFound(format!(
                "{path:?} has no retained version with content"
            )));
        };
        s
    };
    let mut out = restore_parents(tx, ctx, path)?;
    out.extend(put_back(tx, ctx, path, target)?);
    Ok(out)
}

enum AtTime {
    Existed(Stored),
    /// Did not exist then (or was deleted).
    Absent,
    /// Versions from then were dropped by retention.
    Forgotten,
}

fn at_time(tx: &Transaction<'_>, file_id: i64, at_ms: i64) -> Result<AtTime> {
    match stored_version(tx, file_id, "committed_at_ms <= ?2", at_ms)? {
        Some(s) if s.deleted => Ok(AtTime::Absent),
        Some(s) => Ok(AtTime::Existed(s)),
        None => {
            let first: i64 = tx.query_row(
                "SELECT MIN(version) FROM versions WHERE file_id = ?1",
                [file_id],
                |r| r.get(0),
            )?;
            Ok(if first == 1 {
                AtTime::Absent
            } else {
                AtTime::Forgotten
            })
        }
    }
}

/// Makes `target` the current version of `path` (nothing when it already is).
fn put_back(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    path: &str,
    target: Stored,
) -> Result<Option<CommitResult>> {
    if let Some(m) = missing_chunk(tx, &target.content)? {
        return Ok(Some(rejected(path, m)));
    }
    let cur = current(tx, ctx.namespace_id, path)?;
    let head = cur.as_ref().map_or(0, |c| c.version);
    let r = apply_put(
        tx,
        ctx,
        path,
        head,
        &target.content,
        Origin::Restored {
            version: target.version,
        },
    )?;
    Ok((r.status != CommitStatus::Unchanged as i32).then_some(r))
}

/// A chunk of the content that is not stored (quarantined by scrub) makes the restore fail.
fn missing_chunk(tx: &Transaction<'_>, content: &Content) -> Result<Option<String>> {
    let mut stmt = tx.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
    for (id, _) in &content.manifest {
        if !stmt.exists([&id.as_bytes()[..]])? {
            return Ok(Some(format!(
                "chunk {id} of this version is damaged and awaiting re-upload from a device that holds it"
            )));
        }
    }
    Ok(None)
}

/// Deleted ancestor folders come back with the file.
fn restore_parents(tx: &Transaction<'_>, ctx: &Ctx, path: &str) -> Result<Vec<CommitResult>> {
    let mut out = Vec::new();
    for (i, _) in path.match_indices('/') {
        let prefix = &path[..i];
        let Some(id) = file_id(tx, ctx.namespace_id, prefix)? else {
            continue;
        };
        let cur = current(tx, ctx.namespace_id, prefix)?;
        if cur.as_ref().is_some_and(|c| c.deleted)
            && let Some(s) = stored_version(tx, id, "deleted = 0 AND version > ?2", 0)?
        {
            out.extend(put_back(tx, ctx, prefix, s)?);
        }
    }
    Ok(out)
}

/// Every path under `prefix` as it was at `at_ms`: changed ones restored, ones created since
/// deleted, deleted ones back. Paths whose history from then is no longer retained are reported
/// and left alone.
fn restore_folder(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    prefix: &str,
    at_ms: i64,
) -> Result<Vec<CommitResult>> {
    let ns = ctx.namespace_id;
    let sql = format!(
        "SELECT f.id, f.path FROM files f WHERE f.namespace_id = ?1 AND {UNDER} ORDER BY f.path"
    );
    let files: Vec<(i64, String)> = tx
        .prepare_cached(&sql)?
        .query_map((ns, prefix), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    let mut deletes = Vec::new();
    for (id, path) in files {
        match at_time(tx, id, at_ms)? {
            AtTime::Existed(s) => out.extend(put_back(tx, ctx, &path, s)?),
            AtTime::Absent => deletes.push(path),
            AtTime::Forgotten => out.push(rejected(
                &path,
                format!("{path:?}: no version from that time is retained any more; left as it is"),
            )),
        }
    }
    // Children before their folders, as a device would remove them.
    for path in deletes.iter().rev() {
        let Some(c) = current(tx, ns, path)? else {
            continue;
        };
        if c.deleted {
            continue;
        }
        let (v, seq) = commit::append(tx, ctx, path, Some(&c), None, Origin::Edit)?;
        out.push(committed(
            tx,
            ctx,
            CommitStatus::Committed,
            path,
            v,
            seq,
            path,
        )?);
    }
    Ok(out)
}

/// Usage of one namespace. Reads every retained manifest: meant for an on-demand command, not a
/// hot path.
pub async fn usage(db: &Db, ns: i64) -> Result<Usage> {
    db.read(move |conn| {
        let tx = conn.transaction()?;
        let (name, quota, retention_ms): (String, Option<i64>, i64) = tx.query_row(
            "SELECT name, quota_bytes, retention_ms FROM namespaces WHERE id = ?1",
            [ns],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut files = 0u64;
        let mut logical = 0u64;
        let mut old_versions = 0u64;
        let mut current_chunks: BTreeMap<ChunkId, u32> = BTreeMap::new();
        let mut all_chunks: BTreeMap<ChunkId, u32> = BTreeMap::new();
        let mut stmt = tx.prepare(
            "SELECT v.version = f.head_version, v.deleted, v.kind, v.size, v.manifest
             FROM files f JOIN versions v ON v.file_id = f.id WHERE f.namespace_id = ?1",
        )?;
        let mut rows = stmt.query([ns])?;
        while let Some(r) = rows.next()? {
            let (head, deleted, kind): (bool, bool, i32) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let manifest = decode_manifest(&r.get::<_, Vec<u8>>(4)?)?;
            if head && !deleted {
                if kind == EntryKind::File as i32 {
                    files += 1;
                    logical += r.get::<_, i64>(3)? as u64;
                }
                current_chunks.extend(manifest.iter().copied());
            } else if !head {
                old_versions += 1;
            }
            all_chunks.extend(manifest);
        }
        let sum = |m: &BTreeMap<ChunkId, u32>| m.values().map(|l| u64::from(*l)).sum::<u64>();
        let (current_stored, stored) = (sum(&current_chunks), sum(&all_chunks));
        Ok(Usage {
            namespace: name,
            files,
            logical_bytes: logical,
            current_stored_bytes: current_stored,
            dedup_saved_bytes: logical.saturating_sub(current_stored),
            stored_bytes: stored,
            old_versions_bytes: stored - current_stored,
            old_versions,
            quota_bytes: quota.unwrap_or(0) as u64,
            retention_ms,
        })
    })
    .await
}

/// Quarantined chunks that current versions of this namespace need, with those versions.
pub async fn wanted(db: &Db, ns: i64) -> Result<Vec<WantedChunk>> {
    db.read(move |conn| wanted_in(conn, ns)).await
}

fn wanted_in(conn: &Connection, ns: i64) -> Result<Vec<WantedChunk>> {
    let mut stmt = conn.prepare_cached(
        "SELECT q.chunk_id, q.length, r.path, r.version FROM quarantine_refs r
         JOIN quarantine q ON q.chunk_id = r.chunk_id WHERE r.namespace_id = ?1
         ORDER BY q.chunk_id, r.path LIMIT 10000",
    )?;
    let mut out: Vec<WantedChunk> = Vec::new();
    let mut seen = HashSet::new();
    let mut rows = stmt.query([ns])?;
    while let Some(r) = rows.next()? {
        let id: Vec<u8> = r.get(0)?;
        let file = PathVersion {
            path: r.get(2)?,
            version: r.get::<_, i64>(3)? as u64,
        };
        if seen.insert(id.clone()) {
            out.push(WantedChunk {
                id,
                length: r.get(1)?,
                files: vec![file],
            });
        } else if let Some(last) = out.last_mut() {
            last.files.push(file);
        }
    }
    Ok(out)
}
