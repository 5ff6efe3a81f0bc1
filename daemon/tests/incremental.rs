//! The daemon's control task against an in-process cairn-server: a watch event for one path
//! costs a scan of that path (and the folders above it), not of the whole folder, and leaves the
//! same state a full scan would.

use std::path::{Path, PathBuf};

mod common;

use cairn::config::Config;
use cairn::sync::{FolderSync, Round};

const NS: &str = "inc";
const DIRS: usize = 20;
const FILES: usize = 25;

async fn open(cfg: &Config, dir: &Path) -> FolderSync {
    common::open_folder(cfg, dir, NS).await
}

/// Rounds until one has no work; returns every round.
async fn settle(s: &mut FolderSync) -> Vec<Round> {
    let mut rounds = Vec::new();
    for _ in 0..8 {
        let r = s.round().await.expect("round runs");
        assert!(
            r.errors.is_empty(),
            "{:?}",
            r.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        let quiet = r.ops == 0;
        rounds.push(r);
        if quiet {
            return rounds;
        }
    }
    panic!("no quiet round after 8");
}

use common::tree;

#[tokio::test(flavor = "current_thread")]
async fn a_watch_event_for_one_path_scans_that_path_only_and_converges_like_a_full_scan() {
    let base = tempfile::tempdir().unwrap();
    let srv = common::Server::start(base.path(), NS, |_| {}).await;
    let (a_cfg, b_cfg) = (
        srv.device(base.path(), NS, "a"),
        srv.device(base.path(), NS, "b"),
    );
    let (a_dir, b_dir) = (base.path().join("a"), base.path().join("b"));
    for d in 0..DIRS {
        std::fs::create_dir_all(a_dir.join(format!("d{d:02}"))).unwrap();
        for f in 0..FILES {
            std::fs::write(
                a_dir.join(format!("d{d:02}/f{f:02}")),
                format!("file {d} {f}\n"),
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut a = open(&a_cfg, &a_dir).await;
    let first = settle(&mut a).await;
    assert!(first[0].full, "the first round scans everything");
    assert!(first[0].stat_calls >= (DIRS * (FILES + 1)) as u64);

    // One edit, reported by the watcher as one path.
    std::fs::write(a_dir.join("d07/f03"), b"edited, 25 bytes of text\n").unwrap();
    a.touch([PathBuf::from("d07/f03")]);
    let edit = settle(&mut a).await;
    assert!(edit.iter().all(|r| !r.full), "no full scan for one edit");
    assert_eq!(edit[0].ops, 1, "the edit is uploaded");
    // The file and the folder above it; nothing else in the folder of 500 files.
    assert_eq!(edit[0].stat_calls, 2);
    assert!(edit.iter().all(|r| r.stat_calls <= 2 && r.planned <= 4));

    // A new folder with files, a deleted folder and a rename, each reported by its top path.
    std::fs::create_dir_all(a_dir.join("new/deeper")).unwrap();
    std::fs::write(a_dir.join("new/deeper/x"), b"x").unwrap();
    std::fs::remove_dir_all(a_dir.join("d03")).unwrap();
    std::fs::rename(a_dir.join("d05/f01"), a_dir.join("d06/moved")).unwrap();
    a.touch(["new", "d03", "d05/f01", "d06/moved"].map(PathBuf::from));
    let changes = settle(&mut a).await;
    assert!(changes.iter().all(|r| !r.full));
    assert!(
        changes[0].stat_calls < 20,
        "only the touched paths are scanned: {}",
        changes[0].stat_calls
    );
    assert_eq!(
        changes[0].ops,
        1 + 1 + 1 + (FILES + 1) + 1,
        "mkdir×2 + file + deletes + move"
    );

    // A new ignore file changes what every path means: that takes a full scan.
    std::fs::write(a_dir.join(".cairnignore"), b"d09/\n").unwrap();
    a.touch([PathBuf::from(".cairnignore")]);
    let ignore = settle(&mut a).await;
    assert!(ignore[0].full, "an ignore file change scans everything");
    assert_eq!(
        ignore[0].ops, 1,
        "the ignore file goes up; d09 is not deleted"
    );

    // The cached trees agree with the disk and the DB: a full scan finds nothing to do.
    a.touch([PathBuf::from("")]);
    let full = settle(&mut a).await;
    assert!(full[0].full);
    assert_eq!(
        full[0].ops, 0,
        "the full scan found work the partial rounds missed"
    );

    // And another device ends up with the same folder (remote changes are partial rounds too).
    let mut b = open(&b_cfg, &b_dir).await;
    settle(&mut b).await;
    assert_eq!(tree(&a_dir), tree(&b_dir));
    std::fs::write(a_dir.join("d08/f08"), b"second edit").unwrap();
    a.touch([PathBuf::from("d08/f08")]);
    settle(&mut a).await;
    let pulled = settle(&mut b).await;
    assert!(pulled.iter().all(|r| !r.full));
    assert!(pulled.iter().all(|r| r.stat_calls <= 2 && r.planned <= 4));
    assert_eq!(
        std::fs::read(b_dir.join("d08/f08")).unwrap(),
        b"second edit"
    );
    assert_eq!(tree(&a_dir), tree(&b_dir));

    drop(a);
    drop(b);
    srv.stop().await;
}
