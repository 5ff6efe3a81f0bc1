//! Scrub: re-read stored objects and check every chunk's BLAKE3 against its id.
//!
//! A damaged (or missing) chunk is quarantined: its row leaves `chunks` and every namespace's
//! membership, so FindMissing reports it missing and the next device that pushes data containing it
//! uploads it again; ListWanted tells devices which of their current files hold such a chunk, so a
//! device with the file unchanged re-uploads it without waiting for an edit. The reference count
//! is kept in the quarantine row and given back when the chunk is healed.

use std::collections::HashMap;

use cairn_proto::ChunkId;
use rusqlite::Connection;

use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::model::decode_manifest;
use crate::store::BlobStore;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BadChunk {
    pub chunk: String,
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScrubReport {
    pub objects_checked: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<BadChunk>,
    /// Current file versions that hold a damaged chunk (devices re-upload from these).
    pub files_affected: u64,
    pub seconds: f64,
}

/// Checks every object, or `sample` objects chosen at random.
pub async fn run(db: &Db, store: &dyn BlobStore, sample: Option<u64>) -> Result<ScrubReport> {
    let started = std::time::Instant::now();
    let objects: Vec<(i64, String)> = db
        .read(move |conn| {
            let sql = match sample {
                Some(_) => "SELECT id, key FROM objects ORDER BY random() LIMIT ?1",
                None => "SELECT id, key FROM objects WHERE ?1 >= 0 ORDER BY id",
            };
            Ok(conn
                .prepare(sql)?
                .query_map([sample.unwrap_or(0) as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await?;
    let mut report = ScrubReport::default();
    for (object_id, key) in objects {
        let chunks: Vec<(Vec<u8>, i64, i64)> = db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT id, offset, length FROM chunks WHERE object_id = ?1 ORDER BY offset",
                    )?
                    .query_map([object_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        if chunks.is_empty() {
            continue;
        }
        report.objects_checked += 1;
        let bytes = match store.get(&key).await {
            Ok(b) => Some(b),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let mut bad = Vec::new();
        for (id, offset, length) in chunks {
            report.chunks_checked += 1;
            let cid = ChunkId::from_slice(&id)
                .map_err(|e| Error::Internal(format!("stored chunk id: {e}")))?;
            let reason = match &bytes {
                None => Some("its object is missing from the store".to_owned()),
                Some(b) => match b.get(offset as usize..(offset + length) as usize) {
                    None => Some(format!(
                        "its object is {} bytes, too short for bytes {offset}..{}",
                        b.len(),
                        offset + length
                    )),
                    Some(slice) => {
                        report.bytes_checked += length as u64;
                        let actual = ChunkId::of(slice);
                        (actual != cid).then(|| format!("its bytes hash to {actual}"))
                    }
                },
            };
            if let Some(reason) = reason {
                tracing::error!(chunk = %cid, object = key, reason, "damaged chunk: quarantined");
                bad.push((cid, reason));
            }
        }
        if !bad.is_empty() {
            let (k, b) = (key.clone(), bad.clone());
            db.write(move |conn| quarantine(conn, &k, &b)).await?;
            report
                .damaged
                .extend(bad.into_iter().map(|(cid, reason)| BadChunk {
                    chunk: cid.to_hex(),
                    object: key.clone(),
                    reason,
                }));
        }
    }
    if !report.damaged.is_empty() {
        report.files_affected = db.write(refs).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn quarantine(conn: &mut Connection, key: &str, bad: &[(ChunkId, String)]) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = db::now_ms();
    for (cid, reason) in bad {
        let id = &cid.as_bytes()[..];
        tx.execute(
            "INSERT OR REPLACE INTO quarantine (chunk_id, length, refcount, object_key, reason, found_at_ms)
             SELECT id, length, refcount, ?2, ?3, ?4 FROM chunks WHERE id = ?1",
            (id, key, reason, now),
        )?;
        tx.execute("DELETE FROM namespace_chunks WHERE chunk_id = ?1", [id])?;
        tx.execute("DELETE FROM chunks WHERE id = ?1", [id])?;
    }
    // The object itself stays until the collector finds it without chunks.
    tx.commit()?;
    Ok(())
}

/// Rebuilds `quarantine_refs`: which current file versions hold a quarantined chunk.
fn refs(conn: &mut Connection) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let quarantined: HashMap<ChunkId, ()> = tx
        .prepare("SELECT chunk_id FROM quarantine")?
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok().and_then(|b| ChunkId::from_slice(&b).ok()))
        .map(|id| (id, ()))
        .collect();
    tx.execute("DELETE FROM quarantine_refs", [])?;
    let mut files = 0;
    {
        let mut stmt = tx.prepare(
            "SELECT f.namespace_id, f.path, v.version, v.manifest FROM files f
             JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
             WHERE v.deleted = 0 AND length(v.manifest) > 0",
        )?;
        let mut insert = tx.prepare(
            "INSERT OR IGNORE INTO quarantine_refs (chunk_id, namespace_id, path, version)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let manifest = decode_manifest(&r.get::<_, Vec<u8>>(3)?)?;
            let mut hit = false;
            for (id, _) in manifest {
                if quarantined.contains_key(&id) {
                    let (ns, path, version): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                    insert.execute((&id.as_bytes()[..], ns, &path, version))?;
                    hit = true;
                }
            }
            files += u64::from(hit);
        }
    }
    tx.commit()?;
    Ok(files)
}
