//! Building test trees and comparing two trees (content, kind, permission bits, mtime).

use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce from the seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `bytes` to `root/rel`, creating parents.
pub fn write(root: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(p, bytes)?;
    Ok(())
}

/// What one path of a tree is, as compared across devices.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Node {
    File {
        hash: String,
        size: u64,
        mode: u32,
        mtime_s: i64,
    },
    Dir,
    Symlink(String),
}

/// Every path below `root` (relative, `/`-separated), skipping Cairn's own `.cairn` marker.
pub fn snapshot(root: &Path) -> Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // A folder a running daemon removed (or renamed) since its parent was listed.
        Err(e) if dir != root && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        if rel == ".cairn" {
            continue;
        }
        // The folder may be live (a daemon renames temp files into place, moves entries aside):
        // an entry gone between the listing and the look is simply not in this snapshot.
        match node(root, &path, out) {
            Ok(n) => {
                out.insert(rel, n);
            }
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn node(root: &Path, path: &Path, out: &mut BTreeMap<String, Node>) -> Result<Node> {
    let meta = fs::symlink_metadata(path)?;
    Ok(if meta.file_type().is_symlink() {
        Node::Symlink(fs::read_link(path)?.to_string_lossy().into_owned())
    } else if meta.is_dir() {
        walk(root, path, out)?;
        Node::Dir
    } else {
        let mtime = meta
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs() as i64;
        Node::File {
            hash: hash_hex(&fs::read(path)?),
            size: meta.len(),
            mode: meta.permissions().mode() & 0o777,
            mtime_s: mtime,
        }
    })
}

fn gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
}

/// Fails with the first differing paths when two trees are not the same.
pub fn assert_same(a: &Path, b: &Path) -> Result<()> {
    let (sa, sb) = (snapshot(a)?, snapshot(b)?);
    if sa != sb {
        let mut diffs = vec![];
        for k in sa.keys().chain(sb.keys()) {
            if sa.get(k) != sb.get(k) && !diffs.iter().any(|(p, _, _)| p == k) {
                diffs.push((k.clone(), sa.get(k).cloned(), sb.get(k).cloned()));
            }
        }
        diffs.truncate(10);
        bail!(
            "trees differ ({} vs {}): {diffs:#?}",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

/// Sets a file's mtime to `secs` after the epoch.
pub fn set_mtime(path: &Path, secs: u64) -> Result<()> {
    let f = fs::File::options().write(true).open(path)?;
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))?;
    Ok(())
}

/// The tree the foundation acceptance asks for: nested dirs, an empty dir, a 0-byte file, NFC
/// unicode names, a 20 MiB random file, an executable.
pub fn acceptance_tree(root: &Path, seed: u64) -> Result<()> {
    write(root, "readme.txt", b"hello cairn\n")?;
    write(root, "a/b/c/deep.txt", b"deep file")?;
    write(root, "a/sibling.md", b"# sibling")?;
    fs::create_dir_all(root.join("empty-dir"))?;
    write(root, "zero-bytes", b"")?;
    write(root, "ünïcödé/café.txt", "naïve résumé".as_bytes())?;
    write(root, "日本語/ファイル.txt", "こんにちは".as_bytes())?;
    write(
        root,
        "big/random.bin",
        &random_bytes(seed, 20 * 1024 * 1024),
    )?;
    write(root, "bin/run.sh", b"#!/bin/sh\necho hi\n")?;
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755))?;
    set_mtime(&root.join("a/sibling.md"), 1_600_000_000)?;
    Ok(())
}

/// The BLAKE3 of `bytes` in hex, as [`Node::File`] records a file's content.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
