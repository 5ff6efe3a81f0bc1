//! B1: chunk + hash throughput of one file on disk (page cache warm): Cairn's push path
//! (`cairn debug chunk`) against `b3sum --num-threads 1`, `casync make` and `restic backup`.

use crate::util::{self, Ctx, ensure_tool, measure, ratio, write_random};
use anyhow::{Context, Result};
use cairn_e2e::bin;
use std::process::Command;

pub fn run(ctx: &Ctx) -> Result<()> {
    for t in ["b3sum", "casync", "restic"] {
        ensure_tool(t)?;
    }
    let size: u64 = if ctx.quick { 64 << 20 } else { 1 << 30 };
    let reps = if ctx.quick { 1 } else { 3 };
    let dir = ctx.dir("b1")?;
    let file = dir.join("input.bin");
    write_random(&file, size, ctx.seed)?;
    util::sync()?;
    // Warm the page cache once so that no row pays for the disk.
    util::run(
        Command::new("cat")
            .arg(&file)
            .stdout(std::process::Stdio::null()),
    )?;

    let b3 = best(reps, || {
        let mut c = Command::new("b3sum");
        c.args(["--num-threads", "1"]).arg(&file);
        Ok(measure(&c)?.secs)
    })?;
    let mut chunks = 0;
    let (mut cairn_inner, mut cairn_wall) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let mut c = Command::new(bin("cairn"));
        c.args(["--json", "debug", "chunk"]).arg(&file);
        let r = measure(&c)?;
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
            .with_context(|| format!("cairn debug chunk printed {:?}", r.stdout))?;
        chunks = v["chunks"].as_u64().unwrap_or(0);
        cairn_inner = cairn_inner.min(v["seconds"].as_f64().unwrap_or(f64::NAN));
        cairn_wall = cairn_wall.min(r.secs);
    }
    // Each peer run writes into a fresh store/repository (a second run would deduplicate).
    let casync = best(reps, || {
        let store = ctx.dir("b1-casync")?;
        let mut c = Command::new("casync");
        c.arg("make")
            .arg(format!("--store={}", store.join("store").display()))
            .arg(store.join("index.caibx"))
            .arg(&file);
        Ok(measure(&c)?.secs)
    })?;
    let restic = best(reps, || {
        let repo = ctx.dir("b1-restic")?;
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "cairn-peers-bench")
            .env("RESTIC_CACHE_DIR", repo.join("cache"))
            .arg("--repo")
            .arg(repo.join("repo"));
        util::run(
            Command::new("restic")
                .env("RESTIC_PASSWORD", "cairn-peers-bench")
                .arg("--repo")
                .arg(repo.join("repo"))
                .args(["init", "-q"]),
        )?;
        c.args(["backup", "-q"]).arg(&file);
        Ok(measure(&c)?.secs)
    })?;
    let _ = std::fs::remove_dir_all(&dir);

    let gbs = |s: f64| format!("{:.2}", size as f64 / s / 1e9);
    println!(
        "### B1 chunk + hash throughput, one {} MiB file (page cache warm; best of {reps})\n",
        size >> 20
    );
    println!("Cairn: {chunks} chunks. Ratio: Cairn's time (in-process) ÷ the tool's time.\n");
    println!("| tool | what the time includes | s | GB/s | cairn ÷ tool |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| cairn (`cairn debug chunk`, in-process) | leased mmap (files ≥ 16 MiB; else read) + FastCDC + BLAKE3 per chunk, as push does (`scanner::hash_file`) | {cairn_inner:.3} | {} | 1.00 |",
        gbs(cairn_inner)
    );
    println!(
        "| cairn (same, whole process) | plus process start | {cairn_wall:.3} | {} | {} |",
        gbs(cairn_wall),
        ratio(cairn_inner, cairn_wall)
    );
    println!(
        "| `b3sum --num-threads 1` | read + one BLAKE3 over the file, process start | {b3:.3} | {} | {} |",
        gbs(b3),
        ratio(cairn_inner, b3)
    );
    println!(
        "| `casync make` to a local store | buzhash chunking + SHA-256 + compression + writing chunk files | {casync:.3} | {} | {} |",
        gbs(casync),
        ratio(cairn_inner, casync)
    );
    println!(
        "| `restic backup` to a local repo | Rabin chunking + SHA-256 + AES + writing packs, repo open/lock | {restic:.3} | {} | {} |",
        gbs(restic),
        ratio(cairn_inner, restic)
    );
    println!();
    Ok(())
}

/// The fastest of `reps` runs.
fn best(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..reps {
        best = best.min(f()?);
    }
    Ok(best)
}
