//! B5: propagation latency, save on A → verified on B, at seeded random gaps of 0.2–1.2 s: two
//! cairn daemons (`cairn-bench latency`, the issue 3 measurement, run as it is) against two
//! Syncthing instances on 127.0.0.1 with the watcher delay at its minimum (1 s).

use crate::syncthing::{self, FolderOpts, Identity, Syncthing};
use crate::util::{Ctx, ratio};
use anyhow::{Context, Result, ensure};
use cairn_e2e::bin;
use cairn_e2e::tree::random_bytes;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EDIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Percentiles in ms: p50, p90, p99, max; and how many edits arrived / timed out.
struct Lat {
    ok: usize,
    timeouts: usize,
    p: [f64; 4],
}

pub fn run(ctx: &Ctx) -> Result<()> {
    syncthing::ensure()?;
    let edits = if ctx.quick { 10 } else { 100 };
    eprintln!("  b5: cairn, {edits} edits");
    let cairn = cairn_latency(edits, ctx.seed)?;
    eprintln!("  b5: syncthing, {edits} edits");
    let st = syncthing_latency(ctx, edits)?;
    println!("### B5 propagation latency: save on A → verified on B ({edits} edits)\n");
    println!(
        "Gaps: seeded uniform 0.2–1.2 s (seed {}), B polled every 1 ms, {}-s timeout per edit. \
         cairn: two `cairn daemon`s and cairn-server (local store) via `cairn-bench latency`; \
         Syncthing: two instances on 127.0.0.1, one shared folder, fsWatcherDelayS=1 (the minimum), \
         rescanIntervalS=86400. Ratio = cairn ÷ Syncthing.\n",
        ctx.seed,
        EDIT_TIMEOUT.as_secs()
    );
    println!("| tool | edits ok | timeouts | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, l) in [("cairn", &cairn), ("Syncthing", &st)] {
        println!(
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            l.ok, l.timeouts, l.p[0], l.p[1], l.p[2], l.p[3]
        );
    }
    println!(
        "| ratio cairn ÷ Syncthing | | | {} | {} | {} | |\n",
        ratio(cairn.p[0], st.p[0]),
        ratio(cairn.p[1], st.p[1]),
        ratio(cairn.p[2], st.p[2])
    );
    Ok(())
}

/// Runs `cairn-bench latency` and reads its table row
/// (`| ok | timeouts | min | p50 | p90 | p99 | max | mean |`).
fn cairn_latency(edits: usize, seed: u64) -> Result<Lat> {
    let out = Command::new(bin("cairn-bench"))
        .args([
            "latency",
            "--edits",
            &edits.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .context("running cairn-bench latency")?;
    ensure!(
        out.status.success(),
        "cairn-bench latency failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with("|---:"))
        .nth(1)
        .with_context(|| format!("no table in cairn-bench's output: {text}"))?;
    let f: Vec<f64> = row
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(f64::NAN))
        .collect();
    ensure!(f.len() == 8, "unexpected cairn-bench row {row:?}");
    Ok(Lat {
        ok: f[0] as usize,
        timeouts: f[1] as usize,
        p: [f[3], f[4], f[5], f[6]],
    })
}

fn syncthing_latency(ctx: &Ctx, edits: usize) -> Result<Lat> {
    let root = ctx.dir("b5")?;
    let (fa, fb) = (root.join("a-folder"), root.join("b-folder"));
    fs::create_dir_all(&fa)?;
    fs::create_dir_all(&fb)?;
    let a = Identity::generate(&root.join("a-home"))?;
    let b = Identity::generate(&root.join("b-home"))?;
    let opts = FolderOpts {
        watcher: true,
        rescan_s: 86400,
    };
    syncthing::configure(&a, &[&b], &fa, &opts)?;
    syncthing::configure(&b, &[&a], &fb, &opts)?;
    let (sa, sb) = (Syncthing::start(&a)?, Syncthing::start(&b)?);
    sa.wait_connected(&b.id, Duration::from_secs(60))?;
    sb.wait_connected(&a.id, Duration::from_secs(60))?;
    sa.wait_idle(0, Duration::from_secs(60))?;
    sb.wait_idle(0, Duration::from_secs(60))?;
    // One untimed edit first: the index exchange and first pull happen outside the measurement.
    write_and_wait(
        &fa,
        &fb,
        "warmup.txt",
        b"warm up\n",
        Duration::from_secs(60),
    )?
    .context("the warm-up file never reached Syncthing B")?;

    // The same gaps as `cairn-bench latency --seed S` (its xorshift64* is `random_bytes`'s).
    let gaps = random_bytes(ctx.seed, edits * 8);
    let mut got = Vec::new();
    let mut timeouts = 0;
    for i in 0..edits {
        let r = u64::from_le_bytes(gaps[i * 8..i * 8 + 8].try_into()?);
        std::thread::sleep(Duration::from_secs_f64(
            0.2 + (r >> 11) as f64 / (1u64 << 53) as f64,
        ));
        let mut body = format!("edit {i} seed {}\n", ctx.seed).into_bytes();
        body.extend(
            random_bytes(ctx.seed ^ (i as u64 + 1), 300)
                .iter()
                .map(|b| b'a' + b % 26),
        );
        match write_and_wait(&fa, &fb, &format!("edit-{i:04}.txt"), &body, EDIT_TIMEOUT)? {
            Some(d) => got.push(d),
            None => {
                timeouts += 1;
                eprintln!("  edit {i}: not on Syncthing B after {EDIT_TIMEOUT:?}");
            }
        }
    }
    got.sort();
    Ok(summarize(&got, timeouts))
}

/// Writes and fsyncs `a/name`, then polls `b/name` every 1 ms until its bytes match.
fn write_and_wait(
    a: &Path,
    b: &Path,
    name: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Option<Duration>> {
    let mut f = fs::File::create(a.join(name))?;
    f.write_all(body)?;
    f.sync_all()?;
    let t0 = Instant::now();
    let target = b.join(name);
    while t0.elapsed() < timeout {
        if fs::read(&target).is_ok_and(|c| c == body) {
            return Ok(Some(t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

fn summarize(sorted: &[Duration], timeouts: usize) -> Lat {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |q: f64| {
        let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        ms(sorted[i])
    };
    if sorted.is_empty() {
        return Lat {
            ok: 0,
            timeouts,
            p: [f64::NAN; 4],
        };
    }
    Lat {
        ok: sorted.len(),
        timeouts,
        p: [pct(0.5), pct(0.9), pct(0.99), ms(sorted[sorted.len() - 1])],
    }
}
