//! Scenarios from a seed: an initial tree every device holds in sync, then user operations on the
//! devices interleaved with the phases of their sync rounds.

use std::collections::BTreeSet;
use std::fmt;

/// SplitMix64: small, self-contained, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a user does to one device's folder. Every op is total: one that does not fit the disk
/// as it is (a missing source, a taken target, a file where a folder should be) does nothing,
/// so any subsequence of a scenario is a scenario (what shrinking needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserOp {
    /// Create or overwrite a file with content `#content` (missing folders are created).
    Write {
        path: String,
        content: u32,
    },
    Mkdir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `rm -r`.
    Delete {
        path: String,
    },
    /// `mv`, creating the target's missing folders; never over an existing entry.
    Rename {
        from: String,
        to: String,
    },
    /// Toggles a file's executable bit.
    Chmod {
        path: String,
    },
}

impl fmt::Display for UserOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserOp::Write { path, content } => write!(f, "write {path} = #{content}"),
            UserOp::Mkdir { path } => write!(f, "mkdir {path}"),
            UserOp::Symlink { path, target } => write!(f, "ln -s {target} {path}"),
            UserOp::Delete { path } => write!(f, "rm -r {path}"),
            UserOp::Rename { from, to } => write!(f, "mv {from} {to}"),
            UserOp::Chmod { path } => write!(f, "chmod +-x {path}"),
        }
    }
}

/// One step of a scenario. A device's round is three steps (plan, push, pull) so that other
/// devices and the user can act between them. A push or pull with no plan pending does
/// nothing; a plan drops a round still pending (one that failed part-way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    User(usize, UserOp),
    Plan(usize),
    Push(usize),
    Pull(usize),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::User(d, op) => write!(f, "dev{d}: {op}"),
            Step::Plan(d) => write!(f, "dev{d}: plan"),
            Step::Push(d) => write!(f, "dev{d}: push"),
            Step::Pull(d) => write!(f, "dev{d}: pull"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub devices: usize,
    /// Applied to an empty folder; the result is on the server and synced on every device.
    pub initial: Vec<UserOp>,
    pub steps: Vec<Step>,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({} devices)", self.seed, self.devices)?;
        writeln!(f, "initial tree, synced everywhere:")?;
        for op in &self.initial {
            writeln!(f, "    {op}")?;
        }
        writeln!(f, "steps:")?;
        let mut i = 0;
        while i < self.steps.len() {
            // plan + push + pull of one device in a row is one round.
            if let (Step::Plan(d), Some(Step::Push(e)), Some(Step::Pull(g))) =
                (&self.steps[i], self.steps.get(i + 1), self.steps.get(i + 2))
                && d == e
                && e == g
            {
                writeln!(f, "    dev{d}: sync round")?;
                i += 3;
                continue;
            }
            writeln!(f, "    {}", self.steps[i])?;
            i += 1;
        }
        write!(f, "then sync rounds until quiet")
    }
}

/// Which names a scenario's paths use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// `a`, `b`, `A` name files and links only; `d`, `e`, `D` folders only (a case-only rename
    /// keeps that apart too): a file and a folder never meet at one path.
    Typed,
    /// Any name for anything: a file and a folder may meet at one path.
    Mixed,
}

/// Few names, so that devices collide: `A` is `a` with another case.
const FILE_NAMES: [&str; 3] = ["a", "b", "A"];
const DIR_NAMES: [&str; 3] = ["d", "e", "D"];
const ALL_NAMES: [&str; 6] = ["a", "b", "A", "d", "e", "D"];
const TARGETS: [&str; 2] = ["a", "b"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

struct Gen {
    rng: Rng,
    names: Names,
    devices: usize,
    next_content: u32,
    /// Every path the scenario mentioned: ops on existing entries are likelier to do something.
    known: BTreeSet<String>,
}

impl Gen {
    fn fresh(&mut self) -> u32 {
        self.next_content += 1;
        self.next_content
    }

    fn kind(&mut self) -> Kind {
        if self.rng.chance(60) {
            Kind::File
        } else {
            Kind::Dir
        }
    }

    fn name(&mut self, kind: Kind) -> &'static str {
        let names: &[&'static str] = match (self.names, kind) {
            (Names::Mixed, _) => &ALL_NAMES,
            (Names::Typed, Kind::File) => &FILE_NAMES,
            (Names::Typed, Kind::Dir) => &DIR_NAMES,
        };
        names[self.rng.below(names.len())]
    }

    /// Whether `path` may name an entry of `kind`.
    fn fits(&self, path: &str, kind: Kind) -> bool {
        let last = path.rsplit('/').next().unwrap_or(path);
        match (self.names, kind) {
            (Names::Mixed, _) => true,
            (Names::Typed, Kind::File) => FILE_NAMES.contains(&last),
            (Names::Typed, Kind::Dir) => DIR_NAMES.contains(&last),
        }
    }

    fn fresh_path(&mut self, kind: Kind) -> String {
        let depth = match self.rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let mut parts: Vec<&str> = (1..depth).map(|_| self.name(Kind::Dir)).collect();
        parts.push(self.name(kind));
        parts.join("/")
    }

    /// A path for an entry of `kind`, most often one the scenario already mentioned.
    fn path(&mut self, kind: Kind) -> String {
        if self.rng.chance(70) {
            let fitting: Vec<&String> = self.known.iter().filter(|p| self.fits(p, kind)).collect();
            if !fitting.is_empty() {
                return fitting[self.rng.below(fitting.len())].clone();
            }
        }
        self.fresh_path(kind)
    }

    fn any_path(&mut self) -> String {
        let kind = self.kind();
        self.path(kind)
    }

    fn child(&mut self, dir: &str, kind: Kind) -> String {
        format!("{dir}/{}", self.name(kind))
    }

    fn dev(&mut self) -> usize {
        self.rng.below(self.devices)
    }

    /// Another device than `d`.
    fn other(&mut self, d: usize) -> usize {
        (d + 1 + self.rng.below(self.devices - 1)) % self.devices
    }

    fn remember(&mut self, op: &UserOp) {
        let p = match op {
            UserOp::Write { path, .. } | UserOp::Mkdir { path } | UserOp::Symlink { path, .. } => {
                path
            }
            UserOp::Rename { to, .. } => to,
            UserOp::Delete { .. } | UserOp::Chmod { .. } => return,
        };
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            self.known.insert(p[..at + i].to_owned());
            at += i + 1;
        }
        self.known.insert(p.clone());
    }

    fn single(&mut self) -> UserOp {
        match self.rng.below(20) {
            0..=6 => UserOp::Write {
                path: self.path(Kind::File),
                content: self.fresh(),
            },
            7..=9 => UserOp::Delete {
                path: self.any_path(),
            },
            10..=13 => {
                let kind = self.kind();
                UserOp::Rename {
                    from: self.path(kind),
                    to: self.path(kind),
                }
            }
            14..=15 => UserOp::Mkdir {
                path: self.path(Kind::Dir),
            },
            16 => UserOp::Symlink {
                path: self.path(Kind::File),
                target: self.rng.pick(&TARGETS).to_string(),
            },
            _ => UserOp::Chmod {
                path: self.path(Kind::File),
            },
        }
    }

    /// One burst of user activity: a single op, or a pattern known to be hard for sync engines,
    /// spread over devices.
    fn burst(&mut self) -> Vec<(usize, UserOp)> {
        let d = self.dev();
        let e = self.other(d);
        let kind = self.kind();
        match self.rng.below(16) {
            // Concurrent edits of one file (sometimes to the same bytes).
            0 | 1 => {
                let p = self.path(Kind::File);
                let c1 = self.fresh();
                let c2 = if self.rng.chance(25) {
                    c1
                } else {
                    self.fresh()
                };
                vec![
                    (
                        d,
                        UserOp::Write {
                            path: p.clone(),
                            content: c1,
                        },
                    ),
                    (
                        e,
                        UserOp::Write {
                            path: p,
                            content: c2,
                        },
                    ),
                ]
            }
            // A move into a folder deleted elsewhere.
            2 => {
                let dir = self.path(Kind::Dir);
                let from = self.path(kind);
                let to = self.child(&dir, kind);
                vec![
                    (d, UserOp::Rename { from, to }),
                    (e, UserOp::Delete { path: dir }),
                ]
            }
            // A cycle of moves: swapped on one device, or crossed between two.
            3 => {
                let (p, q) = (self.path(kind), self.path(kind));
                if self.rng.chance(50) {
                    vec![
                        (
                            d,
                            UserOp::Rename {
                                from: p.clone(),
                                to: "t".into(),
                            },
                        ),
                        (
                            d,
                            UserOp::Rename {
                                from: q.clone(),
                                to: p,
                            },
                        ),
                        (
                            d,
                            UserOp::Rename {
                                from: "t".into(),
                                to: q,
                            },
                        ),
                    ]
                } else {
                    vec![
                        (
                            d,
                            UserOp::Rename {
                                from: p.clone(),
                                to: q.clone(),
                            },
                        ),
                        (e, UserOp::Rename { from: q, to: p }),
                    ]
                }
            }
            // A case-only rename (a file name stays a file name, a folder name a folder name).
            4 => {
                let p = self.path(kind);
                let (head, last) = p.rsplit_once('/').map_or(("", p.as_str()), |(h, l)| (h, l));
                let flipped = if last.chars().all(|c| c.is_lowercase()) {
                    last.to_uppercase()
                } else {
                    last.to_lowercase()
                };
                let to = if head.is_empty() {
                    flipped
                } else {
                    format!("{head}/{flipped}")
                };
                vec![(d, UserOp::Rename { from: p, to })]
            }
            // A folder deleted here while a child is edited there.
            5 => {
                let p = self.path(Kind::Dir);
                let child = self.child(&p, Kind::File);
                let c = self.fresh();
                vec![
                    (d, UserOp::Delete { path: p }),
                    (
                        e,
                        UserOp::Write {
                            path: child,
                            content: c,
                        },
                    ),
                ]
            }
            // A child moved out, then its folder deleted.
            6 => {
                let p = self.path(Kind::Dir);
                let child = self.child(&p, kind);
                let to = self.path(kind);
                vec![
                    (d, UserOp::Rename { from: child, to }),
                    (d, UserOp::Delete { path: p }),
                ]
            }
            // A folder renamed while a child is edited elsewhere.
            7 => {
                let p = self.path(Kind::Dir);
                let child = self.child(&p, Kind::File);
                let to = self.path(Kind::Dir);
                let c = self.fresh();
                vec![
                    (d, UserOp::Rename { from: p, to }),
                    (
                        e,
                        UserOp::Write {
                            path: child,
                            content: c,
                        },
                    ),
                ]
            }
            // Deleted and created again: with mixed names, possibly as the other kind.
            8 => {
                let p = self.path(kind);
                let c = self.fresh();
                let as_dir = match self.names {
                    Names::Typed => kind == Kind::Dir,
                    Names::Mixed => self.rng.chance(50),
                };
                let again = if as_dir {
                    UserOp::Mkdir { path: p.clone() }
                } else {
                    UserOp::Write {
                        path: p.clone(),
                        content: c,
                    }
                };
                vec![(d, UserOp::Delete { path: p }), (d, again)]
            }
            // A delete here, an edit there.
            9 => {
                let p = self.path(Kind::File);
                let c = self.fresh();
                vec![
                    (d, UserOp::Delete { path: p.clone() }),
                    (
                        e,
                        UserOp::Write {
                            path: p,
                            content: c,
                        },
                    ),
                ]
            }
            _ => vec![(d, self.single())],
        }
    }
}

/// The scenario of `seed`.
pub fn generate(seed: u64, names: Names) -> Scenario {
    let mut g = Gen {
        rng: Rng::new(seed),
        names,
        devices: 0,
        next_content: 0,
        known: BTreeSet::new(),
    };
    g.devices = 2 + g.rng.below(2);
    let mut initial = Vec::new();
    for _ in 0..3 + g.rng.below(6) {
        let op = match g.rng.below(10) {
            0..=6 => UserOp::Write {
                path: g.fresh_path(Kind::File),
                content: g.fresh(),
            },
            7..=8 => UserOp::Mkdir {
                path: g.fresh_path(Kind::Dir),
            },
            _ => UserOp::Symlink {
                path: g.fresh_path(Kind::File),
                target: g.rng.pick(&TARGETS).to_string(),
            },
        };
        g.remember(&op);
        initial.push(op);
    }
    // User activity, burst by burst, interleaved with sync phases of random devices.
    let mut events: Vec<(usize, UserOp)> = Vec::new();
    for _ in 0..2 + g.rng.below(11) {
        for (d, op) in g.burst() {
            g.remember(&op);
            events.push((d, op));
        }
    }
    let mut steps = Vec::new();
    // Each device's next phase: 0 plan, 1 push, 2 pull.
    let mut phase = vec![0usize; g.devices];
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        if g.rng.chance(55) {
            let (d, op) = events.next().expect("peeked");
            steps.push(Step::User(d, op));
            continue;
        }
        let d = g.dev();
        // Mostly whole rounds; sometimes one phase, so that others act in between.
        let whole = g.rng.chance(50);
        loop {
            // Now and then a round fails before its push or its pull (the network): the next
            // round plans again from the disk.
            if phase[d] > 0 && g.rng.chance(4) {
                phase[d] = 0;
                break;
            }
            steps.push(match phase[d] {
                0 => Step::Plan(d),
                1 => Step::Push(d),
                _ => Step::Pull(d),
            });
            phase[d] = (phase[d] + 1) % 3;
            if !whole || phase[d] == 0 {
                break;
            }
        }
    }
    Scenario {
        seed,
        devices: g.devices,
        initial,
        steps,
    }
}
