//! Uploads: presigned PUTs to staging keys, then verification and promotion to content keys.
//!
//! The staged object is first promoted to a fresh content key (a server-side copy, or a rename in
//! the local store) and the promoted object is then verified: a client still holding the PUT URL
//! can swap the staging object at any moment, but never the content key, so what was verified is
//! what is served.

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
/// Objects verified at once per request (each streams through one buffer at a time).
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

/// Verifies each upload (several at once), records all that passed in one transaction, and
/// answers in request order.
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
    let results: Vec<Result<Checked>> = futures::stream::iter(ids)
        .map(|id| check(db, store, ns, id))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut checked = Vec::with_capacity(results.len());
    let mut trouble = None;
    for r in results {
        match r {
            Ok(c) => checked.push(c),
            Err(e) => trouble = trouble.or(Some(e)),
        }
    }
    let verified: Vec<&Verified> = checked
        .iter()
        .filter_map(|c| match c {
            Checked::Verified(v) => Some(v),
            Checked::Answered(_) => None,
        })
        .collect();
    let recorded = match trouble {
        None => record_all(db, ns, &verified).await,
        Some(e) => Err(e),
    };
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            // Nothing points at the objects promoted for this request: remove them.
            for key in verified.iter().filter_map(|v| v.key.as_deref()) {
                discard(store, key).await;
            }
            return Err(e);
        }
    };
    let mut recorded = recorded.into_iter();
    let mut outcomes = Vec::with_capacity(checked.len());
    let mut staged = Vec::new();
    for c in &checked {
        let v = match c {
            Checked::Answered(o) => {
                outcomes.push(o.clone());
                continue;
            }
            Checked::Verified(v) => v,
        };
        // `record_all` answers once per verified upload.
        match recorded.next().expect("one record per verified upload") {
            Recorded::Done => {}
            Recorded::Unused => {
                // Another upload stored every chunk first: ours holds nothing anyone points at.
                if let Some(key) = &v.key {
                    discard(store, key).await;
                }
            }
            Recorded::Collected => {
                // A chunk was garbage-collected since we looked: store the object after all.
                match store_object(db, store, &v.upload_id, v.pending.clone()).await? {
                    Checked::Answered(o) => {
                        outcomes.push(o);
                        continue;
                    }
                    Checked::Verified(again) => {
                        if let Err(e) = record_all(db, ns, &[&again]).await {
                            if let Some(key) = &again.key {
                                discard(store, key).await;
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        staged.push(v.pending.staging_key.as_str());
        outcomes.push(outcome(&v.upload_id, None));
    }
    futures::stream::iter(staged)
        .for_each_concurrent(CONCURRENCY, |key| async move {
            if let Err(e) = store.delete(key).await {
                tracing::warn!(error = %e, key, "could not delete a staging object");
            }
        })
        .await;
    Ok(outcomes)
}

#[derive(Clone)]
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

/// Where one upload stands after its bytes were checked.
enum Checked {
    /// The answer is known (unknown id, bad bytes, nothing uploaded, confirmed before).
    Answered(UploadOutcome),
    /// The bytes are right; to be recorded. `key`: the promoted object holding them, when some
    /// chunk is new.
    Verified(Verified),
}

struct Verified {
    upload_id: String,
    pending: Pending,
    key: Option<String>,
}

/// Checks one upload's bytes: `Err` only for storage or database trouble, where the client should
/// retry the whole request.
async fn check(db: &Db, store: &dyn BlobStore, ns: i64, upload_id: String) -> Result<Checked> {
    let id = upload_id.clone();
    let pending = db.read(move |conn| load(conn, ns, &id)).await?;
    let answer = |error: Option<String>| Ok(Checked::Answered(outcome(&upload_id, error)));
    let Some(p) = pending else {
        return answer(Some(format!(
            "unknown upload id {upload_id:?} (not prepared for this namespace)"
        )));
    };
    match p.state.as_str() {
        "done" => return answer(None),
        "failed" => {
            return answer(Some(format!(
                "upload {upload_id} failed verification before; prepare a new one"
            )));
        }
        _ => {}
    }
    let Some(size) = store.head(&p.staging_key).await? else {
        return answer(Some(not_there(&upload_id)));
    };
    if size != p.length {
        let msg = format!(
            "upload {upload_id} holds {size} bytes, expected {}",
            p.length
        );
        return fail(db, store, &upload_id, &p, msg).await;
    }
    if !already_stored(db, &p).await? {
        return store_object(db, store, &upload_id, p).await;
    }
    // Nothing from this object will be stored: checking the staged bytes is the proof of
    // possession that gives the namespace its membership.
    match verify_object(store, &p.staging_key, &p).await? {
        None => answer(Some(not_there(&upload_id))),
        Some(Err(m)) => {
            fail(
                db,
                store,
                &upload_id,
                &p,
                format!("upload {upload_id}: {m}"),
            )
            .await
        }
        Some(Ok(())) => Ok(Checked::Verified(Verified {
            upload_id,
            pending: p,
            key: None,
        })),
    }
}

fn not_there(upload_id: &str) -> String {
    format!("nothing was uploaded for upload {upload_id}: PUT the bytes to its URL first")
}

/// Does every chunk of the upload already have a stored copy (anyone's)?
async fn already_stored(db: &Db, p: &Pending) -> Result<bool> {
    let ids = p.chunks.clone();
    db.read(move |conn| {
        let mut stmt = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
        let mut all = true;
        for (id, _) in &ids {
            all &= stmt.exists([&id.as_bytes()[..]])?;
        }
        Ok(all)
    })
    .await
}

/// Streams `key` and checks every chunk's length and BLAKE3 as the bytes arrive: `None` when the
/// object is missing, `Some(Err(why))` for wrong bytes. Memory stays at one buffer per object.
async fn verify_object(
    store: &dyn BlobStore,
    key: &str,
    p: &Pending,
) -> Result<Option<Result<(), String>>> {
    let mut body = match store.get_stream(key).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut check = Verifier::new(&p.chunks);
    while let Some(buf) = body.next().await {
        // Buffers are transport-sized (tens of KiB): hashing one takes microseconds, so it runs
        // here rather than on a blocking thread.
        if let Err(m) = check.update(&buf?) {
            return Ok(Some(Err(m)));
        }
    }
    Ok(Some(check.finish()))
}

/// Promotes the staged object to a fresh content key, then verifies the promoted object: a client
/// still holding the staging URL can change the staging object at any moment, but not the
/// content key, so the bytes checked are the bytes served. Wrong bytes delete the promoted
/// object.
async fn store_object(
    db: &Db,
    store: &dyn BlobStore,
    upload_id: &str,
    p: Pending,
) -> Result<Checked> {
    let answer = |error: Option<String>| Ok(Checked::Answered(outcome(upload_id, error)));
    let key = store::content_key(&object_label(&p.chunks));
    match store.promote(&p.staging_key, &key).await {
        Ok(()) => {}
        Err(Error::NotFound(_)) => return answer(Some(not_there(upload_id))),
        Err(e) => return Err(e),
    }
    match verify_object(store, &key, &p).await {
        Ok(Some(Ok(()))) => Ok(Checked::Verified(Verified {
            upload_id: upload_id.to_owned(),
            pending: p,
            key: Some(key),
        })),
        Ok(Some(Err(m))) => {
            discard(store, &key).await;
            fail(db, store, upload_id, &p, format!("upload {upload_id}: {m}")).await
        }
        Ok(None) => Err(Error::Storage(format!(
            "the promoted object {key:?} vanished before it was verified"
        ))),
        Err(e) => {
            discard(store, &key).await;
            Err(e)
        }
    }
}

async fn discard(store: &dyn BlobStore, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(error = %e, key, "could not delete an unrecorded object");
    }
}

/// The name part of a content key, for humans and scrub reports: a one-chunk object's chunk id,
/// or the BLAKE3 of a pack's chunk ids (the key is chosen before the bytes are read).
fn object_label(chunks: &[(ChunkId, u32)]) -> blake3::Hash {
    match chunks {
        [(id, _)] => blake3::Hash::from_bytes(*id.as_bytes()),
        _ => {
            let mut h = blake3::Hasher::new();
            for (id, _) in chunks {
                h.update(id.as_bytes());
            }
            h.finalize()
        }
    }
}

/// Records verified uploads in one transaction (one fsync however many objects), one answer each.
async fn record_all(db: &Db, ns: i64, verified: &[&Verified]) -> Result<Vec<Recorded>> {
    if verified.is_empty() {
        return Ok(Vec::new());
    }
    /// Upload id, object length, its chunks, and the content key it was promoted to.
    type Item = (String, u64, Vec<(ChunkId, u32)>, Option<String>);
    let items: Vec<Item> = verified
        .iter()
        .map(|v| {
            (
                v.upload_id.clone(),
                v.pending.length,
                v.pending.chunks.clone(),
                v.key.clone(),
            )
        })
        .collect();
    db.write(move |conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let recorded = items
            .iter()
            .map(|(id, size, chunks, key)| record(&tx, ns, id, *size, chunks, key.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(recorded)
    })
    .await
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

/// Checks an object's bytes against its chunk list as they arrive, in buffers of any size; the
/// error names the first chunk whose bytes are wrong.
struct Verifier<'a> {
    chunks: &'a [(ChunkId, u32)],
    /// The chunk being hashed, and how many of its bytes were seen.
    at: usize,
    seen: u32,
    offset: u64,
    hasher: blake3::Hasher,
}

impl<'a> Verifier<'a> {
    fn new(chunks: &'a [(ChunkId, u32)]) -> Self {
        Self {
            chunks,
            at: 0,
            seen: 0,
            offset: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    fn update(&mut self, mut buf: &[u8]) -> Result<(), String> {
        while !buf.is_empty() {
            let Some((id, len)) = self.chunks.get(self.at) else {
                return Err(format!(
                    "the object holds more bytes than its {} chunks",
                    self.chunks.len()
                ));
            };
            let take = buf.len().min((len - self.seen) as usize);
            self.hasher.update(&buf[..take]);
            self.seen += take as u32;
            buf = &buf[take..];
            if self.seen == *len {
                let actual = ChunkId(*self.hasher.finalize().as_bytes());
                if actual != *id {
                    let (i, start) = (self.at, self.offset);
                    let end = start + u64::from(*len);
                    return Err(format!(
                        "chunk {id} (#{i}, bytes {start}..{end}) does not match its bytes, which hash to {actual}; \
                         the upload was discarded"
                    ));
                }
                self.hasher.reset();
                self.offset += u64::from(*len);
                self.at += 1;
                self.seen = 0;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        match self.chunks.get(self.at) {
            None => Ok(()),
            Some((id, _)) => Err(format!(
                "chunk {id} (#{}) runs past the end of the object",
                self.at
            )),
        }
    }
}

/// Bad bytes: delete them, mark the upload failed, say why.
async fn fail(
    db: &Db,
    store: &dyn BlobStore,
    upload_id: &str,
    p: &Pending,
    msg: String,
) -> Result<Checked> {
    store.delete(&p.staging_key).await?;
    let id = upload_id.to_owned();
    db.write(move |conn| {
        Ok(conn.execute(
            "UPDATE uploads SET state = 'failed' WHERE upload_id = ?1",
            [&id],
        )?)
    })
    .await?;
    Ok(Checked::Answered(outcome(upload_id, Some(msg))))
}

enum Recorded {
    Done,
    /// Stored an object none of whose chunks was new.
    Unused,
    /// Some chunk was garbage-collected since we looked: store the object after all.
    Collected,
}

/// Records one verified upload inside the caller's transaction.
fn record(
    tx: &rusqlite::Transaction<'_>,
    ns: i64,
    upload_id: &str,
    size: u64,
    chunks: &[(ChunkId, u32)],
    key: Option<&str>,
) -> Result<Recorded> {
    let now = db::now_ms();
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
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in buffers of `step` bytes.
    fn verify(bytes: &[u8], chunks: &[(ChunkId, u32)], step: usize) -> Result<(), String> {
        let mut v = Verifier::new(chunks);
        for buf in bytes.chunks(step) {
            v.update(buf)?;
        }
        v.finish()
    }

    #[test]
    fn verification_names_the_chunk_whose_bytes_are_wrong() {
        let good = ChunkId::of(b"abc");
        let claimed = ChunkId::of(b"xyz");
        for step in [1, 2, 3, 4, 6, 100] {
            let err = verify(b"abcdef", &[(good, 3), (claimed, 3)], step).unwrap_err();
            assert!(
                err.contains(&claimed.to_hex()) && err.contains("#1"),
                "{err}"
            );
            assert_eq!(verify(b"abcxyz", &[(good, 3), (claimed, 3)], step), Ok(()));
        }
    }

    #[test]
    fn verification_refuses_objects_shorter_or_longer_than_their_chunks() {
        let (a, b) = (ChunkId::of(b"abc"), ChunkId::of(b"xyz"));
        let short = verify(b"abcxy", &[(a, 3), (b, 3)], 2).unwrap_err();
        assert!(
            short.contains("#1") && short.contains("past the end"),
            "{short}"
        );
        let long = verify(b"abcxyz!", &[(a, 3), (b, 3)], 4).unwrap_err();
        assert!(long.contains("more bytes"), "{long}");
    }

    #[test]
    fn a_pack_is_labelled_by_its_chunk_ids_and_a_lone_chunk_by_its_id() {
        let (a, b) = (ChunkId::of(b"abc"), ChunkId::of(b"xyz"));
        assert_eq!(object_label(&[(a, 3)]).as_bytes(), a.as_bytes());
        assert_ne!(
            object_label(&[(a, 3), (b, 3)]),
            object_label(&[(b, 3), (a, 3)])
        );
    }
}

#[cfg(test)]
#[path = "upload_swap_tests.rs"]
mod swap_tests;
