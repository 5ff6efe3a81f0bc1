//! The live daemon's commands: `cairn add` / `cairn remove` (the synced folders), `cairn daemon`
//! (one control task per folder until SIGTERM/SIGINT) and `cairn status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::commands::canonical_root;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::scanner::MARKER;
use crate::state::State;
use crate::status::StatusRow;
use crate::sync::FolderSync;

/// `cairn add DIR --namespace NS`: records the folder and writes its root marker.
pub fn add(cfg: &Config, dir: &Path, namespace: &str) -> Result<PathBuf> {
    let root = canonical_root(dir)?;
    let marker = root.join(MARKER);
    if std::fs::symlink_metadata(&marker).is_err() {
        std::fs::write(
            &marker,
            format!("cairn folder\nnamespace = {namespace:?}\n"),
        )
        .map_err(|e| Error::io(&marker, e))?;
    }
    let state = State::open(&cfg.dirs.state_db())?;
    state.add_live(&root, namespace, &cfg.server)?;
    Ok(root)
}

/// `cairn remove DIR`: the daemon stops syncing it (files stay; the marker goes).
pub fn remove(cfg: &Config, dir: &Path) -> Result<PathBuf> {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let state = State::open(&cfg.dirs.state_db())?;
    if state.remove_live(&root)? == 0 {
        return Err(Error::Config(format!(
            "{} is not a synced folder — `cairn status` lists them",
            root.display()
        )));
    }
    let _ = std::fs::remove_file(root.join(MARKER));
    Ok(root)
}

/// `cairn status [DIR]`.
pub fn status(cfg: &Config, dir: Option<&Path>) -> Result<Vec<StatusRow>> {
    let state = State::open(&cfg.dirs.state_db())?;
    let root = dir.map(|d| d.canonicalize().unwrap_or_else(|_| d.to_owned()));
    state.statuses(root.as_deref())
}

/// How long a stop request waits for in-flight rounds before the process exits anyway (an
/// abandoned round leaves only temp files, removed at the next start).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `cairn daemon`: syncs every configured folder until SIGTERM or SIGINT.
pub async fn daemon(cfg: &Config, scan_interval: Option<Duration>, events: Events) -> Result<()> {
    let mut cfg = cfg.clone();
    if let Some(s) = scan_interval {
        cfg.scan_interval = s;
    }
    let state = State::open(&cfg.dirs.state_db())?;
    let folders = state.live_folders()?;
    if folders.is_empty() {
        let why = state.set_aside.as_ref().map_or(String::new(), |p| {
            format!(
                " (the state database was damaged and moved aside to {}; adding the folders again is safe: their files are matched against the server's history)",
                p.display()
            )
        });
        return Err(Error::Config(format!(
            "no folders to sync — add one with `cairn add DIR --namespace NS`{why}"
        )));
    }
    drop(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Folder tasks hold the state DB connection (not Sync) across awaits: they run on this thread.
    let local = tokio::task::LocalSet::new();
    for (id, root, namespace, server) in folders {
        if server != cfg.server {
            events.emit("error", json!({ "folder": root, "error": format!("added for server {server}, not {}; skipped", cfg.server) }));
            continue;
        }
        let (cfg, events, stop) = (cfg.clone(), events, stop_rx.clone());
        local.spawn_local(async move {
            let mut backoff = Duration::from_millis(200);
            let sync = loop {
                match FolderSync::open(&cfg, id, root.clone(), namespace.clone(), events).await {
                    Ok(s) => break s,
                    Err(e) => {
                        events.emit("error", json!({ "folder": root, "error": e.to_string() }));
                        if let Ok(st) = State::open(&cfg.dirs.state_db()) {
                            let state = if e.is_transient() {
                                crate::status::SyncState::Offline
                            } else {
                                crate::status::SyncState::Error
                            };
                            let s = crate::status::FolderStatus {
                                state,
                                files_left: 0,
                                bytes_left: 0,
                                errors: vec![],
                                warnings: vec![],
                                detail: e.to_string(),
                            };
                            let _ = st.write_status(id, &s);
                        }
                        let mut stop = stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(crate::watch::jitter(backoff)) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            };
            sync.run(stop).await;
        });
    }
    events.emit("started", json!({ "pid": std::process::id() }));
    local
        .run_until(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
    // Let the folder tasks finish their rounds.
    if tokio::time::timeout(STOP_GRACE, local).await.is_err() {
        tracing::warn!(
            "stopping with a round still in flight; its temp files are removed at the next start"
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers only Ctrl-C remains.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
