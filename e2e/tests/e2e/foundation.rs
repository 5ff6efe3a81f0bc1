//! Foundation acceptance (issue 2): push and pull through the real binaries, against the local-dir
//! store and against a real Garage S3 server. Each scenario runs once per backend.

use anyhow::Result;
use cairn_e2e::tree::{self, acceptance_tree, assert_same, random_bytes, snapshot, write};
use cairn_e2e::{Backend, CairnServer, field};
use std::fs;

fn server(backend: Backend) -> Result<CairnServer> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    Ok(s)
}

/// The seed for this test's random content: `CAIRN_SEED` if set, else `default` (or a fresh
/// random seed when `default` is `None`). Printed so any failure can be rerun.
fn seed_or(default: Option<u64>) -> u64 {
    let seed = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .or(default)
        .unwrap_or_else(rand::random);
    println!("seed: {seed} (rerun with CAIRN_SEED={seed})");
    seed
}

fn seed() -> u64 {
    seed_or(None)
}

fn a_pushed_tree_pulls_into_an_empty_folder_identically(backend: Backend) -> Result<()> {
    let s = server(backend)?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let (src, dst) = (tempfile::tempdir()?, tempfile::tempdir()?);
    acceptance_tree(src.path(), seed())?;

    let pushed = a.push(src.path())?;
    assert!(field(&pushed, "files") >= 8, "{pushed}");
    assert!(
        field(&pushed, "bytes_uploaded") >= 20 * 1024 * 1024,
        "{pushed}"
    );

    // The target folder does not exist yet: pull creates it, as `rclone copy` would.
    let target = dst.path().join("new/folder");
    let pulled = b.pull(&target)?;
    assert!(field(&pulled, "files_written") >= 8, "{pulled}");
    assert_same(src.path(), &target)?;

    // Nothing changed: a second pull writes nothing, a second push uploads nothing.
    let again = b.pull(&target)?;
    assert_eq!(field(&again, "files_written"), 0, "{again}");
    let again = a.push(src.path())?;
    assert_eq!(field(&again, "bytes_uploaded"), 0, "{again}");
    assert_eq!(field(&again, "chunks_uploaded"), 0, "{again}");
    Ok(())
}

fn small_edits_upload_only_the_chunks_they_touch(backend: Backend) -> Result<()> {
    let s = server(backend)?;
    let a = s.device("team", "laptop")?;
    let src = tempfile::tempdir()?;
    // Fixed by default: how many chunks a 1 MiB append re-cuts into is a distribution (≤ 2 in
    // about 98% of random files, docs/BENCHMARKS.md), so a random seed would make CI flaky.
    // CAIRN_SEED=<n> explores others.
    let seed = seed_or(Some(20_261_123));
    let mut big = random_bytes(seed, 20 * 1024 * 1024);
    write(src.path(), "big.bin", &big)?;
    a.push(src.path())?;

    big[10 * 1024 * 1024] ^= 0xff;
    write(src.path(), "big.bin", &big)?;
    let flipped = a.push(src.path())?;
    assert!(
        (1..=2).contains(&field(&flipped, "chunks_uploaded")),
        "one byte flipped: {flipped}"
    );

    big.extend_from_slice(&random_bytes(seed ^ 1, 1024 * 1024));
    write(src.path(), "big.bin", &big)?;
    let appended = a.push(src.path())?;
    assert!(
        (1..=2).contains(&field(&appended, "chunks_uploaded")),
        "1 MiB appended: {appended}"
    );

    let unchanged = a.push(src.path())?;
    assert_eq!(field(&unchanged, "bytes_uploaded"), 0, "{unchanged}");

    // The edited versions pull back byte for byte.
    let (b, dst) = (s.device("team", "desktop")?, tempfile::tempdir()?);
    b.pull(dst.path())?;
    assert_eq!(fs::read(dst.path().join("big.bin"))?, big);
    Ok(())
}

fn two_files_with_equal_content_upload_once(backend: Backend) -> Result<()> {
    let s = server(backend)?;
    let a = s.device("team", "laptop")?;
    let src = tempfile::tempdir()?;
    let bytes = random_bytes(seed(), 3 * 1024 * 1024);
    write(src.path(), "one.bin", &bytes)?;
    write(src.path(), "copy/two.bin", &bytes)?;
    let pushed = a.push(src.path())?;
    let up = field(&pushed, "bytes_uploaded");
    assert!(
        up >= bytes.len() as u64 && up < 2 * bytes.len() as u64,
        "uploaded {up}: {pushed}"
    );
    assert!(
        field(&pushed, "bytes_deduplicated") >= bytes.len() as u64,
        "{pushed}"
    );
    Ok(())
}

fn a_stale_commit_becomes_a_conflict_copy_and_both_contents_survive(
    backend: Backend,
) -> Result<()> {
    let s = server(backend)?;
    let (a, b, c) = (
        s.device("team", "laptop")?,
        s.device("team", "desktop")?,
        s.device("team", "phone")?,
    );
    let (da, db, dc) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    write(da.path(), "notes/plan.txt", b"version 1")?;
    a.push(da.path())?;
    b.pull(db.path())?;

    write(da.path(), "notes/plan.txt", b"laptop's edit")?;
    a.push(da.path())?;
    write(
        db.path(),
        "notes/plan.txt",
        b"desktop's edit, based on version 1",
    )?;
    let pushed = b.push(db.path())?;
    assert_eq!(field(&pushed, "conflicts"), 1, "{pushed}");

    c.pull(dc.path())?;
    assert_eq!(
        fs::read(dc.path().join("notes/plan.txt"))?,
        b"laptop's edit"
    );
    let copies: Vec<_> = snapshot(dc.path())?
        .into_keys()
        .filter(|p| {
            p.starts_with("notes/plan (conflicted copy from desktop ") && p.ends_with(").txt")
        })
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "expected one conflict copy, tree: {:?}",
        snapshot(dc.path())?.keys()
    );
    assert_eq!(
        fs::read(dc.path().join(&copies[0]))?,
        b"desktop's edit, based on version 1"
    );
    Ok(())
}

fn a_wrong_token_is_refused_with_exit_12(backend: Backend) -> Result<()> {
    let s = server(backend)?;
    let mut a = s.device("team", "laptop")?;
    a.token = "not-a-real-token".into();
    let src = tempfile::tempdir()?;
    write(src.path(), "f.txt", b"x")?;
    let out = a.run("push", src.path())?;
    assert_eq!(
        out.status.code(),
        Some(12),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

crate::on_every_backend!(
    a_pushed_tree_pulls_into_an_empty_folder_identically,
    small_edits_upload_only_the_chunks_they_touch,
    two_files_with_equal_content_upload_once,
    a_stale_commit_becomes_a_conflict_copy_and_both_contents_survive,
    a_wrong_token_is_refused_with_exit_12,
);

#[test]
fn an_unreachable_server_is_a_clear_error_that_changes_nothing() -> Result<()> {
    let s = server(Backend::Local)?;
    let mut a = s.device("team", "laptop")?;
    let src = tempfile::tempdir()?;
    write(src.path(), "keep/me.txt", b"precious")?;
    a.push(src.path())?;
    write(src.path(), "keep/new.txt", b"not yet pushed")?;
    let before_tree = snapshot(src.path())?;
    let state_before = state_files(a.home.path())?;

    a.server = "http://127.0.0.1:1".into();
    let out = a.run("push", src.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the error names the server: {stderr}"
    );
    assert_eq!(snapshot(src.path())?, before_tree);
    assert_eq!(
        state_files(a.home.path())?,
        state_before,
        "local state changed"
    );

    let dst = tempfile::tempdir()?;
    assert_ne!(
        a.run("pull", &dst.path().join("new"))?.status.code(),
        Some(0)
    );
    assert!(
        snapshot(dst.path())?.is_empty(),
        "a failed pull wrote files or folders"
    );
    Ok(())
}

/// The bytes of every file under a device's home, to prove a failed command left them alone.
fn state_files(home: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = vec![];
    for (path, node) in snapshot(home)? {
        if let tree::Node::File { .. } = node {
            // WAL/SHM files may be recreated empty by opening; the database content must match.
            if path.ends_with("-shm") || path.ends_with("-wal") {
                continue;
            }
            out.push((path.clone(), fs::read(home.join(&path))?));
        }
    }
    Ok(out)
}

/// A folder replaced by a file on one device (`rm -r D; echo > D`) replaces the unchanged folder
/// on another without leaving an empty "conflicted copy" folder behind, and a device that added a
/// file inside the folder keeps that file (only it) in the copy.
#[test]
fn a_folder_replaced_by_a_file_elsewhere_leaves_no_copy_of_what_was_only_synced() -> Result<()> {
    let s = server(Backend::Local)?;
    let (a, b, c) = (
        s.device("team", "a")?,
        s.device("team", "b")?,
        s.device("team", "c")?,
    );
    let (da, db, dc) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    write(da.path(), "D/x.txt", b"x")?;
    write(da.path(), "D/sub/y.txt", b"y")?;
    write(da.path(), "keep.txt", b"k")?;
    a.push(da.path())?;
    b.pull(db.path())?;
    c.pull(dc.path())?;
    write(dc.path(), "D/new.txt", b"only on c")?;

    fs::remove_dir_all(da.path().join("D"))?;
    write(da.path(), "D", b"now a file")?;
    a.push(da.path())?;

    b.pull(db.path())?;
    assert_same(da.path(), db.path())?;

    c.pull(dc.path())?;
    let t = snapshot(dc.path())?;
    let copies: Vec<_> = t.keys().filter(|k| k.contains("conflicted copy")).collect();
    assert_eq!(
        copies.len(),
        2,
        "one copy folder, holding new.txt only: {copies:?}"
    );
    assert!(copies[1].ends_with("/new.txt"), "{copies:?}");
    assert_eq!(fs::read(dc.path().join(copies[1]))?, b"only on c");
    assert_eq!(fs::read(dc.path().join("D"))?, b"now a file");
    Ok(())
}
