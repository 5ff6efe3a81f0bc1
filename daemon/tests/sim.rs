//! Engine simulation (issue 7, item 2): the daemon's real engine ([`FolderSync`] rounds, with its
//! scanner, planner, executors and state database) and a real in-process cairn-server, driven one
//! step at a time by a seeded scheduler that also plays the users, the network and the disk.
//!
//! - **Scheduler and clock.** No watcher, no timers: each step is one user operation, one round on
//!   one device, a snapshot, or a crash. Files get mtimes from a logical clock; retries skip their
//!   backoff. A step's outcome depends on the seed alone: the test runs seeds twice and compares
//!   the traces.
//! - **Faults** ([`cairn::faults`]): every gRPC call and presigned transfer may fail, or take effect
//!   and lose its answer; every download body may arrive with a flipped byte; every temp file,
//!   rename, mkdir, remove and fsync may fail with EIO. A decision is a hash of (seed, device,
//!   site, key, visit), so concurrency inside a round does not change which visit fails.
//! - **Crashes.** A crash at a site fails everything after it on that device, then the device's
//!   engine is dropped mid-round and opened again — sometimes from an older snapshot of its folder
//!   and state database (what a restored VM or a disk that lost its last writes leaves).
//!
//! Then the faults stop and every device syncs until a whole pass does nothing. What must hold:
//! the devices converge on one tree with no temp files left; every content a device had on disk
//! when an error-free round ran (the engine had its chance to take it) still exists, as a file on
//! some device or as a version on the server; and the same seed gives the same run.
//!
//! `CAIRN_SIM_SEEDS=N` runs seeds 0..N (default 40), `CAIRN_SIM_FROM=F` runs F..F+N instead,
//! `CAIRN_SIM_SEED=S` runs only seed S; the seed of a failure is printed. `CAIRN_SIM_VISITS=1`
//! prints every fault-site visit (device, site, stable key, visit number) to stderr, to find where
//! two runs of one seed part. See docs/RELIABILITY.md, "Engine simulation".

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn::config::Config;
use cairn::events::Events;
use cairn::faults::{self, Fault, Injector, Site};
use cairn::guard::Limits;
use cairn::state::{FolderId, State};
use cairn::sync::{FolderSync, Stop};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NS: &str = "sim";
const DEFAULT_SEEDS: u64 = 40;
const STEPS: usize = 60;
/// Per mille of site visits that fail (or lose their answer, or corrupt a download).
const FAIL_PM: u64 = 40;
/// Per mille of site visits where the device crashes (serial sites only).
const CRASH_PM: u64 = 6;
/// Per mille of downloaded files' fsyncs at which the user saves that file at the same moment.
const EDIT_PM: u64 = 60;
/// Names the users work with: few, so that their operations collide.
const DIRS: &[&str] = &["a", "b", "a/c"];
const FILES: &[&str] = &["x", "y", "a/x", "a/y", "a/c/z", "b/x", "b/y"];

/// One run's story: the scheduler's steps with their outcomes and the faults each drew.
type Trace = Vec<String>;

fn seeds() -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
        })
    };
    if let Some(s) = var("CAIRN_SIM_SEED") {
        return vec![s];
    }
    let from = var("CAIRN_SIM_FROM").unwrap_or(0);
    (from..from + var("CAIRN_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

// ---- the injector ----

#[derive(Default)]
struct InjState {
    on: bool,
    device: usize,
    crashed: bool,
    visits: HashMap<(usize, Site, String), u32>,
    /// Faults drawn since the scheduler last took them.
    drawn: Vec<String>,
    /// Files a user saved while a round ran (device, key, content id), for the scheduler to
    /// record.
    edits: Vec<(usize, String, [u8; 32])>,
}

struct Inj {
    seed: u64,
    /// The run's temp dir, cut from keys so that they read the same in every run.
    base: String,
    /// `CAIRN_SIM_VISITS`: print every visit.
    trace_visits: bool,
    st: Mutex<InjState>,
}

impl Inj {
    fn lock(&self) -> std::sync::MutexGuard<'_, InjState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Injector for Inj {
    fn at(&self, site: Site, key: &str) -> Option<Fault> {
        let mut st = self.lock();
        if !st.on {
            return None;
        }
        if st.crashed {
            return Some(Fault::Fail);
        }
        let stable_key = stable(&key.replace(&self.base, ""));
        let device = st.device;
        let visit = st
            .visits
            .entry((device, site, stable_key.clone()))
            .or_default();
        *visit += 1;
        if self.trace_visits {
            eprintln!("visit {:p} {device} {site:?} {stable_key} {visit}", self);
        }
        let h = blake3::hash(
            format!("{}/{device}/{site:?}/{stable_key}/{visit}", self.seed).as_bytes(),
        );
        let h = h.as_bytes();
        let roll = u64::from_le_bytes(h[..8].try_into().unwrap()) % 1000;
        // Crashes only where the engine does one thing at a time (the calls before and after
        // transfers, renames, removes): a crash amid parallel work (PUTs beside ConfirmUpload,
        // GETs, temp files) would cut it at a point the OS scheduler picks, not the seed.
        let serial = match site {
            Site::Rpc => !matches!(stable_key.as_str(), "ConfirmUpload" | "PrepareUpload"),
            Site::Rename | Site::Remove | Site::Mkdir => true,
            _ => false,
        };
        // Temp files are keyed by their folder, which several parallel downloads share: which
        // of them would fail is the OS scheduler's choice. Later sites of the same write path
        // (the file's fsync, its rename) fail instead.
        if site == Site::CreateTemp {
            return None;
        }
        let key = stable_key;
        let fault = if roll < CRASH_PM && serial {
            st.crashed = true;
            st.drawn.push(format!("crash at {site:?} {key}"));
            return Some(Fault::Fail);
        } else if (CRASH_PM..CRASH_PM + FAIL_PM).contains(&roll) {
            match (site, h[8] % 3) {
                (Site::Rpc | Site::Put, 0) => Fault::LoseReply,
                (Site::Get, 0 | 1) => Fault::Corrupt,
                _ => Fault::Fail,
            }
        } else if (CRASH_PM + FAIL_PM..CRASH_PM + FAIL_PM + EDIT_PM).contains(&roll)
            && site == Site::Fsync
        {
            // The user saves the file a download is about to replace (the engine fsyncs its
            // temp file, then must notice the change before it renames).
            let path = Path::new(key.as_str());
            let disk = Path::new(&self.base).join(path.strip_prefix("/").unwrap_or(path));
            if !disk.is_dir() && disk.parent().is_some_and(Path::is_dir) {
                let mut bytes = vec![0u8; 64 + usize::from(h[9])];
                let mut xof = blake3::Hasher::new();
                xof.update(h);
                xof.finalize_xof().fill(&mut bytes);
                bytes.extend_from_slice(format!("#{} edit at {key}", self.seed).as_bytes());
                std::fs::write(&disk, &bytes).unwrap();
                let t = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(1_500_000_000 + u64::from(*visit));
                std::fs::File::options()
                    .write(true)
                    .open(&disk)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
                st.drawn.push(format!("user edit of {key} at {site:?}"));
                st.edits.push((device, key.clone(), content_id(&bytes)));
            }
            return None;
        } else {
            return None;
        };
        st.drawn.push(format!("{fault:?} at {site:?} {key}"));
        Some(fault)
    }
}

/// `key` without the parts that differ from run to run: the random parts of stored objects' names
/// (`objects/HASH-RANDOM`, `staging/RANDOM`).
fn stable(key: &str) -> String {
    let b = key.as_bytes();
    let mut out = String::with_capacity(key.len());
    let mut i = 0;
    while i < b.len() {
        let random = b[i] == b'-'
            && b.len() >= i + 17
            && b[i + 1..i + 17].iter().all(u8::is_ascii_hexdigit)
            && b.get(i + 17).is_none_or(|c| *c == b' ' || *c == b'/');
        let upload = (i == 0 || b[i - 1] == b'/')
            && b.len() >= i + 32
            && b[i..i + 32].iter().all(u8::is_ascii_hexdigit)
            && b.get(i + 32).is_none_or(|c| *c == b' ' || *c == b'/');
        if upload {
            // A staging upload's random id: one name for all (visits still count them apart).
            out.push('*');
            i += 32;
        } else if random {
            i += 17;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    // A conflict copy's name stays whole: its time is the step's, pinned
    // (`cairn_server::clock::pin_names`). Cut, two copies of one path made at different steps
    // shared a key, and which of their parallel downloads drew which visit was the OS
    // scheduler's choice (seed 686 ran differently one time in three).
    out
}

// ---- server and devices ----

/// A snapshot of one device: its folder and its state database at one step.
struct Snap {
    step: usize,
    dir: PathBuf,
    db: PathBuf,
    /// What the users had written there (path → content), as of the snapshot.
    user: BTreeMap<String, usize>,
}

struct Dev {
    name: String,
    cfg: Config,
    root: PathBuf,
    folder: FolderId,
    sync: Option<FolderSync>,
    snap: Option<Snap>,
    /// Path → the content (index into `Sim::written`) a user of this device put there last.
    user: BTreeMap<String, usize>,
}

/// One content a user wrote.
struct Written {
    device: usize,
    step: usize,
    path: String,
    /// The content id the server records for these bytes.
    content_id: [u8; 32],
    /// A round ran without errors while it was on disk: it must never be lost. (Files a user
    /// saves while a round runs are checked at the end of that round instead.)
    owed: bool,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    base: PathBuf,
    url: String,
    server_db: PathBuf,
    inj: Arc<Inj>,
    devices: Vec<Dev>,
    written: Vec<Written>,
    trace: Trace,
    /// The first loss seen while the run went on (checked at the end with the rest).
    lost: Option<String>,
    /// The logical clock: seconds after 2020-01-01 (every write gets a later mtime).
    clock: u64,
    step: usize,
}

fn events() -> Events {
    // CAIRN_SIM_DEBUG: the engine's own events (each op, each error) on stderr as well.
    Events {
        json: false,
        quiet: std::env::var_os("CAIRN_SIM_DEBUG").is_none(),
    }
}

fn content_id(bytes: &[u8]) -> [u8; 32] {
    let chunks = cairn::chunker::chunk_bytes(bytes, cairn::chunker::ChunkParams::default());
    let ids: Vec<_> = chunks.iter().map(|c| (c.id, u64::from(c.length))).collect();
    cairn_proto::content_id_of(ids.iter().map(|(id, len)| (id, *len))).0
}

impl Sim {
    async fn new(seed: u64, base: &Path, srv: &common::Server) -> Sim {
        let inj = Arc::new(Inj {
            seed,
            base: base.to_string_lossy().into_owned(),
            trace_visits: std::env::var_os("CAIRN_SIM_VISITS").is_some(),
            st: Mutex::new(InjState::default()),
        });
        faults::install(inj.clone());
        let mut rng = StdRng::seed_from_u64(seed);
        let n = if rng.random_bool(0.3) { 3 } else { 2 };
        let mut devices = Vec::new();
        for i in 0..n {
            let name = format!("d{i}");
            let mut cfg = srv.device(base, NS, &name);
            // The guard's holds and its one-second settle are timers and questions to a user,
            // not sync: off here (tests in guard.rs and held.rs cover them).
            cfg.delete_guard = Limits {
                max_percent: 100,
                max_files: u64::MAX,
                percent_floor: 0,
            };
            let dir = base.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let root = cairn::live::add(&cfg, &dir, NS).unwrap();
            let folder = State::open(&cfg.dirs.state_db())
                .unwrap()
                .add_live(&root, NS, &cfg.server)
                .unwrap();
            devices.push(Dev {
                name,
                cfg,
                root,
                folder,
                sync: None,
                snap: None,
                user: BTreeMap::new(),
            });
        }
        let mut sim = Sim {
            seed,
            rng,
            base: base.to_owned(),
            url: srv.url.clone(),
            server_db: srv.db.clone(),
            inj,
            devices,
            written: Vec::new(),
            trace: Vec::new(),
            lost: None,
            clock: 0,
            step: 0,
        };
        for d in 0..n {
            sim.snapshot(d);
        }
        sim
    }

    /// Adds a line to the trace (with the run's temp dir and server address cut out).
    fn note(&mut self, line: String) {
        let line = line
            .replace(&self.base.to_string_lossy().into_owned(), "")
            .replace(&self.url, "SERVER");
        self.trace.push(format!("{:>3} {line}", self.step));
    }

    // ---- users ----

    /// Writes fresh bytes at `path` on device `d` (parents created; a file in the way of a parent
    /// makes the operation a no-op, as it would fail for a user).
    fn write(&mut self, d: usize, path: &str, append: bool) -> bool {
        let root = self.devices[d].root.clone();
        let disk = root.join(path);
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
            && std::fs::create_dir_all(root.join(parent)).is_err()
        {
            return false;
        }
        if disk.is_dir() {
            return false;
        }
        let len = if self.rng.random_bool(0.1) {
            self.rng.random_range(4096..48 * 1024)
        } else {
            self.rng.random_range(0..600)
        };
        let mut bytes = if append {
            std::fs::read(&disk).unwrap_or_default()
        } else {
            Vec::new()
        };
        let start = bytes.len();
        bytes.resize(start + len, 0);
        self.rng.fill(&mut bytes[start..]);
        // Tag the bytes so that no two writes are ever the same content.
        bytes.extend_from_slice(format!("#{}.{}", self.seed, self.written.len()).as_bytes());
        std::fs::write(&disk, &bytes).unwrap();
        self.tick(&disk);
        self.written.push(Written {
            device: d,
            step: self.step,
            path: path.to_owned(),
            content_id: content_id(&bytes),
            owed: false,
        });
        let idx = self.written.len() - 1;
        self.devices[d].user.insert(path.to_owned(), idx);
        true
    }

    fn tick(&mut self, disk: &Path) {
        self.clock += 1 + self.rng.random_range(0..3);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800 + self.clock);
        let f = std::fs::File::options().write(true).open(disk).unwrap();
        f.set_modified(t).unwrap();
    }

    /// One user operation on device `d`; the paths it changed are reported as a watcher would.
    fn user_op(&mut self, d: usize) {
        let root = self.devices[d].root.clone();
        let pick =
            |rng: &mut StdRng, names: &[&str]| names[rng.random_range(0..names.len())].to_owned();
        let (what, touched): (String, Vec<String>) = match self.rng.random_range(0..10) {
            0..=3 => {
                let p = pick(&mut self.rng, FILES);
                let ok = self.write(d, &p, false);
                (
                    format!("write {p}{}", if ok { "" } else { " (blocked)" }),
                    vec![p],
                )
            }
            4 => {
                let p = pick(&mut self.rng, FILES);
                let ok = root.join(&p).is_file() && self.write(d, &p, true);
                (
                    format!("append {p}{}", if ok { "" } else { " (none)" }),
                    vec![p],
                )
            }
            5 | 6 => {
                let p = pick(&mut self.rng, FILES);
                let ok = root.join(&p).is_file() && std::fs::remove_file(root.join(&p)).is_ok();
                self.devices[d].user.remove(&p);
                (
                    format!("delete {p}{}", if ok { "" } else { " (none)" }),
                    vec![p],
                )
            }
            7 | 8 => {
                let (from, to) = (pick(&mut self.rng, FILES), pick(&mut self.rng, FILES));
                let ok = from != to
                    && root.join(&from).is_file()
                    && !root.join(&to).is_dir()
                    && root.join(&to).parent().is_some_and(Path::is_dir)
                    && std::fs::rename(root.join(&from), root.join(&to)).is_ok();
                if ok {
                    let user = &mut self.devices[d].user;
                    user.remove(&to);
                    if let Some(w) = user.remove(&from) {
                        user.insert(to.clone(), w);
                    }
                }
                (
                    format!("rename {from} -> {to}{}", if ok { "" } else { " (none)" }),
                    vec![from, to],
                )
            }
            _ => {
                let p = pick(&mut self.rng, DIRS);
                let ok = root.join(&p).is_dir() && std::fs::remove_dir_all(root.join(&p)).is_ok();
                let user = &mut self.devices[d].user;
                user.retain(|k, _| !k.starts_with(&format!("{p}/")));
                (
                    format!("rmdir {p}{}", if ok { "" } else { " (none)" }),
                    vec![p],
                )
            }
        };
        let name = self.devices[d].name.clone();
        self.note(format!("{name}: {what}"));
        if let Some(s) = self.devices[d].sync.as_mut() {
            // The watcher's report (an overflow, now and then, asks for a full scan instead).
            if self.rng.random_bool(0.1) {
                s.rescan();
            } else {
                s.touch(touched.into_iter().map(PathBuf::from));
            }
        }
    }

    // ---- engines ----

    fn set_faults(&self, d: usize, on: bool) {
        let mut st = self.inj.lock();
        st.on = on;
        st.device = d;
        st.crashed = false;
    }

    fn take_drawn(&self) -> (Vec<String>, bool) {
        let mut st = self.inj.lock();
        let mut drawn = std::mem::take(&mut st.drawn);
        drawn.sort();
        (drawn, st.crashed)
    }

    /// One round on device `d` (opening its engine first if it is down); returns whether it ran
    /// without errors, and its ops.
    async fn round(&mut self, d: usize, faulty: bool) -> (bool, usize) {
        self.set_faults(d, faulty);
        let name = self.devices[d].name.clone();
        if self.devices[d].sync.is_none() {
            let dev = &self.devices[d];
            match FolderSync::open(&dev.cfg, dev.folder, dev.root.clone(), NS.into(), events())
                .await
            {
                Ok(s) => self.devices[d].sync = Some(s),
                Err(e) => {
                    let (drawn, _) = self.take_drawn();
                    self.note(format!("{name}: open failed: {e} {drawn:?}"));
                    return (false, 0);
                }
            }
        }
        let before = tree(&self.devices[d].root);
        // What users left here before the round: what an error-free round must have taken.
        let seen: Vec<usize> = self.devices[d].user.values().copied().collect();
        if std::env::var_os("CAIRN_SIM_DEBUG").is_some() {
            eprintln!("--- step {} {name}: round", self.step);
        }
        let res = self.devices[d].sync.as_mut().unwrap().round().await;
        // The watcher's part: the daemon hears of the entries its own round changed on disk (a
        // conflict copy made beside a download, say) as events, like any other change.
        let after = tree(&self.devices[d].root);
        let changed: Vec<PathBuf> = before
            .keys()
            .chain(after.keys())
            .filter(|p| before.get(*p) != after.get(*p))
            .map(PathBuf::from)
            .collect();
        if let Some(s) = self.devices[d].sync.as_mut() {
            s.touch(changed);
        }
        let (drawn, crashed) = self.take_drawn();
        self.set_faults(d, false);
        let edits = std::mem::take(&mut self.inj.lock().edits);
        for (dev, key, content_id) in edits {
            let prefix = format!("/{}/", self.devices[dev].name);
            let path = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            // Saved by a user while the round ran: whatever the round did, the bytes must still be
            // there when it ends, at that path, as a conflict copy, or on the server.
            let kept = after.values().any(|c| *c == Some(content_id))
                || server_contents(&self.server_db).contains(&content_id);
            if !kept {
                self.lost.get_or_insert(format!(
                    "the round at step {} destroyed {path} on {}, which a user saved while it ran",
                    self.step, self.devices[dev].name
                ));
            }
            self.written.push(Written {
                device: dev,
                step: self.step,
                path: path.clone(),
                content_id,
                owed: false,
            });
            let idx = self.written.len() - 1;
            self.devices[dev].user.insert(path, idx);
        }
        let (clean, ops, what) = match &res {
            Ok(r) if r.errors.is_empty() => (true, r.ops, format!("{} ops", r.ops)),
            Ok(r) => (
                false,
                r.ops,
                format!("{} ops, {} errors", r.ops, r.errors.len()),
            ),
            Err(Stop::Paused(why)) => (false, 0, format!("paused: {why}")),
            Err(Stop::Failed(_)) => (false, 0, "failed".to_owned()),
        };
        self.note(format!("{name}: round: {what} {drawn:?}"));
        if std::env::var_os("CAIRN_SIM_DEBUG").is_some() {
            let t = show(&tree(&self.devices[d].root));
            self.note(format!("{name}: tree after the round: {t}"));
        }
        if crashed {
            self.crash(d);
            return (false, ops);
        }
        if clean {
            // The engine saw every content a user left here: none of it may be lost now. (Not
            // the files saved while it ran: it may not have seen those.)
            for w in seen {
                self.written[w].owed = true;
            }
        }
        (clean, ops)
    }

    /// Kills device `d`'s engine; half the time its disk and state database go back to the last
    /// snapshot.
    fn crash(&mut self, d: usize) {
        self.devices[d].sync = None;
        let restore = self.rng.random_bool(0.5);
        let name = self.devices[d].name.clone();
        if !restore {
            self.note(format!("{name}: crashed, restarts as it was"));
            return;
        }
        let dev = &mut self.devices[d];
        let snap = dev.snap.as_ref().expect("every device has a snapshot");
        let db = dev.cfg.dirs.state_db();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::copy(&snap.db, &db).unwrap();
        for e in std::fs::read_dir(&dev.root).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        copy_tree(&snap.dir, &dev.root);
        dev.user = snap.user.clone();
        let at = snap.step;
        // A disk that goes back in time loses what it held only there: contents written since
        // the snapshot that had not reached the server are no longer owed.
        let on_server = server_contents(&self.server_db);
        let mut forgiven = 0;
        for w in &mut self.written {
            if w.device == d && w.step >= at && w.owed && !on_server.contains(&w.content_id) {
                w.owed = false;
                forgiven += 1;
            }
        }
        self.note(format!(
            "{name}: crashed, restarts from the snapshot of step {at} ({forgiven} unsent contents lost with the disk)"
        ));
    }

    /// Keeps a copy of device `d`'s folder and state database (a consistent one: `VACUUM INTO`).
    fn snapshot(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let dir = self.base.join(format!("snap-{}", dev.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tree")).unwrap();
        copy_tree(&dev.root, &dir.join("tree"));
        let db = dir.join("state.db");
        let conn = rusqlite::Connection::open(dev.cfg.dirs.state_db()).unwrap();
        conn.execute("VACUUM INTO ?1", [db.to_str().unwrap()])
            .unwrap();
        dev.snap = Some(Snap {
            step: self.step,
            dir: dir.join("tree"),
            db,
            user: dev.user.clone(),
        });
        let name = dev.name.clone();
        self.note(format!("{name}: snapshot"));
    }

    async fn run(&mut self) {
        let n = self.devices.len();
        for step in 0..STEPS {
            self.step = step;
            // Conflict copies made in this step are named by it, not by the wall clock.
            cairn_server::clock::pin_names(Some(1_600_000_000 + 10 * step as i64));
            let d = self.rng.random_range(0..n);
            match self.rng.random_range(0..20) {
                0..=8 => self.user_op(d),
                9..=17 => {
                    self.round(d, true).await;
                }
                18 => self.snapshot(d),
                _ => {
                    let name = self.devices[d].name.clone();
                    self.note(format!("{name}: killed between rounds"));
                    self.crash(d);
                }
            }
        }
    }

    /// No more faults: every device syncs (whole-folder scans) until a pass has nothing to do.
    async fn settle(&mut self) -> Result<(), String> {
        self.step = STEPS;
        cairn_server::clock::pin_names(Some(1_600_000_000 + 10 * STEPS as i64));
        let n = self.devices.len();
        for _pass in 0..12 {
            let mut quiet = true;
            for d in 0..n {
                if let Some(s) = self.devices[d].sync.as_mut() {
                    s.rescan();
                }
                for _ in 0..8 {
                    let (clean, ops) = self.round(d, false).await;
                    if !clean || ops > 0 {
                        quiet = false;
                    }
                    if clean && ops == 0 {
                        break;
                    }
                }
            }
            if quiet {
                return Ok(());
            }
        }
        Err("the devices did not settle within 12 passes without faults".into())
    }

    /// The properties (see the module's comment); the first that fails, with what it saw.
    fn check(&self, server_db: &Path) -> Result<BTreeMap<String, Option<[u8; 32]>>, String> {
        if let Some(lost) = &self.lost {
            return Err(format!("lost: {lost}"));
        }
        let trees: Vec<_> = self.devices.iter().map(|d| tree(&d.root)).collect();
        for (d, t) in trees.iter().enumerate() {
            let tmp = |p: &String| {
                p.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(cairn::scanner::TMP_PREFIX))
            };
            if let Some(p) = t.keys().find(|p| tmp(p)) {
                return Err(format!(
                    "{}: temp file {p} left behind",
                    self.devices[d].name
                ));
            }
            if *t != trees[0] {
                return Err(format!(
                    "not converged:\n    {}: {}\n    {}: {}",
                    self.devices[0].name,
                    show(&trees[0]),
                    self.devices[d].name,
                    show(t)
                ));
            }
        }
        let on_server = server_contents(server_db);
        let on_disk: BTreeSet<[u8; 32]> = trees[0].values().flatten().copied().collect();
        for (i, w) in self.written.iter().enumerate() {
            if w.owed && !on_server.contains(&w.content_id) && !on_disk.contains(&w.content_id) {
                return Err(format!(
                    "lost: content #{i} written to {} on {} at step {} (an error-free round saw it there), is neither on a device nor a version on the server",
                    w.path, self.devices[w.device].name, w.step
                ));
            }
        }
        Ok(trees[0].clone())
    }
}

/// Every content id the server holds a version of (live, old or deleted).
fn server_contents(db: &Path) -> BTreeSet<[u8; 32]> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn.prepare("SELECT content_id FROM versions").unwrap();
    q.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .filter_map(|row| <[u8; 32]>::try_from(row.unwrap().as_slice()).ok())
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src).unwrap();
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&src, &dst);
        } else if meta.is_file() {
            std::fs::copy(&src, &dst).unwrap();
            let f = std::fs::File::options().write(true).open(&dst).unwrap();
            f.set_modified(meta.modified().unwrap()).unwrap();
        }
    }
}

/// Path → content id (files) or `None` (folders), without the root marker.
fn tree(root: &Path) -> BTreeMap<String, Option<[u8; 32]>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<[u8; 32]>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == cairn::scanner::MARKER {
                continue;
            }
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(content_id(&std::fs::read(&p).unwrap())));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn show(t: &BTreeMap<String, Option<[u8; 32]>>) -> String {
    let items: Vec<String> = t
        .iter()
        .map(|(p, c)| match c {
            Some(c) => format!("{p}={}", &hex::encode(c)[..8]),
            None => format!("{p}/"),
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Conflict copies carry the wall-clock time of their commit: the same run names them alike.
fn normalized(t: &BTreeMap<String, Option<[u8; 32]>>) -> Vec<(String, Option<[u8; 32]>)> {
    let mut v: Vec<_> = t
        .iter()
        .map(|(p, c)| {
            let p = match p.find(" (conflicted copy from ") {
                Some(i) => {
                    let rest = &p[i..];
                    let end = rest.find(')').map_or(rest.len(), |e| e + 1);
                    let device = rest[" (conflicted copy from ".len()..]
                        .split(' ')
                        .next()
                        .unwrap_or("");
                    format!("{} (conflict {device}){}", &p[..i], &rest[end..])
                }
                None => p.clone(),
            };
            (p, *c)
        })
        .collect();
    v.sort();
    v
}

/// One seed, start to end: its trace and the final tree, or what failed.
async fn run_seed(seed: u64) -> Result<(Trace, Vec<(String, Option<[u8; 32]>)>), (Trace, String)> {
    let base = tempfile::tempdir().unwrap();
    // No GC (history is what the no-loss check reads) and no rate limit (retries do not back off).
    let srv = common::Server::start(base.path(), NS, |config| {
        config.gc_interval = None;
        config.rate_limit = None;
    })
    .await;
    let mut sim = Sim::new(seed, base.path(), &srv).await;
    sim.run().await;
    let settled = sim.settle().await;
    let checked = settled.and_then(|()| sim.check(&srv.db));
    faults::uninstall();
    cairn_server::clock::pin_names(None);
    for d in &mut sim.devices {
        d.sync = None;
    }
    srv.stop().await;
    match checked {
        Ok(t) => Ok((std::mem::take(&mut sim.trace), normalized(&t))),
        Err(e) => Err((std::mem::take(&mut sim.trace), e)),
    }
}

/// Every seed's properties; each second seed runs twice and must tell the same story.
#[tokio::test(flavor = "current_thread")]
async fn the_engine_loses_nothing_and_converges_under_injected_faults_and_crashes() {
    for seed in seeds() {
        let first = run_seed(seed).await;
        let (trace, end) = match first {
            Ok(ok) => ok,
            Err((trace, why)) => panic!(
                "seed {seed}: {why}\n  trace:\n    {}\n  rerun: CAIRN_SIM_SEED={seed} cargo test -p cairn --test sim",
                trace.join("\n    ")
            ),
        };
        if seed % 2 == 0 {
            let (again, end2) = run_seed(seed).await.unwrap_or_else(|(_, why)| {
                panic!("seed {seed}: passed once, then failed on the rerun: {why}")
            });
            // The whole run must repeat line for line: steps, each round's outcome, the faults
            // drawn, the settling passes.
            if let Some(i) =
                (0..trace.len().max(again.len())).find(|&i| trace.get(i) != again.get(i))
            {
                panic!(
                    "seed {seed}: the same seed ran differently from line {i}:\n    first: {:?}\n    again: {:?}\n  first run:\n    {}\n  second run:\n    {}",
                    trace.get(i),
                    again.get(i),
                    trace.join("\n    "),
                    again.join("\n    ")
                );
            }
            assert_eq!(
                end, end2,
                "seed {seed}: the same seed ended with a different tree"
            );
        }
        let count = |what: &str| trace.iter().filter(|l| l.contains(what)).count();
        let faults: usize = trace
            .iter()
            .filter(|l| l.contains(" round: "))
            .map(|l| l.matches(" at ").count())
            .sum();
        println!(
            "seed {seed}: ok: {} trace lines, {} user ops, {} rounds, {faults} faults, {} crashes ({} restored from a snapshot), {} files and folders at the end ({} conflict copies)",
            trace.len(),
            count(": write ")
                + count(": append ")
                + count(": delete ")
                + count(": rename ")
                + count(": rmdir "),
            count(": round: "),
            count(": crashed"),
            count("restarts from the snapshot"),
            end.len(),
            end.iter().filter(|(p, _)| p.contains("(conflict ")).count(),
        );
    }
}
