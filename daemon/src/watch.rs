//! Wake-ups for a folder's control task: the local watcher (notify, debounced) and the remote
//! notifier (`Subscribe` stream, `ListChanges` long-poll as the fallback, jittered reconnects).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_proto::Seq;
use futures::StreamExt;
use notify_debouncer_full::notify::{self, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc::UnboundedSender;

use crate::remote::Remote;
use crate::scanner::is_skipped_name;

/// Why the control task woke up.
#[derive(Debug)]
pub enum Trigger {
    /// Something changed under the root (the touched paths, root-relative).
    Local(Vec<PathBuf>),
    /// The watcher lost events (queue overflow) or saw the root itself change: scan everything.
    Rescan,
    /// The server's log moved past the cursor.
    Remote,
    /// The watcher failed (e.g. out of inotify watches): fall back to periodic scans.
    WatchFailed(String),
    /// The remote notifier lost its stream; the detail says why.
    RemoteDown(String),
}

/// Quiet time a path needs before its events wake the task. It is most of a small edit's
/// propagation latency (issue 6 asks for a p50 of a tenth of Syncthing's ~1 s), so it is short:
/// 100 ms made the p50 about 170 ms. An editor's write-rename-chmod burst comes in well under
/// it; a burst that is split anyway costs one more round, not a wrong result (a file that
/// changes while it is hashed is hashed again, and a half-written save is only an extra version).
const DEBOUNCE: Duration = Duration::from_millis(25);

pub type LocalWatcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Watches `root` recursively; events touching only Cairn's own names are dropped.
pub fn watch_local(root: &Path, tx: UnboundedSender<Trigger>) -> Result<LocalWatcher, String> {
    let root_owned = root.to_owned();
    let err_tx = tx.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| match res {
        Ok(events) => {
            // Lost events, or the root itself changed: only a full scan knows what happened.
            if events.iter().any(|e| {
                e.need_rescan()
                    || (!matches!(e.kind, notify::EventKind::Access(_))
                        && e.paths.iter().any(|p| p == &root_owned))
            }) {
                let _ = tx.send(Trigger::Rescan);
                return;
            }
            // Opening and reading (our own scans do it) is not a change.
            let paths: Vec<PathBuf> = events
                .iter()
                .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                .flat_map(|e| e.paths.iter())
                .filter_map(|p| p.strip_prefix(&root_owned).ok())
                .filter(|p| {
                    !p.components()
                        .any(|c| c.as_os_str().to_str().is_some_and(is_skipped_name))
                })
                .map(Path::to_owned)
                .collect();
            if !paths.is_empty() {
                let _ = tx.send(Trigger::Local(paths));
            }
        }
        Err(errors) => {
            let detail = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let _ = err_tx.send(Trigger::WatchFailed(detail));
        }
    })
    .map_err(|e| describe(&e))?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(|e| describe(&e))?;
    Ok(debouncer)
}

fn describe(e: &notify::Error) -> String {
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28));
    if limit {
        format!(
            "out of inotify watches ({e}); falling back to periodic scans — raise fs.inotify.max_user_watches"
        )
    } else {
        format!("cannot watch the folder ({e}); falling back to periodic scans")
    }
}

/// How long a long-poll waits on the server when the stream is unavailable.
const LONG_POLL_MS: u32 = 20_000;

/// Follows the log from `cursor` and sends `Trigger::Remote` whenever it moves; runs until the
/// receiver is gone. The cursor here only avoids duplicate wake-ups: the control task reads the
/// entries itself and persists its cursor after applying them.
pub async fn follow_remote(remote: Remote, mut cursor: Seq, tx: UnboundedSender<Trigger>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if tx.is_closed() {
            return;
        }
        match remote.subscribe(cursor).await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(200);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(batch) => {
                            if batch.cursor > cursor.0 || !batch.entries.is_empty() {
                                cursor = Seq(batch.cursor.max(cursor.0));
                                if tx.send(Trigger::Remote).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(s) => {
                            let _ = tx.send(Trigger::RemoteDown(format!(
                                "change stream ended: {}",
                                s.message()
                            )));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Trigger::RemoteDown(e.to_string()));
                // The fallback: one long-poll, which also tells whether the server is reachable.
                match remote.list_changes(cursor, 1, LONG_POLL_MS).await {
                    Ok(r) if !r.entries.is_empty() => {
                        cursor = Seq(r.cursor);
                        if tx.send(Trigger::Remote).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// 50–100 % of `d`, so many daemons reconnecting at once do not arrive together.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}
