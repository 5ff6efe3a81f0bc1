//! cairn-server: Cairn's metadata server (namespaces, versions, the sync log, chunk verification,
//! presigned URLs), as a library so tests and `cairn quickstart` can run it in-process.

mod accounts;
pub mod admin;
mod auth;
pub mod clock;
mod commit;
mod db;
mod error;
pub mod gc;
mod history;
mod hub;
mod model;
mod queries;
pub mod scrub;
mod service;
pub mod store;
pub mod tls;
mod upload;
mod validate;

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::pb::cairn_server::CairnServer;
use tokio::sync::watch;

pub use error::Error;
use store::{DynStore, StoreSpec, local::LocalStore, s3::S3Store};

/// How long open streams and long-polls get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Requests per second per device by default: far above what a syncing daemon needs (it batches),
/// low enough that one runaway client cannot starve the others.
pub const DEFAULT_RATE_LIMIT: u32 = 200;
/// Device tokens expire a year after login by default: a lost laptop stops working eventually
/// even if nobody revokes it.
pub const DEFAULT_DEVICE_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Largest gRPC message either way (big commits and manifests).
const MAX_MESSAGE: usize = 64 << 20;

/// What `serve` needs: validated by `serve` itself, so every caller gets the same checks.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The SQLite database (created and migrated if needed).
    pub db_path: PathBuf,
    /// `local:DIR` or `s3://BUCKET?endpoint=URL&region=R`.
    pub store: String,
    /// Base URL clients use to reach this server's `/blob/` routes (local store); defaults to
    /// `http://<listener address>`.
    pub public_url: Option<String>,
    /// How often the background garbage collector runs (retention, then unreferenced chunks);
    /// `None`: never (run `cairn-server gc` instead).
    pub gc_interval: Option<Duration>,
    /// Chunks uploaded, reported present or left unreferenced more recently than this are kept.
    pub gc_grace: Duration,
    /// Requests per second each device may make (twice that in a burst); `None`: unlimited.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Serve TLS with this certificate and key (`None`: plaintext h2c).
    pub tls: Option<tls::TlsFiles>,
    /// How long device tokens from `cairn login` stay valid (`None`: until revoked).
    pub device_token_ttl: Option<Duration>,
}

impl ServeConfig {
    /// The defaults `cairn-server serve` uses: GC every hour with a one-day grace period.
    pub fn new(db_path: PathBuf, store: String) -> Self {
        Self {
            db_path,
            store,
            public_url: None,
            gc_interval: Some(Duration::from_secs(3600)),
            gc_grace: gc::DEFAULT_GRACE,
            rate_limit: std::num::NonZeroU32::new(DEFAULT_RATE_LIMIT),
            tls: None,
            device_token_ttl: Some(DEFAULT_DEVICE_TOKEN_TTL),
        }
    }
}

/// Opens the store a `--store` setting names. For the local store this also returns the HTTP
/// routes that serve its signed URLs (mounted by `serve`; admin commands ignore them).
pub async fn open_store(
    spec: StoreSpec,
    db: &db::Db,
    base_url: &str,
) -> anyhow::Result<(DynStore, Option<axum::Router>)> {
    Ok(match spec {
        StoreSpec::Local(dir) => {
            let secret = db
                .write(|conn| db::secret(conn, "local_store_hmac"))
                .await?;
            let local = Arc::new(LocalStore::new(dir, base_url, secret)?);
            (local.clone(), Some(store::local::router(local)))
        }
        StoreSpec::S3 {
            bucket,
            endpoint,
            region,
        } => {
            let s3 = S3Store::new(bucket, endpoint, region)?;
            s3.check().await?;
            (Arc::new(s3), None)
        }
    })
}

/// Runs one garbage collection against the database and store (`cairn-server gc`).
pub async fn collect_garbage(
    db_path: &std::path::Path,
    store: &str,
    opts: &gc::GcOptions,
) -> anyhow::Result<gc::GcReport> {
    let spec = StoreSpec::parse(store)?;
    let path = db_path.to_owned();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&path)).await??;
    let (store, _) = open_store(spec, &db, "http://127.0.0.1").await?;
    Ok(gc::run(&db, &*store, opts).await?)
}

/// Checks stored chunks against their hashes (`cairn-server scrub`); damaged ones are
/// quarantined for devices to re-upload.
pub async fn scrub(
    db_path: &std::path::Path,
    store: &str,
    sample: Option<u64>,
) -> anyhow::Result<scrub::ScrubReport> {
    let spec = StoreSpec::parse(store)?;
    let path = db_path.to_owned();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&path)).await??;
    let (store, _) = open_store(spec, &db, "http://127.0.0.1").await?;
    Ok(scrub::run(&db, &*store, sample).await?)
}

/// Serves gRPC (h2c) and, for the local store, the signed `/blob/{key}` HTTP routes on one
/// listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_when_ready(listener, config, |_| Ok(()), shutdown).await
}

/// `serve`, calling `ready` with the address once the database is open and the store answers,
/// before the first request is taken: the binary prints `listening on ADDR` there, so that a
/// supervisor (or a test) that reads it knows the server can serve, not only that it bound.
pub async fn serve_when_ready(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    ready: impl FnOnce(std::net::SocketAddr) -> anyhow::Result<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let spec = StoreSpec::parse(&config.store)?;
    let db_path = config.db_path.clone();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&db_path)).await??;
    let addr = listener.local_addr()?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));

    let (store, blob_routes) = open_store(spec, &db, &base_url).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(every) = config.gc_interval {
        let opts = gc::GcOptions {
            grace: config.gc_grace,
            drop_before_ms: None,
        };
        tokio::spawn(collector(
            db.clone(),
            store.clone(),
            every,
            opts,
            stop_rx.clone(),
        ));
    }
    let mut shared = service::Shared::new(db, store, stop_rx.clone(), config.rate_limit);
    shared.device_token_ttl = config.device_token_ttl;
    let shared = Arc::new(shared);
    let grpc = CairnServer::new(service::Service::new(shared))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut app = tonic::service::Routes::new(grpc).into_axum_router();
    if let Some(blobs) = blob_routes {
        app = app.merge(blobs);
    }

    ready(addr)?;
    tracing::info!(%addr, store = %config.store, tls = tls.is_some(), "cairn-server serving");
    let stopped = async move {
        shutdown.await;
        // Ends long-polls and Subscribe streams so connections can drain.
        let _ = stop_tx.send(true);
    };
    match tls {
        Some(t) => run(tls::TlsListener::new(listener, t)?, app, stopped, stop_rx).await,
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| no_delay(tcp));
            run(listener, app, stopped, stop_rx).await
        }
    }
}

/// Sends small writes at once. gRPC ends every response with a small trailers frame; with
/// Nagle's algorithm on, the kernel holds it until the client acknowledges the data before it,
/// which costs each call about 9 ms on loopback (measured on ListTree pages, 2026-12-07). The
/// client's side is set in `cairn`'s endpoint.
fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

async fn run<L>(
    listener: L,
    app: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
    tokio::select! {
        r = server.into_future() => r?,
        _ = async { let _ = stopping.wait_for(|s| *s).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
        }
    }
    Ok(())
}

/// The background collector: one GC run every `every` until shutdown. A failed run (the store
/// unreachable, say) is logged and retried at the next tick; nothing it leaves half done is lost
/// (see `gc`).
async fn collector(
    db: db::Db,
    store: DynStore,
    every: Duration,
    opts: gc::GcOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = gc::run(&db, &*store, &opts).await {
            tracing::warn!(error = %e, "garbage collection failed; retrying at the next interval");
        }
    }
}
