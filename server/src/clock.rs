//! The time a conflict copy's name carries. It is the commit's (or, on a device, the moment of
//! the copy), unless a test pins it: the engine simulation (`daemon/tests/sim.rs`) names copies
//! by its logical clock, so that one seed gives one run even when two copies of a path fall in
//! the same wall-clock second in one run and straddle a second in the next.

use std::sync::atomic::{AtomicI64, Ordering};

const UNPINNED: i64 = i64::MIN;
static PINNED: AtomicI64 = AtomicI64::new(UNPINNED);

/// Pins the seconds conflict-copy names carry (`None`: the real time again). Tests only.
pub fn pin_names(secs: Option<i64>) {
    PINNED.store(secs.unwrap_or(UNPINNED), Ordering::SeqCst);
}

/// The seconds since the epoch to name a conflict copy made at `now_ms`.
pub fn name_secs(now_ms: i64) -> i64 {
    match PINNED.load(Ordering::Relaxed) {
        UNPINNED => now_ms / 1000,
        pinned => pinned,
    }
}
