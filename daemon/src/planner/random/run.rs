//! Runs a scenario against the model until every device is quiet, then checks the properties.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cairn_proto::Version;

use super::device::{Device, Order, Quirks, Trace, show_op};
use super::disk::{Disk, at_or_under, content_no, file, file_no, show};
use super::scenario::{Rng, Scenario, Step, UserOp};
use super::server::Server;
use crate::planner::Op;
use crate::tree::{Content, SyncedEntry};

/// Passes (every device one round, in a random order) allowed before the end must be quiet.
const MAX_PASSES: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// A plan names each path once (a move's source included).
    WellFormedPlan,
    /// Once users stop, rounds end in a pass where every device plans nothing.
    Terminates,
    /// Then every device holds what the server's live tree holds.
    Converges,
    /// Invariant 1: content a user wrote and did not overwrite or delete is still a file.
    NoContentLost,
    /// A deleted file or folder does not come back unless someone changed it.
    NoResurrection,
    /// Shuffling a round's commuting ops does not change the end result.
    OrderIndependent,
}

#[derive(Debug)]
pub struct Failure {
    pub property: Property,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.property, self.detail)
    }
}

fn fail<T>(property: Property, detail: String) -> Result<T, Failure> {
    Err(Failure { property, detail })
}

/// What users did, for the properties.
#[derive(Default)]
struct Ledger {
    /// How many times each content was written (the initial tree counts once).
    created: BTreeMap<u32, u32>,
    /// Contents a user overwrote or deleted on a device that held them.
    superseded: BTreeSet<u32>,
    /// Contents a user moved (a folder move moves its files) or chmod-ed.
    touched: BTreeSet<u32>,
    /// Paths a user deleted (each entry of a deleted subtree).
    deleted: BTreeSet<String>,
    /// Paths a user created, wrote, chmod-ed or moved something to (with created folders).
    written: BTreeSet<String>,
}

/// The end state of a quiet run.
#[derive(Debug)]
pub struct Outcome {
    pub live: BTreeMap<String, Content>,
}

struct World {
    server: Server,
    devices: Vec<Device>,
    ledger: Ledger,
    trace: Trace,
}

/// How to run a scenario.
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Execute each round's ops in a random order (from this seed) among those that commute.
    pub shuffle: Option<u64>,
    /// Collect what happened, for the failure report.
    pub trace: bool,
    pub quirks: Quirks,
}

/// Runs `sc`; the trace is empty unless `cfg.trace`.
pub fn run(sc: &Scenario, cfg: Config) -> (Result<Outcome, Failure>, Vec<String>) {
    let mut w = World::new(sc, cfg.trace, cfg.quirks);
    let mut order_rng = cfg.shuffle.map(Rng::new);
    let res = w.play(sc, &mut order_rng);
    (res, w.trace.unwrap_or_default())
}

fn order(rng: &mut Option<Rng>) -> Order<'_> {
    match rng {
        Some(r) => Order::Shuffled(r),
        None => Order::Planned,
    }
}

impl World {
    fn new(sc: &Scenario, trace: bool, quirks: Quirks) -> Self {
        let mut ledger = Ledger::default();
        let mut disk = Disk::default();
        for op in &sc.initial {
            user_op(&mut disk, op, &mut ledger);
        }
        // Writing the initial tree is history everyone saw, not a change that may bring a
        // deleted path back (what the initial ops themselves overwrote stays superseded).
        ledger.written.clear();
        let mut server = Server::default();
        let local = disk.scan(&Default::default());
        let mut synced = BTreeMap::new();
        for (p, e) in &local {
            let v = server.append(p, Some(e.content.clone()));
            synced.insert(
                p.clone(),
                SyncedEntry {
                    version: Version(v),
                    content: e.content.clone(),
                    stat: e.stat,
                },
            );
        }
        let mut devices = (0..sc.devices)
            .map(|i| {
                let mut d = Device::new(format!("dev{i}"), quirks);
                d.disk = disk.clone();
                d.synced = synced.clone();
                d.drain(&server);
                d
            })
            .collect::<Vec<_>>();
        for d in &mut devices {
            let ops = d.plan(&server);
            assert!(ops.is_empty(), "the initial tree is not in sync: {ops:?}");
            d.pending = None;
        }
        World {
            server,
            devices,
            ledger,
            trace: trace.then(Vec::new),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(line());
        }
    }

    fn play(&mut self, sc: &Scenario, rng: &mut Option<Rng>) -> Result<Outcome, Failure> {
        for step in &sc.steps {
            self.server.now += 1;
            match step {
                Step::User(d, op) => {
                    let done = user_op(&mut self.devices[*d].disk, op, &mut self.ledger);
                    self.note(|| format!("{step}{}", if done { "" } else { " (does nothing)" }));
                }
                Step::Plan(d) => self.plan(*d)?,
                Step::Push(d) => {
                    self.note(|| format!("{step}"));
                    self.devices[*d].push(&mut self.server, order(rng), &mut self.trace);
                }
                Step::Pull(d) => {
                    self.note(|| format!("{step}"));
                    self.devices[*d].pull(&self.server, order(rng), &mut self.trace);
                }
            }
        }
        self.note(|| "-- users stop; rounds until quiet".into());
        for d in 0..self.devices.len() {
            self.server.now += 1;
            self.devices[d].push(&mut self.server, order(rng), &mut self.trace);
            self.devices[d].pull(&self.server, order(rng), &mut self.trace);
        }
        let mut pass_rng = Rng::new(sc.seed ^ 0x7175_6965_7420_706c);
        let mut busy = Vec::new();
        for _ in 0..MAX_PASSES {
            let mut ds: Vec<usize> = (0..self.devices.len()).collect();
            for i in (1..ds.len()).rev() {
                ds.swap(i, pass_rng.below(i + 1));
            }
            busy.clear();
            for d in ds {
                self.server.now += 1;
                self.plan(d)?;
                let dev = &mut self.devices[d];
                let ops = &dev.pending.as_ref().expect("just planned").ops;
                if ops.is_empty() {
                    dev.pending = None;
                    continue;
                }
                busy.push(format!(
                    "dev{d}: {}",
                    ops.iter().map(show_op).collect::<Vec<_>>().join(", ")
                ));
                dev.push(&mut self.server, order(rng), &mut self.trace);
                dev.pull(&self.server, order(rng), &mut self.trace);
            }
            if busy.is_empty() {
                return self.check();
            }
        }
        fail(
            Property::Terminates,
            format!(
                "still planning after {MAX_PASSES} passes with no user activity; the last pass:\n    {}",
                busy.join("\n    ")
            ),
        )
    }

    fn plan(&mut self, d: usize) -> Result<(), Failure> {
        let ops = self.devices[d].plan(&self.server).to_vec();
        self.note(|| {
            format!(
                "dev{d}: plan [{}]",
                ops.iter().map(show_op).collect::<Vec<_>>().join(", ")
            )
        });
        let mut seen = BTreeSet::new();
        for op in &ops {
            let from = match op {
                Op::MoveRemote { from, .. } | Op::MoveLocal { from, .. } => Some(from),
                _ => None,
            };
            for p in std::iter::once(op.path()).chain(from.map(String::as_str)) {
                if !seen.insert(p.to_owned()) {
                    return fail(
                        Property::WellFormedPlan,
                        format!(
                            "dev{d}'s plan names {p} twice: {}",
                            ops.iter().map(show_op).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<Outcome, Failure> {
        let live = self.server.live();
        for d in &self.devices {
            let local = d.disk.contents();
            if local != live {
                return fail(
                    Property::Converges,
                    format!(
                        "{} holds {} but the server holds {}",
                        d.name,
                        show_tree(&local),
                        show_tree(&live)
                    ),
                );
            }
        }
        let live_files: BTreeSet<u32> = live.values().filter_map(file_no).collect();
        let l = &self.ledger;
        for c in l.created.keys() {
            if !l.superseded.contains(c) && !live_files.contains(c) {
                let where_ = if self.server.history().contains(c) {
                    "only in the server's history"
                } else {
                    "nowhere"
                };
                return fail(
                    Property::NoContentLost,
                    format!(
                        "#{c} was written, never overwritten or deleted by a user, and is {where_}; the end tree: {}",
                        show_tree(&live)
                    ),
                );
            }
        }
        for (c, n) in &l.created {
            if *n == 1
                && l.superseded.contains(c)
                && !l.touched.contains(c)
                && live_files.contains(c)
            {
                return fail(
                    Property::NoResurrection,
                    format!(
                        "#{c} was only ever overwritten or deleted by users, yet it is back: {}",
                        show_tree(&live)
                    ),
                );
            }
        }
        for p in &l.deleted {
            // A folder a user deleted comes back to hold content no user overwrote or deleted
            // (written elsewhere, it reached this folder as a conflict copy, say): keeping that
            // content is what `NoContentLost` asks.
            let holds_kept_content = live.iter().any(|(q, c)| {
                at_or_under(q, p) && file_no(c).is_some_and(|n| !l.superseded.contains(&n))
            });
            // A conflict copy holds what a user wrote at the path it is a copy of: deleted
            // elsewhere before that content reached the server, it comes back with it (seed
            // 24953: a folder moved onto a file became a copy, and another device deleted the
            // copy while it was still empty there).
            let original = without_copy_names(p);
            if live.contains_key(p)
                && !l
                    .written
                    .iter()
                    .any(|w| at_or_under(w, p) || at_or_under(w, &original))
                && !holds_kept_content
            {
                return fail(
                    Property::NoResurrection,
                    format!(
                        "{p} was deleted, nothing was ever written at or under it, yet it is back: {}",
                        show_tree(&live)
                    ),
                );
            }
        }
        Ok(Outcome { live })
    }
}

pub fn show_tree(t: &BTreeMap<String, Content>) -> String {
    let items: Vec<String> = t.iter().map(|(p, c)| format!("{p}={}", show(c))).collect();
    format!("{{{}}}", items.join(", "))
}

/// Applies a user op to a disk; false when it does not fit the disk (and changes nothing).
fn user_op(disk: &mut Disk, op: &UserOp, l: &mut Ledger) -> bool {
    let created = |disk: &mut Disk, p: &str, l: &mut Ledger| match disk.ensure_parents(p) {
        Ok(dirs) => {
            l.written.extend(dirs);
            l.written.insert(p.to_owned());
            true
        }
        Err(_) => false,
    };
    match op {
        UserOp::Write { path, content } => {
            let old = match disk.get(path).map(|n| &n.content) {
                Some(Content::Dir) => return false,
                Some(Content::File { id, exec }) => Some((content_no(id), *exec)),
                _ => None,
            };
            if !created(disk, path, l) {
                return false;
            }
            l.superseded.extend(old.map(|(n, _)| n));
            disk.put(path, file(*content, old.is_some_and(|(_, exec)| exec)));
            *l.created.entry(*content).or_default() += 1;
        }
        UserOp::Mkdir { path } | UserOp::Symlink { path, .. } => {
            if disk.get(path).is_some() || !created(disk, path, l) {
                return false;
            }
            let c = match op {
                UserOp::Symlink { target, .. } => Content::Symlink(target.clone()),
                _ => Content::Dir,
            };
            disk.put(path, c);
        }
        UserOp::Delete { path } => {
            let gone = disk.remove_tree(path);
            if gone.is_empty() {
                return false;
            }
            for (p, n) in gone {
                l.superseded.extend(file_no(&n.content));
                l.deleted.insert(p);
            }
        }
        UserOp::Rename { from, to } => {
            if disk.get(from).is_none() || disk.get(to).is_some() || at_or_under(to, from) {
                return false;
            }
            if !created(disk, to, l) {
                return false;
            }
            let moved: Vec<(String, Option<u32>)> = disk
                .subtree(from)
                .map(|(p, n)| (format!("{to}{}", &p[from.len()..]), file_no(&n.content)))
                .collect();
            for (p, c) in moved {
                l.written.insert(p);
                l.touched.extend(c);
            }
            disk.rename(from, to);
        }
        UserOp::Chmod { path } => {
            let Some(node) = disk.nodes.get_mut(path.as_str()) else {
                return false;
            };
            let Content::File { id, exec } = &mut node.content else {
                return false;
            };
            *exec = !*exec;
            l.touched.insert(content_no(id));
            l.written.insert(path.clone());
        }
    }
    true
}

/// `p` with every conflict-copy suffix taken out of its names: the path the copy was made of.
fn without_copy_names(p: &str) -> String {
    let mut p = p.to_owned();
    while let Some(i) = p.find(" (conflicted copy from ") {
        let end = p[i..].find(')').map_or(p.len(), |j| i + j + 1);
        p.replace_range(i..end, "");
    }
    p
}

/// A tree as a list, with conflict-copy names stripped of device, time and counter: two runs
/// that made the same copies in another order compare equal.
pub fn normalized(t: &BTreeMap<String, Content>) -> Vec<(String, Content)> {
    let mut out: Vec<(String, Content)> = t
        .iter()
        .map(|(p, c)| {
            let mut p = p.clone();
            while let Some(i) = p.find("(conflicted copy from ") {
                let end = p[i..].find(')').map_or(p.len(), |j| i + j + 1);
                p.replace_range(i..end, "(conflicted copy)");
            }
            (p, c.clone())
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| format!("{:?}", a.1).cmp(&format!("{:?}", b.1)))
    });
    out
}
