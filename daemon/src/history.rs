//! History commands: `log`, `versions`, `trash`, `restore`, `usage`.
//!
//! A PATH is a local path inside a folder this device syncs (the folder tells the namespace), or,
//! with `--namespace`, a path inside that namespace. Restores happen on the server (a new version
//! pointing at old chunks, so nothing is copied); the folder then receives them like any other
//! change: from the daemon when it syncs the folder, else from a pull run right here.

use std::path::{Component, Path, PathBuf};

use cairn_proto::pb::{self, CommitStatus, Entry};
use serde_json::{Value, json};

use crate::commands::{self, Ui};
use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::remote::Remote;
use crate::state::State;

/// What a PATH argument names.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    /// Namespace-relative, NFC; "" for the whole namespace.
    pub path: String,
    /// The local folder of that namespace on this device, when there is one.
    pub folder: Option<LocalFolder>,
}

#[derive(Debug, Clone)]
pub struct LocalFolder {
    pub root: PathBuf,
    /// Synced by the daemon (`cairn add`), not only by one-shot push/pull.
    pub live: bool,
}

/// Resolves PATH (default: the current directory) to a namespace and a path inside it.
pub fn resolve(cfg: &Config, path: Option<&str>, namespace: Option<&str>) -> Result<Target> {
    let state = State::open(&cfg.dirs.state_db())?;
    let folders: Vec<_> = state
        .all_folders()?
        .into_iter()
        .filter(|f| f.server == cfg.server)
        .collect();
    if let Some(ns) = namespace {
        let p = path.unwrap_or("");
        let rel = cairn_proto::to_nfc(p.trim_start_matches("./").trim_matches('/'));
        if !rel.is_empty() {
            cairn_proto::validate_path(&rel).map_err(|e| Error::path(&rel, e))?;
        }
        let mut mine = folders.iter().filter(|f| f.namespace == ns);
        let folder = match (mine.next(), mine.next()) {
            (Some(f), None) => Some(LocalFolder {
                root: f.root.clone(),
                live: f.live,
            }),
            _ => None,
        };
        return Ok(Target {
            namespace: ns.to_owned(),
            path: rel,
            folder,
        });
    }
    let raw = Path::new(path.unwrap_or("."));
    let abs = absolute(raw)?;
    let best = folders
        .iter()
        .filter(|f| abs.starts_with(&f.root))
        .max_by_key(|f| f.root.as_os_str().len())
        .ok_or_else(|| {
            Error::Config(format!(
                "{} is not inside a folder this device syncs with {} — run it inside one, or pass --namespace NS with a path inside the namespace",
                raw.display(),
                cfg.server
            ))
        })?;
    let rel = abs
        .strip_prefix(&best.root)
        .expect("filtered by starts_with")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    Ok(Target {
        namespace: best.namespace.clone(),
        path: cairn_proto::to_nfc(&rel),
        folder: Some(LocalFolder {
            root: best.root.clone(),
            live: best.live,
        }),
    })
}

/// An absolute, symlink-free path, even when its last parts do not exist (a deleted file).
fn absolute(p: &Path) -> Result<PathBuf> {
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p)
    };
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(base) => {
                let mut out = base;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(_) => {
                let name = existing
                    .file_name()
                    .ok_or_else(|| Error::Config(format!("{} cannot be resolved", p.display())))?;
                if matches!(
                    Path::new(name).components().next(),
                    Some(Component::ParentDir)
                ) {
                    return Err(Error::Config(format!(
                        "{}: `..` after a missing folder cannot be resolved",
                        p.display()
                    )));
                }
                rest.push(name.to_owned());
                existing = existing
                    .parent()
                    .ok_or_else(|| Error::Config(format!("{} cannot be resolved", p.display())))?;
            }
        }
    }
}

/// `2h ago`, `30m ago`, RFC 3339 (`2026-11-23T10:00:00Z`, `2026-11-23T11:00:00+01:00`),
/// `2026-11-23 10:00[:00]` or `2026-11-23` (UTC), or `@SECONDS` since the epoch → ms since the
/// epoch.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let t = s.trim();
    let bad = || {
        Error::Config(format!(
            "--at {s:?}: use e.g. \"2h ago\", \"2026-11-23T10:00:00Z\", \"2026-11-23 10:00\" (UTC) or \"@1763892000\""
        ))
    };
    if let Some(ago) = t.strip_suffix("ago") {
        let d = cairn_proto::units::parse_duration(&ago.replace(' ', "")).map_err(|_| bad())?;
        return Ok(now_ms - d.as_millis() as i64);
    }
    if let Some(secs) = t.strip_prefix('@') {
        return secs.parse::<i64>().map(|s| s * 1000).map_err(|_| bad());
    }
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok((dt.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let t = t.replacen('T', " ", 1);
    let formats = [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ];
    for f in formats {
        if let Ok(dt) = time::PrimitiveDateTime::parse(&t, &f) {
            return Ok((dt.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        }
    }
    if let Ok(d) = time::Date::parse(&t, &format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    Err(bad())
}

/// `2026-11-23 10:00:01Z`.
pub fn show_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An entry as the history commands print it in JSON.
pub fn entry_json(e: &Entry) -> Value {
    let meta = e.meta.clone().unwrap_or_default();
    let kind = match pb::EntryKind::try_from(meta.kind) {
        Ok(pb::EntryKind::Dir) => "dir",
        Ok(pb::EntryKind::Symlink) => "symlink",
        _ => "file",
    };
    json!({
        "path": e.path, "version": e.version, "action": e.action, "detail": e.action_detail,
        "deleted": e.deleted, "kind": kind, "size": meta.size, "device": e.device,
        "committed_at_ms": e.committed_at_ms, "committed_at": show_time(e.committed_at_ms),
        "seq": e.seq, "content_id": hex::encode(&e.content_id),
    })
}

fn describe(e: &Entry) -> String {
    let size = e.meta.as_ref().map_or(0, |m| m.size);
    let what = match (e.action.as_str(), e.action_detail.as_str()) {
        ("moved", from) => format!("moved from {from}"),
        ("restored", v) => format!("restored version {v}"),
        ("conflict", of) => format!("conflict copy of {of}"),
        (a, _) => a.to_owned(),
    };
    let size = if e.deleted {
        String::new()
    } else {
        format!(", {size} bytes")
    };
    format!("{what} (v{}{size})", e.version)
}

fn print_json(v: &Value) {
    println!("{v}");
}

/// `cairn log [PATH] [-n LIMIT]`.
pub async fn log(cfg: &Config, target: &Target, limit: u32, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, &target.namespace).await?;
    let r = remote.list_log(&target.path, 0, limit).await?;
    if ui.json {
        let entries: Vec<_> = r.entries.iter().map(entry_json).collect();
        print_json(&json!({
            "namespace": target.namespace, "path": target.path, "entries": entries,
            "more": r.next_before_seq != 0,
        }));
    } else {
        for e in &r.entries {
            println!(
                "{}  {:<12} {}  {}",
                show_time(e.committed_at_ms),
                e.device,
                e.path,
                describe(e)
            );
        }
        if r.entries.is_empty() && !ui.quiet {
            eprintln!("no changes under {:?} are retained", target.path);
        }
    }
    Ok(exit::OK)
}

/// `cairn versions FILE`.
pub async fn versions(cfg: &Config, target: &Target, ui: Ui) -> Result<i32> {
    if target.path.is_empty() {
        return Err(Error::Config(
            "versions needs a file, not the folder's root".into(),
        ));
    }
    let remote = Remote::connect(cfg, &target.namespace).await?;
    let versions = remote.list_versions(&target.path).await?;
    if ui.json {
        let list: Vec<_> = versions.iter().map(entry_json).collect();
        print_json(
            &json!({ "namespace": target.namespace, "path": target.path, "versions": list }),
        );
    } else {
        for v in &versions {
            println!(
                "v{}\t{}\t{}\t{}",
                v.version,
                show_time(v.committed_at_ms),
                v.device,
                describe(v)
            );
        }
    }
    Ok(exit::OK)
}

/// `cairn trash [PATH]`.
pub async fn trash(cfg: &Config, target: &Target, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, &target.namespace).await?;
    let items = remote.list_trash(&target.path).await?;
    if ui.json {
        let list: Vec<_> = items
            .iter()
            .map(|i| {
                let d = i.deleted.clone().unwrap_or_default();
                let l = i.last.clone().unwrap_or_default();
                json!({
                    "path": d.path, "deleted_at_ms": d.committed_at_ms, "deleted_by": d.device,
                    "version": l.version, "size": l.meta.as_ref().map_or(0, |m| m.size),
                    "expires_at_ms": i.expires_at_ms,
                })
            })
            .collect();
        print_json(&json!({ "namespace": target.namespace, "items": list }));
    } else {
        for i in &items {
            let d = i.deleted.clone().unwrap_or_default();
            let l = i.last.clone().unwrap_or_default();
            println!(
                "{}\tdeleted {} by {}\t{} bytes (v{}), restorable until {}",
                d.path,
                show_time(d.committed_at_ms),
                d.device,
                l.meta.as_ref().map_or(0, |m| m.size),
                l.version,
                show_time(i.expires_at_ms)
            );
        }
        if items.is_empty() && !ui.quiet {
            eprintln!("the trash is empty");
        }
    }
    Ok(exit::OK)
}

/// What `cairn restore` asks for.
#[derive(Debug, Clone, Default)]
pub struct RestoreArgs {
    pub version: Option<u64>,
    pub at: Option<String>,
    pub dry_run: bool,
}

/// `cairn restore PATH [--version N | --at TIME] [--dry-run]`.
pub async fn restore(cfg: &Config, target: &Target, args: &RestoreArgs, ui: Ui) -> Result<i32> {
    let at_ms = args
        .at
        .as_deref()
        .map(|s| parse_time(s, now_ms()))
        .transpose()?;
    let remote = Remote::connect(cfg, &target.namespace).await?;
    let resp = remote
        .restore(pb::RestoreRequest {
            namespace: String::new(),
            path: target.path.clone(),
            version: args.version.unwrap_or(0),
            at_ms: at_ms.unwrap_or(0),
            dry_run: args.dry_run,
        })
        .await?;
    let mut code = exit::OK;
    let mut rows = Vec::new();
    for r in &resp.results {
        let status = match r.status() {
            CommitStatus::Committed => "restored",
            CommitStatus::QuotaExceeded => {
                code = exit::REFUSED;
                "quota_exceeded"
            }
            CommitStatus::Rejected | CommitStatus::ParentReplaced => {
                if code == exit::OK {
                    code = exit::PARTIAL;
                }
                "failed"
            }
            _ => "unchanged",
        };
        let deleted = r.current.as_ref().is_some_and(|c| c.deleted);
        rows.push(json!({
            "path": r.path, "status": status, "version": r.version, "deleted": deleted,
            "error": r.error,
        }));
        if !ui.json && !ui.quiet {
            match status {
                "restored" if deleted => {
                    eprintln!(
                        "{}: deleted (it did not exist then; v{})",
                        r.path, r.version
                    )
                }
                "restored" => eprintln!("{}: restored (now v{})", r.path, r.version),
                _ if !r.error.is_empty() => eprintln!("cairn: {}: {}", r.path, r.error),
                _ => {}
            }
        }
    }
    let changed = rows.iter().any(|r| r["status"] == "restored");
    let mut pulled = Value::Null;
    let mut note = String::new();
    if changed && !args.dry_run {
        match &target.folder {
            Some(f) if f.live => {
                note = format!(
                    "the daemon brings the restored files into {}",
                    f.root.display()
                );
            }
            Some(f) => {
                let quiet = Ui { quiet: true, ..ui };
                // The user asked for this state (files created since are deleted): no guard.
                let s = commands::pull(cfg, &f.root, &target.namespace, quiet, true).await?;
                if !s.errors.is_empty() {
                    code = code.max(exit::PARTIAL);
                    for e in &s.errors {
                        eprintln!("cairn: {e}");
                    }
                }
                note = format!(
                    "pulled into {}: {} files written, {} deleted",
                    f.root.display(),
                    s.files_written,
                    s.deleted
                );
                pulled = serde_json::to_value(&s).unwrap_or(Value::Null);
            }
            None => {
                note = "no local folder of this namespace on this device: run `cairn pull` where you want the files".into();
            }
        }
    }
    if ui.json {
        print_json(&json!({
            "namespace": target.namespace, "path": target.path, "dry_run": args.dry_run,
            "at_ms": at_ms, "results": rows, "head_seq": resp.head_seq, "pulled": pulled,
        }));
    } else if !ui.quiet {
        if rows.is_empty() {
            eprintln!("nothing to restore: {:?} is already as asked", target.path);
        } else if args.dry_run {
            eprintln!("dry run: nothing was changed");
        }
        if !note.is_empty() {
            eprintln!("{note}");
        }
    }
    Ok(code)
}

/// `cairn usage`.
pub async fn usage(cfg: &Config, target: &Target, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, &target.namespace).await?;
    let u = remote.get_usage().await?;
    if ui.json {
        print_json(&json!({
            "namespace": u.namespace, "files": u.files, "logical_bytes": u.logical_bytes,
            "stored_bytes": u.stored_bytes, "current_stored_bytes": u.current_stored_bytes,
            "dedup_saved_bytes": u.dedup_saved_bytes, "old_versions_bytes": u.old_versions_bytes,
            "old_versions": u.old_versions,
            "quota_bytes": (u.quota_bytes > 0).then_some(u.quota_bytes),
            "retention_ms": u.retention_ms,
        }));
    } else {
        println!("namespace          {}", u.namespace);
        println!("current files      {} ({} bytes)", u.files, u.logical_bytes);
        println!("stored             {} bytes", u.stored_bytes);
        println!("saved by dedup     {} bytes", u.dedup_saved_bytes);
        println!(
            "held by old versions {} bytes ({} versions, kept {} days)",
            u.old_versions_bytes,
            u.old_versions,
            u.retention_ms / 86_400_000
        );
        if u.quota_bytes > 0 {
            println!(
                "quota              {} of {} bytes used",
                u.logical_bytes, u.quota_bytes
            );
        } else {
            println!("quota              none");
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form_or_say_what_works() {
        let now = 1_763_892_000_000;
        assert_eq!(parse_time("2h ago", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_time("30m ago", now).unwrap(), now - 1_800_000);
        assert_eq!(parse_time("@1763892000", now).unwrap(), 1_763_892_000_000);
        assert_eq!(
            parse_time("2025-11-23T10:00:00Z", now).unwrap(),
            1_763_892_000_000
        );
        assert_eq!(
            parse_time("2025-11-23T11:00:00+01:00", now).unwrap(),
            1_763_892_000_000
        );
        assert_eq!(
            parse_time("2025-11-23 10:00", now).unwrap(),
            1_763_892_000_000
        );
        assert_eq!(
            parse_time("2025-11-23 10:00:00", now).unwrap(),
            1_763_892_000_000
        );
        assert_eq!(
            parse_time("2025-11-23", now).unwrap(),
            1_763_892_000_000 - 36_000_000
        );
        let e = parse_time("yesterday-ish", now).unwrap_err().to_string();
        assert!(e.contains("--at") && e.contains("ago"), "{e}");
        assert_eq!(show_time(1_763_892_000_000), "2025-11-23 10:00:00Z");
    }
}
