//! Scanner tests on real temp directories.

use std::collections::BTreeMap;
use std::fs;

use cairn_proto::Version;

use super::*;
use crate::tree::{Kind, SyncedEntry};

const PARAMS: ChunkParams = ChunkParams {
    min: 4096,
    avg: 16384,
    max: 65536,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime builds")
}

fn scan_now(root: &Path, synced: &SyncedTree) -> Scanned {
    rt().block_on(scan(root, synced, PARAMS, 2, &ProgressBar::hidden()))
        .expect("scan succeeds")
}

#[test]
fn the_scan_records_files_dirs_symlinks_and_skips_junk_and_ignored_names() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::create_dir_all(r.join("a/b")).unwrap();
    fs::create_dir(r.join("empty")).unwrap();
    fs::write(r.join("a/b/f.txt"), b"hello").unwrap();
    fs::write(r.join("zero"), b"").unwrap();
    fs::write(r.join(".DS_Store"), b"x").unwrap();
    fs::write(r.join(".cairn"), b"").unwrap();
    fs::write(r.join(".cairn-tmp-123"), b"x").unwrap();
    fs::write(r.join(".cairnignore"), "*.log\nbuild/\n").unwrap();
    fs::write(r.join("a/x.log"), b"x").unwrap();
    fs::create_dir(r.join("build")).unwrap();
    fs::write(r.join("build/out"), b"x").unwrap();
    std::os::unix::fs::symlink("a/b/f.txt", r.join("link")).unwrap();
    let s = scan_now(r, &SyncedTree::new());
    let paths: Vec<&str> = s.tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec![
            ".cairnignore",
            "a",
            "a/b",
            "a/b/f.txt",
            "empty",
            "link",
            "zero"
        ]
    );
    assert_eq!(s.tree["link"].content, Content::Symlink("a/b/f.txt".into()));
    assert_eq!(s.tree["empty"].content.kind(), Kind::Dir);
    assert_eq!(s.files, 3);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.chunks["zero"].len(), 0);
    assert_eq!(s.chunks["a/b/f.txt"].len(), 1);
}

#[test]
fn unchanged_files_reuse_the_synced_hash_and_changed_ones_are_rehashed() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::write(r.join("f"), vec![7u8; 100_000]).unwrap();
    fs::write(r.join("g"), b"g").unwrap();
    let first = scan_now(r, &SyncedTree::new());
    assert_eq!(first.bytes_hashed, 100_001);
    let synced: SyncedTree = first
        .tree
        .iter()
        .map(|(p, e)| {
            (
                p.clone(),
                SyncedEntry {
                    version: Version(1),
                    content: e.content.clone(),
                    stat: e.stat,
                },
            )
        })
        .collect();
    let second = scan_now(r, &synced);
    assert_eq!(second.bytes_hashed, 0);
    assert_eq!(second.tree, first.tree);
    fs::write(r.join("g"), b"h").unwrap();
    // Same size, possibly the same mtime granularity: force a different mtime.
    let f = fs::File::options().write(true).open(r.join("g")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
        .unwrap();
    let third = scan_now(r, &synced);
    assert_eq!(third.bytes_hashed, 1);
    assert_ne!(third.tree["g"].content, first.tree["g"].content);
}

fn synced_from(tree: &LocalTree) -> SyncedTree {
    tree.iter()
        .map(|(p, e)| {
            let s = SyncedEntry {
                version: Version(1),
                content: e.content.clone(),
                stat: e.stat,
            };
            (p.clone(), s)
        })
        .collect()
}

#[test]
fn a_scan_of_changes_is_the_full_scan_as_a_delta_over_the_synced_tree() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::create_dir_all(r.join("a/b")).unwrap();
    let names = [
        "a/b/f",
        "a.b",
        "a0",
        "keep",
        "edit",
        "gone",
        "ign",
        "mode",
        "cafe\u{301}",
        "a/b/\u{c5}",
    ];
    for f in names {
        fs::write(r.join(f), f).unwrap();
    }
    std::os::unix::fs::symlink("keep", r.join("link")).unwrap();
    let tree = synced_from(&scan_now(r, &SyncedTree::new()).tree);
    let db = tempfile::tempdir().unwrap();
    let mut state = crate::state::State::open(&db.path().join("state.db")).unwrap();
    let folder = state.folder(r, "ns", "http://127.0.0.1:1").unwrap();
    let puts: Vec<_> = tree
        .iter()
        .map(|(p, e)| crate::state::SyncedChange::Put(p.clone(), e.clone()))
        .collect();
    state.apply(folder, &puts).unwrap();
    let changes = || {
        let synced = state.synced_reader(folder).unwrap();
        rt().block_on(scan_changes(r, synced, PARAMS, 2, &ProgressBar::hidden()))
            .expect("scan succeeds")
    };
    // Nothing changed: nothing but the name that is not NFC on disk (kept for its disk path).
    let none = changes();
    let kept: Vec<&str> = none.tree.keys().map(String::as_str).collect();
    assert_eq!(kept, ["caf\u{e9}"]);
    assert!(none.absent.is_empty());
    assert_eq!((none.files, none.bytes_scanned), (10, 41));
    fs::write(r.join("edit"), "edited").unwrap();
    fs::remove_file(r.join("gone")).unwrap();
    fs::write(r.join("new"), "new").unwrap();
    fs::write(r.join(".cairnignore"), "ign\n").unwrap();
    fs::set_permissions(r.join("mode"), fs::Permissions::from_mode(0o755)).unwrap();
    // Not NFC, and the same path as the NFC name the walk met (and left out) before any other
    // name that is not NFC.
    fs::write(r.join("a/b/\u{212b}"), "twin").unwrap();
    let full = scan_now(r, &tree);
    let delta = changes();
    let (changed, absent, touched) =
        crate::delta::split(&full.tree, &tree, LocalEntry::is_as_synced);
    // The delta holds what changed, plus the entries it keeps for their disk path.
    for (p, e) in &delta.tree {
        assert_eq!(full.tree.get(p), Some(e), "{p}");
    }
    let with_unusual: BTreeMap<_, _> = changed
        .into_iter()
        .chain([("caf\u{e9}".to_owned(), full.tree["caf\u{e9}"].clone())])
        .collect();
    assert_eq!(delta.tree, with_unusual);
    assert_eq!(delta.absent, absent);
    assert_eq!(absent, ["gone", "ign"]);
    // The synced entries of what it kept and lacks, and the count of every synced file.
    let mut kept_synced = touched;
    kept_synced.insert("caf\u{e9}".to_owned(), tree["caf\u{e9}"].clone());
    assert_eq!(delta.synced, kept_synced);
    let files = tree
        .values()
        .filter(|e| !matches!(e.content, Content::Dir))
        .count();
    assert_eq!(
        (delta.synced_files, none.synced_files),
        (files as u64, files as u64)
    );
    assert!(!delta.tree.contains_key("keep") && delta.tree.contains_key("mode"));
    assert!(delta.skipped.contains("a/b/\u{c5}") && full.skipped.contains("a/b/\u{c5}"));
    let twins = |s: &Scanned| {
        s.errors
            .iter()
            .any(|e| e.to_string().contains("normalise to the same path"))
    };
    assert!(twins(&delta) && twins(&full));
    assert_eq!(
        (delta.files, delta.bytes_scanned, delta.bytes_hashed),
        (full.files, full.bytes_scanned, full.bytes_hashed)
    );
}

#[test]
fn a_name_that_fails_path_validation_is_a_per_path_error_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::write(r.join("ok"), b"1").unwrap();
    fs::write(r.join("back\\slash"), b"1").unwrap();
    let s = scan_now(r, &SyncedTree::new());
    assert_eq!(s.tree.keys().collect::<Vec<_>>(), vec!["ok"]);
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].to_string().contains("back\\slash"));
}

#[test]
fn nfd_names_from_disk_become_nfc_paths() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("cafe\u{301}"), b"1").unwrap();
    let s = scan_now(d.path(), &SyncedTree::new());
    assert!(s.tree.contains_key("caf\u{e9}"));
    assert_eq!(s.disk["caf\u{e9}"], d.path().join("cafe\u{301}"));
}

#[test]
fn two_names_that_normalise_to_one_path_are_caught_whichever_the_walk_meets_first() {
    // The decomposed `e` + accent sorts before the composed `é`; the NFC omega sorts before the
    // ohm sign, which normalises to it. Either way one of the two is refused and the path is
    // skipped, so its absence is never read as a delete.
    for (a, b, path) in [
        ("cafe\u{301}", "caf\u{e9}", "caf\u{e9}"),
        ("\u{3a9}", "\u{2126}", "\u{3a9}"),
    ] {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("first"), b"0").unwrap();
        fs::write(d.path().join(a), b"1").unwrap();
        fs::write(d.path().join(b), b"2").unwrap();
        let s = scan_now(d.path(), &SyncedTree::new());
        assert!(s.skipped.contains(path), "{path:?} is not skipped");
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert!(
            s.errors[0]
                .to_string()
                .contains("normalise to the same path")
        );
        assert!(s.tree.contains_key("first"));
        assert_eq!(s.disk_path("first"), Some(d.path().join("first")));
    }
}

fn scan_region_now(root: &Path, paths: &[&str], synced: &SyncedTree) -> Scanned {
    let region = Region::new(paths);
    rt().block_on(scan_region(
        root,
        Some(&region),
        synced,
        PARAMS,
        2,
        &ProgressBar::hidden(),
    ))
    .expect("scan succeeds")
}

#[test]
fn a_region_scan_stats_only_its_paths_and_the_folders_above_them() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for i in 0..10 {
        fs::create_dir_all(r.join(format!("d{i}/sub"))).unwrap();
        for j in 0..20 {
            fs::write(r.join(format!("d{i}/f{j}")), format!("{i} {j}")).unwrap();
        }
        fs::write(r.join(format!("d{i}/sub/deep")), b"deep").unwrap();
    }
    fs::write(r.join(".cairnignore"), "*.log\n").unwrap();
    fs::write(r.join("d3/x.log"), b"ignored").unwrap();
    let full = scan_now(r, &SyncedTree::new());
    assert_eq!(full.stat_calls, 1 + 10 * 23);

    let one = scan_region_now(r, &["d3/f7"], &SyncedTree::new());
    assert_eq!(one.stat_calls, 2, "only d3 and d3/f7 are stat'ed");
    assert_eq!(one.tree.keys().collect::<Vec<_>>(), vec!["d3", "d3/f7"]);
    assert_eq!(one.tree["d3/f7"], full.tree["d3/f7"]);

    // A directory: its whole subtree. A vanished path: nothing. An ignored one: nothing.
    let some = scan_region_now(r, &["d5/sub", "d6/gone", "d3/x.log"], &SyncedTree::new());
    assert_eq!(
        some.tree.keys().collect::<Vec<_>>(),
        vec!["d3", "d5", "d5/sub", "d5/sub/deep", "d6"]
    );
    for (p, e) in &some.tree {
        if !matches!(e.content, Content::Dir) {
            assert_eq!(e, &full.tree[p]);
        }
    }
}

#[test]
fn a_region_given_in_nfc_finds_an_nfd_name_on_disk() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("cafe\u{301}"), b"1").unwrap();
    fs::write(d.path().join("other"), b"1").unwrap();
    let s = scan_region_now(d.path(), &["caf\u{e9}"], &SyncedTree::new());
    assert_eq!(s.tree.keys().collect::<Vec<_>>(), vec!["caf\u{e9}"]);
    assert_eq!(s.stat_calls, 1);
}

#[test]
fn a_large_file_hashes_the_same_mapped_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    // Above the mapping threshold, with a tail that is not a whole chunk.
    let len = crate::mapped::MAP_FROM as usize + 12_345;
    let mut data = Vec::with_capacity(len);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    while data.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        data.extend_from_slice(&s.to_le_bytes());
    }
    data.truncate(len);
    fs::write(&path, &data).unwrap();
    let params = ChunkParams::DEFAULT;
    let stat = stat_of(&fs::symlink_metadata(&path).unwrap());
    let (chunks, id) = hash_file(&path, stat, params).unwrap();
    let read = crate::chunker::chunk_reader(&data[..], params).unwrap();
    assert_eq!(chunks, read.chunks);
    assert_eq!(id, read.content_id);
    // The lease is gone once the hash is: a non-blocking open for writing, which a held lease
    // refuses (EAGAIN), succeeds.
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("no lease left behind");
}
