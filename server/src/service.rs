//! The gRPC service: thin handlers that authenticate, decode, call, and map errors.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::AUTH_HEADER;
use cairn_proto::pb::cairn_server::Cairn;
use cairn_proto::pb::*;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::db::Db;
use crate::error::Result;
use crate::hub::Hub;
use crate::store::DynStore;
use crate::{commit, history, queries, upload};

/// The longest a ListChanges long-poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Entries per Subscribe batch.
const BATCH: u32 = 1000;

/// Everything the handlers share.
pub struct Shared {
    pub db: Db,
    pub store: DynStore,
    pub hub: Hub,
    /// Turns true when the server shuts down: long-polls and streams end.
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Authenticates the token and checks the requested namespace against it.
    async fn caller<T>(&self, req: &Request<T>, namespace: &str) -> Result<Caller> {
        let header = req
            .metadata()
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok());
        let token = auth::bearer(header)?.to_owned();
        let caller = self
            .shared
            .db
            .read(move |conn| auth::lookup(conn, &token))
            .await?;
        caller.check_namespace(namespace)?;
        Ok(caller)
    }
}

type Rpc<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Cairn for Service {
    async fn get_namespace(&self, req: Request<GetNamespaceRequest>) -> Rpc<NamespaceInfo> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        Ok(Response::new(
            queries::namespace_info(&self.shared.db, caller).await?,
        ))
    }

    async fn find_missing(&self, req: Request<FindMissingRequest>) -> Rpc<FindMissingResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let missing = queries::find_missing(
            &self.shared.db,
            caller.namespace_id,
            req.into_inner().chunk_ids,
        )
        .await?;
        Ok(Response::new(FindMissingResponse { missing }))
    }

    async fn prepare_upload(
        &self,
        req: Request<PrepareUploadRequest>,
    ) -> Rpc<PrepareUploadResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let s = &self.shared;
        let targets = upload::prepare(
            &s.db,
            &*s.store,
            caller.namespace_id,
            &req.get_ref().objects,
        )
        .await?;
        Ok(Response::new(PrepareUploadResponse { targets }))
    }

    async fn confirm_upload(
        &self,
        req: Request<ConfirmUploadRequest>,
    ) -> Rpc<ConfirmUploadResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let s = &self.shared;
        let outcomes = upload::confirm(
            &s.db,
            &*s.store,
            caller.namespace_id,
            req.into_inner().upload_ids,
        )
        .await?;
        Ok(Response::new(ConfirmUploadResponse { outcomes }))
    }

    async fn commit(&self, req: Request<CommitRequest>) -> Rpc<CommitResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let items = req.into_inner().items;
        let (results, head) =
            commit::commit(&self.shared.db, caller.namespace_id, caller.device, items).await?;
        if let Some(seq) = head {
            self.shared.hub.notify(caller.namespace_id, seq);
        }
        Ok(Response::new(CommitResponse { results }))
    }

    async fn list_tree(&self, req: Request<ListTreeRequest>) -> Rpc<ListTreeResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let r = req.into_inner();
        let (entries, next_after, head_seq) = queries::list_tree(
            &self.shared.db,
            caller.namespace_id,
            r.after,
            r.limit,
            r.include_deleted,
        )
        .await?;
        Ok(Response::new(ListTreeResponse {
            entries,
            next_after,
            head_seq,
        }))
    }

    async fn get_manifests(&self, req: Request<GetManifestsRequest>) -> Rpc<GetManifestsResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let s = &self.shared;
        Ok(Response::new(
            queries::manifests(
                &s.db,
                &*s.store,
                caller.namespace_id,
                req.into_inner().files,
            )
            .await?,
        ))
    }

    async fn list_changes(&self, req: Request<ListChangesRequest>) -> Rpc<ListChangesResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let r = req.into_inner();
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_WAIT);
        Ok(Response::new(
            self.long_poll(caller.namespace_id, r.cursor, r.limit, wait)
                .await?,
        ))
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = std::result::Result<ChangeBatch, Status>> + Send + 'static>>;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Rpc<Self::SubscribeStream> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(feed(
            self.shared.clone(),
            caller.namespace_id,
            req.into_inner().cursor,
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_versions(&self, req: Request<ListVersionsRequest>) -> Rpc<ListVersionsResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let versions =
            queries::list_versions(&self.shared.db, caller.namespace_id, req.into_inner().path)
                .await?;
        Ok(Response::new(ListVersionsResponse { versions }))
    }

    async fn list_log(&self, req: Request<ListLogRequest>) -> Rpc<ListLogResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let r = req.into_inner();
        let (entries, next_before_seq) = history::log(
            &self.shared.db,
            caller.namespace_id,
            r.path,
            r.before_seq,
            r.limit,
        )
        .await?;
        Ok(Response::new(ListLogResponse {
            entries,
            next_before_seq,
        }))
    }

    async fn list_trash(&self, req: Request<ListTrashRequest>) -> Rpc<ListTrashResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let r = req.into_inner();
        let items = history::trash(&self.shared.db, caller.namespace_id, r.path, r.limit).await?;
        Ok(Response::new(ListTrashResponse { items }))
    }

    async fn restore(&self, req: Request<RestoreRequest>) -> Rpc<RestoreResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let r = req.into_inner();
        let spec = history::RestoreSpec {
            path: r.path,
            version: r.version,
            at_ms: r.at_ms,
            dry_run: r.dry_run,
        };
        let ns = caller.namespace_id;
        let (results, head) = history::restore(&self.shared.db, ns, caller.device, spec).await?;
        if let Some(seq) = head {
            self.shared.hub.notify(ns, seq);
        }
        let head_seq = match head {
            Some(s) => s,
            None => {
                self.shared
                    .db
                    .read(move |conn| queries::head_seq(conn, ns))
                    .await?
            }
        };
        Ok(Response::new(RestoreResponse { results, head_seq }))
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Rpc<Usage> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        Ok(Response::new(
            history::usage(&self.shared.db, caller.namespace_id).await?,
        ))
    }

    async fn list_wanted(&self, req: Request<ListWantedRequest>) -> Rpc<ListWantedResponse> {
        let caller = self.caller(&req, &req.get_ref().namespace).await?;
        let chunks = history::wanted(&self.shared.db, caller.namespace_id).await?;
        Ok(Response::new(ListWantedResponse { chunks }))
    }
}

impl Service {
    async fn read_changes(&self, ns: i64, cursor: u64, limit: u32) -> Result<(Vec<Entry>, bool)> {
        self.shared
            .db
            .read(move |conn| queries::changes(conn, ns, cursor, limit))
            .await
    }

    /// Entries after `cursor`; when there are none, waits up to `wait` for a commit.
    async fn long_poll(
        &self,
        ns: i64,
        cursor: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<ListChangesResponse> {
        // Subscribe before reading, so a commit between the read and the wait still wakes us.
        let mut wake = self.shared.hub.subscribe(ns);
        let mut stop = self.shared.shutdown.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (entries, more) = self.read_changes(ns, cursor, limit).await?;
            if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                let cursor = entries.last().map_or(cursor, |e| e.seq);
                return Ok(ListChangesResponse {
                    entries,
                    cursor,
                    more,
                });
            }
            tokio::select! {
                changed = wake.changed() => { if changed.is_err() { return Ok(empty(cursor)); } }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stop.wait_for(|s| *s) => return Ok(empty(cursor)),
            }
        }
    }
}

fn empty(cursor: u64) -> ListChangesResponse {
    ListChangesResponse {
        entries: Vec::new(),
        cursor,
        more: false,
    }
}

/// Feeds a Subscribe stream: the backlog in batches, then each new batch as commits land. Ends
/// when the client goes away (the receiver is dropped) or the server shuts down.
async fn feed(
    shared: Arc<Shared>,
    ns: i64,
    mut cursor: u64,
    tx: mpsc::Sender<std::result::Result<ChangeBatch, Status>>,
) {
    let mut wake = shared.hub.subscribe(ns);
    let mut stop = shared.shutdown.clone();
    loop {
        let read = shared
            .db
            .read(move |conn| queries::changes(conn, ns, cursor, BATCH))
            .await;
        let (entries, more) = match read {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if let Some(last) = entries.last() {
            cursor = last.seq;
            if tx.send(Ok(ChangeBatch { entries, cursor })).await.is_err() {
                return;
            }
            if more {
                continue;
            }
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
