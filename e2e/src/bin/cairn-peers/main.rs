//! `cairn-peers`: the side-by-side benchmarks of issue 6. Runs Cairn and a named peer (b3sum,
//! casync, rclone, restic, Syncthing) on the same generated corpus in one run, against the same
//! local Garage where storage is involved, and prints markdown tables with ratios (Cairn's time ÷
//! the peer's) to stdout; progress goes to stderr. Every loop is bounded in count and time, every
//! server listens on 127.0.0.1 only, every process it starts is killed on drop.
//!
//! ```sh
//! scripts/bench-peers.sh [--quick] [b1 b2 b3 b4 b5 b6]   # builds, starts Garage, runs this
//! target/release/cairn-peers [--quick] [--seed S] [ROWS...]  # needs CAIRN_E2E_GARAGE for b2–b4
//! ```
//!
//! Rows: b1 chunk+hash throughput, b2 bytes uploaded after edits, b3 initial push, b4 pull,
//! b5 propagation latency, b6 no-change rescan. Without rows, all run.

mod chunk;
mod edits;
mod latency;
mod rescan;
mod syncthing;
mod transfer;
mod util;

use anyhow::{Result, bail};
use std::time::{SystemTime, UNIX_EPOCH};

const ROWS: [&str; 6] = ["b1", "b2", "b3", "b4", "b5", "b6"];

fn main() -> Result<()> {
    let mut quick = false;
    let mut seed = None;
    let mut rows = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--seed" => {
                let v = args.next().unwrap_or_default();
                seed = Some(v.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("--seed {v:?}: expected a number (e.g. --seed 20261207)")
                })?);
            }
            r if ROWS.contains(&r.to_lowercase().as_str()) => rows.push(r.to_lowercase()),
            other => bail!(
                "unknown argument {other:?}: usage: cairn-peers [--quick] [--seed S] [b1 b2 b3 b4 b5 b6]"
            ),
        }
    }
    if rows.is_empty() {
        rows = ROWS.iter().map(|r| r.to_string()).collect();
    }
    let seed = match seed {
        Some(s) => s,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000_007,
    };
    // b4 pulls what b3 pushed: asking for b4 alone still runs (and prints) both.
    let ctx = util::Ctx::new(quick, seed)?;
    util::header(&ctx, &rows)?;
    for row in &rows {
        eprintln!("== {row} ==");
        match row.as_str() {
            "b1" => chunk::run(&ctx)?,
            "b2" => edits::run(&ctx)?,
            "b3" => transfer::run(&ctx, rows.iter().any(|r| r == "b4"))?,
            "b4" if !rows.iter().any(|r| r == "b3") => transfer::run(&ctx, true)?,
            "b4" => {} // ran with b3
            "b5" => latency::run(&ctx)?,
            "b6" => rescan::run(&ctx)?,
            _ => unreachable!("rows were checked against ROWS"),
        }
    }
    Ok(())
}
