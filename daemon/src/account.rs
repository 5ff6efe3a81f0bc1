//! Account commands: `login`, `devices`, `share`, `members`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use cairn_proto::pb::{self, Role};
use serde_json::json;

use crate::commands::Ui;
use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::history::show_time;
use crate::remote::Remote;

pub fn role_name(r: i32) -> &'static str {
    match Role::try_from(r) {
        Ok(Role::Owner) => "owner",
        Ok(Role::Edit) => "edit",
        Ok(Role::View) => "view",
        _ => "none",
    }
}

/// Writes `token` to `path` with mode 0600: temp file, fsync, rename, fsync the folder.
pub fn write_token_file(path: &Path, token: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".token.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `cairn login`: registers this device for `user` and keeps its token in the home's token file.
pub async fn login(cfg: &Config, user: &str, device: &str, password: &str, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, "").await?;
    let r = remote.login(user, password, device).await?;
    let path = cfg.dirs.config.join("token");
    write_token_file(&path, &r.token)?;
    let config_file = cfg.dirs.config.join("config.toml");
    if !config_file.exists() {
        std::fs::write(&config_file, format!("server = {:?}\n", cfg.server))
            .map_err(|e| Error::io(&config_file, e))?;
    }
    if ui.json {
        println!(
            "{}",
            json!({ "user": r.user, "device": device, "device_id": r.device_id, "token_file": path })
        );
    } else if !ui.quiet {
        eprintln!(
            "logged in as {} on device {device:?} (id {}); token saved to {} (mode 0600)",
            r.user,
            r.device_id,
            path.display()
        );
        if std::env::var_os("CAIRN_TOKEN").is_some() {
            eprintln!("note: CAIRN_TOKEN is set and wins over the token file; unset it");
        }
    }
    Ok(exit::OK)
}

/// `cairn devices`.
pub async fn devices(cfg: &Config, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, "").await?;
    let list = remote.list_devices().await?;
    if ui.json {
        let v: Vec<_> = list
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "name": d.name, "created_at_ms": d.created_at_ms,
                    "last_seen_ms": d.last_seen_ms,
                    "revoked": d.revoked_at_ms != 0, "revoked_at_ms": d.revoked_at_ms,
                    "current": d.current,
                })
            })
            .collect();
        println!("{}", json!({ "devices": v }));
    } else {
        for d in &list {
            let state = if d.revoked_at_ms != 0 {
                format!("revoked {}", show_time(d.revoked_at_ms))
            } else {
                "active".to_owned()
            };
            println!(
                "{}\t{}{}\tadded {}\t{}",
                d.id,
                d.name,
                if d.current { " (this device)" } else { "" },
                show_time(d.created_at_ms),
                state
            );
        }
    }
    Ok(exit::OK)
}

/// `cairn devices revoke ID`.
pub async fn revoke(cfg: &Config, id: u64, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, "").await?;
    remote.revoke_device(id).await?;
    if ui.json {
        println!("{}", json!({ "revoked": id }));
    } else if !ui.quiet {
        eprintln!("revoked device {id}: its token no longer works and its streams are closed");
    }
    Ok(exit::OK)
}

/// `cairn share NS USER --role R` (or `--remove`).
pub async fn share(cfg: &Config, ns: &str, user: &str, role: Option<&str>, ui: Ui) -> Result<i32> {
    let pb_role = match role {
        None => Role::None,
        Some("owner") => Role::Owner,
        Some("edit") => Role::Edit,
        Some("view") => Role::View,
        Some(other) => {
            return Err(Error::Config(format!(
                "--role {other:?}: use owner, edit or view (or --remove)"
            )));
        }
    };
    let remote = Remote::connect(cfg, ns).await?;
    remote.share(user, pb_role).await?;
    if ui.json {
        println!(
            "{}",
            json!({ "namespace": ns, "user": user, "role": role_name(pb_role as i32) })
        );
    } else if !ui.quiet {
        match role {
            Some(r) => eprintln!("{user} can now use namespace {ns} as {r}"),
            None => eprintln!("{user} no longer has access to namespace {ns}"),
        }
    }
    Ok(exit::OK)
}

/// `cairn members NS`.
pub async fn members(cfg: &Config, ns: &str, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, ns).await?;
    let list = remote.list_members().await?;
    if ui.json {
        let v: Vec<_> = list
            .iter()
            .map(|m| json!({ "user": m.user, "role": role_name(m.role) }))
            .collect();
        println!("{}", json!({ "namespace": ns, "members": v }));
    } else {
        for m in &list {
            println!("{}\t{}", m.user, role_name(m.role));
        }
    }
    Ok(exit::OK)
}

/// `cairn namespaces`: what this device's user may sync.
pub async fn namespaces(cfg: &Config, ui: Ui) -> Result<i32> {
    let remote = Remote::connect(cfg, "").await?;
    let list: Vec<pb::NamespaceGrant> = remote.list_namespaces().await?;
    if ui.json {
        let v: Vec<_> = list
            .iter()
            .map(|g| json!({ "namespace": g.namespace, "role": role_name(g.role) }))
            .collect();
        println!("{}", json!({ "namespaces": v }));
    } else {
        for g in &list {
            println!("{}\t{}", g.namespace, role_name(g.role));
        }
    }
    Ok(exit::OK)
}
