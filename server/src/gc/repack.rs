//! Repacking: a pack whose live chunks fill less than half of it is rewritten as a new object
//! holding only them, and the old object is deleted once no client can still be reading it.
//!
//! Steps, each safe to stop after (a crash at any point leaks nothing and loses nothing):
//! 1. Read the pack's chunk rows, GET the object, verify every live chunk's BLAKE3 (a damaged
//!    pack is left alone for scrub to quarantine) and build the new object from them.
//! 2. Park the new key in `doomed_objects` with a deadline an hour out, then PUT it. A crash here
//!    leaves a doomed key, deleted by a later run once the deadline passed.
//! 3. In one write transaction: only while the parked key still has time to spare (so no other
//!    collector can be deleting it), point each chunk row that is still exactly where step 1
//!    read it at the new object, un-park the new key and, if the old object has no chunk left,
//!    doom it with `not_before_ms` = now + the grace period. Rows that changed meanwhile (a chunk
//!    collected by a concurrent run) are not moved; if none was, the new object is doomed at once.
//! 4. The old object is deleted by a later `delete_doomed` once its deadline passed: a client
//!    holding a presigned URL or a chunk location from before the move keeps reading it.
//!
//! Reference counts, namespace membership and manifests name chunk ids, never objects, so a move
//! changes nothing a commit, FindMissing or a retention pass reads.

use std::time::Duration;

use bytes::Bytes;
use cairn_proto::ChunkId;
use rusqlite::{Connection, OptionalExtension};

use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::store::{BlobStore, content_key};

/// A pack is repacked when its live chunks hold less than this share of its bytes (percent)…
const LIVE_BELOW_PERCENT: i64 = 50;
/// …and it is at least this large: rewriting a smaller one saves less than it costs.
pub(super) const MIN_PACK: i64 = 1 << 20;
/// How long a new object's key stays parked while the repack writes it.
const INTENT: Duration = Duration::from_secs(3600);
/// A move is made only while the parked key has at least this long left.
const INTENT_SLACK: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub(super) struct Repacked {
    pub packs: u64,
    /// Live bytes copied into new objects.
    pub bytes_copied: u64,
}

/// Repacks every pack below the live threshold; old objects are kept for `keep_old` more.
pub(super) async fn run(db: &Db, store: &dyn BlobStore, keep_old: Duration) -> Result<Repacked> {
    let mut done = Repacked::default();
    for (id, key) in db.read(candidates).await? {
        if let Some(bytes) = repack_one(db, store, id, &key, keep_old).await? {
            done.packs += 1;
            done.bytes_copied += bytes;
        }
    }
    Ok(done)
}

/// Packs (id, key) of at least MIN_PACK bytes whose live chunks fill less than the threshold.
fn candidates(conn: &mut Connection) -> Result<Vec<(i64, String)>> {
    Ok(conn
        .prepare(
            "SELECT o.id, o.key FROM objects o
             JOIN (SELECT object_id, SUM(length) AS live FROM chunks GROUP BY object_id) c
               ON c.object_id = o.id
             WHERE o.size >= ?1 AND c.live * 100 < o.size * ?2
             ORDER BY o.id",
        )?
        .query_map((MIN_PACK, LIVE_BELOW_PERCENT), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// A live chunk: where it is (as read in step 1) and where it goes in the new object.
#[derive(Debug, Clone)]
pub(super) struct Move {
    pub id: Vec<u8>,
    pub offset: i64,
    pub length: i64,
    pub new_offset: i64,
}

/// Repacks one object; returns the live bytes copied, `None` when it was left alone.
async fn repack_one(
    db: &Db,
    store: &dyn BlobStore,
    object_id: i64,
    key: &str,
    keep_old: Duration,
) -> Result<Option<u64>> {
    let live: Vec<(Vec<u8>, i64, i64)> = db
        .read(move |conn| {
            Ok(conn
                .prepare(
                    "SELECT id, offset, length FROM chunks WHERE object_id = ?1 ORDER BY offset",
                )?
                .query_map([object_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await?;
    if live.is_empty() {
        return Ok(None);
    }
    let old = match store.get(key).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => {
            tracing::warn!(
                key,
                "pack to repack is missing from the store; left for scrub"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let Some((bytes, moves)) = live_bytes(key, &old, &live) else {
        return Ok(None);
    };
    let new_key = content_key(&blake3::hash(&bytes));
    let copied = bytes.len() as u64;
    park(db, &new_key).await?;
    store.put(&new_key, Bytes::from(bytes)).await?;
    let (old_key, keep_ms) = (key.to_owned(), keep_old.as_millis() as i64);
    let moved = db
        .write(move |conn| {
            move_chunks(
                conn,
                object_id,
                &old_key,
                &new_key,
                copied as i64,
                &moves,
                keep_ms,
            )
        })
        .await?;
    Ok(moved.then_some(copied))
}

/// The new object's bytes (the live chunks, each verified, in offset order) and the moves; `None`
/// when a chunk does not verify or lies outside the object (scrub's business, not ours).
fn live_bytes(key: &str, old: &[u8], live: &[(Vec<u8>, i64, i64)]) -> Option<(Vec<u8>, Vec<Move>)> {
    let mut bytes = Vec::with_capacity(live.iter().map(|c| c.2 as usize).sum());
    let mut moves = Vec::with_capacity(live.len());
    for (id, offset, length) in live {
        let (start, end) = (*offset as usize, (*offset + *length) as usize);
        let good = old
            .get(start..end)
            .filter(|b| ChunkId::from_slice(id).is_ok_and(|cid| cid.verify(b)));
        let Some(chunk) = good else {
            tracing::warn!(
                key,
                offset,
                "a live chunk of a pack to repack does not verify; pack left for scrub"
            );
            return None;
        };
        moves.push(Move {
            id: id.clone(),
            offset: *offset,
            length: *length,
            new_offset: bytes.len() as i64,
        });
        bytes.extend_from_slice(chunk);
    }
    Some((bytes, moves))
}

/// Step 2: the new key, doomed an hour out, before any byte of it exists.
pub(super) async fn park(db: &Db, key: &str) -> Result<()> {
    let (key, until) = (key.to_owned(), db::now_ms() + INTENT.as_millis() as i64);
    db.write(move |conn| {
        conn.execute(
            "INSERT INTO doomed_objects (key, not_before_ms) VALUES (?1, ?2)",
            (&key, until),
        )?;
        Ok(())
    })
    .await
}

/// Step 3; returns whether any chunk moved.
pub(super) fn move_chunks(
    conn: &mut Connection,
    old_id: i64,
    old_key: &str,
    new_key: &str,
    new_size: i64,
    moves: &[Move],
    keep_old_ms: i64,
) -> Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = db::now_ms();
    let parked: Option<i64> = tx
        .query_row(
            "SELECT not_before_ms FROM doomed_objects WHERE key = ?1",
            [new_key],
            |r| r.get(0),
        )
        .optional()?;
    if parked.is_none_or(|t| t <= now + INTENT_SLACK.as_millis() as i64) {
        // Too late: a collector may be deleting the new object. It stays doomed; try next run.
        tracing::warn!(new_key, "repack took too long; the new object is discarded");
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO objects (key, size) VALUES (?1, ?2)",
        (new_key, new_size),
    )?;
    let new_id = tx.last_insert_rowid();
    let mut moved = 0;
    {
        let mut point = tx.prepare_cached(
            "UPDATE chunks SET object_id = ?1, offset = ?2
             WHERE id = ?3 AND object_id = ?4 AND offset = ?5 AND length = ?6",
        )?;
        for m in moves {
            moved += point.execute((new_id, m.new_offset, &m.id, old_id, m.offset, m.length))?;
        }
    }
    if moved == 0 {
        // Every chunk went meanwhile: nobody was ever told of the new object.
        tx.execute("DELETE FROM objects WHERE id = ?1", [new_id])?;
        tx.execute(
            "UPDATE doomed_objects SET not_before_ms = ?2 WHERE key = ?1",
            (new_key, now),
        )?;
        tx.commit()?;
        return Ok(false);
    }
    tx.execute("DELETE FROM doomed_objects WHERE key = ?1", [new_key])?;
    let left = tx
        .prepare_cached("SELECT 1 FROM chunks WHERE object_id = ?1 LIMIT 1")?
        .exists([old_id])?;
    if !left {
        tx.execute("DELETE FROM objects WHERE id = ?1", [old_id])?;
        tx.execute(
            "INSERT OR REPLACE INTO doomed_objects (key, not_before_ms) VALUES (?1, ?2)",
            (old_key, now + keep_old_ms),
        )?;
    }
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::{self, GcOptions};
    use crate::store::local::LocalStore;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        _dir: tempfile::TempDir,
        db: Db,
        store: LocalStore,
        /// The pack's chunks, in order.
        chunks: Vec<Vec<u8>>,
    }

    /// A 2 MiB pack of ten 200 KiB chunks under `objects/old`, of which `live` have rows.
    async fn fixture(live: &[usize]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("server.db")).unwrap();
        let store = LocalStore::new(dir.path().join("blobs"), "http://h", vec![7; 32]).unwrap();
        let chunks: Vec<Vec<u8>> = (0..10u8)
            .map(|i| (0..200 * 1024).map(|j| (j % 251) as u8 ^ i).collect())
            .collect();
        store
            .put("objects/old", Bytes::from(chunks.concat()))
            .await
            .unwrap();
        let rows: Vec<(Vec<u8>, i64, i64)> = live
            .iter()
            .map(|&i| {
                let c = &chunks[i];
                (
                    ChunkId::of(c).to_vec(),
                    (i * c.len()) as i64,
                    c.len() as i64,
                )
            })
            .collect();
        let size = (chunks.len() * chunks[0].len()) as i64;
        db.write(move |conn| {
            conn.execute(
                "INSERT INTO objects (id, key, size) VALUES (1, 'objects/old', ?1)",
                [size],
            )?;
            for (id, offset, length) in rows {
                conn.execute(
                    "INSERT INTO chunks (id, object_id, offset, length, refcount, touched_at_ms)
                     VALUES (?1, 1, ?2, ?3, 1, 0)",
                    (id, offset, length),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        Fixture {
            _dir: dir,
            db,
            store,
            chunks,
        }
    }

    impl Fixture {
        async fn gc(&self, grace: Duration) -> gc::GcReport {
            let opts = GcOptions {
                grace,
                drop_before_ms: None,
            };
            gc::run(&self.db, &self.store, &opts).await.unwrap()
        }

        /// Every chunk row's bytes, read from where the row says, must hash to its id.
        async fn check_rows(&self) -> usize {
            let rows: Vec<(Vec<u8>, String, i64, i64)> = self
                .db
                .read(|conn| {
                    Ok(conn
                        .prepare(
                            "SELECT c.id, o.key, c.offset, c.length FROM chunks c
                             JOIN objects o ON o.id = c.object_id",
                        )?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect::<rusqlite::Result<_>>()?)
                })
                .await
                .unwrap();
            for (id, key, offset, length) in &rows {
                let body = self.store.get(key).await.unwrap();
                let bytes = &body[*offset as usize..(*offset + *length) as usize];
                assert!(
                    ChunkId::from_slice(id).unwrap().verify(bytes),
                    "{key}@{offset}"
                );
            }
            rows.len()
        }

        async fn sql_i64(&self, sql: &'static str) -> i64 {
            self.db
                .read(move |conn| Ok(conn.query_row(sql, [], |r| r.get(0))?))
                .await
                .unwrap()
        }

        /// As if the clock moved past every deadline in `doomed_objects`.
        async fn expire_deadlines(&self) {
            self.db
                .write(|conn| {
                    conn.execute("UPDATE doomed_objects SET not_before_ms = 0", [])?;
                    Ok(())
                })
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_mostly_dead_pack_is_rewritten_and_the_old_one_outlives_the_grace_period() {
        let f = fixture(&[1, 4, 7]).await;
        let r = f.gc(HOUR).await;
        assert_eq!(
            (r.packs_repacked, r.repack_bytes_copied),
            (1, 3 * 200 * 1024)
        );
        assert_eq!(
            r.objects_deleted, 0,
            "the old pack must outlive presigned URLs"
        );
        assert_eq!(f.check_rows().await, 3);
        assert_eq!(
            f.sql_i64("SELECT COUNT(*) FROM chunks WHERE object_id = 1")
                .await,
            0
        );
        let new_size = f.sql_i64("SELECT size FROM objects").await;
        assert_eq!(new_size, 3 * 200 * 1024);
        // The old object is still readable, and doomed about an hour out.
        assert!(f.store.head("objects/old").await.unwrap().is_some());
        let left = f
            .sql_i64("SELECT not_before_ms FROM doomed_objects WHERE key = 'objects/old'")
            .await
            - db::now_ms();
        assert!((3_500_000..=3_600_000).contains(&left), "{left}");

        // Once the deadline passed, the next run deletes it; the new pack is not repacked again.
        f.expire_deadlines().await;
        let r = f.gc(HOUR).await;
        assert_eq!((r.packs_repacked, r.objects_deleted), (0, 1));
        assert_eq!(f.store.head("objects/old").await.unwrap(), None);
        assert_eq!(f.check_rows().await, 3);
    }

    #[tokio::test]
    async fn a_pack_half_alive_or_small_is_left_alone() {
        let f = fixture(&[0, 1, 2, 3, 4]).await;
        assert_eq!(f.gc(Duration::ZERO).await.packs_repacked, 0);
        assert!(f.store.head("objects/old").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_damaged_live_chunk_leaves_the_pack_for_scrub() {
        let f = fixture(&[2, 3]).await;
        let mut bytes = f.chunks.concat();
        bytes[2 * 200 * 1024 + 5] ^= 1;
        f.store
            .put("objects/old", Bytes::from(bytes))
            .await
            .unwrap();
        let r = f.gc(Duration::ZERO).await;
        assert_eq!((r.packs_repacked, r.objects_deleted), (0, 0));
        assert_eq!(f.sql_i64("SELECT COUNT(*) FROM objects").await, 1);
        assert_eq!(f.sql_i64("SELECT COUNT(*) FROM doomed_objects").await, 0);
    }

    #[tokio::test]
    async fn a_crash_after_the_put_leaks_nothing_and_the_next_run_repacks_again() {
        let f = fixture(&[0, 9]).await;
        // Steps 1–2 of a run that died before its move: a parked key and its object.
        park(&f.db, "objects/orphan").await.unwrap();
        f.store
            .put("objects/orphan", Bytes::from_static(b"half a repack"))
            .await
            .unwrap();
        let r = f.gc(Duration::ZERO).await;
        assert_eq!(r.packs_repacked, 1);
        assert!(
            f.store.head("objects/orphan").await.unwrap().is_some(),
            "a parked key is not deleted before its deadline (its repack may still be writing it)"
        );
        assert_eq!(f.check_rows().await, 2);
        f.expire_deadlines().await;
        f.gc(Duration::ZERO).await;
        assert_eq!(f.store.head("objects/orphan").await.unwrap(), None);
        assert_eq!(f.store.head("objects/old").await.unwrap(), None);
        assert_eq!(f.sql_i64("SELECT COUNT(*) FROM doomed_objects").await, 0);
        assert_eq!(f.check_rows().await, 2);
    }

    #[tokio::test]
    async fn only_rows_still_where_the_repack_read_them_move() {
        let f = fixture(&[0, 5]).await;
        let rows = |i: usize, new_offset: i64| Move {
            id: ChunkId::of(&f.chunks[i]).to_vec(),
            offset: (i * 200 * 1024) as i64,
            length: 200 * 1024,
            new_offset,
        };
        // Chunk 5 was collected after the repack read the rows, chunk 3 never had one.
        f.db.write(|conn| {
            conn.execute("DELETE FROM chunks WHERE offset = ?1", [5 * 200 * 1024])?;
            Ok(())
        })
        .await
        .unwrap();
        let moves = vec![rows(0, 0), rows(3, 200 * 1024), rows(5, 400 * 1024)];
        let new = [&f.chunks[0][..], &f.chunks[3], &f.chunks[5]].concat();
        park(&f.db, "objects/new").await.unwrap();
        f.store.put("objects/new", Bytes::from(new)).await.unwrap();
        let m = moves.clone();
        let moved =
            f.db.write(move |c| move_chunks(c, 1, "objects/old", "objects/new", 600 * 1024, &m, 0))
                .await
                .unwrap();
        assert!(moved);
        assert_eq!(f.check_rows().await, 1);
        assert_eq!(
            f.sql_i64("SELECT COUNT(*) FROM doomed_objects WHERE key = 'objects/old'")
                .await,
            1
        );

        // The same moves again: nothing is where they say any more, so the second new object
        // is discarded at once and nobody is pointed at it.
        park(&f.db, "objects/new2").await.unwrap();
        let moved =
            f.db.write(move |c| move_chunks(c, 1, "objects/old", "objects/new2", 1, &moves, 0))
                .await
                .unwrap();
        assert!(!moved);
        assert_eq!(
            f.sql_i64("SELECT COUNT(*) FROM objects WHERE key = 'objects/new2'")
                .await,
            0
        );
        let due = f
            .sql_i64("SELECT not_before_ms FROM doomed_objects WHERE key = 'objects/new2'")
            .await;
        assert!(due <= db::now_ms());
    }

    #[tokio::test]
    async fn a_move_after_its_parking_ran_low_is_not_made() {
        let f = fixture(&[0]).await;
        f.db.write(|conn| {
            conn.execute(
                "INSERT INTO doomed_objects (key, not_before_ms) VALUES ('objects/late', ?1)",
                [db::now_ms() + 1000],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let m = vec![Move {
            id: ChunkId::of(&f.chunks[0]).to_vec(),
            offset: 0,
            length: 200 * 1024,
            new_offset: 0,
        }];
        let moved =
            f.db.write(move |c| move_chunks(c, 1, "objects/old", "objects/late", 1, &m, 0))
                .await
                .unwrap();
        assert!(!moved);
        assert_eq!(
            f.sql_i64("SELECT COUNT(*) FROM chunks WHERE object_id = 1")
                .await,
            1
        );
    }
}
