//! Property ("fuzz") targets over the pure rules and the wire decoders: the path policy never
//! panics and everything it accepts stays under the root; every message type either side decodes
//! never panics on arbitrary or mutated bytes, and what decodes re-encodes to itself.
//!
//! Bounded for CI: `CASES` per target unless `PROPTEST_CASES` says otherwise, e.g.
//! `PROPTEST_CASES=1000000 cargo test -p cairn-proto --test fuzz` for a long run.

use std::path::{Component, Path};

use cairn_proto::pb;
use cairn_proto::{
    case_conflict_name, case_fold_key, conflict_copy_name, to_nfc, validate_path,
    validate_symlink_target, windows_name_problem,
};
use proptest::prelude::*;
use prost::Message;
use unicode_normalization::UnicodeNormalization;

/// Cases per target in CI (a few seconds each on 2 cores).
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    c
}

/// Path-ish strings: components drawn from the hostile and the ordinary, joined by `/` or `\`,
/// so the interesting corners come up far more often than in uniform strings.
fn pathish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("...".to_owned()),
        Just("C:".to_owned()),
        Just("c:x".to_owned()),
        Just("CON".to_owned()),
        Just("nul.txt".to_owned()),
        Just("a.".to_owned()),
        Just("a ".to_owned()),
        Just("caf\u{e9}".to_owned()),
        Just("cafe\u{301}".to_owned()),
        Just("\u{212b}".to_owned()),
        Just("A.txt".to_owned()),
        Just("a.txt".to_owned()),
        Just("\0".to_owned()),
        Just("\n".to_owned()),
        Just("\u{1b}[31m".to_owned()),
        Just("\u{202e}".to_owned()),
        "[a-zA-Z0-9 ._-]{1,12}",
        "\\PC{1,8}",
        "n{250,260}",
    ];
    let sep = prop_oneof![Just("/"), Just("/"), Just("/"), Just("\\"), Just("//")];
    (
        prop_oneof![Just(""), Just("/"), Just("\\\\"), Just("C:\\")],
        proptest::collection::vec((part, sep), 1..8),
    )
        .prop_map(|(lead, parts)| {
            let mut s = lead.to_owned();
            for (i, (p, sep)) in parts.iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                s.push_str(p);
            }
            s
        })
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![pathish(), any::<String>(), "\\PC{0,40}"]
}

/// What every accepted path must be.
fn assert_accepted_is_safe(p: &str) {
    assert!(!p.is_empty());
    assert!(!p.starts_with('/'), "{p:?} is absolute");
    assert!(!p.contains('\\'), "{p:?} has a backslash");
    assert!(!p.chars().any(char::is_control), "{p:?} has a control char");
    assert_eq!(to_nfc(p), p, "{p:?} is not NFC");
    assert!(p.len() <= cairn_proto::names::MAX_PATH_BYTES);
    let bytes = p.as_bytes();
    assert!(
        !(bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'),
        "{p:?} has a drive prefix"
    );
    for part in p.split('/') {
        assert!(!part.is_empty() && part != "." && part != "..", "{p:?}");
        assert!(part.len() <= cairn_proto::names::MAX_NAME_BYTES, "{p:?}");
    }
    // Joined under a root, every component is a plain name: it cannot climb out.
    let root = Path::new("/srv/cairn/root");
    let joined = root.join(p);
    assert!(joined.starts_with(root), "{p:?} leaves the root");
    assert!(
        joined
            .strip_prefix(root)
            .expect("starts with root")
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{p:?} has a non-plain component once joined"
    );
}

/// Conflict-copy and case-conflict names add to a name; a long one may then be refused.
fn last_name_longer_than(p: &str, n: usize) -> bool {
    p.rsplit('/').next().is_some_and(|name| name.len() > n)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_validate_path_accepts_only_safe_relative_nfc_paths(p in any_path()) {
        if validate_path(&p).is_ok() {
            assert_accepted_is_safe(&p);
            // The rules beside it never panic on an accepted path and keep it valid.
            let _ = windows_name_problem(&p);
            let _ = case_fold_key(&p);
            if p.len() < 3000 {
                prop_assert!(validate_path(&case_conflict_name(&p, 3)).is_ok() || last_name_longer_than(&p, 230));
                let copy = conflict_copy_name(&p, "laptop", 1_795_428_902, 2);
                prop_assert!(validate_path(&copy).is_ok() || last_name_longer_than(&p, 200));
            }
        }
    }

    #[test]
    fn fuzz_nfc_then_validate_is_idempotent(p in any_path()) {
        let once = to_nfc(&p);
        prop_assert_eq!(&to_nfc(&once), &once);
        prop_assert_eq!(validate_path(&once).is_ok(), validate_path(&to_nfc(&once)).is_ok());
        // An NFD spelling of a valid path is never accepted as a second, different path.
        let nfd: String = once.nfd().collect();
        if nfd != once {
            prop_assert!(validate_path(&nfd).is_err(), "NFD {nfd:?} accepted beside {once:?}");
        }
    }

    #[test]
    fn fuzz_symlink_targets_that_pass_stay_under_the_root(link in pathish(), target in any_path()) {
        if validate_path(&link).is_err() {
            return Ok(());
        }
        if validate_symlink_target(&link, &target).is_ok() {
            prop_assert!(!target.starts_with('/') && !target.contains('\\'));
            prop_assert!(!target.chars().any(char::is_control));
            // Resolve lexically from the link's folder: never above the root.
            let mut depth: Vec<&str> = link.split('/').collect();
            depth.pop();
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." => {
                        prop_assert!(depth.pop().is_some(), "{link:?} -> {target:?} climbs out");
                    }
                    name => depth.push(name),
                }
            }
        }
    }
}

/// Arbitrary bytes, and byte-level mutations of real encodings, into one message type: decoding
/// never panics, and whatever decodes re-encodes to a message that decodes to itself.
fn decode_never_panics<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = M::decode(bytes) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoding decodes");
        assert_eq!(again, m);
    }
    // Length-delimited framing too (what streams and nested fields use).
    let _ = M::decode_length_delimited(bytes);
}

macro_rules! every_message {
    ($bytes:expr, $($ty:ident),* $(,)?) => {
        $( decode_never_panics::<pb::$ty>($bytes); )*
    };
}

/// Every message either side decodes from the other: requests (the server's input) and responses
/// (the daemon's input from a server it should not have to trust for memory safety).
fn decode_all(bytes: &[u8]) {
    every_message!(
        bytes,
        GetNamespaceRequest,
        NamespaceInfo,
        FindMissingRequest,
        FindMissingResponse,
        PrepareUploadRequest,
        PrepareUploadResponse,
        ConfirmUploadRequest,
        ConfirmUploadResponse,
        CommitRequest,
        CommitResponse,
        ListTreeRequest,
        ListTreeResponse,
        GetManifestsRequest,
        GetManifestsResponse,
        ListChangesRequest,
        ListChangesResponse,
        SubscribeRequest,
        ChangeBatch,
        ListVersionsRequest,
        ListVersionsResponse,
        ListLogRequest,
        ListLogResponse,
        ListTrashRequest,
        ListTrashResponse,
        RestoreRequest,
        RestoreResponse,
        GetUsageRequest,
        Usage,
        ListWantedRequest,
        ListWantedResponse,
    );
}

fn file_meta() -> impl Strategy<Value = pb::FileMeta> {
    (
        -2i32..5,
        any::<u64>(),
        any::<u32>(),
        any::<i64>(),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), any::<u32>()),
            0..6,
        ),
        any_path(),
    )
        .prop_map(
            |(kind, size, mode, mtime_ns, chunks, target)| pb::FileMeta {
                kind,
                size,
                mode,
                mtime_ns,
                manifest: chunks
                    .into_iter()
                    .map(|(id, length)| pb::ChunkRef { id, length })
                    .collect(),
                symlink_target: target,
            },
        )
}

fn commit_request() -> impl Strategy<Value = pb::CommitRequest> {
    let item = (
        any_path(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(file_meta()),
        any_path(),
        any::<u64>(),
    )
        .prop_map(
            |(path, base_version, delete, meta, move_from, move_from_version)| pb::CommitItem {
                path,
                base_version,
                delete,
                meta,
                move_from,
                move_from_version,
            },
        );
    ("\\PC{0,12}", proptest::collection::vec(item, 0..4))
        .prop_map(|(namespace, items)| pb::CommitRequest { namespace, items })
}

/// One byte-level edit of an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Mutation::Flip(i, x) if n > 0 => bytes[i % n] ^= x,
            Mutation::Insert(i, x) => bytes.insert(i % (n + 1), x),
            Mutation::Remove(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (n + 1)),
            _ => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ],
        0..4,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes);
    }

    #[test]
    fn fuzz_decoders_never_panic_on_mutated_commits(req in commit_request(), edits in mutations()) {
        let encoded = req.encode_to_vec();
        // Unmutated, a commit round-trips exactly.
        prop_assert_eq!(&pb::CommitRequest::decode(encoded.as_slice()).expect("decodes"), &req);
        decode_all(&mutate(encoded, &edits));
    }
}
