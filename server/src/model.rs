//! Rows to wire types: the stored manifest encoding and `Entry` construction.

use cairn_proto::ChunkId;
use cairn_proto::pb::{ChunkRef, Entry, FileMeta};
use rusqlite::Row;

use crate::error::{Error, Result};

/// Bytes per chunk in a stored manifest: 32-byte id, then the length as a little-endian u32.
const MANIFEST_ITEM: usize = 36;

pub fn encode_manifest(chunks: &[(ChunkId, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * MANIFEST_ITEM);
    for (id, len) in chunks {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

pub fn decode_manifest(blob: &[u8]) -> Result<Vec<(ChunkId, u32)>> {
    if !blob.len().is_multiple_of(MANIFEST_ITEM) {
        return Err(Error::Internal(format!(
            "stored manifest of {} bytes is corrupt",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(MANIFEST_ITEM)
        .map(|item| {
            // chunks_exact yields 36-byte slices: 32 + 4 always fit.
            let id = ChunkId::from_slice(&item[..32]).expect("32 bytes");
            let len = u32::from_le_bytes(item[32..].try_into().expect("4 bytes"));
            (id, len)
        })
        .collect())
}

/// The columns `entry_from_row` reads, for `files f JOIN versions v`.
pub const ENTRY_COLUMNS: &str = "f.path, v.version, v.kind, v.size, v.mode, v.mtime_ns, v.manifest, \
     v.content_id, v.symlink_target, v.device, v.committed_at_ms, v.deleted, v.seq, v.action, v.action_detail";

/// `ENTRY_COLUMNS` without the manifest (a NULL in its place), for `entry_from_row(row, false)`:
/// a large file's manifest is thousands of chunk ids, copied out of the database for nothing.
pub const LISTING_COLUMNS: &str = "f.path, v.version, v.kind, v.size, v.mode, v.mtime_ns, NULL, \
     v.content_id, v.symlink_target, v.device, v.committed_at_ms, v.deleted, v.seq, v.action, v.action_detail";

/// An `Entry` from a row selected with `ENTRY_COLUMNS`; the manifest only when asked for.
pub fn entry_from_row(row: &Row<'_>, with_manifest: bool) -> rusqlite::Result<Entry> {
    let manifest = if with_manifest {
        let blob: Vec<u8> = row.get(6)?;
        decode_manifest(&blob)
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, e.into())
            })?
            .into_iter()
            .map(|(id, length)| ChunkRef {
                id: id.to_vec(),
                length,
            })
            .collect()
    } else {
        Vec::new()
    };
    let version = row.get::<_, i64>(1)? as u64;
    let deleted: bool = row.get(11)?;
    let mut action: String = row.get(13)?;
    if action.is_empty() {
        // Written before actions were recorded.
        action = match (deleted, version) {
            (true, _) => "deleted",
            (false, 1) => "created",
            (false, _) => "modified",
        }
        .to_owned();
    }
    Ok(Entry {
        path: row.get(0)?,
        version,
        deleted,
        action,
        action_detail: row.get(14)?,
        meta: Some(FileMeta {
            kind: row.get(2)?,
            size: row.get::<_, i64>(3)? as u64,
            mode: row.get(4)?,
            mtime_ns: row.get(5)?,
            manifest,
            symlink_target: row.get(8)?,
        }),
        content_id: row.get(7)?,
        device: row.get(9)?,
        committed_at_ms: row.get(10)?,
        seq: row.get::<_, i64>(12)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_through_its_stored_form() {
        let m = vec![(ChunkId::of(b"a"), 1), (ChunkId::of(b"bb"), 2)];
        assert_eq!(decode_manifest(&encode_manifest(&m)).unwrap(), m);
        assert!(decode_manifest(&[0; 35]).is_err());
    }
}
