//! Careful local file operations: no writes outside the root, no symlinks followed in parents,
//! temp-file-then-rename, folder fsync, conflict copies.

use std::path::{Path, PathBuf};

use cairn_proto::{conflict_copy_name, validate_path};

use crate::error::{Error, Result};
use crate::scanner::{TMP_PREFIX, stat_of};
use crate::tree::{Content, Stat, SyncedEntry};

/// The disk path of a namespace path, refusing anything that fails path validation.
pub fn disk_path(root: &Path, path: &str) -> Result<PathBuf> {
    validate_path(path).map_err(|e| Error::path(path, format!("refused: {e}")))?;
    Ok(root.join(path))
}

/// Makes sure every parent directory of `path` is a real directory under `root`, creating missing
/// ones. A symlink or a file in a parent component is refused (never followed).
pub fn ensure_parents(root: &Path, path: &str) -> Result<PathBuf> {
    let mut cur = root.to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_dir() => {}
            Ok(_) => {
                return Err(Error::path(
                    path,
                    format!(
                        "{} is not a directory here; not writing through it",
                        cur.display()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(|e| {
                    Error::path(path, format!("cannot create {}: {e}", cur.display()))
                })?;
            }
            Err(e) => {
                return Err(Error::path(
                    path,
                    format!("cannot check {}: {e}", cur.display()),
                ));
            }
        }
    }
    Ok(cur)
}

/// A symlink target Cairn syncs: relative, and resolving (lexically) inside the root.
pub fn symlink_target_ok(link_path: &str, target: &str) -> bool {
    cairn_proto::validate_symlink_target(link_path, target).is_ok()
}

/// A fresh temp name in `dir`.
pub fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()))
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Does the disk entry at `disk` still hold what the synced tree says (or nothing at all)?
pub enum Current {
    Absent,
    AsSynced,
    Different,
}

pub fn current(disk: &Path, synced: Option<&SyncedEntry>) -> Result<Current> {
    let md = match std::fs::symlink_metadata(disk) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::Absent),
        Err(e) => return Err(Error::io(disk, e)),
    };
    let Some(s) = synced else {
        return Ok(Current::Different);
    };
    let ft = md.file_type();
    let same = match &s.content {
        Content::File { .. } => ft.is_file() && same_stat(s.stat, stat_of(&md)),
        Content::Dir => ft.is_dir(),
        Content::Symlink(t) => {
            ft.is_symlink()
                && std::fs::read_link(disk).is_ok_and(|l| l.to_str() == Some(t.as_str()))
        }
    };
    Ok(if same {
        Current::AsSynced
    } else {
        Current::Different
    })
}

pub fn same_stat(a: Stat, b: Stat) -> bool {
    a.size == b.size && a.mtime_ns == b.mtime_ns && a.inode == b.inode
}

/// Renames the entry at `path` to a free conflict-copy name beside it; returns the new path.
pub fn move_to_conflict_copy(root: &Path, path: &str, device: &str) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for attempt in 1..100 {
        let copy = conflict_copy_name(path, device, now, attempt);
        let to = disk_path(root, &copy)?;
        if std::fs::symlink_metadata(&to).is_err() {
            let from = root.join(path);
            std::fs::rename(&from, &to).map_err(|e| {
                Error::path(
                    path,
                    format!("cannot keep the local version as {copy}: {e}"),
                )
            })?;
            return Ok(copy);
        }
    }
    Err(Error::path(path, "cannot find a free conflict-copy name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_that_leave_the_root_are_refused() {
        assert!(symlink_target_ok("a/link", "../b"));
        assert!(symlink_target_ok("a/link", "b/c"));
        assert!(!symlink_target_ok("link", "../x"));
        assert!(!symlink_target_ok("a/link", "../../x"));
        assert!(!symlink_target_ok("a/link", "/etc/passwd"));
        assert!(!symlink_target_ok("a/link", ""));
    }

    #[test]
    fn parents_through_a_symlink_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("evil")).unwrap();
        assert!(ensure_parents(d.path(), "evil/x").is_err());
        assert!(ensure_parents(d.path(), "ok/deeper/x").is_ok());
        assert!(d.path().join("ok/deeper").is_dir());
        assert!(disk_path(d.path(), "../x").is_err());
    }
}
