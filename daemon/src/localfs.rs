//! Careful local file operations: no writes outside the root, no symlinks followed in parents,
//! temp-file-then-rename, folder fsync, conflict copies.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, mkdirat, openat, renameat, symlinkat, unlinkat};

use cairn_proto::{conflict_copy_name, validate_path};

use crate::error::{Error, Result};
use crate::faults::{self, Site};
use crate::scanner::{TMP_PREFIX, stat_of};
use crate::tree::{Content, LocalEntry, Stat, SyncedEntry};

/// The disk path of a namespace path, refusing anything that fails path validation.
pub fn disk_path(root: &Path, path: &str) -> Result<PathBuf> {
    validate_path(path).map_err(|e| Error::path(path, format!("refused: {e}")))?;
    Ok(root.join(path))
}

/// An open folder inside the root, reached one component at a time without following any
/// symlink. Every write the executors make (temp file, rename into place, conflict copy, mkdir,
/// symlink, delete) is relative to one of these, by name: a symlink swapped into a parent after
/// the folder was opened is never followed, so no write leaves the root that way.
pub struct DirHandle {
    fd: OwnedFd,
    /// For messages and for reads (stat, readdir) that cannot write anything.
    path: PathBuf,
}

impl DirHandle {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh temp file in this folder (created exclusively, never through a link).
    pub fn create_temp(&self) -> Result<(String, std::fs::File)> {
        faults::io(Site::CreateTemp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        loop {
            let name = format!("{TMP_PREFIX}{:016x}", rand::random::<u64>());
            match openat(
                &self.fd,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((name, std::fs::File::from(fd))),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(self.path.join(&name), e.into())),
            }
        }
    }

    /// `rename(from, to)` within this folder; replaces `to` (a link there is replaced, not followed).
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        faults::io(Site::Rename, self.path.join(to))?;
        Ok(renameat(&self.fd, from, &self.fd, to)?)
    }

    /// `rename(from, to)` from this folder into `other`.
    pub fn rename_to(&self, from: &str, other: &DirHandle, to: &str) -> std::io::Result<()> {
        faults::io(Site::Rename, other.path.join(to))?;
        Ok(renameat(&self.fd, from, &other.fd, to)?)
    }

    pub fn mkdir(&self, name: &str) -> std::io::Result<()> {
        faults::io(Site::Mkdir, self.path.join(name))?;
        Ok(mkdirat(&self.fd, name, Mode::from_raw_mode(0o777))?)
    }

    pub fn symlink(&self, target: &str, name: &str) -> std::io::Result<()> {
        Ok(symlinkat(target, &self.fd, name)?)
    }

    pub fn remove(&self, name: &str, dir: bool) -> std::io::Result<()> {
        faults::io(Site::Remove, self.path.join(name))?;
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(unlinkat(&self.fd, name, flags)?)
    }

    /// The folder's (device, inode): two handles of one folder give the same pair.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Makes this folder's entries durable (after a rename into it).
    pub fn fsync(&self) -> Result<()> {
        faults::io(Site::Fsync, &self.path).map_err(|e| Error::io(&self.path, e))?;
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }
}

/// Opens `root` itself as a [`DirHandle`].
pub fn open_root(root: &Path) -> Result<DirHandle> {
    let fd = openat(
        CWD,
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(root, e.into()))?;
    Ok(DirHandle {
        fd,
        path: root.to_owned(),
    })
}

/// Opens the folder that holds root-relative `path` (its last component is not opened), creating
/// missing folders. A symlink, a file or anything else that is not a directory in a parent
/// component is refused, never followed: each component is opened with `O_NOFOLLOW` relative to
/// the one before.
pub fn ensure_parents(root: &Path, path: &str) -> Result<DirHandle> {
    let mut dir = open_root(root)?;
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        let here = dir.path.join(part);
        let open = |d: &DirHandle| {
            openat(
                &d.fd,
                *part,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let fd = match open(&dir) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match mkdirat(&dir.fd, *part, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::path(
                            path,
                            format!(
                                "cannot create {}: {}",
                                here.display(),
                                std::io::Error::from(e)
                            ),
                        ));
                    }
                }
                open(&dir).map_err(|e| refused_parent(path, &here, e))?
            }
            Err(e) => return Err(refused_parent(path, &here, e)),
        };
        dir = DirHandle { fd, path: here };
    }
    Ok(dir)
}

fn refused_parent(path: &str, here: &Path, e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
        Error::path(
            path,
            format!(
                "{} is not a directory here (a symlink or a file); not writing through it",
                here.display()
            ),
        )
    } else {
        Error::path(
            path,
            format!(
                "cannot open {}: {}",
                here.display(),
                std::io::Error::from(e)
            ),
        )
    }
}

/// Does the folder at `root` keep permission bits? A probe file is created, `chmod`ed and looked
/// at: vfat refuses or ignores `chmod` and shows every file as `rwx`. A folder that cannot be
/// probed (read-only) counts as keeping them, which is the ordinary case.
pub fn keeps_modes(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = root.join(format!(
        "{TMP_PREFIX}modeprobe{:012x}",
        rand::random::<u64>() >> 16
    ));
    if std::fs::File::create_new(&probe).is_err() {
        return true;
    }
    let kept = std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o751)).is_ok()
        && std::fs::symlink_metadata(&probe).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o751);
    let _ = std::fs::remove_file(&probe);
    kept
}

/// The last component of a root-relative path (its name inside [`ensure_parents`]' folder).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A symlink target Cairn syncs: relative, and resolving (lexically) inside the root.
pub fn symlink_target_ok(link_path: &str, target: &str) -> bool {
    cairn_proto::validate_symlink_target(link_path, target).is_ok()
}

/// Does the disk entry at `disk` still hold what the synced tree says (or nothing at all)?
pub enum Current {
    Absent,
    AsSynced,
    Different,
}

pub fn current(disk: &Path, synced: Option<&SyncedEntry>) -> Result<Current> {
    current_as_scanned(disk, synced, None)
}

/// [`current`], for an executor about to act on what a round's scan saw. A file whose stat moved
/// on while its bytes did not (restored from a backup, copied back in place: the scan hashed it
/// and found the synced content) counts as synced while it still has the stat the scan saw.
/// Otherwise the plan ("unchanged here") and the check ("changed here") would disagree, and
/// the file would be kept as a conflict copy, or survive a delete made elsewhere and come back.
pub fn current_as_scanned(
    disk: &Path,
    synced: Option<&SyncedEntry>,
    scanned: Option<&LocalEntry>,
) -> Result<Current> {
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
        Content::File { .. } => {
            let now = stat_of(&md);
            ft.is_file()
                && (same_stat(s.stat, now)
                    || scanned.is_some_and(|l| l.content == s.content && same_stat(l.stat, now)))
        }
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

/// Renames the entry at `path` (in `dir`, its folder) to a free conflict-copy name beside it;
/// returns the new path.
pub fn move_to_conflict_copy(
    root: &Path,
    dir: &DirHandle,
    path: &str,
    device: &str,
) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let now = cairn_server::clock::name_secs(now);
    for attempt in 1..100 {
        let copy = conflict_copy_name(path, device, now, attempt);
        let to = disk_path(root, &copy)?;
        if std::fs::symlink_metadata(&to).is_err() {
            dir.rename(file_name(path), file_name(&copy)).map_err(|e| {
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
        std::fs::write(d.path().join("file"), b"x").unwrap();
        assert!(ensure_parents(d.path(), "file/x").is_err());
        assert!(d.path().join("ok/deeper").is_dir());
        assert!(disk_path(d.path(), "../x").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_swapped_into_a_parent_after_opening_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = ensure_parents(d.path(), "sub/x").unwrap();
        // The folder is replaced by a link to the outside between the check and the write.
        std::fs::rename(d.path().join("sub"), d.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("sub")).unwrap();
        let (tmp, mut f) = dir.create_temp().unwrap();
        std::io::Write::write_all(&mut f, b"data").unwrap();
        dir.rename(&tmp, "x").unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read(d.path().join("moved/x")).unwrap(), b"data");
        // And a fresh open refuses the link.
        assert!(ensure_parents(d.path(), "sub/y").is_err());
    }
}
