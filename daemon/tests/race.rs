//! A write under a folder that another device replaces by a file between this device's reading
//! of the log and its commit (the one race a round cannot see coming): the server refuses the
//! write (`PARENT_REPLACED`), the round reports it as waiting, not as an error, and the next
//! rounds keep the folder as a conflict copy and upload the write from there.
//!
//! The race is made exact with the fault injector (global to this test binary, which holds this
//! one test): device a's first `Commit` call blocks while device b, on its own thread and
//! runtime, replaces the folder and syncs. The server runs on a runtime of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

mod common;

use cairn::config::Config;
use cairn::faults::{self, Fault, Injector, Site};
use cairn::sync::FolderSync;

const NS: &str = "race";

async fn open(cfg: &Config, dir: &Path) -> FolderSync {
    common::open_folder(cfg, dir, NS).await
}

/// Rounds (with a full scan whenever one is quiet, standing in for the watcher) until a full
/// scan finds nothing to do and nothing is held; every round must be free of errors.
async fn settle(s: &mut FolderSync) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rescanned = false;
    while Instant::now() < deadline {
        let r = s.round().await.expect("round runs");
        assert!(
            r.errors.is_empty() && r.waiting.is_empty(),
            "{:?} {:?}",
            r.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            r.waiting
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        if r.ops > 0 {
            rescanned = false;
        } else if r.held > 0 {
            // Deletions settling (a second): poll again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else if rescanned {
            return;
        } else {
            s.rescan();
            rescanned = true;
        }
    }
    panic!("no quiet round within 30 s");
}

use common::tree;

/// Blocks device a's first `Commit` until device b has done its part.
struct Race {
    armed: AtomicBool,
    go: Mutex<mpsc::Sender<()>>,
    done: Mutex<mpsc::Receiver<()>>,
}

impl Injector for Race {
    fn at(&self, site: Site, key: &str) -> Option<Fault> {
        if site == Site::Rpc && key == "Commit" && self.armed.swap(false, Ordering::SeqCst) {
            self.go.lock().unwrap().send(()).unwrap();
            self.done
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .expect("device b replaced the folder");
        }
        None
    }

    fn no_backoff(&self) -> bool {
        false
    }
}

#[test]
fn a_write_under_a_folder_replaced_elsewhere_mid_round_waits_for_the_pull_and_is_kept() {
    let base = tempfile::tempdir().unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let srv = server_rt.block_on(common::Server::start(base.path(), NS, |_| {}));
    let (a_cfg, b_cfg) = (
        srv.device(base.path(), NS, "a"),
        srv.device(base.path(), NS, "b"),
    );
    let (a_dir, b_dir) = (base.path().join("a"), base.path().join("b"));
    std::fs::create_dir_all(a_dir.join("X")).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::write(a_dir.join("X/x"), b"synced everywhere").unwrap();

    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let race = Arc::new(Race {
        armed: AtomicBool::new(false),
        go: Mutex::new(go_tx),
        done: Mutex::new(done_rx),
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut a = rt.block_on(open(&a_cfg, &a_dir));
    rt.block_on(settle(&mut a));

    // Device b: syncs X/x, then waits for its cue, replaces the folder X by a file, syncs.
    let b_thread = {
        let (b_cfg, b_dir) = (b_cfg.clone(), b_dir.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut b = open(&b_cfg, &b_dir).await;
                settle(&mut b).await;
                ready_tx.send(()).unwrap();
                go_rx.recv_timeout(Duration::from_secs(60)).unwrap();
                std::fs::remove_dir_all(b_dir.join("X")).unwrap();
                std::fs::write(b_dir.join("X"), b"now a file").unwrap();
                b.touch([PathBuf::from("X")]);
                settle(&mut b).await;
                done_tx.send(()).unwrap();
                // Then, once a has settled too: b takes a's conflict copy.
                go_rx.recv_timeout(Duration::from_secs(60)).unwrap();
                settle(&mut b).await;
                done_tx.send(()).unwrap();
            });
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        tree(&b_dir),
        [
            ("X".into(), b"<dir>".to_vec()),
            ("X/x".into(), b"synced everywhere".to_vec())
        ]
    );

    // a writes inside X; its round commits after b's replacement.
    std::fs::write(a_dir.join("X/new"), b"written on a").unwrap();
    a.touch([PathBuf::from("X/new")]);
    faults::install(race.clone());
    race.armed.store(true, Ordering::SeqCst);
    let refused = rt.block_on(a.round()).expect("round runs");
    assert!(
        !race.armed.load(Ordering::SeqCst),
        "a's round never committed"
    );
    assert!(
        refused.errors.is_empty(),
        "a refusal under a replaced folder is not an error: {:?}",
        refused
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let waiting: Vec<String> = refused.waiting.iter().map(ToString::to_string).collect();
    assert!(
        waiting.len() == 1
            && waiting[0].contains("X/new")
            && waiting[0].contains("no longer a folder"),
        "{waiting:?}"
    );

    // The next rounds: X arrives as a file, a's folder is kept as a conflict copy holding
    // what was written on a (and only that), and it goes up.
    rt.block_on(settle(&mut a));
    faults::uninstall();
    race.go.lock().unwrap().send(()).unwrap();
    race.done
        .lock()
        .unwrap()
        .recv_timeout(Duration::from_secs(60))
        .unwrap();
    b_thread.join().unwrap();
    let end = tree(&a_dir);
    assert_eq!(end, tree(&b_dir), "a and b converge");
    let copies: Vec<&(String, Vec<u8>)> = end
        .iter()
        .filter(|(p, _)| p.contains("conflicted copy"))
        .collect();
    assert_eq!(
        copies.len(),
        2,
        "one copy folder holding X/new only: {end:?}"
    );
    assert!(
        copies[1].0.ends_with("/new") && copies[1].1 == b"written on a",
        "{end:?}"
    );
    assert!(
        end.contains(&("X".into(), b"now a file".to_vec())),
        "{end:?}"
    );
    server_rt.block_on(srv.stop());
}
