//! History and safety acceptance (issue 4): versions, restore, trash, retention + garbage
//! collection (also racing pushes), quotas, and scrub healing from a device.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::Result;
use cairn_e2e::tree::{Node, random_bytes, snapshot, write};
use cairn_e2e::{Backend, CairnServer, Device, field, json_ok, wait_for};
use serde_json::Value;

on_every_backend!(
    any_of_five_versions_restores_byte_for_byte,
    after_retention_gc_frees_dropped_versions_and_retained_ones_still_restore,
);

fn server(backend: Backend) -> Result<CairnServer> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    Ok(s)
}

fn seed() -> u64 {
    let seed = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed: {seed} (rerun with CAIRN_SEED={seed})");
    seed
}

/// The `k`th stream of test bytes from `seed`. (`random_bytes` ignores the seed's lowest bit, so
/// `seed + 1` and `seed + 2` can give the same bytes: spread the streams apart.)
fn bytes(seed: u64, k: u64, len: usize) -> Vec<u8> {
    random_bytes(
        seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C16)),
        len,
    )
}

/// `cairn --json ARGS... --namespace NS` on device `d`.
fn cairn(d: &Device, args: &[&str]) -> Result<Output> {
    Ok(d.cmd()
        .arg("--json")
        .args(args)
        .args(["--namespace", &d.namespace])
        .output()?)
}

fn cairn_ok(d: &Device, args: &[&str]) -> Result<Value> {
    json_ok(cairn(d, args)?, &args.join(" "))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 with milliseconds, as `cairn restore --at` takes it.
fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// What a restore must bring back: the bytes (hash and size) and the kind; not the mtime.
fn content(n: &Node) -> Option<(String, u64)> {
    match n {
        Node::File { hash, size, .. } => Some((hash.clone(), *size)),
        _ => None,
    }
}

/// The version numbers `cairn versions` lists for `path`, newest first.
fn versions(d: &Device, path: &str) -> Result<Vec<u64>> {
    let v = cairn_ok(d, &["versions", path])?;
    Ok(v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect())
}

/// Pulls the namespace into a fresh folder on `d` and returns the bytes of `path` there.
fn pulled_bytes(d: &Device, path: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    d.pull(dir.path())?;
    Ok(fs::read(dir.path().join(path))?)
}

fn any_of_five_versions_restores_byte_for_byte(backend: Backend) -> Result<()> {
    let s = server(backend)?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let src = tempfile::tempdir()?;
    let seed = seed();
    // Five versions of a multi-chunk file, each sharing most chunks with the first.
    let base = bytes(seed, 0, 3 << 20);
    let mut contents = Vec::new();
    for i in 0..5u64 {
        let mut c = base.clone();
        let at = (i as usize * 600_000) % (c.len() - 100);
        c[at..at + 100].copy_from_slice(&bytes(seed, 1 + i, 100));
        c.extend_from_slice(&bytes(seed, 100 + i, 1000 * i as usize));
        write(src.path(), "docs/report.bin", &c)?;
        a.push(src.path())?;
        contents.push(c);
    }
    assert_eq!(versions(&a, "docs/report.bin")?, vec![5, 4, 3, 2, 1]);
    let stored_before = field(&cairn_ok(&a, &["usage"])?, "stored_bytes");

    for (i, want) in contents.iter().enumerate() {
        let n = (i + 1).to_string();
        let r = cairn_ok(&a, &["restore", "docs/report.bin", "--version", &n])?;
        assert_eq!(r["results"][0]["status"], "restored", "{r}");
        // The folder A pushed from is known to A: the restore lands in it too.
        assert_eq!(
            &fs::read(src.path().join("docs/report.bin"))?,
            want,
            "version {n} in A's folder"
        );
        assert_eq!(
            &pulled_bytes(&b, "docs/report.bin")?,
            want,
            "version {n} on B"
        );
    }
    // A restore points at old chunks: nothing new is stored.
    let usage = cairn_ok(&a, &["usage"])?;
    assert_eq!(field(&usage, "stored_bytes"), stored_before, "{usage}");
    // ... and the log says who restored what.
    let log = cairn_ok(&a, &["log", "docs/report.bin"])?;
    let first = &log["entries"][0];
    assert_eq!(first["action"], "restored", "{log}");
    assert_eq!(first["detail"], "5", "{log}");
    assert_eq!(first["device"], "laptop", "{log}");

    // Restoring what is already current changes nothing; a version that never existed is an
    // error naming it.
    let again = cairn_ok(&a, &["restore", "docs/report.bin", "--version", "5"])?;
    assert_eq!(again["results"].as_array().unwrap().len(), 0, "{again}");
    let bad = cairn(&a, &["restore", "docs/report.bin", "--version", "99"])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no version 99"));
    Ok(())
}

fn after_retention_gc_frees_dropped_versions_and_retained_ones_still_restore(
    backend: Backend,
) -> Result<()> {
    let s = server(backend)?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let src = tempfile::tempdir()?;
    let seed = seed();
    // Unrelated contents: each version's chunks are its own objects.
    let contents: Vec<Vec<u8>> = (0..5).map(|i| bytes(seed, i, 1_500_000)).collect();
    let mut cutoff = 0;
    for (i, c) in contents.iter().enumerate() {
        write(src.path(), "big.bin", c)?;
        a.push(src.path())?;
        if i == 2 {
            // v1 and v2 stopped being current before this instant; v3 after it.
            cutoff = now_ms();
        }
    }
    let objects_before = s.stored_objects()?;
    let report = s.gc_dropping_before(cutoff)?;
    assert_eq!(field(&report, "versions_dropped"), 2, "{report}");
    assert!(field(&report, "objects_deleted") >= 2, "{report}");
    let objects_after = wait_for(
        "the store's object count to drop",
        Duration::from_secs(30),
        || s.stored_objects().ok().filter(|n| *n <= objects_before - 2),
    )?;
    println!("stored objects: {objects_before} before gc, {objects_after} after");

    assert_eq!(versions(&a, "big.bin")?, vec![5, 4, 3]);
    for v in [3u64, 4, 5] {
        cairn_ok(&a, &["restore", "big.bin", "--version", &v.to_string()])?;
        assert_eq!(
            pulled_bytes(&b, "big.bin")?,
            contents[v as usize - 1],
            "retained version {v}"
        );
    }
    // A dropped version is gone, and says so.
    let gone = cairn(&a, &["restore", "big.bin", "--version", "1"])?;
    assert_eq!(gone.status.code(), Some(1));
    // Nothing the retained versions need was touched.
    let scrub = s.store_admin(&["scrub", "--json"])?;
    let report = json_ok(scrub, "cairn-server scrub")?;
    assert_eq!(report["damaged"].as_array().unwrap().len(), 0, "{report}");
    Ok(())
}

#[test]
fn a_folder_restores_to_a_time_before_a_batch_of_edits_and_deletes() -> Result<()> {
    let s = server(Backend::Local)?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let src = tempfile::tempdir()?;
    let seed = seed();
    for i in 0..10u64 {
        write(
            src.path(),
            &format!("docs/f{i}.txt"),
            &bytes(seed, i, 1000 + i as usize * 5000),
        )?;
    }
    write(src.path(), "docs/sub/deep.bin", &bytes(seed, 50, 700_000))?;
    write(src.path(), "other.txt", b"outside the restored folder")?;
    a.push(src.path())?;
    let before = snapshot(src.path())?;
    let t = now_ms();

    // The batch: edits, deletes (a whole subfolder too), new files.
    for i in 0..3 {
        write(
            src.path(),
            &format!("docs/f{i}.txt"),
            b"overwritten by mistake",
        )?;
    }
    fs::remove_file(src.path().join("docs/f5.txt"))?;
    fs::remove_file(src.path().join("docs/f6.txt"))?;
    fs::remove_dir_all(src.path().join("docs/sub"))?;
    write(src.path(), "docs/new1.txt", b"created after t")?;
    write(src.path(), "docs/new2.txt", b"created after t too")?;
    write(
        src.path(),
        "other.txt",
        b"edited after t, but not under docs/",
    )?;
    let pushed = a.push(src.path())?;
    assert!(field(&pushed, "deleted") >= 3, "{pushed}");

    // Restore through the local path: the folder tells the namespace.
    let out = a
        .cmd()
        .current_dir(src.path())
        .args(["--json", "restore", "docs", "--at", &rfc3339_ms(t)])
        .output()?;
    let r = json_ok(out, "restore docs --at")?;
    let results = r["results"].as_array().unwrap();
    assert!(results.iter().all(|x| x["status"] == "restored"), "{r}");

    // A's folder is back as it was under docs/; other.txt keeps its later edit.
    let mut want = before.clone();
    want.retain(|p, _| p.starts_with("docs"));
    let mut got = snapshot(src.path())?;
    got.retain(|p, _| p.starts_with("docs"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, node) in &want {
        assert_eq!(content(&got[p]), content(node), "{p}");
    }
    assert_eq!(
        fs::read(src.path().join("other.txt"))?,
        b"edited after t, but not under docs/"
    );
    // And so is every other device.
    let dst = tempfile::tempdir()?;
    b.pull(dst.path())?;
    let mut theirs = snapshot(dst.path())?;
    theirs.retain(|p, _| p.starts_with("docs"));
    assert_eq!(
        theirs.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, node) in &want {
        assert_eq!(content(&theirs[p]), content(node), "{p}");
    }
    Ok(())
}

#[test]
fn a_deleted_file_is_in_the_trash_and_restores_with_its_content() -> Result<()> {
    let s = server(Backend::Local)?;
    let a = s.device("team", "laptop")?;
    let src = tempfile::tempdir()?;
    let content = bytes(seed(), 0, 200_000);
    write(src.path(), "notes/keep.md", &content)?;
    write(src.path(), "notes/other.md", b"stays")?;
    a.push(src.path())?;
    fs::remove_file(src.path().join("notes/keep.md"))?;
    a.push(src.path())?;

    let trash = cairn_ok(&a, &["trash"])?;
    let items = trash["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{trash}");
    assert_eq!(items[0]["path"], "notes/keep.md");
    assert_eq!(items[0]["deleted_by"], "laptop");
    assert_eq!(field(&items[0], "size"), 200_000);

    // Undelete by local path, from inside the folder.
    let out = a
        .cmd()
        .current_dir(src.path().join("notes"))
        .args(["--json", "restore", "keep.md"])
        .output()?;
    json_ok(out, "restore keep.md")?;
    assert_eq!(fs::read(src.path().join("notes/keep.md"))?, content);
    let trash = cairn_ok(&a, &["trash"])?;
    assert_eq!(trash["items"].as_array().unwrap().len(), 0, "{trash}");
    Ok(())
}

#[test]
fn gc_racing_pushes_that_reuse_dropped_chunks_loses_nothing() -> Result<()> {
    // The server collects every 50 ms with a 1 s grace; every superseded version is dropped at
    // once.
    let s = CairnServer::start_with(
        Backend::Local,
        &["--gc-interval", "50ms", "--gc-grace", "1s"],
    )?;
    s.create_namespace("team")?;
    s.admin(&["namespace", "set", "team", "--retention", "0s"])?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let src = tempfile::tempdir()?;
    let seed = seed();
    // Three variants per file that share most chunks; cycling through them makes each push
    // reuse chunks that the previous pushes left unreferenced (and the collector is deleting).
    let base: Vec<Vec<u8>> = (0..3).map(|f| bytes(seed, f, 2 << 20)).collect();
    let variant = |f: usize, v: usize| {
        let mut c = base[f].clone();
        let tail = bytes(seed, 1000 + (f * 10 + v) as u64, 600_000);
        c.extend_from_slice(&tail);
        c
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A second collector with no grace at all, as an impatient admin would run beside the
    // server: it deletes unreferenced chunks the moment it sees them, racing every push.
    let admin = {
        let (stop, db, store) = (stop.clone(), s.db.clone(), s.store.clone());
        std::thread::spawn(move || -> Result<(u32, u64)> {
            let (mut runs, mut deleted) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(cairn_e2e::bin("cairn-server"))
                    .args(["gc", "--json", "--grace", "0s", "--db"])
                    .arg(&db)
                    .args(["--store", &store])
                    .output()?;
                let report = json_ok(out, "cairn-server gc")?;
                deleted += field(&report, "chunks_deleted");
                runs += 1;
            }
            Ok((runs, deleted))
        })
    };
    let mut retries = 0;
    for round in 0..12 {
        for f in 0..3 {
            write(src.path(), &format!("f{f}.bin"), &variant(f, round % 3))?;
        }
        // A chunk collected between FindMissing and Commit makes the server refuse that file;
        // the push uploads it again in the same run. Only a second collection in that window
        // leaves the file for the next push, as the daemon's next round would.
        let mut attempt = 0;
        loop {
            let out = a.run("push", src.path())?;
            if out.status.success() {
                break;
            }
            attempt += 1;
            retries += 1;
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                attempt < 5 && err.contains("collected"),
                "push failed: {err}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, deleted) = admin.join().expect("gc thread")?;
    println!(
        "12 rounds of pushes; {runs} admin gc runs deleted {deleted} chunks beside the server's collector; {retries} pushes retried"
    );
    assert!(
        deleted > 0,
        "the collector never collected anything: the race was not exercised"
    );
    // Every current file downloads byte for byte on another device...
    let dst = tempfile::tempdir()?;
    b.pull(dst.path())?;
    for f in 0..3 {
        assert_eq!(
            fs::read(dst.path().join(format!("f{f}.bin")))?,
            variant(f, 11 % 3),
            "f{f}.bin"
        );
    }
    // ... and every chunk row still points at intact bytes.
    let report = json_ok(s.store_admin(&["scrub", "--json"])?, "scrub")?;
    assert_eq!(report["damaged"].as_array().unwrap().len(), 0, "{report}");
    Ok(())
}

#[test]
fn a_quota_refuses_growth_with_exit_12_and_changes_nothing() -> Result<()> {
    let s = server(Backend::Local)?;
    s.admin(&["namespace", "set", "team", "--quota", "1MiB"])?;
    let a = s.device("team", "laptop")?;
    let src = tempfile::tempdir()?;
    write(src.path(), "small.txt", &bytes(seed(), 0, 100_000))?;
    a.push(src.path())?;
    write(src.path(), "big.bin", &bytes(seed(), 1, 2 << 20))?;
    let out = a.run("push", src.path())?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quota"),
        "{out:?}"
    );
    let usage = cairn_ok(&a, &["usage"])?;
    assert_eq!(field(&usage, "logical_bytes"), 100_000, "{usage}");
    assert_eq!(field(&usage, "quota_bytes"), 1 << 20, "{usage}");
    // Shrinking is always allowed: deleting the small file goes through.
    fs::remove_file(src.path().join("big.bin"))?;
    fs::remove_file(src.path().join("small.txt"))?;
    a.push(src.path())?;
    assert_eq!(field(&cairn_ok(&a, &["usage"])?, "logical_bytes"), 0);
    Ok(())
}

/// Flips one byte in the middle of every stored object file of the local store.
fn corrupt_objects(blobs: &Path) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(blobs.join("objects"))? {
        let p = e?.path();
        let mut bytes = fs::read(&p)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        fs::write(&p, bytes)?;
        n += 1;
    }
    Ok(n)
}

#[test]
fn a_flipped_byte_is_found_by_scrub_and_healed_from_a_device() -> Result<()> {
    let s = server(Backend::Local)?;
    let (a, c) = (s.device("team", "laptop")?, s.device("team", "phone")?);
    let src = tempfile::tempdir()?;
    let content = bytes(seed(), 0, 1_200_000);
    write(src.path(), "photo.raw", &content)?;
    a.push(src.path())?;
    let flipped = corrupt_objects(&s.dir.path().join("blobs"))?;
    assert!(flipped >= 1);

    let out = s.store_admin(&["scrub", "--json"])?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "scrub must fail on damage: {out:?}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let damaged = report["damaged"].as_array().unwrap().len();
    assert!(damaged >= 1, "{report}");
    assert!(field(&report, "files_affected") >= 1, "{report}");

    // A holds the file unchanged: its next push uploads the lost chunks again.
    let pushed = a.push(src.path())?;
    assert_eq!(
        field(&pushed, "chunks_healed") as usize,
        damaged,
        "{pushed}"
    );
    assert_eq!(pulled_bytes(&c, "photo.raw")?, content);
    let clean = s.store_admin(&["scrub", "--json"])?;
    assert!(clean.status.success(), "{clean:?}");
    Ok(())
}

#[test]
fn a_restore_reaches_live_folders_through_their_daemons() -> Result<()> {
    let s = server(Backend::Local)?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    a.add(da.path())?;
    b.add(db.path())?;
    let (_ra, _rb) = (a.daemon()?, b.daemon()?);
    let first = bytes(seed(), 0, 300_000);
    write(da.path(), "plan.txt", &first)?;
    let on_b = |want: &[u8]| {
        let p = db.path().join("plan.txt");
        let want = want.to_vec();
        wait_for("plan.txt on B", Duration::from_secs(60), move || {
            fs::read(&p).ok().filter(|b| *b == want)
        })
    };
    on_b(&first)?;
    write(da.path(), "plan.txt", b"a bad edit")?;
    on_b(b"a bad edit")?;

    // Restore version 1 from B's folder: both daemons bring it in; the CLI leaves the folder
    // alone (the daemon owns it).
    let out = b
        .cmd()
        .current_dir(db.path())
        .args(["--json", "restore", "plan.txt", "--version", "1"])
        .output()?;
    let r = json_ok(out, "restore plan.txt")?;
    assert_eq!(r["pulled"], Value::Null, "{r}");
    on_b(&first)?;
    let p = da.path().join("plan.txt");
    wait_for("plan.txt restored on A", Duration::from_secs(60), || {
        fs::read(&p).ok().filter(|b| *b == first)
    })?;
    Ok(())
}
