//! Randomized, seeded tests of the planner in the spirit of Dropbox's CanopyCheck: devices and a
//! server in memory, user activity and sync rounds interleaved at random, properties checked once
//! everything is quiet, failures shrunk to a minimal case printed with its seed.
//!
//! `CAIRN_SEEDS=N` runs seeds 0..N (default 1000), `CAIRN_SEED=S` only seed S, and
//! `CAIRN_SURVEY=1` counts the failing seeds per property instead of shrinking the first. See
//! docs/RELIABILITY.md, "Randomized planner tests".

mod device;
mod disk;
mod run;
mod scenario;
mod server;
mod shrink;

use device::Quirks;
use run::{Config, Failure, Property, normalized, run};
use scenario::{Names, Scenario, Step, UserOp, generate};

const DEFAULT_SEEDS: u64 = 1000;

fn seeds() -> Vec<u64> {
    let var = |name| {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
        })
    };
    if let Some(s) = var("CAIRN_SEED") {
        return vec![s];
    }
    (0..var("CAIRN_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

/// The executors in the planned order; every property but order independence.
fn check_planned(sc: &Scenario, quirks: Quirks) -> Result<(), Failure> {
    let cfg = Config {
        quirks,
        ..Config::default()
    };
    run(sc, cfg).0.map(|_| ())
}

/// The order shuffled among commuting ops (from this seed) in the order test's second run.
fn shuffled(sc: &Scenario) -> Config {
    Config {
        shuffle: Some(sc.seed ^ 0x5348_5546_464c_4521),
        ..Config::default()
    }
}

/// The planned order against a shuffle of each round's commuting ops: the same end tree
/// (conflict copies compared without their device, time and counter). A scenario the planned
/// order fails already is the other test's to report.
fn check_shuffled(sc: &Scenario) -> Result<(), Failure> {
    let Ok(planned) = run(sc, Config::default()).0 else {
        return Ok(());
    };
    let shuffled = run(sc, shuffled(sc)).0?;
    let (a, b) = (normalized(&planned.live), normalized(&shuffled.live));
    if a != b {
        return Err(Failure {
            property: Property::OrderIndependent,
            detail: format!(
                "the planned order ends with {}\n    a shuffled order with {}",
                run::show_tree(&planned.live),
                run::show_tree(&shuffled.live)
            ),
        });
    }
    Ok(())
}

/// Runs `check` over the seeds' scenarios; the first failure is shrunk and reported with the
/// trace of a run with each of `traced`.
fn run_seeds(
    test: &str,
    names: Names,
    traced: impl Fn(&Scenario) -> Vec<Config>,
    check: impl Fn(&Scenario) -> Result<(), Failure>,
) {
    if std::env::var_os("CAIRN_SURVEY").is_some() {
        return survey(names, check);
    }
    for seed in seeds() {
        let sc = generate(seed, names);
        if let Err(failure) = check(&sc) {
            report(test, &sc, failure, &check, &traced);
        }
    }
}

/// Shrinks a failing scenario and panics with the seed, the minimal case and what happened in it.
fn report(
    test: &str,
    sc: &Scenario,
    failure: Failure,
    check: &impl Fn(&Scenario) -> Result<(), Failure>,
    traced: &impl Fn(&Scenario) -> Vec<Config>,
) -> ! {
    let property = failure.property;
    let min = shrink::shrink(sc, |s| check(s).is_err_and(|f| f.property == property));
    let min_failure = check(&min).expect_err("the shrunk case still fails");
    let traces: Vec<String> = traced(&min)
        .into_iter()
        .map(|cfg| {
            let how = match cfg.shuffle {
                Some(_) => "ops shuffled among those that commute",
                None => "ops in the planned order",
            };
            let (_, trace) = run(&min, Config { trace: true, ..cfg });
            let executors = if cfg.quirks == Quirks::default() {
                "executors as they should be".to_owned()
            } else {
                format!("executors with {:?}", cfg.quirks)
            };
            format!(
                "what happened ({how}, {executors}):\n    {}",
                compact(&trace).join("\n    ")
            )
        })
        .collect();
    panic!(
        "randomized planner test failed for seed {}: {failure}\n\n\
         minimal case ({} of {} steps, {} of {} initial entries) — {min_failure}\n{min}\n\n\
         {}\n\n\
         re-run: CAIRN_SEED={} cargo test -p cairn --lib planner::random::{test} -- --include-ignored",
        sc.seed,
        min.steps.len(),
        sc.steps.len(),
        min.initial.len(),
        sc.initial.len(),
        traces.join("\n\n"),
        sc.seed,
    );
}

/// Every failing seed, counted by property, without shrinking (`CAIRN_SURVEY=1`).
fn survey(names: Names, check: impl Fn(&Scenario) -> Result<(), Failure>) {
    let mut by: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let seeds = seeds();
    for &seed in &seeds {
        if let Err(f) = check(&generate(seed, names)) {
            by.entry(format!("{:?}", f.property))
                .or_default()
                .push(seed);
        }
    }
    let lines: Vec<String> = by
        .iter()
        .map(|(p, s)| format!("{p}: {} seeds, e.g. {:?}", s.len(), &s[..s.len().min(12)]))
        .collect();
    assert!(
        by.is_empty(),
        "{} seeds run; failures:\n{}",
        seeds.len(),
        lines.join("\n")
    );
}

/// The trace without quiet rounds after the users stopped, repeated lines counted once.
fn compact(trace: &[String]) -> Vec<String> {
    let stop = trace
        .iter()
        .position(|l| l.starts_with("--"))
        .unwrap_or(trace.len());
    let mut out: Vec<String> = trace[..stop].to_vec();
    let mut last: Option<(String, usize)> = None;
    for l in trace[stop..].iter().filter(|l| !l.ends_with("plan []")) {
        match &mut last {
            Some((prev, n)) if prev == l => *n += 1,
            _ => {
                if let Some((prev, n)) = last.take() {
                    out.push(if n > 1 {
                        format!("{prev}   (x{n})")
                    } else {
                        prev
                    });
                }
                last = Some((l.clone(), 1));
            }
        }
    }
    if let Some((prev, n)) = last {
        out.push(if n > 1 {
            format!("{prev}   (x{n})")
        } else {
            prev
        });
    }
    out
}

fn planned(_: &Scenario) -> Vec<Config> {
    vec![Config::default()]
}

#[test]
fn random_scenarios_terminate_converge_and_lose_or_resurrect_nothing() {
    run_seeds(
        "random_scenarios_terminate_converge_and_lose_or_resurrect_nothing",
        Names::Typed,
        planned,
        |sc| check_planned(sc, Quirks::default()),
    );
}

#[test]
fn shuffling_commuting_ops_within_a_round_does_not_change_the_outcome() {
    run_seeds(
        "shuffling_commuting_ops_within_a_round_does_not_change_the_outcome",
        Names::Typed,
        |sc| vec![Config::default(), shuffled(sc)],
        check_shuffled,
    );
}

#[test]
fn files_and_folders_meeting_at_one_path_converge_and_resurrect_nothing() {
    run_seeds(
        "files_and_folders_meeting_at_one_path_converge_and_resurrect_nothing",
        Names::Mixed,
        planned,
        |sc| check_planned(sc, Quirks::default()),
    );
}

/// A hand-written scenario from a minimal case: two devices, empty initial tree.
fn case(steps: Vec<Step>) -> Scenario {
    Scenario {
        seed: 0,
        devices: 2,
        initial: Vec::new(),
        steps,
    }
}

fn round(d: usize) -> [Step; 3] {
    [Step::Plan(d), Step::Push(d), Step::Pull(d)]
}

/// Both devices link `l` to different targets: one link wins, the other must become one copy.
fn conflicting_symlinks() -> Scenario {
    let link = |target: &str| UserOp::Symlink {
        path: "l".into(),
        target: target.into(),
    };
    let mut steps = vec![Step::User(0, link("a")), Step::User(1, link("b"))];
    steps.extend(round(0));
    case(steps)
}

/// A file written between a round's plan (which found it in sync) and its pull.
fn write_between_plan_and_pull() -> Scenario {
    let write = |content| UserOp::Write {
        path: "f".into(),
        content,
    };
    let mut steps = vec![Step::User(0, write(1)), Step::User(1, write(1))];
    steps.extend(round(0));
    steps.extend([
        Step::Plan(1),
        Step::Push(1),
        Step::User(1, write(2)),
        Step::Pull(1),
    ]);
    steps.push(Step::User(0, write(3)));
    case(steps)
}

#[test]
fn the_known_executor_bug_cases_pass_with_the_executors_as_they_should_be() {
    for sc in [conflicting_symlinks(), write_between_plan_and_pull()] {
        if let Err(f) = check_planned(&sc, Quirks::default()) {
            let check = |s: &Scenario| check_planned(s, Quirks::default());
            let test = "the_known_executor_bug_cases_pass_with_the_executors_as_they_should_be";
            report(test, &sc, f, &check, &planned);
        }
    }
}

/// Regression: `rename_to_copy` compared a link's scanned stat with its lstat (the model's
/// `symlink_copy_rename` quirk reproduces the old code).
#[test]
fn a_conflicted_symlink_becomes_one_conflict_copy() {
    let sc = conflicting_symlinks();
    if let Err(f) = check_planned(&sc, Quirks::default()) {
        panic!("{f}\n{sc}");
    }
}

/// Regression: RecordSynced recorded the stat of a file written after the plan (the model's
/// `record_current_stat` quirk reproduces the old code).
#[test]
fn a_file_written_between_plan_and_pull_is_not_recorded_as_synced() {
    let sc = write_between_plan_and_pull();
    if let Err(f) = check_planned(&sc, Quirks::default()) {
        panic!("{f}\n{sc}");
    }
}
