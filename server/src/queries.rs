//! Read-side RPCs: namespace info, missing chunks, the tree, manifests, the log, version history.

use std::collections::HashMap;

use cairn_proto::ChunkId;
use cairn_proto::pb::{
    ChunkLocation, Entry, FileManifest, GetManifestsResponse, NamespaceInfo, PathVersion,
    StoredObject,
};
use rusqlite::{Connection, OptionalExtension};

use crate::auth::Caller;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::{ENTRY_COLUMNS, LISTING_COLUMNS, entry_from_row};
use crate::store::{BlobStore, URL_TTL};

/// Chunks smaller than this travel in packs: with the default chunk sizes (at most 4 MiB), all
/// of them. Each stored object costs a PUT, a copy out of staging, a verifying read and a delete
/// of the staged one, whatever its size: a 1 GiB file went up as ~850 objects of ~1.2 MiB, and
/// packing them (~64 objects) took its push from 14.5 s to 10.7 s and its pull from 5.8 s to
/// 4.4 s on the benchmark Garage (docs/BENCHMARKS.md). Chunks of 8 MiB and more (namespaces with
/// a larger maximum) are big enough alone.
pub const PACK_THRESHOLD: u32 = 8 << 20;
/// Target size of a pack object (the client holds one per PUT in flight in memory).
pub const PACK_TARGET: u32 = 16 << 20;
/// Page sizes for ListTree and ListChanges.
pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 5000;

pub fn page_limit(requested: u32) -> u32 {
    if requested == 0 {
        DEFAULT_LIMIT
    } else {
        requested.min(MAX_LIMIT)
    }
}

pub fn head_seq(conn: &Connection, ns: i64) -> Result<u64> {
    let s: Option<i64> = conn.query_row(
        "SELECT MAX(seq) FROM sync_log WHERE namespace_id = ?1",
        [ns],
        |r| r.get(0),
    )?;
    Ok(s.unwrap_or(0) as u64)
}

pub async fn namespace_info(db: &Db, caller: Caller) -> Result<NamespaceInfo> {
    db.read(move |conn| {
        let (min, avg, max) = conn.query_row(
            "SELECT chunk_min, chunk_avg, chunk_max FROM namespaces WHERE id = ?1",
            [caller.namespace_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(NamespaceInfo {
            name: caller.namespace,
            chunk_min: min,
            chunk_avg: avg,
            chunk_max: max,
            head_seq: head_seq(conn, caller.namespace_id)?,
            device: caller.device,
            pack_threshold: PACK_THRESHOLD,
            pack_target: PACK_TARGET,
            role: caller.role.to_pb() as i32,
        })
    })
    .await
}

/// The ids this namespace does not hold, in request order (duplicates reported once).
pub async fn find_missing(db: &Db, ns: i64, ids: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    if ids.len() > 100_000 {
        return Err(Error::InvalidArgument(
            "at most 100000 chunk ids per request".into(),
        ));
    }
    let ids = ids
        .iter()
        .map(|b| {
            ChunkId::from_slice(b).map_err(|e| Error::InvalidArgument(format!("chunk id: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let (missing, unreferenced) = db
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.refcount FROM namespace_chunks nc JOIN chunks c ON c.id = nc.chunk_id
                 WHERE nc.namespace_id = ?1 AND nc.chunk_id = ?2",
            )?;
            let mut seen = std::collections::HashSet::new();
            let mut missing = Vec::new();
            let mut unreferenced = Vec::new();
            for id in ids {
                if !seen.insert(id) {
                    continue;
                }
                match stmt
                    .query_row((ns, &id.as_bytes()[..]), |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    None => missing.push(id.to_vec()),
                    Some(0) => unreferenced.push(id),
                    Some(_) => {}
                }
            }
            Ok((missing, unreferenced))
        })
        .await?;
    let mut missing = missing;
    if !unreferenced.is_empty() {
        // Reported present, so the caller will commit without uploading them: keep the garbage
        // collector off these for its grace period. (Referenced chunks need no such write.) One
        // collected between our read and this write is reported missing after all.
        let vanished = db
            .write(move |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let now = crate::db::now_ms();
                let mut touch = tx.prepare_cached(
                    "UPDATE chunks SET touched_at_ms = MAX(touched_at_ms, ?2) WHERE id = ?1",
                )?;
                let mut vanished = Vec::new();
                for id in &unreferenced {
                    if touch.execute((&id.as_bytes()[..], now))? == 0 {
                        vanished.push(id.to_vec());
                    }
                }
                drop(touch);
                tx.commit()?;
                Ok(vanished)
            })
            .await?;
        missing.extend(vanished);
    }
    Ok(missing)
}

/// One page of the tree in path byte order, and the head seq read in the same snapshot.
pub async fn list_tree(
    db: &Db,
    ns: i64,
    after: String,
    limit: u32,
    include_deleted: bool,
) -> Result<(Vec<Entry>, String, u64)> {
    let limit = page_limit(limit);
    db.read(move |conn| {
        let tx = conn.transaction()?;
        let sql = format!(
            "SELECT {LISTING_COLUMNS} FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
             WHERE f.namespace_id = ?1 AND f.path > ?2 AND (?3 OR v.deleted = 0) ORDER BY f.path LIMIT ?4"
        );
        let entries = tx
            .prepare_cached(&sql)?
            .query_map((ns, &after, include_deleted, limit), |r| entry_from_row(r, false))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let head = head_seq(&tx, ns)?;
        let next = if entries.len() == limit as usize { entries.last().map(|e| e.path.clone()).unwrap_or_default() } else { String::new() };
        Ok((entries, next, head))
    })
    .await
}

/// Log entries after `cursor`, oldest first; `more` when another page is waiting.
pub fn changes(
    conn: &mut Connection,
    ns: i64,
    cursor: u64,
    limit: u32,
) -> Result<(Vec<Entry>, bool)> {
    let limit = page_limit(limit);
    let sql = format!(
        "SELECT {LISTING_COLUMNS} FROM sync_log l JOIN files f ON f.id = l.file_id
         JOIN versions v ON v.file_id = l.file_id AND v.version = l.version
         WHERE l.namespace_id = ?1 AND l.seq > ?2 ORDER BY l.seq LIMIT ?3"
    );
    let mut entries = conn
        .prepare_cached(&sql)?
        .query_map((ns, cursor as i64, limit + 1), |r| entry_from_row(r, false))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    Ok((entries, more))
}

pub async fn list_versions(db: &Db, ns: i64, path: String) -> Result<Vec<Entry>> {
    db.read(move |conn| {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files f JOIN versions v ON v.file_id = f.id
             WHERE f.namespace_id = ?1 AND f.path = ?2 ORDER BY v.version DESC"
        );
        let versions = conn
            .prepare_cached(&sql)?
            .query_map((ns, &path), |r| entry_from_row(r, true))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!(
                "path {path:?} has no versions in this namespace"
            )));
        }
        Ok(versions)
    })
    .await
}

/// Manifests with chunk locations; each stored object once, with a presigned GET URL.
pub async fn manifests(
    db: &Db,
    store: &dyn BlobStore,
    ns: i64,
    files: Vec<PathVersion>,
) -> Result<GetManifestsResponse> {
    if files.len() > 10_000 {
        return Err(Error::InvalidArgument(
            "at most 10000 files per request".into(),
        ));
    }
    let (files, objects) = db.read(move |conn| locate(conn, ns, &files)).await?;
    let mut stored = Vec::with_capacity(objects.len());
    for (key, size) in objects {
        stored.push(StoredObject {
            url: store.presign_get(&key, URL_TTL).await?,
            size,
        });
    }
    Ok(GetManifestsResponse {
        files,
        objects: stored,
    })
}

type Located = (Vec<FileManifest>, Vec<(String, u64)>);

fn locate(conn: &mut Connection, ns: i64, files: &[PathVersion]) -> Result<Located> {
    let tx = conn.transaction()?;
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM files f JOIN versions v ON v.file_id = f.id
         AND v.version = CASE WHEN ?3 = 0 THEN f.head_version ELSE ?3 END
         WHERE f.namespace_id = ?1 AND f.path = ?2"
    );
    let mut by_path = tx.prepare_cached(&sql)?;
    let mut chunk = tx.prepare_cached(
        "SELECT c.object_id, c.offset, o.key, o.size FROM chunks c JOIN objects o ON o.id = c.object_id WHERE c.id = ?1",
    )?;
    let mut index: HashMap<i64, u32> = HashMap::new();
    let mut objects = Vec::new();
    let mut out = Vec::with_capacity(files.len());
    for pv in files {
        let entry = by_path
            .query_row((ns, &pv.path, pv.version as i64), |r| {
                entry_from_row(r, true)
            })
            .optional()?
            .ok_or_else(|| match pv.version {
                0 => Error::NotFound(format!(
                    "path {:?} does not exist in this namespace",
                    pv.path
                )),
                v => Error::NotFound(format!("path {:?} has no version {v}", pv.path)),
            })?;
        let mut chunks = Vec::new();
        for c in entry
            .meta
            .as_ref()
            .map(|m| m.manifest.as_slice())
            .unwrap_or_default()
        {
            let (object_id, offset, key, size): (i64, i64, String, i64) = chunk
                .query_row([&c.id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "chunk {} of {:?} has no stored location",
                        hex::encode(&c.id),
                        pv.path
                    ))
                })?;
            let object = *index.entry(object_id).or_insert_with(|| {
                objects.push((key, size as u64));
                (objects.len() - 1) as u32
            });
            chunks.push(ChunkLocation {
                id: c.id.clone(),
                length: c.length,
                object,
                offset: offset as u64,
            });
        }
        out.push(FileManifest {
            entry: Some(entry),
            chunks,
        });
    }
    Ok((out, objects))
}
