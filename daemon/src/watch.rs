//! Wake-ups for a folder's control task: the local watcher (notify, debounced) and the remote
//! notifier (`Subscribe` stream, `ListChanges` long-poll as the fallback, jittered reconnects).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_proto::Seq;
use futures::StreamExt;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
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

/// Quiet time before a burst of events wakes the task. It is most of a small edit's
/// propagation latency (issue 6 asks for a p50 of a tenth of Syncthing's ~1 s), so it is short:
/// 100 ms made the p50 about 170 ms. An editor's write-rename-chmod burst comes in well under
/// it; a burst that is split anyway costs one more round, not a wrong result (a file that
/// changes while it is hashed is hashed again, and a half-written save is only an extra version).
const DEBOUNCE: Duration = Duration::from_millis(25);
/// A burst that never goes quiet (a long copy) still wakes the task this often.
const MAX_BATCH_AGE: Duration = Duration::from_millis(500);

/// The folder's watcher: watching stops when it is dropped (its debounce thread then ends).
pub struct LocalWatcher {
    _watcher: RecommendedWatcher,
}

/// Watches `root` recursively; events touching only Cairn's own names are dropped.
///
/// Events are batched here rather than by `notify-debouncer-full`, whose thread wakes every
/// quarter of the debounce time whether anything happened or not: 160 times a second at 25 ms,
/// about 1 % of a core for a daemon that has nothing to do. This thread sleeps until an event
/// comes, then until the burst has been quiet for [`DEBOUNCE`].
pub fn watch_local(root: &Path, tx: UnboundedSender<Trigger>) -> Result<LocalWatcher, String> {
    let (events_tx, events) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Dropped here, on notify's thread, rather than queued: queued, the reads of a first
        // scan of 100k files (two or three per file) left the heap they passed through with the
        // daemon (idle RSS 121 → 139 MiB, docs/BENCHMARKS.md).
        if !is_read(&res) {
            let _ = events_tx.send(res);
        }
    })
    .map_err(|e| describe(&e))?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(|e| describe(&e))?;
    let root = root.to_owned();
    std::thread::Builder::new()
        .name("cairn-watch".into())
        .spawn(move || debounce(&root, &events, &tx))
        .map_err(|e| {
            format!("cannot start the watcher's thread ({e}); falling back to periodic scans")
        })?;
    Ok(LocalWatcher { _watcher: watcher })
}

/// Batches the watcher's events until they go quiet, and sends each batch as one trigger. Ends
/// when the watcher is dropped or the control task is gone.
fn debounce(
    root: &Path,
    events: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    tx: &UnboundedSender<Trigger>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // Blocks without waking until the first event of a burst.
    while let Ok(first) = events.recv() {
        let started = std::time::Instant::now();
        let mut batch = vec![first];
        let mut open = true;
        while open {
            let quiet = DEBOUNCE.min(MAX_BATCH_AGE.saturating_sub(started.elapsed()));
            match events.recv_timeout(quiet) {
                Ok(e) => batch.push(e),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            if started.elapsed() >= MAX_BATCH_AGE {
                break;
            }
        }
        if let Some(trigger) = trigger_of(root, batch)
            && tx.send(trigger).is_err()
        {
            return;
        }
        if !open {
            return;
        }
    }
}

/// Opening and reading a file (every scan of ours does it) is not a change.
fn is_read(res: &notify::Result<notify::Event>) -> bool {
    res.as_ref()
        .is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_)) && !e.need_rescan())
}

/// What one batch of the watcher's events asks of the control task, if anything. Reads never
/// get here ([`is_read`]).
fn trigger_of(root: &Path, batch: Vec<notify::Result<notify::Event>>) -> Option<Trigger> {
    let (events, errors): (Vec<_>, Vec<_>) = batch.into_iter().partition(Result::is_ok);
    let errors: Vec<String> = errors
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    if !errors.is_empty() {
        return Some(Trigger::WatchFailed(errors.join("; ")));
    }
    let events: Vec<notify::Event> = events.into_iter().filter_map(Result::ok).collect();
    // Lost events, or the root itself changed: only a full scan knows what happened.
    if events
        .iter()
        .any(|e| e.need_rescan() || e.paths.iter().any(|p| p == root))
    {
        return Some(Trigger::Rescan);
    }
    let mut paths: Vec<PathBuf> = events
        .iter()
        .flat_map(|e| e.paths.iter())
        .filter_map(|p| p.strip_prefix(root).ok())
        .filter(|p| {
            !p.components()
                .any(|c| c.as_os_str().to_str().is_some_and(is_skipped_name))
        })
        .map(Path::to_owned)
        .collect();
    paths.sort();
    paths.dedup();
    (!paths.is_empty()).then_some(Trigger::Local(paths))
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

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, Flag, ModifyKind};
    use notify::{Event, EventKind};

    use super::*;

    fn ev(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn a_batch_becomes_the_paths_it_touched_a_rescan_or_a_failure() {
        let root = Path::new("/r");
        let write = EventKind::Modify(ModifyKind::Any);
        // Reads never reach a batch; a lost-events notice does, whatever its kind.
        let read = ev(EventKind::Access(AccessKind::Any), "/r/c");
        assert!(is_read(&read));
        assert!(!is_read(&ev(write, "/r/c")));
        let lost_read = Ok(Event::new(EventKind::Access(AccessKind::Any)).set_flag(Flag::Rescan));
        assert!(!is_read(&lost_read));
        assert!(!is_read(&Err(notify::Error::generic("queue gone"))));
        // Changes, once each and sorted; Cairn's own names are not changes.
        let batch = vec![
            ev(write, "/r/b"),
            ev(EventKind::Create(CreateKind::File), "/r/a"),
            ev(write, "/r/b"),
            ev(write, "/r/d/.cairn-tmp-1"),
        ];
        match trigger_of(root, batch) {
            Some(Trigger::Local(paths)) => {
                assert_eq!(paths, [PathBuf::from("a"), PathBuf::from("b")]);
            }
            other => panic!("expected the touched paths, got {other:?}"),
        }
        assert!(trigger_of(root, vec![ev(write, "/r/d/.cairn-tmp-2")]).is_none());
        // Lost events, or the root itself changed: a full scan.
        let lost = Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan));
        assert!(matches!(
            trigger_of(root, vec![ev(write, "/r/a"), lost]),
            Some(Trigger::Rescan)
        ));
        assert!(matches!(
            trigger_of(root, vec![ev(write, "/r")]),
            Some(Trigger::Rescan)
        ));
        // An error wins over everything else in its batch.
        let failed = Err(notify::Error::generic("queue gone"));
        match trigger_of(root, vec![ev(write, "/r/a"), failed]) {
            Some(Trigger::WatchFailed(why)) => assert!(why.contains("queue gone"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
