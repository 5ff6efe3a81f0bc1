//! Packs (issue 6) with the real binaries: many small files pushed into packs, most of them
//! deleted, `cairn-server gc` repacks the mostly-dead packs; the store's object count and bytes
//! drop, every remaining file pulls byte for byte, and scrub finds nothing wrong.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_e2e::tree::{random_bytes, write};
use cairn_e2e::{Backend, CairnServer, field, json_ok, wait_for};

on_every_backend!(after_most_small_files_are_deleted_gc_repacks_and_the_rest_pull_byte_for_byte);

/// 3,000 files of 1–6 KiB: two or three packs of about 8 MiB.
const FILES: u64 = 3000;

fn after_most_small_files_are_deleted_gc_repacks_and_the_rest_pull_byte_for_byte(
    backend: Backend,
) -> Result<()> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let (src, dst) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let seed: u64 = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed: {seed} (rerun with CAIRN_SEED={seed})");
    let mut kept = BTreeMap::new();
    for i in 0..FILES {
        let len = 1024 + (seed.wrapping_add(i * 7919) % 5120) as usize;
        let bytes = random_bytes(seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15), len);
        let name = format!("d{:02}/f{i:04}.bin", i % 20);
        write(src.path(), &name, &bytes)?;
        if i % 10 == 3 {
            kept.insert(name, bytes);
        }
    }
    let pushed = a.push(src.path())?;
    assert_eq!(field(&pushed, "files"), FILES, "{pushed}");
    let (objects_before, bytes_before) = (s.stored_objects()?, stored_bytes(&s)?);
    assert!(
        objects_before <= 5,
        "small files travel in packs: {objects_before} objects"
    );

    // Delete nine files in ten; the versions they leave are dropped at once.
    for i in 0..FILES {
        let name = format!("d{:02}/f{i:04}.bin", i % 20);
        if !kept.contains_key(&name) {
            fs::remove_file(src.path().join(&name))?;
        }
    }
    json_ok(
        a.run_with("push", src.path(), &["--allow-deletes"])?,
        "push of the deletions",
    )?;
    let cutoff = now_ms() + 1;
    wait_for(
        "the clock to pass the deletions",
        Duration::from_secs(5),
        || (now_ms() > cutoff).then_some(()),
    )?;
    let report = s.gc_dropping_before(cutoff as i64)?;
    println!("gc: {report}");
    assert_eq!(field(&report, "versions_dropped"), FILES - 300, "{report}");
    assert!(field(&report, "packs_repacked") >= 1, "{report}");
    let copied = field(&report, "repack_bytes_copied");
    let live: u64 = kept.values().map(|b| b.len() as u64).sum();
    assert!(copied >= live / 2 && copied <= live, "{report}");

    // The store lets go of the old packs (Garage's counts lag behind its deletes).
    let (objects_after, bytes_after) =
        wait_for("the store's bytes to drop", Duration::from_secs(60), || {
            let bytes = stored_bytes(&s).ok()?;
            (bytes < bytes_before / 4).then(|| Some((s.stored_objects().ok()?, bytes)))?
        })?;
    println!(
        "stored objects {objects_before} -> {objects_after}, bytes {bytes_before} -> {bytes_after}"
    );
    assert!(objects_after <= objects_before, "{objects_after}");
    assert!(
        bytes_after >= live,
        "{bytes_after} stored < {live} live bytes"
    );

    let pulled = b.pull(dst.path())?;
    assert_eq!(field(&pulled, "files_written"), 300, "{pulled}");
    for (name, bytes) in &kept {
        let got = fs::read(dst.path().join(name)).with_context(|| name.clone())?;
        assert!(got == *bytes, "{name} differs after the repack");
    }
    let scrub = json_ok(s.store_admin(&["scrub", "--json"])?, "cairn-server scrub")?;
    assert_eq!(
        scrub["damaged"].as_array().map(Vec::len),
        Some(0),
        "{scrub}"
    );
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The bytes of the stored objects (not staging uploads), as the store itself reports them.
fn stored_bytes(s: &CairnServer) -> Result<u64> {
    match (&s.garage, &s.bucket) {
        (Some(g), Some(bucket)) => {
            let info = g.garage(&["bucket", "info", bucket])?;
            info.lines()
                .find_map(|l| garage_size(l.trim()))
                .with_context(|| format!("no size in `garage bucket info`: {info}"))
        }
        _ => {
            let dir = s.dir.path().join("blobs/objects");
            let mut total = 0;
            for e in fs::read_dir(dir)? {
                total += e?.metadata()?.len();
            }
            Ok(total)
        }
    }
}

/// Parses Garage's `Size: 12.3 MiB (12.9 MB)` line into bytes (approximate: 3 digits).
fn garage_size(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Size:")?.trim();
    let mut parts = rest.split_whitespace();
    let n: f64 = parts.next()?.replace(',', "").parse().ok()?;
    let unit = match parts.next().unwrap_or("B") {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((n * unit) as u64)
}
