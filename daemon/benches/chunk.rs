//! Chunk + hash throughput: `chunk_bytes` and `chunk_reader` against single-thread BLAKE3.
//!
//! `cargo bench -p cairn --bench chunk` (1 GiB); `-- --quick` or `CAIRN_BENCH_QUICK=1` uses 64 MiB.
//! Prints a markdown table; each row is the best of 3 runs over the same pseudo-random buffer.

use std::hint::black_box;
use std::io::Cursor;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::chunker::{ChunkParams, chunk_bytes, chunk_reader};

const RUNS: usize = 3;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("CAIRN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let size: usize = if quick { 64 << 20 } else { 1 << 30 };
    let params = ChunkParams::DEFAULT;

    print_machine_info();
    println!(
        "input: {} MiB pseudo-random (xorshift64*, seed 1), params {}/{}/{} KiB, best of {RUNS}\n",
        size >> 20,
        params.min >> 10,
        params.avg >> 10,
        params.max >> 10
    );
    let data = pseudo_random(size, 1);

    let blake3 = best_of(|| {
        black_box(blake3::hash(black_box(&data)));
    });
    let cdc = best_of(|| {
        let n = cairn::chunker::cdc(&data, params).count();
        black_box(n);
    });
    let bytes = best_of(|| {
        black_box(chunk_bytes(black_box(&data), params));
    });
    let reader = best_of(|| {
        black_box(
            chunk_reader(Cursor::new(black_box(&data[..])), params).expect("a Cursor cannot fail"),
        );
    });
    let b3sum = b3sum_one_thread(&data);

    let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;
    let base = gbps(blake3);
    println!("| what | GB/s | × single-thread BLAKE3 |");
    println!("|---|---:|---:|");
    let row =
        |name: &str, d: Duration| println!("| {name} | {:.2} | {:.2} |", gbps(d), gbps(d) / base);
    row("`blake3::hash`, one thread (a)", blake3);
    row("`chunk_bytes` (b)", bytes);
    row("`chunk_reader` over a `Cursor` (c)", reader);
    row("FastCDC v2020 boundaries alone (d)", cdc);
    if let Some(d) = b3sum {
        row("`b3sum --num-threads 1` on a temp file (reference)", d);
    }
    let n = chunk_bytes(&data, params).len();
    println!("\n{n} chunks, mean {} KiB", size / n.max(1) / 1024);
    edit_locality(if quick { 20 } else { 200 }, params);
}

/// A named edit of a file's bytes (the seed varies appended data).
type Edit = (&'static str, fn(&mut Vec<u8>, u64));

/// How many chunks an edit makes new, over `files` random 20 MiB files: the histogram behind
/// "a small edit uploads at most 2 chunks".
fn edit_locality(files: u64, params: ChunkParams) {
    use std::collections::HashSet;
    let edits: [Edit; 3] = [
        ("flip 1 byte in the middle", |d, _| d[10 << 20] ^= 0xff),
        ("insert 100 bytes in the middle", |d, _| {
            d.splice(10 << 20..10 << 20, [7u8; 100]);
        }),
        ("append 1 MiB", |d, seed| {
            d.extend_from_slice(&pseudo_random(1 << 20, seed ^ 0xa5))
        }),
    ];
    println!(
        "\nNew chunks per edit over {files} random 20 MiB files (share of files with 1 / 2 / 3 / 4+ new chunks):\n"
    );
    println!("| edit | 1 | 2 | 3 | 4+ | ≤ 2 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, edit) in edits {
        let mut hist = [0u64; 5];
        for seed in 1..=files {
            let mut data = pseudo_random(20 << 20, seed * 7919);
            let old: HashSet<_> = chunk_bytes(&data, params)
                .into_iter()
                .map(|c| c.id)
                .collect();
            edit(&mut data, seed);
            let new = chunk_bytes(&data, params)
                .into_iter()
                .filter(|c| !old.contains(&c.id))
                .count();
            hist[new.min(4)] += 1;
        }
        let pct = |n: u64| format!("{:.1}%", 100.0 * n as f64 / files as f64);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            pct(hist[1]),
            pct(hist[2]),
            pct(hist[3]),
            pct(hist[4]),
            pct(hist[0] + hist[1] + hist[2])
        );
    }
}

/// Best wall time of `RUNS` calls.
fn best_of(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("RUNS > 0")
}

/// Deterministic bytes: xorshift64* from `seed`.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `b3sum --num-threads 1` on a temp file holding `data` (page-cached after the first run), if installed.
fn b3sum_one_thread(data: &[u8]) -> Option<Duration> {
    Command::new("b3sum").arg("--version").output().ok()?;
    let path = std::env::temp_dir().join(format!("cairn-chunk-bench-{}", std::process::id()));
    std::fs::write(&path, data).ok()?;
    let best = best_of_cmd(&path);
    let _ = std::fs::remove_file(&path);
    best
}

fn best_of_cmd(path: &std::path::Path) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let ok = Command::new("b3sum")
            .args(["--num-threads", "1"])
            .arg(path)
            .output()
            .ok()?
            .status
            .success();
        let d = t.elapsed();
        if !ok {
            return None;
        }
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    best
}

fn print_machine_info() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    #[cfg(target_arch = "x86_64")]
    let simd = format!(
        ", avx2={} avx512f={}",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    #[cfg(not(target_arch = "x86_64"))]
    let simd = String::new();
    println!("machine: {cores} cores, {cpu}{simd}; date: {date}");
}
