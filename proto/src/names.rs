//! Path policy (what a synced path may be) and conflict-copy names. Pure: no filesystem.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc, is_nfc_quick};

/// The longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest single name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a path is refused. Every message names the offending path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; paths must be relative to the synced folder")]
    Absolute(String),
    #[error("path {0:?} has an empty component (`//` or a trailing `/`)")]
    EmptyComponent(String),
    #[error("path {0:?} has a `.` or `..` component")]
    DotComponent(String),
    #[error("path {0:?} contains NUL or a control character")]
    ControlChar(String),
    #[error("path {0:?} contains a backslash, which Windows reads as a separator")]
    Backslash(String),
    #[error("path {0:?} is not in Unicode NFC form")]
    NotNfc(String),
    #[error("path {0:?} is longer than {MAX_PATH_BYTES} bytes")]
    TooLong(String),
    #[error("a name in path {0:?} is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong(String),
}

/// Checks a namespace-relative path: `/`-separated, relative, NFC, no empty, `.` or `..`
/// components, no NUL or control characters, no backslash or drive prefix, within length limits.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let owned = || path.to_owned();
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(truncate(path)));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlChar(owned()));
    }
    if path.starts_with('/') || has_drive_prefix(path) {
        return Err(PathError::Absolute(owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(owned()));
    }
    for part in path.split('/') {
        if part.is_empty() {
            return Err(PathError::EmptyComponent(owned()));
        }
        if part == "." || part == ".." {
            return Err(PathError::DotComponent(owned()));
        }
        if part.len() > MAX_NAME_BYTES {
            return Err(PathError::NameTooLong(truncate(path)));
        }
    }
    if !is_nfc(path) {
        return Err(PathError::NotNfc(owned()));
    }
    Ok(())
}

/// The NFC form of a name read from disk (macOS hands out NFD).
pub fn to_nfc(path: &str) -> String {
    // Nearly every name is NFC already (every ASCII one is): the quick check says so in one
    // pass, without normalising char by char.
    if is_nfc_quick(path.chars()) == IsNormalized::Yes {
        return path.to_owned();
    }
    path.nfc().collect()
}

/// Checks a symlink's target: relative (no `/`, `\\` or drive prefix), no NUL or control
/// characters, and, read lexically from the link's folder, never leaving the synced root. Both the
/// server (on commit) and every daemon (before creating a link) apply this one rule.
pub fn validate_symlink_target(link: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err(format!("symlink {link:?} has an empty target"));
    }
    if target.starts_with('/') || target.contains('\\') || has_drive_prefix(target) {
        return Err(format!(
            "symlink {link:?} points to {target:?}: targets must be relative"
        ));
    }
    if target.chars().any(char::is_control) {
        return Err(format!(
            "symlink {link:?}: target contains NUL or a control character"
        ));
    }
    // Folders between the root and the link.
    let mut depth = link.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink {link:?} points to {target:?}, outside the synced folder"
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

fn has_drive_prefix(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

fn truncate(path: &str) -> String {
    let mut end = 64.min(path.len());
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// Why `path` (already valid by [`validate_path`]) could not be created as is on Windows, if it
/// could not: the first offending name and what is wrong with it. Such names are legal in a
/// namespace and sync between the devices that can hold them; clients report them so nobody is
/// surprised by a device that cannot (see docs/ARCHITECTURE.md, "Path policy").
pub fn windows_name_problem(path: &str) -> Option<String> {
    path.split('/').find_map(|name| {
        if let Some(c) = name.chars().find(|c| WINDOWS_FORBIDDEN.contains(c)) {
            return Some(format!(
                "name {name:?} contains {c:?}, which Windows does not allow in names"
            ));
        }
        if name.ends_with('.') || name.ends_with(' ') {
            return Some(format!(
                "name {name:?} ends with a dot or a space, which Windows drops"
            ));
        }
        let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
        is_windows_device(stem).then(|| {
            format!(
                "name {name:?} is the Windows device name {stem:?}, reserved with any extension"
            )
        })
    })
}

/// Characters Windows refuses in a name (besides `/`, backslash and control characters, which no
/// valid path holds).
const WINDOWS_FORBIDDEN: [char; 7] = ['<', '>', ':', '"', '|', '?', '*'];

fn is_windows_device(stem: &str) -> bool {
    // The device names are ASCII and at most 7 bytes long: an ASCII stem is upper-cased on the
    // stack. Only other stems take Unicode's upper case (`ı` upper-cases to `I`).
    let mut buf = [0u8; 7];
    let upper: Cow<'_, str> = if stem.is_ascii() {
        let Some(b) = buf.get_mut(..stem.len()) else {
            return false;
        };
        b.copy_from_slice(stem.as_bytes());
        b.make_ascii_uppercase();
        // ASCII upper-cased is still ASCII.
        Cow::Borrowed(std::str::from_utf8(b).expect("ASCII is UTF-8"))
    } else {
        Cow::Owned(stem.to_uppercase())
    };
    if matches!(
        &*upper,
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let Some(rest) = upper
        .strip_prefix("COM")
        .or_else(|| upper.strip_prefix("LPT"))
    else {
        return false;
    };
    let mut digits = rest.chars();
    matches!(
        (digits.next(), digits.next()),
        (Some('0'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None)
    )
}

/// The key under which a case-insensitive filesystem would find `name`: Unicode lower case of the
/// NFC form. Filesystems' folding tables differ in corners (Turkish dotless i, ß), so the daemon
/// uses this only to *report* twins; before writing, it asks the disk itself.
pub fn case_fold_key(name: &str) -> String {
    to_nfc(name).to_lowercase()
}

/// Where a case-insensitive folder keeps `path` when another entry already holds its name in
/// another case: `dir/name (case conflict).ext`, then `(case conflict 2)`, ... for `attempt` > 1.
pub fn case_conflict_name(path: &str, attempt: u32) -> String {
    let (dir, stem, ext) = split_name(path);
    let counter = if attempt > 1 {
        format!(" {attempt}")
    } else {
        String::new()
    };
    format!("{dir}{stem} (case conflict{counter}){ext}")
}

/// `dir/stem.ext` into (`dir/`, `stem`, `.ext`); a leading dot is part of the stem.
fn split_name(path: &str) -> (&str, &str, &str) {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    match name.rfind('.') {
        Some(i) if i > 0 => (dir, &name[..i], &name[i..]),
        _ => (dir, name, ""),
    }
}

/// The conflict copy's path for `path`: `dir/name (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).ext`.
/// `unix_secs` is the commit time (UTC). `attempt` > 1 appends a counter for when that name is taken.
pub fn conflict_copy_name(path: &str, device: &str, unix_secs: i64, attempt: u32) -> String {
    let (dir, stem, ext) = split_name(path);
    let stamp = format_stamp(unix_secs);
    let device: String = device
        .chars()
        .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
        .collect();
    let counter = if attempt > 1 {
        format!(" {attempt}")
    } else {
        String::new()
    };
    format!("{dir}{stem} (conflicted copy from {device} {stamp}{counter}){ext}")
}

fn format_stamp(unix_secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour][minute][second]");
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&fmt)
        // The format description is static and valid for every representable date.
        .expect("static format")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_accepted() {
        for p in [
            "a",
            "a/b/c.txt",
            "dir with space/ünïcödé.md",
            ".hidden",
            "a/..b",
            "ab:c",
        ] {
            assert_eq!(validate_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let nfd = "cafe\u{301}";
        let long_name = "n".repeat(256);
        let long_path = "d/".repeat(2100) + "f";
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "nul\0byte",
            "tab\tname",
            "C:\\x",
            "c:/windows",
            "a\\b",
            nfd,
            &long_name,
            &long_path,
        ] {
            assert!(validate_path(p).is_err(), "{p:?} should be refused");
        }
    }

    #[test]
    fn symlink_targets_may_not_leave_the_root() {
        assert!(validate_symlink_target("a/link", "../b/file").is_ok());
        assert!(validate_symlink_target("a/b/link", "../../top").is_ok());
        for (link, target) in [
            ("link", "../out"),
            ("a/link", "../../out"),
            ("l", "/etc"),
            ("l", "C:\\x"),
            ("l", ""),
            ("l", "a\0b"),
        ] {
            assert!(
                validate_symlink_target(link, target).is_err(),
                "{link} -> {target:?}"
            );
        }
    }

    #[test]
    fn names_windows_cannot_hold_are_named_but_stay_valid() {
        for p in [
            "CON",
            "con.txt",
            "dir/Nul",
            "aux.tar.gz",
            "COM1",
            "lpt9.log",
            "COM\u{b9}",
            "trailing.",
            "trailing ",
            "a<b",
            "q?",
            "star*",
            "pipe|",
            "say\"hi\"",
            "ab:c",
            "CON .txt",
        ] {
            assert_eq!(validate_path(p), Ok(()), "{p:?} is a legal namespace path");
            assert!(
                windows_name_problem(p).is_some(),
                "{p:?} is not valid on Windows"
            );
        }
        for p in [
            "console", "com10", "a/b.txt", "nul_file", "LPT", ".hidden", "x.CON",
        ] {
            assert_eq!(windows_name_problem(p), None, "{p:?}");
        }
        let why = windows_name_problem("docs/CON.md").unwrap();
        assert!(why.contains("CON.md") && why.contains("device"), "{why}");
    }

    #[test]
    fn case_conflict_names_keep_the_extension_and_directory() {
        assert_eq!(case_conflict_name("a/B.txt", 1), "a/B (case conflict).txt");
        assert_eq!(
            case_conflict_name("Makefile", 2),
            "Makefile (case conflict 2)"
        );
        assert_eq!(case_conflict_name(".env", 1), ".env (case conflict)");
        assert_eq!(case_fold_key("README.Md"), case_fold_key("readme.md"));
        assert_eq!(case_fold_key("Cafe\u{301}"), case_fold_key("caf\u{e9}"));
    }

    #[test]
    fn conflict_names_keep_the_extension_and_directory() {
        // 2026-11-23 10:15:02 UTC
        let t = 1_795_428_902;
        assert_eq!(
            conflict_copy_name("docs/report.pdf", "laptop", t, 1),
            "docs/report (conflicted copy from laptop 2026-11-23 101502).pdf"
        );
        assert_eq!(
            conflict_copy_name("Makefile", "pc", t, 2),
            "Makefile (conflicted copy from pc 2026-11-23 101502 2)"
        );
        assert_eq!(
            conflict_copy_name(".bashrc", "pc", t, 1),
            ".bashrc (conflicted copy from pc 2026-11-23 101502)"
        );
        assert!(validate_path(&conflict_copy_name("a/b.txt", "x/y", t, 1)).is_ok());
    }
}
