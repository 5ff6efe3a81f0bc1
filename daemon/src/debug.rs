//! `cairn debug …`: hidden diagnostics for benchmarks. `cairn debug chunk FILE` times the exact
//! chunk + hash path a push takes over a file on disk (`scanner::hash_file`).

use std::path::Path;
use std::time::Instant;

use cairn::chunker::ChunkParams;
use cairn::scanner::{hash_file, stat_of};

/// Chunks and hashes `file` as `cairn push` does; prints chunks, bytes, seconds (JSON with `json`).
pub fn chunk(file: &Path, json: bool) -> anyhow::Result<()> {
    let md = std::fs::symlink_metadata(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}; name a regular file", file.display()))?;
    anyhow::ensure!(md.is_file(), "{} is not a regular file", file.display());
    let start = Instant::now();
    let (chunks, content_id) = hash_file(file, stat_of(&md), ChunkParams::DEFAULT)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let bytes = md.len();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "file": file,
                "chunks": chunks.len(),
                "bytes": bytes,
                "seconds": seconds,
                "content_id": content_id.to_string(),
            })
        );
    } else {
        println!(
            "{}: {} chunks, {bytes} bytes in {seconds:.3} s ({:.2} GB/s)",
            file.display(),
            chunks.len(),
            bytes as f64 / seconds / 1e9
        );
    }
    Ok(())
}
