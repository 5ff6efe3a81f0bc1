//! Delete guards (issue 4 item 6): a vanished root propagates nothing, and a mass delete — made
//! here or arriving from another device, live or one-shot — waits for `--allow-deletes`.
//! Everything is polled, never slept for.

use anyhow::{Result, ensure};
use cairn_e2e::daemon::Daemon;
use cairn_e2e::tree::{Node, assert_same, snapshot, write};
use cairn_e2e::{Backend, CairnServer, Device, json_ok, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::live::{CONVERGE, Dev, converge, devices, file_is};

fn files(t: &BTreeMap<String, Node>) -> usize {
    t.values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count()
}

/// The namespace's tree as the server holds it: a one-shot pull into a fresh folder (a fresh
/// folder has nothing synced, so the pull deletes nothing and holds nothing).
fn server_tree(probe: &Device) -> Result<BTreeMap<String, Node>> {
    let dir = tempfile::tempdir()?;
    probe.pull(dir.path())?;
    snapshot(dir.path())
}

/// The folder's row of `cairn --json status`.
fn status(dev: &Dev) -> Option<Value> {
    let v = dev.device.status().ok()?;
    Some(v["folders"][0].clone())
}

/// Waits until the folder's status satisfies `ok`; returns that row.
fn wait_status(dev: &Dev, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut last = Value::Null;
    let r = wait_for(what, CONVERGE, || {
        let s = status(dev)?;
        last = s.clone();
        ok(&s).then_some(s)
    });
    if r.is_err() {
        eprintln!("last status: {last}");
    }
    r
}

fn paused_by_guard(s: &Value, files: u64, root: &Path) -> bool {
    let detail = s["detail"].as_str().unwrap_or_default();
    s["state"] == "paused"
        && s["held_deletes"] == files
        && detail.contains(&format!("cairn resume {} --allow-deletes", root.display()))
}

fn canonical(p: &Path) -> std::path::PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_owned())
}

#[test]
fn a_synced_root_renamed_away_deletes_nothing_elsewhere_and_resumes_without_loss() -> Result<()> {
    let (s, d) = devices(Backend::Local, &["a", "b"])?;
    let probe = s.device("team", "probe")?;
    let all: Vec<&Dev> = d.iter().collect();
    let _run: Vec<Daemon> = d.iter().map(Dev::start).collect::<Result<_>>()?;
    for i in 0..20 {
        write(
            d[0].path(),
            &format!("docs/{i}.txt"),
            format!("doc {i}").as_bytes(),
        )?;
    }
    converge(&all, "20 files everywhere", |t| files(t) == 20)?;

    // The disk is unmounted: the root is gone...
    let root = d[0].path().to_owned();
    let away = root.with_extension("unmounted");
    fs::rename(&root, &away)?;
    let gone = wait_status(&d[0], "A paused: root missing", |s| {
        s["state"] == "paused" && s["detail"].as_str().is_some_and(|t| t.contains("missing"))
    })?;
    // ... and then an empty mount point is back at its path (no `.cairn` marker in it). Another
    // paused report after this one means more rounds ran, and still propagated nothing.
    fs::create_dir(&root)?;
    wait_status(&d[0], "A paused: marker gone", |s| {
        s["state"] == "paused"
            && s["detail"].as_str().is_some_and(|t| t.contains("marker"))
            && s["updated_at_ms"].as_i64() > gone["updated_at_ms"].as_i64()
    })?;
    let b = snapshot(d[1].path())?;
    ensure!(
        files(&b) == 20,
        "B lost files while A's root was gone: {b:?}"
    );
    let server = server_tree(&probe)?;
    ensure!(
        files(&server) == 20,
        "the server lost files while A's root was gone: {server:?}"
    );

    // The disk is back: A syncs again, with every file, and new edits flow.
    fs::remove_dir(&root)?;
    fs::rename(&away, &root)?;
    wait_status(&d[0], "A up to date again", |s| s["state"] == "up_to_date")?;
    write(&root, "docs/0.txt", b"edited after the remount")?;
    converge(&all, "the edit after the remount", |t| {
        files(t) == 20 && file_is(t, "docs/0.txt", b"edited after the remount")
    })?;
    Ok(())
}

#[test]
fn emptying_a_folder_is_held_on_every_device_until_resumed_and_the_guard_rearms() -> Result<()> {
    let (s, d) = devices(Backend::Local, &["a", "b"])?;
    let probe = s.device("team", "probe")?;
    let all: Vec<&Dev> = d.iter().collect();
    let run: Vec<Daemon> = d.iter().map(Dev::start).collect::<Result<_>>()?;
    for i in 0..40 {
        let path = format!("photos/{}/{i}.jpg", i % 4);
        write(d[0].path(), &path, format!("photo {i}").as_bytes())?;
    }
    converge(&all, "40 files everywhere", |t| files(t) == 40)?;
    let (root_a, root_b) = (canonical(d[0].path()), canonical(d[1].path()));

    // `rm -rf *` on A (the root and its marker stay).
    for e in fs::read_dir(&root_a)? {
        let e = e?;
        if e.file_name() != ".cairn" {
            fs::remove_dir_all(e.path())?;
        }
    }
    wait_status(&d[0], "A holding 40 deletions", |s| {
        paused_by_guard(s, 40, &root_a)
    })?;
    ensure!(
        run[0].events().iter().any(|e| e["event"] == "held"),
        "A emitted no held event"
    );
    ensure!(files(&server_tree(&probe)?) == 40, "the server lost files");
    ensure!(files(&snapshot(&root_b)?) == 40, "B lost files");

    // Without the flag, resume says what it would take and changes nothing.
    let out = d[0].device.resume(&root_a, false)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("--allow-deletes"),
        "resume without the flag: {:?} {err}",
        out.status.code()
    );
    ensure!(files(&server_tree(&probe)?) == 40, "resume alone deleted");

    // With it, A applies exactly the held deletions.
    json_ok(d[0].device.resume(&root_a, true)?, "resume --allow-deletes")?;
    wait_status(&d[0], "A up to date after the resume", |s| {
        s["state"] == "up_to_date" && s["held_deletes"] == 0
    })?;
    let server = server_tree(&probe)?;
    ensure!(files(&server) == 0, "the server kept files: {server:?}");

    // The same mass delete arriving on B is held there too, until B's user resumes as well.
    wait_status(&d[1], "B holding 40 incoming deletions", |s| {
        paused_by_guard(s, 40, &root_b)
    })?;
    ensure!(
        files(&snapshot(&root_b)?) == 40,
        "B deleted before resuming"
    );
    json_ok(d[1].device.resume(&root_b, true)?, "resume on B")?;
    converge(&all, "the empty tree everywhere", BTreeMap::is_empty)?;

    // Re-armed, and small deletes still flow without a resume.
    for i in 0..12 {
        write(
            &root_a,
            &format!("keep/{i}.txt"),
            format!("keep {i}").as_bytes(),
        )?;
    }
    converge(&all, "12 new files", |t| files(t) == 12)?;
    fs::remove_file(root_a.join("keep/0.txt"))?;
    converge(&all, "one file deleted everywhere", |t| {
        files(t) == 11 && !t.contains_key("keep/0.txt")
    })?;
    for i in 1..12 {
        fs::remove_file(root_a.join(format!("keep/{i}.txt")))?;
    }
    wait_status(&d[0], "A holding the next mass delete", |s| {
        paused_by_guard(s, 11, &root_a)
    })?;
    ensure!(
        files(&server_tree(&probe)?) == 11,
        "the guard did not re-arm"
    );
    Ok(())
}

#[test]
fn a_one_shot_push_or_pull_that_would_delete_most_files_exits_3_until_allowed() -> Result<()> {
    let s = CairnServer::start(Backend::Local)?;
    wait_for("the namespace to be created", CONVERGE, || {
        s.create_namespace("team").ok()
    })?;
    let (a, b, probe) = (
        s.device("team", "a")?,
        s.device("team", "b")?,
        s.device("team", "probe")?,
    );
    let (src, dst) = (tempfile::tempdir()?, tempfile::tempdir()?);
    for i in 0..30 {
        write(
            src.path(),
            &format!("files/{i}.txt"),
            format!("f {i}").as_bytes(),
        )?;
    }
    a.push(src.path())?;
    b.pull(dst.path())?;

    // 20 of 30 deleted, one file added: the push adds it and deletes nothing.
    for i in 0..20 {
        fs::remove_file(src.path().join(format!("files/{i}.txt")))?;
    }
    write(src.path(), "new.txt", b"new")?;
    let out = a.run("push", src.path())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(3) && err.contains("--allow-deletes"),
        "push past the guard: {:?} {err}",
        out.status.code()
    );
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        summary["held_deletes"] == 20 && summary["deleted"] == 0,
        "{summary}"
    );
    let server = server_tree(&probe)?;
    ensure!(
        files(&server) == 31 && file_is(&server, "new.txt", b"new"),
        "{server:?}"
    );

    let allowed = json_ok(
        a.run_with("push", src.path(), &["--allow-deletes"])?,
        "push --allow-deletes",
    )?;
    ensure!(allowed["deleted"] == 20, "{allowed}");
    ensure!(files(&server_tree(&probe)?) == 11);

    // The same 20 deletions arriving by pull: held, the new file written.
    let out = b.run("pull", dst.path())?;
    ensure!(out.status.code() == Some(3), "pull past the guard: {out:?}");
    let t = snapshot(dst.path())?;
    ensure!(files(&t) == 31 && file_is(&t, "new.txt", b"new"), "{t:?}");
    json_ok(
        b.run_with("pull", dst.path(), &["--allow-deletes"])?,
        "pull --allow-deletes",
    )?;
    assert_same(src.path(), dst.path())
}
