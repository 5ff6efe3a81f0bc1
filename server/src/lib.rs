//! cairn-server: Cairn's metadata server (namespaces, versions, the sync log, chunk verification,
//! presigned URLs), as a library so tests and `cairn quickstart` can run it in-process.

pub mod admin;
mod auth;
mod commit;
mod db;
mod error;
mod hub;
mod model;
mod queries;
mod service;
pub mod store;
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
}

/// Serves gRPC (h2c) and, for the local store, the signed `/blob/{key}` HTTP routes on one
/// listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let spec = StoreSpec::parse(&config.store)?;
    let db_path = config.db_path.clone();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&db_path)).await??;
    let addr = listener.local_addr()?;
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let (store, blob_routes): (DynStore, Option<axum::Router>) = match spec {
        StoreSpec::Local(dir) => {
            let secret = db
                .write(|conn| db::secret(conn, "local_store_hmac"))
                .await?;
            let local = Arc::new(LocalStore::new(dir, &base_url, secret)?);
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
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(service::Shared {
        db,
        store,
        hub: hub::Hub::default(),
        shutdown: stop_rx.clone(),
    });
    let grpc = CairnServer::new(service::Service::new(shared))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut app = tonic::service::Routes::new(grpc).into_axum_router();
    if let Some(blobs) = blob_routes {
        app = app.merge(blobs);
    }

    tracing::info!(%addr, store = %config.store, "cairn-server serving");
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // Ends long-polls and Subscribe streams so connections can drain.
        let _ = stop_tx.send(true);
    });
    let mut stopping = stop_rx;
    tokio::select! {
        r = server.into_future() => r?,
        _ = async { let _ = stopping.wait_for(|s| *s).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
        }
    }
    Ok(())
}
