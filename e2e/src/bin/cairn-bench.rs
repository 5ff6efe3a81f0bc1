//! `cairn-bench`: the live-sync measurements of issue 3 (propagation latency, burst settle time,
//! idle daemon cost) against the real `cairn-server` and `cairn daemon` binaries on 127.0.0.1.
//! Prints markdown tables to stdout; progress goes to stderr. Every loop is bounded in count and
//! time.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/cairn-bench latency [--edits 200] [--seed S] [--backend local|garage]
//! target/release/cairn-bench burst [--files 1000] [--seed S] [--backend local|garage]
//! target/release/cairn-bench idle [--files 100000] [--window 60] [--setup-timeout 1500]
//! ```
//!
//! The helpers in `cairn_e2e` find binaries from a test executable in `target/<profile>/deps/`;
//! a bench binary lives in `target/<profile>/`, so this file spawns the server and daemons itself
//! (reusing only `Garage`, `wait_for` and the tree helpers).

use anyhow::{Context, Result, bail, ensure};
use cairn_e2e::tree::random_bytes;
use cairn_e2e::{Garage, wait_for};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!(
            "usage: cairn-bench latency|burst|idle [--edits N] [--files N] [--seed S] [--backend local|garage] [--window SECS]"
        );
    };
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "latency" => latency(&opts),
        "burst" => burst(&opts),
        "idle" => idle(&opts),
        other => bail!("unknown benchmark {other:?}: expected latency, burst or idle"),
    }
}

/// `--key value` options, parsed once.
struct Opts {
    values: HashMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .with_context(|| format!("expected --option, got {k:?}"))?;
            let v = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            values.insert(key.to_owned(), v.clone());
        }
        Ok(Self { values })
    }

    fn num(&self, key: &str, default: u64) -> Result<u64> {
        self.values.get(key).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("--{key} {v:?} is not a number"))
        })
    }

    fn seed(&self) -> Result<u64> {
        let default = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        self.num("seed", default)
    }

    fn backend(&self) -> Result<Backend> {
        match self.values.get("backend").map(String::as_str) {
            None | Some("local") => Ok(Backend::Local),
            Some("garage") => Ok(Backend::Garage),
            Some(o) => bail!("--backend {o:?}: expected local or garage"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Garage,
}

/// The directory holding `cairn` and `cairn-server` (next to this binary, or one up from `deps/`).
fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("the bench binary has a parent directory")?
        .to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let p = dir.join(name);
    ensure!(
        p.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        p.display()
    );
    Ok(p)
}

/// A running `cairn-server serve` on a fresh database, killed on drop.
struct Server {
    child: Child,
    url: String,
    db: PathBuf,
    _garage: Option<Garage>,
}

impl Server {
    fn start(work: &Path, backend: Backend) -> Result<Self> {
        let db = work.join("server.db");
        let (store, garage, envs) = match backend {
            Backend::Local => (
                format!("local:{}", work.join("blobs").display()),
                None,
                vec![],
            ),
            Backend::Garage => {
                let g = Garage::shared_or_start()?;
                let bucket = g.create_bucket()?;
                let store = format!("s3://{bucket}?endpoint={}&region=garage", g.endpoint());
                let envs = vec![
                    ("AWS_ACCESS_KEY_ID", g.key_id.clone()),
                    ("AWS_SECRET_ACCESS_KEY", g.secret.clone()),
                ];
                (store, Some(g), envs)
            }
        };
        let mut child = Command::new(bin("cairn-server")?)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(["--store", &store])
            .envs(envs)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(work.join("server.log"))?)
            .spawn()
            .context("spawning cairn-server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout was piped")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("cairn-server printed {line:?}"))?;
        let s = Self {
            url: format!("http://{addr}"),
            child,
            db,
            _garage: garage,
        };
        // `serve` prints its address before migrating its database: poll the first admin call.
        wait_for(
            "the namespace to be created",
            Duration::from_secs(20),
            || s.admin(&["namespace", "create", "bench"]).ok(),
        )?;
        Ok(s)
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("cairn-server")?)
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .output()?;
        ensure!(
            out.status.success(),
            "cairn-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One device: its home, its synced folder, its token.
struct Dev {
    name: String,
    home: PathBuf,
    folder: PathBuf,
    url: String,
    token: String,
    log: PathBuf,
}

impl Dev {
    fn new(server: &Server, work: &Path, name: &str) -> Result<Self> {
        let token = server.admin(&["token", "create", "--namespace", "bench", "--device", name])?;
        let (home, folder) = (
            work.join(format!("{name}-home")),
            work.join(format!("{name}-folder")),
        );
        fs::create_dir_all(&home)?;
        fs::create_dir_all(&folder)?;
        let folder = folder.canonicalize()?;
        let d = Self {
            name: name.to_owned(),
            home,
            folder,
            url: server.url.clone(),
            token,
            log: work.join(format!("{name}-daemon.log")),
        };
        let out = d
            .cmd()?
            .arg("add")
            .arg(&d.folder)
            .args(["--namespace", "bench"])
            .output()?;
        ensure!(
            out.status.success(),
            "cairn add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(d)
    }

    fn cmd(&self) -> Result<Command> {
        let mut c = Command::new(bin("cairn")?);
        c.arg("--server")
            .arg(&self.url)
            .arg("--home")
            .arg(&self.home);
        c.env("CAIRN_TOKEN", &self.token)
            .env_remove("CAIRN_SERVER")
            .env_remove("CAIRN_HOME");
        Ok(c)
    }

    /// `cairn --json daemon` with its default settings (full safety scan every 600 s).
    fn daemon(&self) -> Result<Daemon> {
        let mut child = self
            .cmd()?
            .args(["--json", "daemon"])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&self.log)?)
            .spawn()
            .context("spawning cairn daemon")?;
        let stdout = child.stdout.take().context("stdout was piped")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    // Poisoned only if the main thread panicked while holding it; then we are dying anyway.
                    sink.lock().expect("events lock").push((Instant::now(), v));
                }
            }
        });
        Ok(Daemon {
            child,
            events,
            name: self.name.clone(),
        })
    }
}

/// A running daemon, its events stamped on arrival, SIGKILLed on drop (a bench does not care
/// about a clean stop).
struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    name: String,
}

impl Daemon {
    fn len(&self) -> usize {
        self.events.lock().expect("events lock").len()
    }

    fn since(&self, from: usize) -> Vec<(Instant, serde_json::Value)> {
        self.events
            .lock()
            .expect("events lock")
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Waits for an `idle` event at index ≥ `from`; returns when it arrived.
    fn wait_idle(&self, from: usize, timeout: Duration) -> Result<Instant> {
        let what = format!("daemon {} to report idle", self.name);
        wait_for(&what, timeout, || {
            self.since(from)
                .into_iter()
                .find(|(_, e)| e["event"] == "idle")
                .map(|(t, _)| t)
        })
    }

    /// Waits until no event arrived for `quiet` (at most `timeout`).
    fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let (mut n, mut since) = (self.len(), Instant::now());
        while since.elapsed() < quiet {
            ensure!(
                start.elapsed() < timeout,
                "daemon {} never went quiet for {quiet:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
            if self.len() != n {
                (n, since) = (self.len(), Instant::now());
            }
        }
        Ok(())
    }

    /// Counts `round` events from `from` on, and the ops they carried.
    fn rounds_since(&self, from: usize) -> (usize, u64) {
        let r: Vec<_> = self
            .since(from)
            .into_iter()
            .filter(|(_, e)| e["event"] == "round")
            .collect();
        (
            r.len(),
            r.iter().map(|(_, e)| e["ops"].as_u64().unwrap_or(0)).sum(),
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic gaps from the seed (xorshift64*), so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes and fsyncs a file (parents must exist).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn work_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
    eprintln!(
        "work dir (server and daemon logs): {}",
        dir.path().display()
    );
    Ok(dir)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Server plus two idle daemons A and B on the same namespace.
fn pair(work: &Path, backend: Backend) -> Result<(Server, Dev, Dev, Daemon, Daemon)> {
    let server = Server::start(work, backend)?;
    let (a, b) = (Dev::new(&server, work, "a")?, Dev::new(&server, work, "b")?);
    let (da, db) = (a.daemon()?, b.daemon()?);
    da.wait_idle(0, Duration::from_secs(60))?;
    db.wait_idle(0, Duration::from_secs(60))?;
    da.wait_quiet(Duration::from_secs(1), Duration::from_secs(30))?;
    db.wait_quiet(Duration::from_secs(1), Duration::from_secs(30))?;
    Ok((server, a, b, da, db))
}

const EDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Save on A → verified file on B, `--edits` times at seeded random gaps of 0.2–1.2 s.
fn latency(o: &Opts) -> Result<()> {
    let (n, seed, backend) = (o.num("edits", 200)?, o.seed()?, o.backend()?);
    eprintln!("latency: {n} edits, seed {seed}, backend {backend:?}");
    let work = work_dir()?;
    let (_server, a, b, da, db) = pair(work.path(), backend)?;
    let (ea, eb) = (da.len(), db.len());
    let mut rng = Rng(seed | 1);
    let mut got = Vec::new();
    let mut timeouts = 0;
    let started = Instant::now();
    for i in 0..n {
        std::thread::sleep(Duration::from_secs_f64(0.2 + rng.next_f64()));
        let name = format!("edit-{i:04}.txt");
        let mut body = format!("edit {i} seed {seed}\n").into_bytes();
        body.extend(
            random_bytes(seed ^ (i + 1), 300)
                .iter()
                .map(|b| b'a' + b % 26),
        );
        write_synced(&a.folder.join(&name), &body)?;
        let t0 = Instant::now();
        let target = b.folder.join(&name);
        loop {
            if fs::read(&target).is_ok_and(|c| c == body) {
                got.push(t0.elapsed());
                break;
            }
            if t0.elapsed() > EDIT_TIMEOUT {
                timeouts += 1;
                eprintln!("edit {i}: not on B after {EDIT_TIMEOUT:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if (i + 1) % 25 == 0 {
            eprintln!("  {}/{n} edits", i + 1);
        }
    }
    let wall = started.elapsed();
    let (ra, opsa) = da.rounds_since(ea);
    let (rb, opsb) = db.rounds_since(eb);
    got.sort();
    println!("### latency: save on A → verified on B ({backend:?} backend)\n");
    println!(
        "edits: {n}, seed: {seed}, gap: 0.2–1.2 s uniform, poll: 1 ms, per-edit timeout: {EDIT_TIMEOUT:?}, wall: {:.0} s\n",
        wall.as_secs_f64()
    );
    println!("| edits ok | timeouts | min ms | p50 ms | p90 ms | p99 ms | max ms | mean ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    if got.is_empty() {
        println!("| 0 | {timeouts} | – | – | – | – | – | – |");
    } else {
        let mean = got.iter().sum::<Duration>() / got.len() as u32;
        println!(
            "| {} | {timeouts} | {} | {} | {} | {} | {} | {} |",
            got.len(),
            ms(got[0]),
            ms(pct(&got, 0.5)),
            ms(pct(&got, 0.9)),
            ms(pct(&got, 0.99)),
            ms(got[got.len() - 1]),
            ms(mean)
        );
    }
    println!("\nrounds with work during the run: A {ra} ({opsa} ops), B {rb} ({opsb} ops)\n");
    if !got.is_empty() {
        let (p50, p99) = (pct(&got, 0.5), pct(&got, 0.99));
        let ok =
            p50 <= Duration::from_millis(300) && p99 <= Duration::from_secs(1) && timeouts == 0;
        println!(
            "goal p50 ≤ 300 ms, p99 ≤ 1 s: **{}**\n",
            if ok { "met" } else { "not met" }
        );
    }
    Ok(())
}

/// `--files` 4 KiB files written on A in one burst; time until B holds all of them.
fn burst(o: &Opts) -> Result<()> {
    let (n, seed, backend) = (o.num("files", 1000)?, o.seed()?, o.backend()?);
    let timeout = Duration::from_secs(o.num("timeout", 300)?);
    eprintln!("burst: {n} files, seed {seed}, backend {backend:?}");
    let work = work_dir()?;
    let (_server, a, b, da, db) = pair(work.path(), backend)?;
    let (ea, eb) = (da.len(), db.len());
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("burst/f{i:05}.bin"),
                random_bytes(seed ^ (i + 1), 4096),
            )
        })
        .collect();
    let t0 = Instant::now();
    fs::create_dir_all(a.folder.join("burst"))?;
    for (p, c) in &files {
        fs::write(a.folder.join(p), c)?;
    }
    let written = t0.elapsed();
    let mut left: BTreeSet<usize> = (0..files.len()).collect();
    let mut polls = 0u64;
    while !left.is_empty() {
        ensure!(
            t0.elapsed() < timeout,
            "B still misses {} of {n} files after {timeout:?}",
            left.len()
        );
        left.retain(|&i| !fs::read(b.folder.join(&files[i].0)).is_ok_and(|c| c == files[i].1));
        polls += 1;
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let settle = t0.elapsed();
    // The daemons' own view: when each reported idle after the burst.
    let idle_a = da
        .wait_idle(ea, Duration::from_secs(60))
        .map(|t| t.duration_since(t0))
        .ok();
    let idle_b = db
        .wait_idle(eb, Duration::from_secs(60))
        .map(|t| t.duration_since(t0))
        .ok();
    da.wait_quiet(Duration::from_secs(2), Duration::from_secs(60))?;
    db.wait_quiet(Duration::from_secs(2), Duration::from_secs(60))?;
    let (ra, opsa) = da.rounds_since(ea);
    let (rb, opsb) = db.rounds_since(eb);
    let secs =
        |d: Option<Duration>| d.map_or("–".to_owned(), |d| format!("{:.2}", d.as_secs_f64()));
    println!("### burst: {n} × 4 KiB files created on A at once ({backend:?} backend)\n");
    println!("seed: {seed}; times from the first write; B polled every 10 ms ({polls} polls)\n");
    println!(
        "| files | written on A s | settle on B s | A first idle after s | B first idle after s | rounds A (ops) | rounds B (ops) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.2} | {:.2} | {} | {} | {ra} ({opsa}) | {rb} ({opsb}) |\n",
        written.as_secs_f64(),
        settle.as_secs_f64(),
        secs(idle_a),
        secs(idle_b)
    );
    Ok(())
}

/// One process's resident set (KiB) and CPU ticks (utime + stime).
fn proc_sample(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok((rss, ticks))
}

fn vm_hwm(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A daemon tracking `--files` small files: initial sync time, then RSS and CPU while idle.
fn idle(o: &Opts) -> Result<()> {
    let n = o.num("files", 100_000)?;
    let window = Duration::from_secs(o.num("window", 60)?);
    let setup_timeout = Duration::from_secs(o.num("setup-timeout", 1500)?);
    let seed = o.seed()?;
    eprintln!("idle: {n} files, seed {seed}");
    let work = work_dir()?;
    let server = Server::start(work.path(), o.backend()?)?;
    let a = Dev::new(&server, work.path(), "a")?;
    // 1000 files per directory; 64–576 bytes each, unique.
    let t0 = Instant::now();
    for i in 0..n {
        let dir = a.folder.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let len = 64 + (i as usize * 7919) % 512;
        fs::write(
            dir.join(format!("f{i:06}.txt")),
            random_bytes(seed ^ (i + 1), len),
        )?;
    }
    let create = t0.elapsed();
    eprintln!(
        "  created {n} files in {:.1} s; starting the daemon",
        create.as_secs_f64()
    );
    let t1 = Instant::now();
    let d = a.daemon()?;
    let mut peak_setup = 0;
    let synced = wait_for("the first full sync", setup_timeout, || {
        peak_setup = peak_setup.max(proc_sample(d.pid()).map_or(0, |s| s.0));
        d.since(0)
            .into_iter()
            .find(|(_, e)| e["event"] == "idle")
            .map(|(t, _)| t)
    });
    let synced = match synced {
        Ok(t) => t.duration_since(t1),
        Err(e) => bail!("{e}; the daemon's events: {}", d.since(0).len()),
    };
    let (rounds, ops) = d.rounds_since(0);
    eprintln!("  first sync in {:.1} s; settling", synced.as_secs_f64());
    d.wait_quiet(Duration::from_secs(3), Duration::from_secs(120))?;
    let events_before = d.len();
    let tck = clk_tck();
    let (rss0, cpu0) = proc_sample(d.pid())?;
    let (_, scpu0) = proc_sample(server.pid())?;
    let w0 = Instant::now();
    let mut rss_max = rss0;
    let mut rss_min = rss0;
    while w0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500));
        let (rss, _) = proc_sample(d.pid())?;
        rss_max = rss_max.max(rss);
        rss_min = rss_min.min(rss);
    }
    let elapsed = w0.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(d.pid())?;
    let (_, scpu1) = proc_sample(server.pid())?;
    let idle_events = d.len() - events_before;
    let cpu_pct = (cpu1 - cpu0) as f64 / tck / elapsed * 100.0;
    let server_pct = (scpu1 - scpu0) as f64 / tck / elapsed * 100.0;
    let hwm = vm_hwm(d.pid()).unwrap_or(0);

    // One small edit in the big folder: how long until the daemon is idle again.
    let before = d.len();
    let (_, c0) = proc_sample(d.pid())?;
    let te = Instant::now();
    write_synced(
        &a.folder.join("d000/one-edit.txt"),
        b"one edit in a big folder\n",
    )?;
    let edit = d
        .wait_idle(before, Duration::from_secs(300))
        .map(|t| t.duration_since(te));
    let (_, c1) = proc_sample(d.pid())?;

    println!("### idle: one daemon tracking {n} small files (64–576 B, 1000 per directory)\n");
    println!("| step | result |");
    println!("|---|---|");
    println!(
        "| create {n} files on disk | {:.1} s |",
        create.as_secs_f64()
    );
    println!(
        "| daemon start → first `idle` (initial upload) | {:.1} s ({rounds} rounds, {ops} ops) |",
        synced.as_secs_f64()
    );
    println!(
        "| RSS peak during the initial sync (sampled) | {:.1} MiB |",
        peak_setup as f64 / 1024.0
    );
    println!("| idle window | {elapsed:.0} s, {idle_events} daemon events |");
    println!(
        "| RSS while idle: start / min / max / end | {:.1} / {:.1} / {:.1} / {:.1} MiB |",
        mb(rss0),
        mb(rss_min),
        mb(rss_max),
        mb(rss1)
    );
    println!("| VmHWM (lifetime peak) | {:.1} MiB |", mb(hwm));
    println!("| daemon CPU while idle (utime+stime) | {cpu_pct:.2} % of one core |");
    println!("| server CPU over the same window | {server_pct:.2} % of one core |");
    match edit {
        Ok(t) => println!(
            "| one 25-byte edit → `idle` again | {:.0} ms, {:.2} s CPU |",
            t.as_secs_f64() * 1000.0,
            (c1 - c0) as f64 / tck
        ),
        Err(e) => println!("| one 25-byte edit → `idle` again | {e} |"),
    }
    println!();
    Ok(())
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
