//! Pure checks of commit items: kinds, manifests, sizes and symlink targets. No I/O.

use cairn_proto::pb::{EntryKind, FileMeta};
pub use cairn_proto::validate_symlink_target as symlink_target;
use cairn_proto::{ChunkId, content_id_of};

/// A validated new content for a path (not yet checked against the namespace's chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub manifest: Vec<(ChunkId, u32)>,
    /// BLAKE3 of the manifest for files; empty for directories and symlinks.
    pub content_id: Vec<u8>,
    pub symlink_target: String,
}

impl Content {
    /// Same kind, bytes and link target (mode and mtime aside).
    pub fn same_data(&self, kind: i32, content_id: &[u8], symlink_target: &str) -> bool {
        self.kind as i32 == kind
            && self.content_id == content_id
            && self.symlink_target == symlink_target
    }
}

/// Checks `meta` for the entry at `path`; the error says what is wrong, naming the path.
pub fn content(path: &str, meta: Option<&FileMeta>) -> Result<Content, String> {
    let meta = meta.ok_or_else(|| format!("{path:?}: the item carries no meta"))?;
    let kind = EntryKind::try_from(meta.kind).unwrap_or(EntryKind::Unspecified);
    let mut content = Content {
        kind,
        size: meta.size,
        mode: meta.mode & 0o7777,
        mtime_ns: meta.mtime_ns,
        manifest: Vec::new(),
        content_id: Vec::new(),
        symlink_target: String::new(),
    };
    match kind {
        EntryKind::Unspecified => return Err(format!("{path:?}: entry kind is missing")),
        EntryKind::File => {
            let mut sum = 0u64;
            for c in &meta.manifest {
                let id = ChunkId::from_slice(&c.id)
                    .map_err(|e| format!("{path:?}: bad chunk id: {e}"))?;
                if c.length == 0 {
                    return Err(format!("{path:?}: chunk {id} has length 0"));
                }
                sum += u64::from(c.length);
                content.manifest.push((id, c.length));
            }
            if sum != meta.size || i64::try_from(sum).is_err() {
                return Err(format!(
                    "{path:?}: manifest lengths sum to {sum} but size is {}",
                    meta.size
                ));
            }
            if !meta.symlink_target.is_empty() {
                return Err(format!("{path:?}: a file has no symlink target"));
            }
            content.content_id =
                content_id_of(content.manifest.iter().map(|(id, l)| (id, u64::from(*l)))).to_vec();
        }
        EntryKind::Dir => {
            if !meta.manifest.is_empty() || !meta.symlink_target.is_empty() {
                return Err(format!(
                    "{path:?}: a directory has no manifest and no symlink target"
                ));
            }
            content.size = 0;
        }
        EntryKind::Symlink => {
            if !meta.manifest.is_empty() {
                return Err(format!("{path:?}: a symlink has no manifest"));
            }
            symlink_target(path, &meta.symlink_target)?;
            content.symlink_target = meta.symlink_target.clone();
            // Like a directory, a link adds nothing to the namespace's size: a hostile size here
            // would skew (or, cast to i64, bypass) the quota's running total.
            content.size = 0;
        }
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::pb::ChunkRef;

    fn file(size: u64, lens: &[u32]) -> FileMeta {
        FileMeta {
            kind: EntryKind::File as i32,
            size,
            mode: 0o644,
            mtime_ns: 1,
            manifest: lens
                .iter()
                .map(|&l| ChunkRef {
                    id: ChunkId::of(&l.to_le_bytes()).to_vec(),
                    length: l,
                })
                .collect(),
            symlink_target: String::new(),
        }
    }

    #[test]
    fn a_file_manifest_must_sum_to_its_size() {
        assert!(content("a", Some(&file(5, &[2, 3]))).is_ok());
        let err = content("a", Some(&file(6, &[2, 3]))).unwrap_err();
        assert!(
            err.contains("manifest lengths sum to 5 but size is 6"),
            "{err}"
        );
    }

    #[test]
    fn chunk_ids_must_be_32_bytes() {
        let mut m = file(2, &[2]);
        m.manifest[0].id.pop();
        assert!(content("a", Some(&m)).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn directories_and_symlinks_carry_no_manifest() {
        let mut m = file(2, &[2]);
        m.kind = EntryKind::Dir as i32;
        assert!(content("d", Some(&m)).is_err());
        m.kind = EntryKind::Symlink as i32;
        m.symlink_target = "x".into();
        assert!(content("l", Some(&m)).is_err());
        m.manifest.clear();
        assert!(content("l", Some(&m)).is_ok());
        m.kind = 0;
        assert!(content("l", Some(&m)).is_err());
    }

    #[test]
    fn symlink_targets_may_not_leave_the_root() {
        assert!(symlink_target("a/b/link", "../c").is_ok());
        assert!(symlink_target("a/b/link", "../../c").is_ok());
        assert!(symlink_target("a/b/link", "../../../c").is_err());
        assert!(symlink_target("link", "x/../../y").is_err());
        assert!(symlink_target("link", "/etc/passwd").is_err());
        assert!(symlink_target("link", "C:/x").is_err());
        assert!(symlink_target("link", "").is_err());
        assert!(symlink_target("link", "./x/./y").is_ok());
    }

    #[test]
    fn equal_manifests_have_equal_content_ids() {
        let a = content("a", Some(&file(5, &[2, 3]))).unwrap();
        let b = content("b", Some(&file(5, &[2, 3]))).unwrap();
        let c = content("c", Some(&file(5, &[3, 2]))).unwrap();
        assert_eq!(a.content_id, b.content_id);
        assert_ne!(a.content_id, c.content_id);
    }

    /// Property ("fuzz") target over the commit validator: arbitrary items never panic it, and
    /// whatever it accepts is internally consistent. `CASES` per run in CI; longer runs:
    /// `PROPTEST_CASES=1000000 cargo test -p cairn-server fuzz`.
    mod fuzz {
        use super::*;
        use cairn_proto::validate_path;
        use proptest::prelude::*;

        const CASES: u32 = 2000;

        fn config() -> ProptestConfig {
            let mut c = ProptestConfig::default();
            if std::env::var_os("PROPTEST_CASES").is_none() {
                c.cases = CASES;
            }
            c
        }

        fn chunk() -> impl Strategy<Value = ChunkRef> {
            prop_oneof![
                // Well-formed ids (so the accepting branches are reached) ...
                (
                    any::<[u8; 32]>(),
                    prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX)]
                )
                    .prop_map(|(id, length)| ChunkRef {
                        id: id.to_vec(),
                        length
                    }),
                // ... and ids of any length.
                (proptest::collection::vec(any::<u8>(), 0..40), any::<u32>())
                    .prop_map(|(id, length)| ChunkRef { id, length }),
            ]
        }

        fn meta() -> impl Strategy<Value = FileMeta> {
            (
                prop_oneof![0i32..4, any::<i32>()],
                proptest::collection::vec(chunk(), 0..5),
                prop_oneof![Just(None), any::<u64>().prop_map(Some)],
                any::<u32>(),
                any::<i64>(),
                prop_oneof![Just(String::new()), "[a-z./]{0,12}", any::<String>()],
            )
                .prop_map(|(kind, manifest, size, mode, mtime_ns, symlink_target)| {
                    // Half the time the size matches the manifest, so files can be accepted.
                    let sum = manifest.iter().map(|c| u64::from(c.length)).sum();
                    FileMeta {
                        kind,
                        size: size.unwrap_or(sum),
                        mode,
                        mtime_ns,
                        manifest,
                        symlink_target,
                    }
                })
        }

        fn path() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z./]{0,10}",
                "[a-z]{1,5}(/[a-z]{1,5}){0,3}",
                any::<String>()
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn fuzz_accepted_content_is_consistent(path in path(), meta in proptest::option::of(meta())) {
                let Ok(c) = content(&path, meta.as_ref()) else { return Ok(()) };
                let meta = meta.expect("content without meta is refused");
                prop_assert!(c.mode <= 0o7777);
                // Sizes go into SQLite (i64) and the quota's running total: never past i64::MAX.
                prop_assert!(i64::try_from(c.size).is_ok(), "size {} accepted", c.size);
                prop_assert_eq!(c.mtime_ns, meta.mtime_ns);
                match c.kind {
                    EntryKind::File => {
                        prop_assert_eq!(c.manifest.len(), meta.manifest.len());
                        prop_assert!(c.manifest.iter().all(|(_, l)| *l > 0));
                        prop_assert_eq!(c.manifest.iter().map(|(_, l)| u64::from(*l)).sum::<u64>(), c.size);
                        prop_assert_eq!(c.size, meta.size);
                        for ((id, l), r) in c.manifest.iter().zip(&meta.manifest) {
                            prop_assert_eq!(&id.to_vec(), &r.id);
                            prop_assert_eq!(*l, r.length);
                        }
                        let expect = content_id_of(c.manifest.iter().map(|(id, l)| (id, u64::from(*l))));
                        prop_assert_eq!(&c.content_id, &expect.to_vec());
                        prop_assert!(c.symlink_target.is_empty());
                    }
                    EntryKind::Dir => {
                        prop_assert!(c.manifest.is_empty() && c.content_id.is_empty());
                        prop_assert_eq!(c.size, 0);
                        prop_assert!(c.symlink_target.is_empty());
                    }
                    EntryKind::Symlink => {
                        prop_assert!(c.manifest.is_empty() && c.content_id.is_empty());
                        prop_assert!(symlink_target(&path, &c.symlink_target).is_ok());
                        prop_assert_eq!(c.size, 0);
                        prop_assert!(!c.symlink_target.starts_with('/'));
                    }
                    EntryKind::Unspecified => prop_assert!(false, "an unspecified kind was accepted"),
                }
            }

            /// A whole item as the commit path checks it: the path rule, then the content rule.
            /// A refusal always names the path, so the client can say which one failed.
            #[test]
            fn fuzz_item_refusals_name_the_path(path in path(), meta in proptest::option::of(meta())) {
                if validate_path(&path).is_ok()
                    && let Err(e) = content(&path, meta.as_ref())
                {
                    prop_assert!(e.contains(&format!("{path:?}")), "{e}");
                }
            }
        }
    }
}
