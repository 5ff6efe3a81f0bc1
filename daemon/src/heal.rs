//! Healing: upload again the chunks the server lost (scrub found them damaged) from local files
//! that still hold them.
//!
//! The server names the current file versions that contain each lost chunk (ListWanted). A file
//! qualifies only when this device's synced state says it holds exactly that version and the
//! disk still shows the stat the state recorded; the chunk is then cut from the file again and
//! its hash checked before it travels (the server checks it once more on ConfirmUpload).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use cairn_proto::ChunkId;
use cairn_proto::pb;

use crate::chunker::{ChunkParams, chunk_reader};
use crate::error::{Error, Result};
use crate::localfs::disk_path;
use crate::remote::Remote;
use crate::tree::{Content, SyncedTree};

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct HealStats {
    /// Chunks the server asked for.
    pub wanted: u64,
    /// Chunks this device uploaded again.
    pub healed: u64,
}

/// Uploads every wanted chunk this folder holds unchanged. Errors for one file are logged and
/// skipped: another device may hold the data. `synced` gives the folder's synced tree; it is
/// called only when the server wants something (almost never), as loading it is not free.
pub async fn heal<S: Borrow<SyncedTree>>(
    remote: &Remote,
    root: &Path,
    synced: impl FnOnce() -> Result<S>,
    params: ChunkParams,
) -> Result<HealStats> {
    let wanted = remote.list_wanted().await?;
    let mut stats = HealStats {
        wanted: wanted.len() as u64,
        healed: 0,
    };
    if wanted.is_empty() {
        return Ok(stats);
    }
    let synced = synced()?;
    let synced = synced.borrow();
    // Per local file, the chunk ids to cut from it.
    let mut by_file: HashMap<String, HashSet<ChunkId>> = HashMap::new();
    for w in &wanted {
        let Ok(id) = ChunkId::from_slice(&w.id) else {
            continue;
        };
        for f in &w.files {
            let holds = synced.get(&f.path).is_some_and(|e| {
                e.version.0 == f.version && matches!(e.content, Content::File { .. })
            });
            if holds {
                by_file.entry(f.path.clone()).or_default().insert(id);
            }
        }
    }
    let mut found: HashMap<ChunkId, Bytes> = HashMap::new();
    for (path, ids) in by_file {
        let ids: HashSet<ChunkId> = ids.into_iter().filter(|i| !found.contains_key(i)).collect();
        if ids.is_empty() {
            continue;
        }
        let Ok(disk) = disk_path(root, &path) else {
            continue;
        };
        let expected = synced[&path].stat;
        let read = tokio::task::spawn_blocking(move || cut(&disk, expected, &ids, params)).await;
        match read {
            Ok(Ok(chunks)) => found.extend(chunks),
            Ok(Err(e)) => tracing::warn!(path, error = %e, "cannot heal from this file"),
            Err(e) => tracing::warn!(path, error = %e, "cannot heal from this file"),
        }
    }
    for (id, bytes) in found {
        let object = pb::UploadObject {
            chunks: vec![pb::ChunkRef {
                id: id.to_vec(),
                length: bytes.len() as u32,
            }],
        };
        let target = remote
            .prepare_upload(vec![object])
            .await?
            .pop()
            .ok_or_else(|| Error::Protocol("PrepareUpload returned no target".into()))?;
        remote.put(&target.url, bytes).await?;
        let outcome = remote.confirm_upload(vec![target.upload_id]).await?;
        match outcome.first() {
            Some(o) if o.ok => {
                tracing::info!(chunk = %id, "uploaded a chunk the server had lost");
                stats.healed += 1;
            }
            Some(o) => {
                tracing::warn!(chunk = %id, error = o.error, "the server refused a healing upload")
            }
            None => return Err(Error::Protocol("ConfirmUpload returned no outcome".into())),
        }
    }
    Ok(stats)
}

/// The wanted chunks of one file, if the file is still what the synced state recorded.
fn cut(
    disk: &Path,
    expected: crate::tree::Stat,
    ids: &HashSet<ChunkId>,
    params: ChunkParams,
) -> std::io::Result<Vec<(ChunkId, Bytes)>> {
    let changed = || std::io::Error::other("changed since it was last synced");
    let stat = crate::scanner::stat_of(&std::fs::symlink_metadata(disk)?);
    if !crate::localfs::same_stat(stat, expected) {
        return Err(changed());
    }
    let file = std::fs::File::open(disk)?;
    let chunks = chunk_reader(&file, params)?;
    let mut out = Vec::new();
    for c in chunks.chunks.iter().filter(|c| ids.contains(&c.id)) {
        let mut buf = vec![0; c.length as usize];
        file.read_exact_at(&mut buf, c.offset)?;
        if ChunkId::of(&buf) != c.id {
            return Err(changed());
        }
        out.push((c.id, Bytes::from(buf)));
    }
    Ok(out)
}
