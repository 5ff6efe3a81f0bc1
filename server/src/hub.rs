//! Wake-ups for long-polls and subscriptions: one watch channel per namespace, carrying its head seq.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per-namespace commit notifications. The lock is only held to find or create a channel, never
/// across an `.await`.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<i64, watch::Sender<u64>>>,
}

impl Hub {
    /// A receiver that sees every commit after this call. Subscribe *before* reading the log, so
    /// no commit slips between the read and the wait.
    pub fn subscribe(&self, namespace_id: i64) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(namespace_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Called after a commit transaction that appended log entries up to `seq`.
    pub fn notify(&self, namespace_id: i64, seq: u64) {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&namespace_id) {
            tx.send_replace(seq);
        }
    }
}
