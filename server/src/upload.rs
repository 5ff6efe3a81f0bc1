//! Uploads: presigned PUTs to staging keys, then verification and promotion to content keys.
//!
//! Verified bytes are written to the content key from the server's own memory rather than copied
//! from staging: a client still holding the PUT URL could otherwise swap the staging object between
//! verification and copy.

use bytes::Bytes;
use cairn_proto::ChunkId;
use cairn_proto::pb::{UploadObject, UploadOutcome, UploadTarget};
use futures::StreamExt;
use rusqlite::OptionalExtension;

use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::store::{self, BlobStore, URL_TTL};

/// Largest chunk the server accepts.
pub const MAX_CHUNK: u32 = 16 << 20;
/// Largest upload object (a pack or one large chunk).
pub const MAX_OBJECT: u64 = 64 << 20;
/// Most objects per PrepareUpload / ConfirmUpload.
pub const MAX_OBJECTS: usize = 1000;
/// Objects verified at once (each is held in memory while hashed).
const CONCURRENCY: usize = 8;

fn parse_object(i: usize, o: &UploadObject) -> Result<(Vec<(ChunkId, u32)>, u64)> {
    if o.chunks.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "upload object #{i} has no chunks"
        )));
    }
    let mut total = 0u64;
    let mut chunks = Vec::with_capacity(o.chunks.len());
    for c in &o.chunks {
        let id = ChunkId::from_slice(&c.id).map_err(|e| {
            Error::InvalidArgument(format!("upload object #{i}: bad chunk id: {e}"))
        })?;
        if c.length == 0 || c.length > MAX_CHUNK {
            return Err(Error::InvalidArgument(format!(
                "upload object #{i}: chunk {id} is {} bytes; chunks are 1 to {MAX_CHUNK} bytes",
                c.length
            )));
        }
        total += u64::from(c.length);
        chunks.push((id, c.length));
    }
    if total > MAX_OBJECT {
        return Err(Error::InvalidArgument(format!(
            "upload object #{i} is {total} bytes; objects are at most {MAX_OBJECT} bytes"
        )));
    }
    Ok((chunks, total))
}

/// Records one upload per object and returns presigned PUT URLs of exactly each object's length.
pub async fn prepare(
    db: &Db,
    store: &dyn BlobStore,
    ns: i64,
    objects: &[UploadObject],
) -> Result<Vec<UploadTarget>> {
    if objects.len() > MAX_OBJECTS {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_OBJECTS} objects per request"
        )));
    }
    let parsed = objects
        .iter()
        .enumerate()
        .map(|(i, o)| parse_object(i, o))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(parsed.len());
    let mut targets = Vec::with_capacity(parsed.len());
    for (chunks, length) in parsed {
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        let key = store::staging_key();
        let url = store.presign_put(&key, length, URL_TTL).await?;
        targets.push(UploadTarget {
            upload_id: upload_id.clone(),
            url,
            length,
        });
        rows.push((upload_id, key, length, chunks));
    }
    db.write(move |conn| {
        let now = db::now_ms();
        let expires = now + URL_TTL.as_millis() as i64;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (id, key, length, chunks) in &rows {
            tx.execute(
                "INSERT INTO uploads (upload_id, namespace_id, staging_key, length, created_at_ms, expires_at_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
                (id, ns, key, *length as i64, now, expires),
            )?;
            let mut stmt = tx.prepare_cached("INSERT INTO upload_chunks (upload_id, idx, chunk_id, length) VALUES (?1, ?2, ?3, ?4)")?;
            for (idx, (cid, len)) in chunks.iter().enumerate() {
                stmt.execute((id, idx as i64, &cid.as_bytes()[..], len))?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .await?;
    Ok(targets)
}

/// Verifies each upload (several at once); results in request order.
pub async fn confirm(
    db: &Db,
    store: &dyn BlobStore,
    ns: i64,
    ids: Vec<String>,
) -> Result<Vec<UploadOutcome>> {
    if ids.len() > MAX_OBJECTS {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_OBJECTS} uploads per request"
        )));
    }
    let results: Vec<Result<UploadOutcome>> = futures::stream::iter(ids)
        .map(|id| confirm_one(db, store, ns, id))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

struct Pending {
    staging_key: String,
    length: u64,
    state: String,
    chunks: Vec<(ChunkId, u32)>,
}

fn outcome(upload_id: &str, error: Option<String>) -> UploadOutcome {
    UploadOutcome {
        upload_id: upload_id.to_owned(),
        ok: error.is_none(),
        error: error.unwrap_or_default(),
    }
}

/// One upload: `Ok(outcome)` for verdicts (good or bad bytes); `Err` only for storage or database
/// trouble, where the client should retry the whole request.
async fn confirm_one(
    db: &Db,
    store: &dyn BlobStore,
    ns: i64,
    upload_id: String,
) -> Result<UploadOutcome> {
    let id = upload_id.clone();
    let pending = db.read(move |conn| load(conn, ns, &id)).await?;
    let Some(p) = pending else {
        return Ok(outcome(
            &upload_id,
            Some(format!(
                "unknown upload id {upload_id:?} (not prepared for this namespace)"
            )),
        ));
    };
    match p.state.as_str() {
        "done" => return Ok(outcome(&upload_id, None)),
        "failed" => {
            return Ok(outcome(
                &upload_id,
                Some(format!(
                    "upload {upload_id} failed verification before; prepare a new one"
                )),
            ));
        }
        _ => {}
    }
    let not_there = || {
        outcome(
            &upload_id,
            Some(format!(
                "nothing was uploaded for upload {upload_id}: PUT the bytes to its URL first"
            )),
        )
    };
    let Some(size) = store.head(&p.staging_key).await? else {
        return Ok(not_there());
    };
    if size != p.length {
        return fail(
            db,
            store,
            &upload_id,
            &p,
            format!(
                "upload {upload_id} holds {size} bytes, expected {}",
                p.length
            ),
        )
        .await;
    }
    let bytes = match store.get(&p.staging_key).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(not_there()),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 != p.length {
        let msg = format!(
            "upload {upload_id} holds {} bytes, expected {}",
            bytes.len(),
            p.length
        );
        return fail(db, store, &upload_id, &p, msg).await;
    }
    let (b, chunks) = (bytes.clone(), p.chunks.clone());
    let verdict = tokio::task::spawn_blocking(move || verify(&b, &chunks)).await?;
    let hash = match verdict {
        Ok(h) => h,
        Err(m) => {
            return fail(
                db,
                store,
                &upload_id,
                &p,
                format!("upload {upload_id}: {m}"),
            )
            .await;
        }
    };
    promote(db, store, ns, &upload_id, &p, bytes, hash).await?;
    if let Err(e) = store.delete(&p.staging_key).await {
        tracing::warn!(error = %e, key = p.staging_key, "could not delete a staging object");
    }
    Ok(outcome(&upload_id, None))
}

fn load(conn: &mut rusqlite::Connection, ns: i64, id: &str) -> Result<Option<Pending>> {
    let row = conn
        .query_row(
            "SELECT staging_key, length, state FROM uploads WHERE upload_id = ?1 AND namespace_id = ?2",
            (id, ns),
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
        )
        .optional()?;
    let Some((staging_key, length, state)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT chunk_id, length FROM upload_chunks WHERE upload_id = ?1 ORDER BY idx",
    )?;
    let chunks = stmt
        .query_map([id], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?
        .map(|r| {
            let (cid, len) = r?;
            let cid = ChunkId::from_slice(&cid)
                .map_err(|e| Error::Internal(format!("stored chunk id: {e}")))?;
            Ok((cid, len))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Pending {
        staging_key,
        length: length as u64,
        state,
        chunks,
    }))
}

/// Hashes each chunk's slice; the error names the first chunk whose bytes are wrong.
fn verify(bytes: &[u8], chunks: &[(ChunkId, u32)]) -> Result<blake3::Hash, String> {
    let mut offset = 0usize;
    for (i, (id, len)) in chunks.iter().enumerate() {
        let end = offset + *len as usize;
        let slice = bytes
            .get(offset..end)
            .ok_or_else(|| format!("chunk {id} (#{i}) runs past the end"))?;
        let actual = ChunkId::of(slice);
        if actual != *id {
            return Err(format!(
                "chunk {id} (#{i}, bytes {offset}..{end}) does not match its bytes, which hash to {actual}; \
                 the upload was discarded"
            ));
        }
        offset = end;
    }
    Ok(blake3::hash(bytes))
}

/// Bad bytes: delete them, mark the upload failed, say why.
async fn fail(
    db: &Db,
    store: &dyn BlobStore,
    upload_id: &str,
    p: &Pending,
    msg: String,
) -> Result<UploadOutcome> {
    store.delete(&p.staging_key).await?;
    let id = upload_id.to_owned();
    db.write(move |conn| {
        Ok(conn.execute(
            "UPDATE uploads SET state = 'failed' WHERE upload_id = ?1",
            [&id],
        )?)
    })
    .await?;
    Ok(outcome(upload_id, Some(msg)))
}

/// Records the verified chunks. Chunks already stored (by anyone) only gain this namespace's
/// membership; otherwise the object is written under a fresh content key and its new chunks point
/// into it. Keys are never reused, so a garbage collector deleting an old object with the same
/// bytes can never delete this one. The decision is re-checked inside the write transaction: a
/// chunk collected between the read and the write sends us back to storing the object.
async fn promote(
    db: &Db,
    store: &dyn BlobStore,
    ns: i64,
    upload_id: &str,
    p: &Pending,
    bytes: Bytes,
    hash: blake3::Hash,
) -> Result<()> {
    let ids = p.chunks.clone();
    let mut all_stored = db
        .read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
            let mut all = true;
            for (id, _) in &ids {
                all &= stmt.exists([&id.as_bytes()[..]])?;
            }
            Ok(all)
        })
        .await?;
    loop {
        let key = if all_stored {
            None
        } else {
            let key = store::content_key(&hash);
            store.put(&key, bytes.clone()).await?;
            Some(key)
        };
        let (chunks, id, size, k) = (
            p.chunks.clone(),
            upload_id.to_owned(),
            p.length,
            key.clone(),
        );
        let outcome = db
            .write(move |conn| record(conn, ns, &id, size, &chunks, k.as_deref()))
            .await?;
        match outcome {
            Recorded::Done => return Ok(()),
            Recorded::Unused => {
                // Another upload stored every chunk first: ours holds nothing anyone points at.
                if let Some(key) = key
                    && let Err(e) = store.delete(&key).await
                {
                    tracing::warn!(error = %e, key, "could not delete an unused object");
                }
                return Ok(());
            }
            Recorded::Collected => all_stored = false,
        }
    }
}

enum Recorded {
    Done,
    /// Stored an object none of whose chunks was new.
    Unused,
    /// Some chunk was garbage-collected since we looked: store the object after all.
    Collected,
}

fn record(
    conn: &mut rusqlite::Connection,
    ns: i64,
    upload_id: &str,
    size: u64,
    chunks: &[(ChunkId, u32)],
    key: Option<&str>,
) -> Result<Recorded> {
    let now = db::now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcome = Recorded::Done;
    match key {
        None => {
            let mut exists = tx.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
            for (cid, _) in chunks {
                if !exists.exists([&cid.as_bytes()[..]])? {
                    return Ok(Recorded::Collected);
                }
            }
        }
        Some(key) => {
            tx.execute(
                "INSERT INTO objects (key, size) VALUES (?1, ?2)",
                (key, size as i64),
            )?;
            let object_id = tx.last_insert_rowid();
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (id, object_id, offset, length, refcount, touched_at_ms)
                 VALUES (?1, ?2, ?3, ?4, COALESCE((SELECT refcount FROM quarantine WHERE chunk_id = ?1), 0), ?5)",
            )?;
            let mut healed = tx.prepare_cached("DELETE FROM quarantine WHERE chunk_id = ?1")?;
            let mut refs = tx.prepare_cached("DELETE FROM quarantine_refs WHERE chunk_id = ?1")?;
            let mut offset = 0i64;
            let mut inserted = 0;
            for (cid, len) in chunks {
                let id = &cid.as_bytes()[..];
                if ins.execute((id, object_id, offset, len, now))? == 1 {
                    inserted += 1;
                    if healed.execute([id])? == 1 {
                        refs.execute([id])?;
                        tracing::info!(chunk = %cid, "a quarantined chunk was uploaded again: healed");
                    }
                }
                offset += i64::from(*len);
            }
            drop((ins, healed, refs));
            if inserted == 0 {
                tx.execute("DELETE FROM objects WHERE id = ?1", [object_id])?;
                outcome = Recorded::Unused;
            }
        }
    }
    // Uploaded chunks are protected from the collector for its grace period: the commit that
    // will reference them is on its way.
    let mut touch = tx.prepare_cached("UPDATE chunks SET touched_at_ms = ?2 WHERE id = ?1")?;
    let mut member = tx.prepare_cached(
        "INSERT OR IGNORE INTO namespace_chunks (namespace_id, chunk_id) VALUES (?1, ?2)",
    )?;
    for (cid, _) in chunks {
        touch.execute((&cid.as_bytes()[..], now))?;
        member.execute((ns, &cid.as_bytes()[..]))?;
    }
    drop((touch, member));
    tx.execute(
        "UPDATE uploads SET state = 'done' WHERE upload_id = ?1",
        [upload_id],
    )?;
    tx.commit()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_names_the_chunk_whose_bytes_are_wrong() {
        let good = ChunkId::of(b"abc");
        let claimed = ChunkId::of(b"xyz");
        let err = verify(b"abcdef", &[(good, 3), (claimed, 3)]).unwrap_err();
        assert!(
            err.contains(&claimed.to_hex()) && err.contains("#1"),
            "{err}"
        );
        assert_eq!(
            verify(b"abcxyz", &[(good, 3), (claimed, 3)]).unwrap(),
            blake3::hash(b"abcxyz")
        );
    }
}
