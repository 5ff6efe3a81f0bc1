//! Retention and garbage collection.
//!
//! 1. Retention: a version is dropped once it has not been current for its namespace's retention
//!    period (`namespaces.retention_ms`). Current versions, tombstones included, are never dropped,
//!    so a deleted file stays in the trash for the retention period and then its content goes.
//!    Dropping a version removes its log row and decrements its chunks' reference counts.
//! 2. Collection: a chunk is deleted when no version references it AND it was not protected within
//!    the grace period. Protected means: uploaded (ConfirmUpload), reported present by FindMissing,
//!    or left without references. So a client that was told "present" or just uploaded a chunk
//!    can commit against it for the whole grace period. The decision is made inside the write
//!    transaction (Commit increments reference counts in its own transaction, serialised with
//!    ours), and cross-checked against a full mark of every stored manifest: a chunk a manifest
//!    names is never collected, whatever its counter says (the counter is repaired and logged).
//! 3. An object (one chunk or a pack) is deleted from the store once none of its chunks is left;
//!    its key goes to `doomed_objects` in the same transaction and leaves it once the store
//!    confirmed the delete, so a failed delete is retried and never leaks. Object keys are never
//!    reused (a random suffix), so deleting an old object can never hit a new upload's bytes.
//! 4. Packs whose live chunks fill less than half of them are repacked (`repack`): the live
//!    chunks move to a new object and the old one is doomed with a deadline one grace period
//!    out, so clients that still hold its presigned URL (15 minutes) keep reading it. A doomed
//!    object is deleted only once its `not_before_ms` passed.
//! 5. Expired staging uploads (never confirmed) are deleted.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cairn_proto::ChunkId;
use rusqlite::{Connection, OptionalExtension};

use crate::db::{self, Db};
use crate::error::Result;
use crate::model::decode_manifest;
use crate::store::BlobStore;

mod repack;

/// Default grace period: longer than any sane gap between a client's upload and its commit.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Rows per write transaction, so commits are not held up behind one long GC transaction.
const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Chunks protected more recently than this are kept.
    pub grace: Duration,
    /// Also drop versions that stopped being current before this time (ms since the epoch), as
    /// if retention had ended then (an admin's explicit prune; `cairn-server gc --drop-before`).
    pub drop_before_ms: Option<i64>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            drop_before_ms: None,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub versions_dropped: u64,
    pub chunks_deleted: u64,
    pub chunk_bytes_freed: u64,
    pub objects_deleted: u64,
    pub object_bytes_freed: u64,
    /// Mostly-dead packs rewritten with only their live chunks (the old objects are deleted
    /// once the grace period passed, by this run or a later one).
    pub packs_repacked: u64,
    pub repack_bytes_copied: u64,
    pub staging_deleted: u64,
    /// Reference counts found wrong and repaired (should stay 0).
    pub refcounts_repaired: u64,
    pub seconds: f64,
}

pub async fn run(db: &Db, store: &dyn BlobStore, opts: &GcOptions) -> Result<GcReport> {
    let started = std::time::Instant::now();
    let mut report = GcReport::default();
    let drop_before = opts.drop_before_ms.unwrap_or(i64::MIN);
    loop {
        let dropped = db
            .write(move |conn| drop_versions(conn, db::now_ms(), drop_before))
            .await?;
        report.versions_dropped += dropped;
        if dropped < BATCH as u64 {
            break;
        }
    }
    let counts = db.read(mark).await?;
    let cutoff = db::now_ms() - opts.grace.as_millis() as i64;
    loop {
        let counts = counts.clone();
        let (swept, more) = db.write(move |conn| sweep(conn, &counts, cutoff)).await?;
        report.chunks_deleted += swept.chunks;
        report.chunk_bytes_freed += swept.chunk_bytes;
        report.refcounts_repaired += swept.repaired;
        if !more {
            break;
        }
    }
    let repacked = repack::run(db, store, opts.grace).await?;
    report.packs_repacked = repacked.packs;
    report.repack_bytes_copied = repacked.bytes_copied;
    let (objects, bytes) = delete_doomed(db, store).await?;
    report.objects_deleted = objects;
    report.object_bytes_freed = bytes;
    report.staging_deleted = expire_staging(db, store, cutoff).await?;
    report.seconds = started.elapsed().as_secs_f64();
    if report.versions_dropped
        + report.chunks_deleted
        + report.objects_deleted
        + report.packs_repacked
        > 0
    {
        tracing::info!(?report, "garbage collection");
    }
    Ok(report)
}

/// Drops up to BATCH versions past retention; returns how many.
fn drop_versions(conn: &mut Connection, now: i64, drop_before: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let victims: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT v.file_id, v.version, v.manifest FROM versions v
             JOIN files f ON f.id = v.file_id JOIN namespaces n ON n.id = f.namespace_id
             WHERE v.superseded_at_ms IS NOT NULL
               AND v.superseded_at_ms < MAX(?1 - n.retention_ms, ?2)
             LIMIT ?3",
        )?
        .query_map((now, drop_before, BATCH as i64), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut unlog =
            tx.prepare_cached("DELETE FROM sync_log WHERE file_id = ?1 AND version = ?2")?;
        let mut delete =
            tx.prepare_cached("DELETE FROM versions WHERE file_id = ?1 AND version = ?2")?;
        let mut release = tx.prepare_cached(
            "UPDATE chunks SET refcount = refcount - 1,
                    touched_at_ms = CASE WHEN refcount = 1 THEN ?2 ELSE touched_at_ms END
             WHERE id = ?1 AND refcount > 0",
        )?;
        let mut release_quarantined = tx.prepare_cached(
            "UPDATE quarantine SET refcount = refcount - 1 WHERE chunk_id = ?1 AND refcount > 0",
        )?;
        for (file_id, version, manifest) in &victims {
            unlog.execute((file_id, version))?;
            delete.execute((file_id, version))?;
            let distinct: HashSet<ChunkId> = decode_manifest(manifest)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            for id in distinct {
                if release.execute((&id.as_bytes()[..], now))? == 0 {
                    release_quarantined.execute([&id.as_bytes()[..]])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(victims.len() as u64)
}

/// How many retained versions name each chunk (distinct per version), from every manifest.
fn mark(conn: &mut Connection) -> Result<HashMap<ChunkId, i64>> {
    let tx = conn.transaction()?;
    let mut counts: HashMap<ChunkId, i64> = HashMap::new();
    let mut stmt = tx.prepare("SELECT manifest FROM versions WHERE length(manifest) > 0")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let distinct: HashSet<ChunkId> = decode_manifest(&r.get::<_, Vec<u8>>(0)?)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in distinct {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts)
}

struct Swept {
    chunks: u64,
    chunk_bytes: u64,
    repaired: u64,
}

/// Deletes up to BATCH unreferenced, unprotected chunks (and objects left empty); `more` when
/// another batch may be waiting.
fn sweep(
    conn: &mut Connection,
    marked: &HashMap<ChunkId, i64>,
    cutoff: i64,
) -> Result<(Swept, bool)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let candidates: Vec<(Vec<u8>, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, object_id, length FROM chunks
             WHERE refcount = 0 AND touched_at_ms < ?1 LIMIT ?2",
        )?
        .query_map((cutoff, BATCH as i64), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let more = candidates.len() == BATCH;
    let mut swept = Swept {
        chunks: 0,
        chunk_bytes: 0,
        repaired: 0,
    };
    let mut objects = HashSet::new();
    {
        let mut repair = tx.prepare_cached("UPDATE chunks SET refcount = ?2 WHERE id = ?1")?;
        let mut delete = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
        let mut unmember = tx.prepare_cached("DELETE FROM namespace_chunks WHERE chunk_id = ?1")?;
        for (id, object_id, length) in &candidates {
            let cid = ChunkId::from_slice(id)
                .map_err(|e| crate::Error::Internal(format!("stored chunk id: {e}")))?;
            if let Some(n) = marked.get(&cid) {
                tracing::error!(chunk = %cid, references = n, "reference count was 0 for a referenced chunk; repaired, not collected");
                repair.execute((id, n))?;
                swept.repaired += 1;
                continue;
            }
            delete.execute([id])?;
            unmember.execute([id])?;
            objects.insert(*object_id);
            swept.chunks += 1;
            swept.chunk_bytes += *length as u64;
        }
    }
    {
        let mut left = tx.prepare_cached("SELECT 1 FROM chunks WHERE object_id = ?1 LIMIT 1")?;
        let mut key_of = tx.prepare_cached("SELECT key FROM objects WHERE id = ?1")?;
        let mut doom =
            tx.prepare_cached("INSERT OR IGNORE INTO doomed_objects (key) VALUES (?1)")?;
        let mut delete = tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
        for object_id in objects {
            if left.exists([object_id])? {
                continue;
            }
            if let Some(key) = key_of
                .query_row([object_id], |r| r.get::<_, String>(0))
                .optional()?
            {
                doom.execute([&key])?;
                delete.execute([object_id])?;
            }
        }
    }
    tx.commit()?;
    Ok((swept, more))
}

/// Deletes doomed objects whose deadline passed from the store; returns (objects, bytes) deleted.
async fn delete_doomed(db: &Db, store: &dyn BlobStore) -> Result<(u64, u64)> {
    let now = db::now_ms();
    let keys: Vec<String> = db
        .read(move |conn| {
            Ok(conn
                .prepare("SELECT key FROM doomed_objects WHERE not_before_ms <= ?1")?
                .query_map([now], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await?;
    let (mut objects, mut bytes) = (0, 0);
    for key in keys {
        let size = store.head(&key).await?;
        store.delete(&key).await?;
        let k = key.clone();
        db.write(move |conn| Ok(conn.execute("DELETE FROM doomed_objects WHERE key = ?1", [&k])?))
            .await?;
        if let Some(size) = size {
            objects += 1;
            bytes += size;
        }
    }
    Ok((objects, bytes))
}

/// Staging objects of uploads that were never confirmed and whose URL expired before `cutoff`.
async fn expire_staging(db: &Db, store: &dyn BlobStore, cutoff: i64) -> Result<u64> {
    let expired: Vec<(String, String)> = db
        .read(move |conn| {
            Ok(conn
                .prepare(
                    "SELECT upload_id, staging_key FROM uploads
                     WHERE state = 'pending' AND expires_at_ms < ?1 LIMIT 10000",
                )?
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await?;
    let mut n = 0;
    for (id, key) in expired {
        store.delete(&key).await?;
        db.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM upload_chunks WHERE upload_id = ?1", [&id])?;
            tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        n += 1;
    }
    // Finished uploads are only bookkeeping once their URL expired.
    db.write(move |conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM upload_chunks WHERE upload_id IN
               (SELECT upload_id FROM uploads WHERE state != 'pending' AND expires_at_ms < ?1)",
            [cutoff],
        )?;
        tx.execute(
            "DELETE FROM uploads WHERE state != 'pending' AND expires_at_ms < ?1",
            [cutoff],
        )?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(n)
}
