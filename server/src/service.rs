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

use crate::auth::{self, Caller, Principal, Role};
use crate::db::Db;
use crate::error::Result;
use crate::hub::Hub;
use crate::store::DynStore;
use crate::{accounts, commit, history, queries, upload};

/// The longest a ListChanges long-poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Entries per Subscribe batch.
const BATCH: u32 = 1000;

/// How often an open stream re-checks its token and membership even when this process saw no
/// change (an admin command in another process may have revoked it).
const RECHECK: Duration = Duration::from_secs(10);

pub type Limiter = governor::DefaultKeyedRateLimiter<(bool, i64)>;

/// Everything the handlers share.
pub struct Shared {
    pub db: Db,
    pub store: DynStore,
    pub hub: Hub,
    /// Turns true when the server shuts down: long-polls and streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Bumped whenever a device is revoked or a membership changes: open streams re-check.
    pub access_epoch: watch::Sender<u64>,
    /// Requests per device (None: unlimited).
    pub limiter: Option<Limiter>,
    /// Login attempts per user name.
    pub login_limiter: governor::DefaultKeyedRateLimiter<String>,
    /// How long a device token from Login stays valid (`None`: until revoked).
    pub device_token_ttl: Option<Duration>,
}

impl Shared {
    pub fn new(
        db: Db,
        store: DynStore,
        shutdown: watch::Receiver<bool>,
        per_second: Option<std::num::NonZeroU32>,
    ) -> Self {
        use governor::{Quota, RateLimiter};
        let burst = |n: std::num::NonZeroU32| {
            n.saturating_mul(std::num::NonZeroU32::new(2).expect("2 > 0"))
        };
        Self {
            db,
            store,
            hub: Hub::default(),
            shutdown,
            access_epoch: watch::channel(0).0,
            limiter: per_second
                .map(|n| RateLimiter::keyed(Quota::per_second(n).allow_burst(burst(n)))),
            login_limiter: RateLimiter::keyed(
                Quota::per_second(std::num::NonZeroU32::new(2).expect("2 > 0"))
                    .allow_burst(std::num::NonZeroU32::new(10).expect("10 > 0")),
            ),
            device_token_ttl: None,
        }
    }
}

#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Authenticates the token, applies the device's rate limit and checks its role on the
    /// requested namespace.
    async fn caller<T>(
        &self,
        req: &Request<T>,
        namespace: &str,
        need: Role,
    ) -> Result<Caller, Status> {
        let token = token_of(req)?;
        let namespace = namespace.to_owned();
        let shared = self.shared.clone();
        let p = self.principal_of(&token).await?;
        Ok(shared
            .db
            .read(move |conn| auth::access(conn, p, &namespace, need))
            .await?)
    }

    /// Authenticates the token and applies the device's rate limit.
    async fn principal_of(&self, token: &str) -> Result<Principal, Status> {
        let t = token.to_owned();
        let p = self
            .shared
            .db
            .read(move |conn| auth::lookup(conn, &t))
            .await?;
        if let Some(l) = &self.shared.limiter
            && let Err(not_until) = l.check_key(&p.key())
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut st = Status::resource_exhausted(format!(
                "this device exceeded its request rate limit; retry in {} ms",
                wait.as_millis().max(1)
            ));
            if let Ok(v) = wait.as_millis().max(1).to_string().parse() {
                st.metadata_mut().insert("retry-after-ms", v);
            }
            return Err(st);
        }
        Ok(p)
    }

    /// Wakes every open stream to re-check its access (after a revocation or a share change).
    fn access_changed(&self) {
        self.shared.access_epoch.send_modify(|e| *e += 1);
    }
}

fn token_of<T>(req: &Request<T>) -> Result<String> {
    let header = req
        .metadata()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok());
    Ok(auth::bearer(header)?.to_owned())
}

type Rpc<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Cairn for Service {
    async fn get_namespace(&self, req: Request<GetNamespaceRequest>) -> Rpc<NamespaceInfo> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        Ok(Response::new(
            queries::namespace_info(&self.shared.db, caller).await?,
        ))
    }

    async fn find_missing(&self, req: Request<FindMissingRequest>) -> Rpc<FindMissingResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Edit)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Edit)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Edit)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Edit)
            .await?;
        let items = req.into_inner().items;
        let (results, head) =
            commit::commit(&self.shared.db, caller.namespace_id, caller.device, items).await?;
        if let Some(seq) = head {
            self.shared.hub.notify(caller.namespace_id, seq);
        }
        Ok(Response::new(CommitResponse { results }))
    }

    async fn list_tree(&self, req: Request<ListTreeRequest>) -> Rpc<ListTreeResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        let token = token_of(&req)?;
        let (tx, rx) = mpsc::channel(4);
        let access = StreamAccess {
            token,
            namespace: caller.namespace.clone(),
        };
        tokio::spawn(feed(
            self.shared.clone(),
            caller.namespace_id,
            req.into_inner().cursor,
            tx,
            access,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_versions(&self, req: Request<ListVersionsRequest>) -> Rpc<ListVersionsResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        let versions =
            queries::list_versions(&self.shared.db, caller.namespace_id, req.into_inner().path)
                .await?;
        Ok(Response::new(ListVersionsResponse { versions }))
    }

    async fn list_log(&self, req: Request<ListLogRequest>) -> Rpc<ListLogResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        let r = req.into_inner();
        let items = history::trash(&self.shared.db, caller.namespace_id, r.path, r.limit).await?;
        Ok(Response::new(ListTrashResponse { items }))
    }

    async fn restore(&self, req: Request<RestoreRequest>) -> Rpc<RestoreResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Edit)
            .await?;
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
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        Ok(Response::new(
            history::usage(&self.shared.db, caller.namespace_id).await?,
        ))
    }

    async fn list_wanted(&self, req: Request<ListWantedRequest>) -> Rpc<ListWantedResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        let chunks = history::wanted(&self.shared.db, caller.namespace_id).await?;
        Ok(Response::new(ListWantedResponse { chunks }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Rpc<LoginResponse> {
        let r = req.into_inner();
        if self.shared.login_limiter.check_key(&r.user).is_err() {
            return Err(Status::resource_exhausted(
                "too many login attempts for this user; wait a few seconds",
            ));
        }
        let user = r.user.clone();
        let ttl = self.shared.device_token_ttl;
        let (token, id) =
            accounts::login(&self.shared.db, r.user, r.password, r.device, ttl).await?;
        Ok(Response::new(LoginResponse {
            token,
            device_id: id as u64,
            user,
        }))
    }

    async fn list_devices(&self, req: Request<ListDevicesRequest>) -> Rpc<ListDevicesResponse> {
        let p = self.principal_of(&token_of(&req)?).await?;
        let devices = accounts::devices(&self.shared.db, &p).await?;
        Ok(Response::new(ListDevicesResponse { devices }))
    }

    async fn revoke_device(&self, req: Request<RevokeDeviceRequest>) -> Rpc<RevokeDeviceResponse> {
        let p = self.principal_of(&token_of(&req)?).await?;
        accounts::revoke(&self.shared.db, &p, req.get_ref().device_id).await?;
        self.access_changed();
        Ok(Response::new(RevokeDeviceResponse {}))
    }

    async fn list_namespaces(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Rpc<ListNamespacesResponse> {
        let p = self.principal_of(&token_of(&req)?).await?;
        let namespaces = accounts::namespaces(&self.shared.db, &p).await?;
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn share(&self, req: Request<ShareRequest>) -> Rpc<ShareResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::Owner)
            .await?;
        let r = req.into_inner();
        let role = Role::from_pb(r.role());
        let ns = caller.namespace_id;
        self.shared
            .db
            .write(move |conn| accounts::set_member(conn, ns, &r.user, role))
            .await?;
        self.access_changed();
        Ok(Response::new(ShareResponse {}))
    }

    async fn list_members(&self, req: Request<ListMembersRequest>) -> Rpc<ListMembersResponse> {
        let caller = self
            .caller(&req, &req.get_ref().namespace, Role::View)
            .await?;
        let members = accounts::members(&self.shared.db, caller.namespace_id).await?;
        Ok(Response::new(ListMembersResponse { members }))
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

/// What an open stream re-checks: its token still valid and still granted the namespace.
struct StreamAccess {
    token: String,
    namespace: String,
}

impl StreamAccess {
    async fn check(&self, shared: &Shared) -> Result<()> {
        let (t, ns) = (self.token.clone(), self.namespace.clone());
        shared
            .db
            .read(move |conn| {
                auth::access(conn, auth::lookup(conn, &t)?, &ns, Role::View).map(drop)
            })
            .await
    }
}

/// Feeds a Subscribe stream: the backlog in batches, then each new batch as commits land. Ends
/// when the client goes away (the receiver is dropped), the server shuts down, or the caller loses
/// access (device revoked, membership removed): then with the refusal as the stream's status.
async fn feed(
    shared: Arc<Shared>,
    ns: i64,
    mut cursor: u64,
    tx: mpsc::Sender<std::result::Result<ChangeBatch, Status>>,
    access: StreamAccess,
) {
    let mut wake = shared.hub.subscribe(ns);
    let mut stop = shared.shutdown.clone();
    let mut epoch = shared.access_epoch.subscribe();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
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
        let recheck_now = tokio::select! {
            changed = wake.changed() => { if changed.is_err() { return } false }
            _ = tx.closed() => return,
            _ = stop.wait_for(|s| *s) => return,
            _ = epoch.changed() => true,
            _ = recheck.tick() => true,
        };
        if recheck_now && let Err(e) = access.check(&shared).await {
            let _ = tx.send(Err(e.into())).await;
            return;
        }
    }
}
