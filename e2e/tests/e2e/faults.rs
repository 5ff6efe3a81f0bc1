//! Fault injection with the real processes (issue 7, items 3 and 4): a storage node, the metadata
//! server, the network, the disk or the state database fails while devices sync. Each test checks
//! that nothing is lost, that the devices converge afterwards, and that the fault is reported
//! clearly while it lasts. Every loop is bounded; random contents print their seed.

use anyhow::{Context, Result, ensure};
use cairn_e2e::cluster::GarageCluster;
use cairn_e2e::proxy::{Mode, Proxy};
use cairn_e2e::tree::{Node, hash_hex, random_bytes, snapshot, write};
use cairn_e2e::{CairnServer, Device, Garage, json_ok, wait_for};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::live::{CONVERGE, Dev, converge, devices, file_is};

/// A fresh seed for random contents, printed so that a failure can be replayed.
fn seed(test: &str) -> u64 {
    let s = std::env::var("CAIRN_E2E_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u32>) as u64;
    eprintln!("{test}: seed {s} (replay with CAIRN_E2E_SEED={s})");
    s
}

/// The files `want` names are in `t` with exactly these bytes.
fn has_all(t: &BTreeMap<String, Node>, want: &BTreeMap<String, Vec<u8>>) -> bool {
    want.iter().all(|(p, b)| file_is(t, p, b))
}

fn no_conflict_copies(t: &BTreeMap<String, Node>) -> Result<()> {
    let copies: Vec<_> = t.keys().filter(|k| k.contains("conflicted copy")).collect();
    ensure!(copies.is_empty(), "unexpected conflict copies: {copies:?}");
    Ok(())
}

/// Every non-temporary file under `root` that `want` names holds all of its bytes: a reader never
/// sees a partial file at a target path.
fn no_partial_files(root: &Path, want: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    for (path, node) in snapshot(root)? {
        if path.contains(".cairn-tmp-") {
            continue;
        }
        if let (Some(bytes), Node::File { .. }) = (want.get(&path), &node) {
            ensure!(
                file_is(
                    &BTreeMap::from([(path.clone(), node.clone())]),
                    &path,
                    bytes
                ),
                "{path} is at its target path with other bytes than the version it was pulled at"
            );
        }
    }
    Ok(())
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `cairn status` reports `state` for the device's (only) folder; returns the row.
fn wait_status(dev: &Device, state: &str, within: Duration) -> Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    wait_for(&format!("cairn status to say {state}"), within, || {
        let v = dev.status().ok()?;
        let row = v["folders"][0].clone();
        last = row.clone();
        (row["state"] == state).then_some(row)
    })
    .with_context(|| format!("last status: {last}"))
}

/// A server on a private single-node Garage that the test may stop and restart.
fn server_on_private_garage() -> Result<(Garage, CairnServer)> {
    let g = Garage::start()?;
    let bucket = g.create_bucket()?;
    let store = format!("s3://{bucket}?endpoint={}&region=garage", g.endpoint());
    let envs = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), g.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), g.secret.clone()),
    ];
    let s = CairnServer::start_on_store(store, envs, &[])?;
    wait_for(
        "the namespace to be created",
        Duration::from_secs(20),
        || s.create_namespace("team").ok(),
    )?;
    Ok((g, s))
}

fn added_device(s: &CairnServer, name: &str) -> Result<Dev> {
    let device = s.device("team", name)?;
    let dir = tempfile::tempdir()?;
    device.add(dir.path())?;
    Ok(Dev { device, dir })
}

/// `cairn-server serve` on `store`: it must exit 1 without ever printing `listening on`, with a
/// message containing every one of `says`.
fn serve_refuses(store: &str, envs: &[(String, String)], says: &[&str]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(cairn_e2e::bin("cairn-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("server.db"))
        .args(["--store", store])
        .envs(envs.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // The refusal comes after one HeadBucket; a server that starts serving instead is killed
    // after a bounded wait, and the test then fails on its output.
    let done = wait_for("cairn-server to exit", Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });
    if done.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.code() == Some(1),
        "cairn-server must refuse {store}: {}",
        text(&out)
    );
    ensure!(
        !stdout.contains("listening on"),
        "a server that cannot reach its store never says it is listening: {stdout}"
    );
    for s in says {
        ensure!(stderr.contains(s), "the refusal says {s:?}: {stderr}");
    }
    ensure!(
        std::fs::read_dir(dir.path())?.all(|e| e.is_ok_and(|e| e.file_name() == "server.db")),
        "only the database is left behind"
    );
    Ok(())
}

#[test]
fn a_server_whose_bucket_cannot_be_reached_says_why_and_never_says_it_listens() -> Result<()> {
    let g = Garage::shared_or_start()?;
    let envs = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), g.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), g.secret.clone()),
    ];
    let s3 =
        |bucket: &str, endpoint: &str| format!("s3://{bucket}?endpoint={endpoint}&region=garage");

    // Garage's admin API where its S3 API should be: what CI once met when a port was taken.
    let config = std::fs::read_to_string(&g.config)?;
    let admin = config
        .lines()
        .filter_map(|l| l.strip_prefix("api_bind_addr = "))
        .next_back()
        .context("no admin api_bind_addr in Garage's config")?
        .trim_matches('"');
    let bucket = g.create_bucket()?;
    let admin_url = format!("http://{admin}");
    serve_refuses(
        &s3(&bucket, &admin_url),
        &envs,
        &[&bucket, &admin_url, "not an S3 answer", "endpoint="],
    )?;

    // The right endpoint, but a bucket that does not exist.
    serve_refuses(
        &s3("no-such-bucket-here", &g.endpoint()),
        &envs,
        &["no-such-bucket-here", "no such bucket"],
    )?;

    // A wrong secret.
    let wrong = vec![
        envs[0].clone(),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "0".repeat(64)),
    ];
    serve_refuses(
        &s3(&bucket, &g.endpoint()),
        &wrong,
        &["AWS_SECRET_ACCESS_KEY"],
    )?;

    // Nothing listening at all.
    let closed = format!(
        "http://127.0.0.1:{}",
        cairn_e2e::garage::free_ports::<1>()?[0]
    );
    serve_refuses(
        &s3(&bucket, &closed),
        &envs,
        &[&closed, "is the S3 server running?"],
    )?;
    Ok(())
}

// --- three-node Garage ---------------------------------------------------------------------------

#[test]
fn a_three_node_garage_keeps_syncing_with_a_node_down_and_heals_when_it_returns() -> Result<()> {
    let seed = seed("three-node garage");
    let t0 = Instant::now();
    let cluster = GarageCluster::start()?;
    eprintln!("cluster up in {:?}", t0.elapsed());
    let bucket = cluster.create_bucket()?;
    // The server talks to node 1's S3 endpoint: nodes 2 and 3 are the ones that fail.
    let (store, envs) = cluster.store(&bucket, 1);
    let s = CairnServer::start_on_store(store, envs, &[])?;
    wait_for(
        "the namespace to be created",
        Duration::from_secs(20),
        || s.create_namespace("team").ok(),
    )?;
    let (a, b) = (added_device(&s, "a")?, added_device(&s, "b")?);
    let mut want = BTreeMap::new();
    for i in 0..4u64 {
        want.insert(format!("before/{i}.bin"), random_bytes(seed + i, 300_000));
    }
    for (p, bytes) in &want {
        write(a.path(), p, bytes)?;
    }
    a.device.push(a.path())?;

    // Node 3 down: two of three still make a quorum for writes and reads.
    cluster.stop_node(3)?;
    for i in 0..4u64 {
        let (p, bytes) = (
            format!("node3-down/{i}.bin"),
            random_bytes(seed + 100 + i, 2_500_000),
        );
        write(a.path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    a.device.push(a.path())?;
    b.device.pull(b.path())?;
    ensure!(
        has_all(&snapshot(b.path())?, &want),
        "b pulled everything with node 3 down"
    );

    // Node 3 back: the table sync tells it which blocks it should hold, and it fetches each
    // 2 x rpc_timeout later (30 s with the cluster's 15 s; scripts/garage.sh). The repairs catch
    // anything the sync missed. It must end up holding every block node 1 holds.
    cluster.start_node(3)?;
    let mut missing = 0;
    let mut last_repair = Instant::now() - Duration::from_secs(60);
    let healed = wait_for(
        "node 3 to hold every referenced block again",
        Duration::from_secs(120),
        || {
            // Repairs asked for before node 3 is seen as up are lost: ask again now and then.
            if last_repair.elapsed() > Duration::from_secs(5) {
                let _ = cluster.garage(3, &["repair", "--yes", "-a", "tables"]);
                let _ = cluster.garage(3, &["repair", "--yes", "-a", "blocks"]);
                last_repair = Instant::now();
            }
            let (one, three) = (cluster.blocks(1).ok()?, cluster.blocks(3).ok()?);
            // Node 1 also keeps the blocks of deleted objects (staging uploads) for a while, with
            // a reference count of 0: node 3 need not, and does not, fetch those.
            missing = one
                .difference(&three)
                .filter(|h| {
                    cluster
                        .garage(1, &["block", "info", h])
                        .map_or(true, |info| !info.contains("Refcount:    0\n"))
                })
                .count();
            (!one.is_empty() && missing == 0).then_some(())
        },
    );
    if healed.is_err() {
        let (one, three) = (cluster.blocks(1)?, cluster.blocks(3)?);
        for h in one.difference(&three).take(2) {
            eprintln!(
                "missing on node 3: {:?}",
                cluster.garage(1, &["block", "info", h])
            );
        }
        eprintln!(
            "block errors on node 3: {:?}",
            cluster.garage(3, &["block", "list-errors"])
        );
    }
    healed.with_context(|| format!("{missing} referenced blocks still missing on node 3"))?;
    eprintln!("node 3 healed {:?} after the start", t0.elapsed());

    // Now node 2 down: reads and writes go through nodes 1 and 3 (the healed one).
    cluster.stop_node(2)?;
    let c = added_device(&s, "c")?;
    c.device.pull(c.path())?;
    ensure!(
        has_all(&snapshot(c.path())?, &want),
        "c pulled everything with node 2 down"
    );
    write(c.path(), "node2-down.txt", b"written while node 2 was down")?;
    c.device.push(c.path())?;
    cluster.start_node(2)?;
    a.device.pull(a.path())?;
    ensure!(file_is(
        &snapshot(a.path())?,
        "node2-down.txt",
        b"written while node 2 was down"
    ));
    eprintln!("three-node test took {:?}", t0.elapsed());
    Ok(())
}

// --- a: kill -9 of cairn-server during a burst of commits ----------------------------------------

#[test]
fn a_server_killed_during_a_burst_of_commits_loses_and_duplicates_nothing() -> Result<()> {
    let (mut s, d) = devices(cairn_e2e::Backend::Local, &["a", "b"])?;
    let all: Vec<&Dev> = d.iter().collect();
    let run_a = d[0].start()?;
    let _run_b = d[1].start()?;
    let mut want = BTreeMap::new();
    for i in 0..300 {
        let (p, bytes) = (
            format!("burst/{:02}/{i}.txt", i % 10),
            format!("file {i}").into_bytes(),
        );
        write(d[0].path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    // Kill the server once some of the burst is committed (b has seen a few files).
    wait_for("b to receive part of the burst", CONVERGE, || {
        let n = snapshot(d[1].path()).ok()?.len();
        (n >= 5).then_some(())
    })?;
    s.kill();
    let seen = snapshot(d[1].path())?.len();
    eprintln!("server killed after b had {seen} entries");

    // More changes while it is down: a's round fails, and status says so.
    for i in 0..20 {
        let (p, bytes) = (
            format!("while-down/{i}.txt"),
            format!("down {i}").into_bytes(),
        );
        write(d[0].path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    let row = wait_status(&d[0].device, "offline", Duration::from_secs(60))?;
    eprintln!("status while the server is down: {row}");
    ensure!(
        row["detail"].as_str().is_some_and(|s| !s.is_empty()),
        "an offline status says why: {row}"
    );

    s.restart(&[])?;
    let t = converge(&all, "every file of the burst on both devices", |t| {
        has_all(t, &want)
    })?;
    no_conflict_copies(&t)?;
    let files = t
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count();
    ensure!(
        files == want.len(),
        "{files} files for {} written",
        want.len()
    );
    wait_status(&d[0].device, "up_to_date", CONVERGE)?;
    drop(run_a);
    Ok(())
}

// --- b: the S3 server stopped during uploads and downloads ---------------------------------------

#[test]
fn garage_stopped_during_a_push_and_a_pull_fails_clearly_and_completes_on_rerun() -> Result<()> {
    let seed = seed("garage stopped");
    let (mut g, s) = server_on_private_garage()?;
    let (a, b) = (added_device(&s, "a")?, added_device(&s, "b")?);
    let mut want = BTreeMap::new();
    for i in 0..12u64 {
        let (p, bytes) = (format!("big/{i}.bin"), random_bytes(seed + i, 3_000_000));
        write(a.path(), &p, &bytes)?;
        want.insert(p, bytes);
    }

    // Upload: stop Garage as soon as the first block lands.
    let push = spawn_json(&a.device, "push", a.path())?;
    wait_for("the first uploaded block", Duration::from_secs(60), || {
        (g.block_files() > 0).then_some(())
    })?;
    g.stop()?;
    let out = push.wait_with_output()?;
    eprintln!("push with Garage stopped: {}", text(&out));
    ensure!(
        !out.status.success(),
        "push cannot succeed with the store down"
    );
    let msg = text(&out);
    ensure!(
        msg.contains(&g.s3_addr) || msg.to_lowercase().contains("stor"),
        "the error names the store: {msg}"
    );
    g.restart()?;
    a.device.push(a.path())?;

    // Download: stop Garage once b has written its first file (or temp file).
    let pull = spawn_json(&b.device, "pull", b.path())?;
    wait_for(
        "b's first downloaded bytes",
        Duration::from_secs(60),
        || b.path().join("big").read_dir().ok()?.next().map(|_| ()),
    )?;
    g.stop()?;
    let out = pull.wait_with_output()?;
    eprintln!("pull with Garage stopped: {}", text(&out));
    no_partial_files(b.path(), &want)?;
    if out.status.success() {
        eprintln!("(the pull had fetched everything before Garage stopped)");
    }
    g.restart()?;
    b.device.pull(b.path())?;
    let t = snapshot(b.path())?;
    ensure!(has_all(&t, &want), "b has every file after the rerun");
    ensure!(
        !t.keys().any(|k| k.contains(".cairn-tmp-")),
        "no temp files left: {:?}",
        t.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// Running daemons (not one-shot commands) with the store down for a while: a's uploads fail,
/// `cairn status` says so and names the files, nothing is lost or half-written, and once the store
/// is back both sides converge without conflict copies.
#[test]
fn daemons_with_the_store_down_show_an_error_and_converge_when_it_returns() -> Result<()> {
    let seed = seed("store down under daemons");
    let (mut g, s) = server_on_private_garage()?;
    let (a, b) = (added_device(&s, "a")?, added_device(&s, "b")?);
    let _run_a = a.start()?;
    let _run_b = b.start()?;
    write(a.path(), "before.txt", b"before the store went down")?;
    converge(&[&a, &b], "the first file", |t| {
        file_is(t, "before.txt", b"before the store went down")
    })?;

    g.stop()?;
    let mut want = BTreeMap::new();
    for i in 0..6u64 {
        let (p, bytes) = (
            format!("while-down/{i}.bin"),
            random_bytes(seed + i, 700_000),
        );
        write(a.path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    // The metadata server is up, so not `offline`: each file's upload fails after its retries.
    let row = wait_status(&a.device, "error", Duration::from_secs(180))?;
    eprintln!("a's status with the store down: {row}");
    let shown = row.to_string();
    ensure!(
        shown.contains("while-down/") && shown.contains("uploaded to storage: transfer failed"),
        "the status names the files that could not be uploaded, and why (the store): {row}"
    );
    // b never saw a commit of them (commits wait for verified chunks): nothing half there.
    no_partial_files(b.path(), &want)?;

    g.restart()?;
    let t = converge(
        &[&a, &b],
        "the files written while the store was down",
        |t| has_all(t, &want),
    )?;
    no_conflict_copies(&t)?;
    wait_status(&a.device, "up_to_date", CONVERGE)?;
    Ok(())
}

// --- c: a daemon cut off from the server ---------------------------------------------------------

/// Devices a (direct) and b (through a proxy the test controls), both running daemons.
fn direct_and_proxied() -> Result<(CairnServer, Proxy, Dev, Dev)> {
    let s = CairnServer::start(cairn_e2e::Backend::Local)?;
    wait_for(
        "the namespace to be created",
        Duration::from_secs(20),
        || s.create_namespace("team").ok(),
    )?;
    let proxy = Proxy::start(&s.addr)?;
    let a = added_device(&s, "a")?;
    let mut device = s.device("team", "b")?;
    device.server = proxy.url();
    let dir = tempfile::tempdir()?;
    device.add(dir.path())?;
    Ok((s, proxy, a, Dev { device, dir }))
}

fn cut_off_then_reconnect(mode: Mode) -> Result<()> {
    let (_s, proxy, a, b) = direct_and_proxied()?;
    let _run_a = a.start()?;
    let _run_b = b.start()?;
    write(a.path(), "before.txt", b"before the cut")?;
    converge(&[&a, &b], "the first file", |t| {
        file_is(t, "before.txt", b"before the cut")
    })?;

    proxy.set_mode(mode);
    let mut want = BTreeMap::new();
    for i in 0..10 {
        let (pa, ba) = (format!("from-a/{i}.txt"), format!("a {i}").into_bytes());
        let (pb, bb) = (format!("from-b/{i}.txt"), format!("b {i}").into_bytes());
        write(a.path(), &pa, &ba)?;
        write(b.path(), &pb, &bb)?;
        want.insert(pa, ba);
        want.insert(pb, bb);
    }
    // A silent link is noticed only by the connection's pings (15 s), and a round caught on
    // it shows `syncing` until its calls' retries run out (about a minute more).
    let within = match mode {
        Mode::BlackHole => Duration::from_secs(180),
        _ => Duration::from_secs(60),
    };
    let row = wait_status(&b.device, "offline", within)?;
    eprintln!("b's status while cut off ({mode:?}): {row}");
    ensure!(
        row["detail"].as_str().is_some_and(|s| !s.is_empty()),
        "an offline status says why: {row}"
    );

    proxy.set_mode(Mode::Pass);
    let t = converge(&[&a, &b], "both sides' changes after reconnecting", |t| {
        has_all(t, &want)
    })?;
    no_conflict_copies(&t)?;
    wait_status(&b.device, "up_to_date", CONVERGE)?;
    Ok(())
}

#[test]
fn a_daemon_whose_connections_are_refused_shows_offline_and_converges_after_reconnect() -> Result<()>
{
    cut_off_then_reconnect(Mode::Refuse)
}

/// A link that drops everything without a word (no RST, no FIN): only the connection's own
/// pings can tell.
#[test]
fn a_daemon_whose_network_goes_silent_shows_offline_and_converges_after_reconnect() -> Result<()> {
    cut_off_then_reconnect(Mode::BlackHole)
}

// --- downloads that break off ----------------------------------------------------------------------

/// Every connection to the server (blob GETs included: its public URL is the proxy) breaks off
/// after 6 MiB towards the client. A 40 MiB file rests in 16 MiB packs, each fetched as one
/// streamed GET: a GET that breaks off must resume from the first chunk it has not placed (one
/// that started over would break off at the same place every time and never finish), and what
/// lands on disk must be the file, byte for byte.
#[test]
fn a_pull_whose_downloads_break_off_midway_resumes_them_and_writes_the_exact_file() -> Result<()> {
    let seed = seed("downloads that break off");
    let proxy = Proxy::start("127.0.0.1:9")?; // upstream set once the server listens
    let s = CairnServer::start_with(cairn_e2e::Backend::Local, &["--public-url", &proxy.url()])?;
    proxy.set_upstream(&s.addr);
    s.create_namespace("team")?;
    let src = tempfile::tempdir()?;
    let data = random_bytes(seed, 40 << 20);
    std::fs::write(src.path().join("big.bin"), &data)?;
    // a reaches the server through the proxy too, with nothing cut yet.
    let mut a = s.device("team", "a")?;
    a.server = proxy.url();
    a.push(src.path())?;

    proxy.set_cut_after(6 << 20);
    proxy.set_mode(Mode::Cut);
    let mut b = s.device("team", "b")?;
    b.server = proxy.url();
    let dst = tempfile::tempdir()?;
    let out = b.pull(dst.path())?;
    let got = std::fs::read(dst.path().join("big.bin"))?;
    ensure!(
        got == data,
        "the pulled file differs from the pushed one ({} bytes against {}); pull said {out}",
        got.len(),
        data.len()
    );
    ensure!(
        proxy.cuts() >= 2,
        "the proxy cut {} connections: the pull never had to resume",
        proxy.cuts()
    );
    eprintln!("{} connections broke off; pull: {out}", proxy.cuts());
    Ok(())
}

// --- a file growing while it is chunked ------------------------------------------------------------

/// a's daemon sees a log file that grows for a few seconds (64 KiB appended every 10 ms, ~20 MB)
/// and syncs it while it grows: every state of it that reaches b is a prefix of what was written
/// (never a mix of two states, never bytes that were not there), and b ends with all of it.
#[test]
fn a_file_growing_while_it_is_synced_reaches_the_other_side_only_as_prefixes_then_whole()
-> Result<()> {
    use std::io::Write as _;
    let seed = seed("growing file");
    let (_s, d) = devices(cairn_e2e::Backend::Local, &["a", "b"])?;
    let (a, b) = (&d[0], &d[1]);
    let _run_a = a.start()?;
    let _run_b = b.start()?;
    let data = random_bytes(seed, 300 * 64 * 1024);
    let target = b.path().join("grow.log");
    // A partly written temp file is never at the target path: a file there is one whole
    // committed state of the log, so it must be a prefix of what a wrote.
    let prefix_on_b = || -> Result<Option<usize>> {
        let Ok(got) = std::fs::read(&target) else {
            return Ok(None);
        };
        ensure!(
            data.starts_with(&got),
            "b holds {} bytes of grow.log that are not a prefix of what a wrote",
            got.len()
        );
        Ok(Some(got.len()))
    };
    let mut f = std::fs::File::create(a.path().join("grow.log"))?;
    let mut states = std::collections::BTreeSet::new();
    for piece in data.chunks(64 * 1024) {
        f.write_all(piece)?;
        f.flush()?;
        states.extend(prefix_on_b()?);
        // The writer's pace (a growing log, not a copy), not a wait for anything.
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(f);
    let mut want = BTreeMap::new();
    want.insert("grow.log".to_owned(), data.clone());
    let t = converge(&[a, b], "the whole log on both sides", |t| {
        has_all(t, &want)
    })?;
    no_conflict_copies(&t)?;
    eprintln!("sizes of grow.log seen on b while it grew: {states:?}");
    Ok(())
}

// --- clock skew between devices ------------------------------------------------------------------

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// a's wall clock a day behind, b's a day ahead (libfaketime; monotonic clocks left alone).
/// Every decision that orders changes uses the server's clock or version numbers (commit times,
/// the conflict copies it names, token and URL expiry), and a file's identity is its stat and
/// hash, never a time comparison: so skew must change nothing. Creates on both sides, a
/// concurrent edit of one file and a delete converge, and every content is kept.
#[test]
fn devices_a_day_apart_in_time_converge_and_lose_nothing() -> Result<()> {
    if !Path::new(FAKETIME_LIB).exists() {
        eprintln!("SKIPPED: libfaketime is not installed (scripts/test.sh installs faketime)");
        return Ok(());
    }
    let (_s, mut d) = devices(cairn_e2e::Backend::Local, &["a", "b"])?;
    for (dev, offset) in d.iter_mut().zip(["-1d", "+1d"]) {
        dev.device.env = vec![
            ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
            ("FAKETIME".into(), offset.into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }
    let (a, b) = (&d[0], &d[1]);
    write(a.path(), "shared.txt", b"before")?;
    a.device.push(a.path())?;
    b.device.pull(b.path())?;
    // Both edit the same file while neither daemon runs: one edit must become a conflict copy.
    write(a.path(), "shared.txt", b"edited on a, a day behind")?;
    write(b.path(), "shared.txt", b"edited on b, a day ahead")?;
    let run_a = a.start()?;
    let run_b = b.start()?;
    let day_ms = 86_400_000i64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for (run, offset) in [(&run_a, -day_ms), (&run_b, day_ms)] {
        let ts = run.events()[0]["ts_ms"].as_i64().unwrap_or(0);
        ensure!(
            (ts - (now_ms + offset)).abs() < 3_600_000,
            "the daemon's clock is skewed by {offset} ms (event at {ts}, now {now_ms})"
        );
    }
    write(a.path(), "from-a.txt", b"a")?;
    write(b.path(), "from-b.txt", b"b")?;
    let t = converge(&[a, b], "both creates and the concurrent edit", |t| {
        file_is(t, "from-a.txt", b"a") && file_is(t, "from-b.txt", b"b")
    })?;
    for want in [
        &b"edited on a, a day behind"[..],
        b"edited on b, a day ahead",
    ] {
        let hash = hash_hex(want);
        ensure!(
            t.values()
                .any(|n| matches!(n, Node::File { hash: h, .. } if *h == hash)),
            "{:?} was lost: {t:?}",
            String::from_utf8_lossy(want)
        );
    }
    std::fs::remove_file(b.path().join("from-a.txt"))?;
    converge(&[a, b], "the delete", |t| {
        !t.contains_key("from-a.txt") && file_is(t, "from-b.txt", b"b")
    })?;
    Ok(())
}

// --- fsync failing with EIO during a download ----------------------------------------------------

/// `cmd` run under strace, which makes every fsync and fdatasync of the process (and its
/// threads) fail with EIO, as a dying disk or an over-committed thin volume does.
fn with_failing_fsync(cmd: &Command) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "trace=fsync,fdatasync"])
        .args(["-e", "inject=fsync,fdatasync:error=EIO"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

#[test]
fn fsync_failing_with_eio_during_a_pull_fails_clearly_keeps_no_file_and_completes_later()
-> Result<()> {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed (scripts/test.sh installs it)");
        return Ok(());
    }
    let seed = seed("fsync EIO");
    let (s, d) = devices(cairn_e2e::Backend::Local, &["a"])?;
    let a = &d[0];
    let mut want = BTreeMap::new();
    for i in 0..3u64 {
        let (p, bytes) = (format!("data/{i}.bin"), random_bytes(seed + i, 300_000));
        write(a.path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    a.device.push(a.path())?;

    let b = s.device("team", "b")?;
    let root = tempfile::tempdir()?;
    write(root.path(), "mine.txt", b"a local file that must stay")?;
    let mut pull = b.cmd();
    pull.arg("--json")
        .arg("pull")
        .arg(root.path())
        .args(["--namespace", "team"]);
    let out = with_failing_fsync(&pull).output()?;
    let msg = text(&out);
    eprintln!("pull with failing fsync: {msg}");
    ensure!(
        !out.status.success(),
        "a pull whose fsyncs fail fails: {msg}"
    );
    ensure!(
        msg.contains("Input/output error")
            || msg.contains("os error 5")
            || msg.contains("disk I/O error"),
        "the error says what failed: {msg}"
    );
    // A file whose fsync failed was never renamed into place, so nothing at a target path can
    // hold bytes the disk may not have kept.
    let t = snapshot(root.path())?;
    for p in want.keys() {
        ensure!(
            !t.contains_key(p),
            "{p} was put in place although its fsync failed: {t:?}"
        );
    }
    ensure!(
        file_is(&t, "mine.txt", b"a local file that must stay"),
        "the local file is untouched: {t:?}"
    );

    let done = b.pull(root.path())?;
    eprintln!("pull once fsync works again: {done}");
    let t = snapshot(root.path())?;
    for (p, bytes) in &want {
        ensure!(file_is(&t, p, bytes), "{p} after the second pull: {t:?}");
    }
    ensure!(
        !t.keys().any(|p| p.contains(".cairn-tmp-")),
        "no temp file is left: {t:?}"
    );
    Ok(())
}

// --- d: a full disk on the client during a download ----------------------------------------------

/// A small tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); the full-disk test needs root or CAP_SYS_ADMIN",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Ok(None);
        }
        Ok(Some(Self { dir }))
    }

    fn resize(&self, size: &str) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()?;
        ensure!(out.status.success(), "remount: {}", text(&out));
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_during_a_pull_names_the_path_leaves_no_partial_file_and_completes_later()
-> Result<()> {
    let seed = seed("full disk");
    let Some(fs) = Tmpfs::mount("2m")? else {
        return Ok(());
    };
    let (s, d) = devices(cairn_e2e::Backend::Local, &["a"])?;
    let a = &d[0];
    let mut want = BTreeMap::new();
    for i in 0..3u64 {
        let (p, bytes) = (format!("data/{i}.bin"), random_bytes(seed + i, 900_000));
        write(a.path(), &p, &bytes)?;
        want.insert(p, bytes);
    }
    a.device.push(a.path())?;

    let b = s.device("team", "b")?;
    let root = fs.dir.path().join("folder");
    std::fs::create_dir(&root)?;
    b.add(&root)?;
    write(&root, "mine.txt", b"a local file that must stay")?;
    let out = b.run("pull", &root)?;
    let msg = text(&out);
    eprintln!("pull onto a full disk: {msg}");
    ensure!(!out.status.success(), "a pull that cannot fit fails: {msg}");
    ensure!(
        msg.to_lowercase().contains("no space"),
        "the error says the disk is full: {msg}"
    );
    ensure!(
        want.keys().any(|p| msg.contains(p.as_str())) || msg.contains(&*root.to_string_lossy()),
        "the error names the path: {msg}"
    );
    no_partial_files(&root, &want)?;
    ensure!(
        std::fs::read(root.join("mine.txt"))? == b"a local file that must stay",
        "the existing file is untouched"
    );

    fs.resize("16m")?;
    b.pull(&root)?;
    let t = snapshot(&root)?;
    ensure!(has_all(&t, &want), "every file after freeing space");
    ensure!(file_is(&t, "mine.txt", b"a local file that must stay"));
    ensure!(
        !t.keys().any(|k| k.contains(".cairn-tmp-")),
        "no temp files left: {:?}",
        t.keys().collect::<Vec<_>>()
    );
    Ok(())
}

// --- e: a deleted local state database -----------------------------------------------------------

fn remove_state_db(dev: &Device) -> Result<()> {
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        match std::fs::remove_file(dev.home.path().join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// a and b in sync on x, y, z; then a deletes y and edits x while b's state database is lost
/// (`damage` removes or corrupts it) and b writes a file of its own. Reconciling by hashes:
/// y stays deleted, b takes a's x without a conflict copy, and b's own file reaches a.
fn state_database_lost(damage: fn(&Device) -> Result<()>) -> Result<String> {
    let (_s, d) = devices(cairn_e2e::Backend::Local, &["a", "b"])?;
    let (a, b) = (&d[0], &d[1]);
    for f in ["x", "y", "z"] {
        write(a.path(), &format!("{f}.txt"), f.as_bytes())?;
    }
    a.device.push(a.path())?;
    b.device.pull(b.path())?;
    std::fs::remove_file(a.path().join("y.txt"))?;
    write(a.path(), "x.txt", b"x, edited on a")?;
    a.device.push(a.path())?;
    damage(&b.device)?;
    write(b.path(), "local-only.txt", b"only on b")?;
    // The folder's registration was in the database: add it again (its marker is still there).
    let added = b
        .device
        .cmd()
        .arg("add")
        .arg(b.path())
        .args(["--namespace", "team"])
        .output()?;
    ensure!(
        added.status.success(),
        "add after losing the state db: {}",
        text(&added)
    );
    json_ok(
        b.device.run("pull", b.path())?,
        "pull after losing the state db",
    )?;
    json_ok(
        b.device.run("push", b.path())?,
        "push after losing the state db",
    )?;
    a.device.pull(a.path())?;
    for dev in [a, b] {
        let t = snapshot(dev.path())?;
        ensure!(
            file_is(&t, "x.txt", b"x, edited on a") && file_is(&t, "z.txt", b"z"),
            "{t:?}"
        );
        ensure!(
            file_is(&t, "local-only.txt", b"only on b"),
            "the local-only file survives: {t:?}"
        );
        ensure!(
            !t.contains_key("y.txt"),
            "y.txt was deleted and is back: {t:?}"
        );
        no_conflict_copies(&t)?;
    }
    Ok(text(&added))
}

#[test]
fn a_deleted_state_database_resurrects_no_delete_and_loses_no_local_file() -> Result<()> {
    state_database_lost(remove_state_db)?;
    Ok(())
}

#[test]
fn a_corrupted_state_database_is_set_aside_and_reconciled_by_hashes() -> Result<()> {
    fn corrupt(dev: &Device) -> Result<()> {
        remove_state_db(dev)?;
        // Not a database at all: what a torn or overwritten file looks like to SQLite.
        std::fs::write(dev.home.path().join("state.db"), random_bytes(7, 64 * 1024))?;
        Ok(())
    }
    let said = state_database_lost(corrupt)?;
    eprintln!("cairn add on a corrupted state database: {said}");
    ensure!(
        said.contains("damaged") && said.contains("state.db.damaged-"),
        "the first command to open it says it was damaged and where it went: {said}"
    );
    Ok(())
}

/// Starts `cairn --json VERB DIR --namespace team` with its output captured (to wait on later).
fn spawn_json(
    d: &cairn_e2e::Device,
    verb: &str,
    dir: &std::path::Path,
) -> Result<std::process::Child> {
    Ok(d.cmd()
        .args(["--json", verb])
        .arg(dir)
        .args(["--namespace", "team"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?)
}
