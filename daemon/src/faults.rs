//! Fault injection for the engine simulation (`daemon/tests/sim/`): the places where the engine
//! talks to the network or writes to disk ask an installed [`Injector`] whether to fail there.
//! With none installed, every real run, a site costs one relaxed atomic load.
//!
//! The sites are few and sit where every byte passes: each gRPC call and each presigned transfer
//! (`remote::retry`, so a failure is retried exactly as a real one would be), each download body
//! (which may arrive corrupted), and the folder operations of [`crate::localfs::DirHandle`] plus
//! the fsync of every file a download writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Where the engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// A gRPC call, before it is sent (key: the call's name).
    Rpc,
    /// A presigned PUT (key: the URL's path and the body's BLAKE3).
    Put,
    /// A presigned ranged GET (key: the URL's path and the range).
    Get,
    /// A temp file created in a folder (key: the folder).
    CreateTemp,
    /// A rename within or between folders (key: the target path).
    Rename,
    /// A folder created (key: its path).
    Mkdir,
    /// A file or folder removed (key: its path).
    Remove,
    /// A folder's or a downloaded file's fsync (key: its path).
    Fsync,
}

/// What the injector decided for one visit of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails before it has any effect (a refused connection, EIO).
    Fail,
    /// Gets only to calls and transfers: the operation takes effect, then its answer is lost
    /// (the caller sees a transient error and retries something that already happened).
    LoseReply,
    /// Gets only to downloads: one byte of the body is flipped.
    Corrupt,
}

/// Decides, per visit, whether a site fails. Implementations keep their own per-device state
/// (the simulation runs one device at a time).
pub trait Injector: Send + Sync {
    fn at(&self, site: Site, key: &str) -> Option<Fault>;
    /// Whether retries skip their backoff sleeps (a simulation counts attempts, not seconds).
    fn no_backoff(&self) -> bool {
        true
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static INJECTOR: RwLock<Option<Arc<dyn Injector>>> = RwLock::new(None);

/// Installs `injector` for the whole process (tests only; one simulation at a time).
pub fn install(injector: Arc<dyn Injector>) {
    *INJECTOR.write().unwrap_or_else(|p| p.into_inner()) = Some(injector);
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Removes the injector: every site succeeds again.
pub fn uninstall() {
    ACTIVE.store(false, Ordering::SeqCst);
    *INJECTOR.write().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Whether an injector is installed (so that a caller can skip making a costly key).
pub(crate) fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The injector's decision for this visit, or `None` (also when none is installed).
pub(crate) fn at(site: Site, key: &str) -> Option<Fault> {
    if !is_active() {
        return None;
    }
    let injector = INJECTOR.read().unwrap_or_else(|p| p.into_inner()).clone();
    injector.and_then(|i| i.at(site, key))
}

/// Whether retries should not sleep between attempts.
pub(crate) fn no_backoff() -> bool {
    ACTIVE.load(Ordering::Relaxed)
        && INJECTOR
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|i| i.no_backoff())
}

/// For the folder-operation sites: an injected failure as the EIO a failing disk reports.
pub(crate) fn io(site: Site, key: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    match at(site, &key.as_ref().to_string_lossy()) {
        Some(_) => Err(std::io::Error::from_raw_os_error(5)),
        None => Ok(()),
    }
}
