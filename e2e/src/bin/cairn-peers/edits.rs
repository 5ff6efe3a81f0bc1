//! B2: bytes uploaded after three edits of one random file, each pushed on its own: Cairn
//! (`bytes_uploaded`), rclone copy (the bytes its stats say it sent) and restic backup
//! (`data_added`), each on its own bucket of the same Garage.

use crate::util::{
    self, CairnSide, Ctx, cairn, ensure_tool, measure, mib, ratio, rclone, restic, tail,
};
use anyhow::{Context, Result};
use cairn_e2e::Backend;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// One step's numbers for the three tools: (bytes, seconds) each.
struct Step {
    name: String,
    cairn: (u64, f64),
    rclone: (u64, f64),
    restic: (u64, f64),
}

pub fn run(ctx: &Ctx) -> Result<()> {
    ensure_tool("rclone")?;
    ensure_tool("restic")?;
    let size: u64 = if ctx.quick { 16 << 20 } else { 256 << 20 };
    let g = ctx.garage()?;
    let data = ctx.dir("b2/data")?;
    let file = data.join("big.bin");
    util::write_random(&file, size, ctx.seed ^ 0xb2)?;
    util::sync()?;

    let side = CairnSide::start(Backend::Garage)?;
    let dev = side.device("b2")?;
    let rbucket = g.create_bucket()?;
    let sbucket = g.create_bucket()?;
    let cache = ctx.dir("b2/restic-cache")?;
    util::run(restic(&g, &sbucket, &cache).args(["init", "-q"]))?;

    let push_all = |name: &str| -> Result<Step> {
        eprintln!("  b2: {name}");
        let (cr, cv) = cairn(&dev, "push", &data)?;
        let mut rc = rclone(&g);
        rc.args(["copy", "--use-json-log", "-v", "--stats", "1h"])
            .arg(&data)
            .arg(format!("G:{rbucket}/data"));
        let rr = measure(&rc)?;
        let mut sc = restic(&g, &sbucket, &cache);
        sc.args(["backup", "--json"]).arg(&data);
        let sr = measure(&sc)?;
        Ok(Step {
            name: name.to_owned(),
            cairn: (
                cv["bytes_uploaded"].as_u64().context("no bytes_uploaded")?,
                cr.secs,
            ),
            rclone: (rclone_bytes(&rr.stderr)?, rr.secs),
            restic: (restic_added(&sr.stdout)?, sr.secs),
        })
    };
    let mut steps = vec![push_all("initial push")?];
    insert_middle(&file, 100)?;
    steps.push(push_all("insert 100 bytes in the middle")?);
    overwrite(&file, size / 4, 4096, ctx.seed)?;
    steps.push(push_all("overwrite 4 KiB at 1/4")?);
    let mut f = fs::OpenOptions::new().append(true).open(&file)?;
    f.write_all(&cairn_e2e::tree::random_bytes(ctx.seed ^ 0xa99e, 1 << 20))?;
    f.sync_all()?;
    steps.push(push_all("append 1 MiB")?);

    println!(
        "### B2 bytes uploaded after edits of one {} MiB random file (each edit pushed on its own)\n",
        size >> 20
    );
    println!(
        "cairn: `bytes_uploaded` of `cairn push --json`; rclone: bytes in the final stats of `rclone copy` \
         (it re-sends a changed file whole); restic: `data_added` of `restic backup --json`. MiB = 2^20 bytes.\n"
    );
    println!(
        "| step | cairn MiB | rclone MiB | restic MiB | cairn ÷ rclone | cairn ÷ restic | cairn s | rclone s | restic s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &steps {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            s.name,
            mib(s.cairn.0),
            mib(s.rclone.0),
            mib(s.restic.0),
            ratio(s.cairn.0 as f64, s.rclone.0 as f64),
            ratio(s.cairn.0 as f64, s.restic.0 as f64),
            s.cairn.1,
            s.rclone.1,
            s.restic.1
        );
    }
    println!();
    Ok(())
}

/// The `bytes` of the last stats line `rclone --use-json-log -v` wrote.
fn rclone_bytes(stderr: &str) -> Result<u64> {
    stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["stats"]["bytes"].as_u64())
        .with_context(|| format!("no stats in rclone's log: {}", tail(stderr)))
}

/// `data_added` of the summary `restic backup --json` printed.
fn restic_added(stdout: &str) -> Result<u64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "summary")
        .find_map(|v| v["data_added"].as_u64())
        .with_context(|| format!("no summary from restic backup: {}", tail(stdout)))
}

fn insert_middle(file: &Path, n: usize) -> Result<()> {
    let mut bytes = fs::read(file)?;
    let mid = bytes.len() / 2;
    bytes.splice(mid..mid, std::iter::repeat_n(b'+', n));
    let mut f = fs::File::create(file)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(())
}

fn overwrite(file: &Path, at: u64, n: usize, seed: u64) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(file)?;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&cairn_e2e::tree::random_bytes(seed ^ 0x4b, n))?;
    f.sync_all()?;
    Ok(())
}
