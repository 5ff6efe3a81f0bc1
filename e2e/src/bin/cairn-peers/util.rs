//! What every row shares: the run's context, timing a command (wall time and peak RSS), generated
//! corpora, content comparison of two trees, and the rclone / restic / cairn commands.

use anyhow::{Context, Result, bail, ensure};
use cairn_e2e::tree::random_bytes;
use cairn_e2e::{Backend, CairnServer, Device, Garage, wait_for};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The run: quick or full, the seed, a work directory removed on drop, Garage when a row needs it.
pub struct Ctx {
    pub quick: bool,
    pub seed: u64,
    pub work: tempfile::TempDir,
}

impl Ctx {
    pub fn new(quick: bool, seed: u64) -> Result<Self> {
        let work = tempfile::Builder::new().prefix("cairn-peers-").tempdir()?;
        eprintln!(
            "work dir: {} (removed at exit); seed {seed}",
            work.path().display()
        );
        Ok(Self { quick, seed, work })
    }

    /// A fresh directory under the work dir.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.path().join(name);
        if d.exists() {
            fs::remove_dir_all(&d)?;
        }
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The Garage scripts/bench-peers.sh started (`CAIRN_E2E_GARAGE`), else a private node.
    pub fn garage(&self) -> Result<Garage> {
        Garage::shared_or_start()
    }
}

/// Prints what the run is: command, machine, date, load, peer versions.
pub fn header(ctx: &Ctx, rows: &[String]) -> Result<()> {
    let cmd: Vec<String> = std::env::args().collect();
    let cpu = fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## cairn-peers {} ({})\n",
        rows.join(" "),
        if ctx.quick {
            "quick mode: the numbers mean nothing"
        } else {
            "full mode"
        }
    );
    println!("- command: `{}`", cmd.join(" "));
    println!(
        "- machine: {nproc} CPUs, {cpu}, {:.1} GiB RAM",
        mem_kib as f64 / 1048576.0
    );
    println!("- date: {} (UTC)", now_utc());
    println!("- load average at start: {}", load_avg());
    println!("- seed: {}", ctx.seed);
    println!("- peers: {}", versions().join("; "));
    println!();
    Ok(())
}

pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The first three fields of /proc/loadavg.
pub fn load_avg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn versions() -> Vec<String> {
    let tools: [(&str, &[&str]); 7] = [
        ("b3sum", &["--version"]),
        ("casync", &["--version"]),
        ("rclone", &["version"]),
        ("restic", &["version"]),
        ("syncthing", &["--version"]),
        ("garage", &["--version"]),
        ("/usr/bin/time", &["--version"]),
    ];
    tools
        .iter()
        .map(|(t, a)| {
            Command::new(t)
                .args(*a)
                .output()
                .ok()
                .map(|o| {
                    let text = [o.stdout, o.stderr].concat();
                    String::from_utf8_lossy(&text)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| format!("{t}: missing"))
        })
        .collect()
}

/// One timed command: wall seconds (measured here), peak RSS (GNU time), its output.
pub struct Run {
    pub secs: f64,
    pub rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` under `/usr/bin/time` (for the peak RSS), fails with its stderr when it fails.
pub fn measure(cmd: &Command) -> Result<Run> {
    let out_file = tempfile::NamedTempFile::new()?;
    let mut t = Command::new("/usr/bin/time");
    t.args(["-f", "%M", "-o"])
        .arg(out_file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    let start = Instant::now();
    let out = t
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let secs = start.elapsed().as_secs_f64();
    ok(&out, cmd)?;
    let rss_kib = fs::read_to_string(out_file.path())?
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok(Run {
        secs,
        rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` untimed; fails with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    ok(&out, cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ok(out: &Output, cmd: &Command) -> Result<()> {
    if !out.status.success() {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        bail!(
            "{} {} failed ({}): {}",
            cmd.get_program().to_string_lossy(),
            args.join(" "),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(())
}

/// The last 2000 bytes of a command's output (on a character boundary).
pub fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(2000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Writes `count` files of `size` seeded random bytes into `dir` (100 per subdirectory when many).
pub fn write_corpus(dir: &Path, count: usize, size: usize, seed: u64) -> Result<()> {
    for i in 0..count {
        let sub = if count > 1000 {
            dir.join(format!("d{:03}", i / 1000))
        } else {
            dir.to_owned()
        };
        if i % 1000 == 0 {
            fs::create_dir_all(&sub)?;
        }
        write_random(
            &sub.join(format!("f{i:05}.bin")),
            size as u64,
            mix(seed, i as u64),
        )?;
    }
    sync()
}

/// A seed for part `i` of something seeded with `seed` (SplitMix64). `random_bytes` ignores bit 0
/// of its seed, so `seed ^ i` or `seed + i` would repeat content between neighbours.
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A file of `len` seeded random bytes, written 16 MiB at a time.
pub fn write_random(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut left = len;
    let mut piece = 0u64;
    while left > 0 {
        let n = left.min(16 << 20);
        f.write_all(&random_bytes(mix(seed, piece), n as usize))?;
        left -= n;
        piece += 1;
    }
    f.flush()?;
    Ok(())
}

/// Flushes the page cache's dirty pages, so that writing back a fresh corpus does not land inside
/// a measurement.
pub fn sync() -> Result<()> {
    run(&mut Command::new("sync")).map(drop)
}

/// [`sync`], then empties the page cache where the harness may (as root): every tool's pull
/// then starts from the same state, with nothing dirty still being written back (the pushes
/// before the first pull left a GiB or more of it) and Garage reading its blocks from disk.
pub fn settle_cold() -> Result<()> {
    sync()?;
    // Not root (or no /proc): the pulls run warm, all alike.
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    Ok(())
}

/// Relative path → (size, BLAKE3) of every file under `root`, skipping the tools' own markers.
pub fn contents(root: &Path) -> Result<BTreeMap<String, (u64, blake3::Hash)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if matches!(name.as_ref(), ".cairn" | ".stfolder" | ".stversions") {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
                let bytes = fs::read(e.path())?;
                let len = bytes.len() as u64;
                out.insert(rel, (len, blake3::hash(&bytes)));
            }
        }
    }
    Ok(out)
}

/// Fails unless `got` holds exactly the files of `want` with the same bytes.
pub fn check_same(want: &Path, got: &Path, who: &str) -> Result<()> {
    let (a, b) = (contents(want)?, contents(got)?);
    if a != b {
        let missing = a.keys().filter(|k| !b.contains_key(*k)).count();
        let extra = b.keys().filter(|k| !a.contains_key(*k)).count();
        let differ = a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
            .count();
        bail!(
            "{who}: {} differs from {}: {missing} missing, {extra} extra, {differ} with other bytes",
            got.display(),
            want.display()
        );
    }
    Ok(())
}

/// rclone against the Garage as remote `G:` (config by environment; AWS_CA_BUNDLE unset, which
/// rclone's S3 backend refuses at start).
pub fn rclone(g: &Garage) -> Command {
    let mut c = Command::new("rclone");
    c.env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_G_TYPE", "s3")
        .env("RCLONE_CONFIG_G_PROVIDER", "Other")
        .env("RCLONE_CONFIG_G_ACCESS_KEY_ID", &g.key_id)
        .env("RCLONE_CONFIG_G_SECRET_ACCESS_KEY", &g.secret)
        .env("RCLONE_CONFIG_G_ENDPOINT", g.endpoint())
        .env("RCLONE_CONFIG_G_REGION", "garage")
        .env("RCLONE_CONFIG_G_FORCE_PATH_STYLE", "true");
    c
}

/// restic on an s3 repository in `bucket` of the Garage, its cache in `cache`.
pub fn restic(g: &Garage, bucket: &str, cache: &Path) -> Command {
    let mut c = Command::new("restic");
    c.env_remove("AWS_CA_BUNDLE")
        .env("RESTIC_REPOSITORY", format!("s3:{}/{bucket}", g.endpoint()))
        .env("RESTIC_PASSWORD", "cairn-peers-bench")
        .env("AWS_ACCESS_KEY_ID", &g.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &g.secret)
        .env("RESTIC_CACHE_DIR", cache)
        .args(["-o", "s3.region=garage"]);
    c
}

/// A cairn-server on a fresh bucket of the shared Garage (or on a local dir) with namespace
/// `bench` and one device for it.
pub struct CairnSide {
    pub server: CairnServer,
}

impl CairnSide {
    pub fn start(backend: Backend) -> Result<Self> {
        let server = CairnServer::start(backend)?;
        // `serve` prints its address before it migrates its database: poll the first admin call.
        wait_for(
            "cairn-server to create a namespace",
            Duration::from_secs(30),
            || server.create_namespace("bench").ok(),
        )?;
        Ok(Self { server })
    }

    pub fn device(&self, name: &str) -> Result<Device> {
        self.server.device("bench", name)
    }
}

/// `cairn --json push DIR` or `pull DIR` as one device, timed; returns the run and its summary.
pub fn cairn(dev: &Device, verb: &str, dir: &Path) -> Result<(Run, serde_json::Value)> {
    let mut c = dev.cmd();
    c.args(["--json", verb])
        .arg(dir)
        .args(["--namespace", "bench"]);
    let r = measure(&c)?;
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .with_context(|| format!("cairn {verb} printed {:?}", r.stdout))?;
    Ok((r, v))
}

pub fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1048576.0)
}

/// "a / b" to two decimals, or – when b is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

pub fn ensure_tool(name: &str) -> Result<()> {
    ensure!(
        Command::new(name).arg("--help").output().is_ok(),
        "{name} is not installed: run scripts/bench-peers.sh (it installs the peers) or \
         `apt-get install -y rclone restic syncthing casync b3sum time`"
    );
    Ok(())
}
