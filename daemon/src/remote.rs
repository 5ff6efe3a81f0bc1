//! The server connection: authenticated gRPC calls and presigned-URL transfers, with retries.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use cairn_proto::pb::cairn_client::CairnClient;
use cairn_proto::{ChunkId, Seq, pb};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::faults::{self, Fault, Site};

/// Adds `authorization: Bearer <token>` to every call; the value is marked sensitive.
#[derive(Clone)]
pub struct Auth(MetadataValue<Ascii>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(cairn_proto::AUTH_HEADER, self.0.clone());
        Ok(req)
    }
}

type Client = CairnClient<InterceptedService<Channel, Auth>>;

/// One namespace on one server.
#[derive(Clone)]
pub struct Remote {
    client: Client,
    http: reqwest::Client,
    pub server: String,
    pub namespace: String,
}

const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// ListTree's page. Two pages are in memory at once (one read while the next is fetched), about
/// 0.3 KB per entry decoded: 1000 entries keep that near 0.6 MB where 5000 took 3 MB, and a
/// round trip costs little since the server sends with TCP_NODELAY (a no-change push of 100,000
/// files: 0.6-0.9 s at 5000 and at 1000; docs/BENCHMARKS.md, B6).
const LIST_PAGE: u32 = 1000;
/// HTTP/2 pings on the gRPC connection, and how long an unanswered one may stay unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries transient failures with exponential backoff and jitter.
pub async fn retry<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // A simulation (crate::faults) counts attempts, not seconds.
    let (min, max) = if faults::no_backoff() {
        (Duration::from_micros(1), Duration::from_micros(1))
    } else {
        (Duration::from_millis(200), Duration::from_secs(10))
    };
    f.retry(
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_max_times(6)
            .with_jitter(),
    )
    .when(Error::is_transient)
    .notify(|e: &Error, d: Duration| tracing::warn!("{what}: {e}; retrying in {d:?}"))
    .await
}

/// The error's whole source chain, for messages like "connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Remote {
    pub async fn connect(cfg: &Config, namespace: &str) -> Result<Self> {
        let unreachable = |detail: String| Error::Unreachable {
            url: cfg.server.clone(),
            detail,
        };
        let endpoint = Endpoint::from_shared(cfg.server.clone())
            .map_err(|e| {
                Error::Config(format!(
                    "server URL {:?} is invalid: {e} — check --server / CAIRN_SERVER",
                    cfg.server
                ))
            })?
            .connect_timeout(Duration::from_secs(10))
            // A link that drops packets silently (no RST, no FIN) leaves a connection that
            // looks open forever: pings on it, idle or not, notice within interval + timeout
            // and fail what runs on it (the change stream included), so it reads as offline.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let ca = match &cfg.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "--ca-cert {}: {e} — give the PEM CA certificate the server's certificate was signed with",
                    path.display()
                ))
            })?),
            None => None,
        };
        let endpoint = if cfg.server.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = &ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("TLS settings for {}: {e}", cfg.server)))?
        } else {
            endpoint
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", cfg.token.expose())
            .parse()
            .map_err(|_| {
                Error::Config(
                    "the device token has characters not allowed in a header — check the token"
                        .into(),
                )
            })?;
        value.set_sensitive(true);
        let client = CairnClient::with_interceptor(channel, Auth(value))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut http = reqwest::Client::builder();
        if let Some(pem) = &ca {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| Error::Config(format!("--ca-cert is not a PEM certificate: {e}")))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Remote {
            client,
            http,
            server: cfg.server.clone(),
            namespace: namespace.to_owned(),
        })
    }

    /// Runs one unary call with retries; `call` gets a fresh client clone each attempt.
    async fn unary<Req, Resp, F, Fut>(&self, name: &'static str, req: Req, call: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Client, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        retry(name, || {
            let fut = call(self.client.clone(), req.clone());
            let work = async move {
                fut.await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Error::rpc(name, s, &self.server))
            };
            let error = move |why| Error::Unreachable {
                url: self.server.clone(),
                detail: why,
            };
            injected(Site::Rpc, || name.to_owned(), work, error, |r| r)
        })
        .await
    }

    pub async fn get_namespace(&self) -> Result<pb::NamespaceInfo> {
        let req = pb::GetNamespaceRequest {
            namespace: self.namespace.clone(),
        };
        self.unary("GetNamespace", req, |mut c, r| async move {
            c.get_namespace(r).await
        })
        .await
    }

    /// The whole tree (tombstones included), handed to `page` one page at a time (so the caller
    /// never holds all of it in wire form), and the log head when the first page was read.
    pub async fn list_tree(&self, mut page: impl FnMut(Vec<pb::Entry>)) -> Result<Seq> {
        let fetch = |after: String| {
            let req = pb::ListTreeRequest {
                namespace: self.namespace.clone(),
                after,
                limit: LIST_PAGE,
                include_deleted: true,
            };
            self.unary(
                "ListTree",
                req,
                |mut c, r| async move { c.list_tree(r).await },
            )
        };
        let mut resp = fetch(String::new()).await?;
        let head = Seq(resp.head_seq);
        loop {
            let entries = std::mem::take(&mut resp.entries);
            if resp.next_after.is_empty() {
                page(entries);
                return Ok(head);
            }
            // The next page is asked for before this one is read (`join!` polls in order), so
            // the server works on it meanwhile.
            let after = std::mem::take(&mut resp.next_after);
            let (next, ()) = futures::join!(fetch(after), async { page(entries) });
            resp = next?;
        }
    }

    /// The ids among `ids` the namespace lacks (callers batch ≤ 10k).
    pub async fn find_missing(&self, ids: &[ChunkId]) -> Result<HashSet<ChunkId>> {
        let req = pb::FindMissingRequest {
            namespace: self.namespace.clone(),
            chunk_ids: ids.iter().map(ChunkId::to_vec).collect(),
        };
        let resp = self
            .unary("FindMissing", req, |mut c, r| async move {
                c.find_missing(r).await
            })
            .await?;
        resp.missing
            .iter()
            .map(|b| {
                ChunkId::from_slice(b).map_err(|e| Error::Protocol(format!("FindMissing: {e}")))
            })
            .collect()
    }

    pub async fn prepare_upload(
        &self,
        objects: Vec<pb::UploadObject>,
    ) -> Result<Vec<pb::UploadTarget>> {
        let n = objects.len();
        let req = pb::PrepareUploadRequest {
            namespace: self.namespace.clone(),
            objects,
        };
        let resp = self
            .unary("PrepareUpload", req, |mut c, r| async move {
                c.prepare_upload(r).await
            })
            .await?;
        if resp.targets.len() != n {
            return Err(Error::Protocol(format!(
                "PrepareUpload returned {} targets for {n} objects",
                resp.targets.len()
            )));
        }
        Ok(resp.targets)
    }

    pub async fn confirm_upload(&self, upload_ids: Vec<String>) -> Result<Vec<pb::UploadOutcome>> {
        let req = pb::ConfirmUploadRequest {
            namespace: self.namespace.clone(),
            upload_ids,
        };
        Ok(self
            .unary("ConfirmUpload", req, |mut c, r| async move {
                c.confirm_upload(r).await
            })
            .await?
            .outcomes)
    }

    pub async fn commit(&self, items: Vec<pb::CommitItem>) -> Result<Vec<pb::CommitResult>> {
        let n = items.len();
        let req = pb::CommitRequest {
            namespace: self.namespace.clone(),
            items,
        };
        let results = self
            .unary("Commit", req, |mut c, r| async move { c.commit(r).await })
            .await?
            .results;
        if results.len() != n {
            return Err(Error::Protocol(format!(
                "Commit returned {} results for {n} items",
                results.len()
            )));
        }
        Ok(results)
    }

    pub async fn get_manifests(
        &self,
        files: Vec<pb::PathVersion>,
    ) -> Result<pb::GetManifestsResponse> {
        let req = pb::GetManifestsRequest {
            namespace: self.namespace.clone(),
            files,
        };
        self.unary("GetManifests", req, |mut c, r| async move {
            c.get_manifests(r).await
        })
        .await
    }

    /// Log entries after `cursor` (at most `limit`), waiting up to `wait_ms` when there are none.
    pub async fn list_changes(
        &self,
        cursor: Seq,
        limit: u32,
        wait_ms: u32,
    ) -> Result<pb::ListChangesResponse> {
        let req = pb::ListChangesRequest {
            namespace: self.namespace.clone(),
            cursor: cursor.0,
            limit,
            wait_ms,
        };
        self.unary("ListChanges", req, |mut c, r| async move {
            c.list_changes(r).await
        })
        .await
    }

    /// The log after `cursor`, then every new batch as it is committed (no retries: the caller
    /// reconnects with backoff).
    pub async fn subscribe(&self, cursor: Seq) -> Result<tonic::Streaming<pb::ChangeBatch>> {
        let req = pb::SubscribeRequest {
            namespace: self.namespace.clone(),
            cursor: cursor.0,
        };
        let mut c = self.client.clone();
        c.subscribe(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::rpc("Subscribe", s, &self.server))
    }

    pub async fn list_versions(&self, path: &str) -> Result<Vec<pb::Entry>> {
        let req = pb::ListVersionsRequest {
            namespace: self.namespace.clone(),
            path: path.to_owned(),
        };
        Ok(self
            .unary("ListVersions", req, |mut c, r| async move {
                c.list_versions(r).await
            })
            .await?
            .versions)
    }

    /// Log entries under `path` ("" for all), newest first, before `before_seq` (0: newest).
    pub async fn list_log(
        &self,
        path: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<pb::ListLogResponse> {
        let req = pb::ListLogRequest {
            namespace: self.namespace.clone(),
            path: path.to_owned(),
            before_seq,
            limit,
        };
        self.unary(
            "ListLog",
            req,
            |mut c, r| async move { c.list_log(r).await },
        )
        .await
    }

    pub async fn list_trash(&self, path: &str) -> Result<Vec<pb::TrashItem>> {
        let req = pb::ListTrashRequest {
            namespace: self.namespace.clone(),
            path: path.to_owned(),
            limit: 0,
        };
        Ok(self
            .unary(
                "ListTrash",
                req,
                |mut c, r| async move { c.list_trash(r).await },
            )
            .await?
            .items)
    }

    /// Not retried: a restore is not idempotent (a second one would add another version).
    pub async fn restore(&self, req: pb::RestoreRequest) -> Result<pb::RestoreResponse> {
        let req = pb::RestoreRequest {
            namespace: self.namespace.clone(),
            ..req
        };
        let mut client = self.client.clone();
        client
            .restore(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::rpc("Restore", s, &self.server))
    }

    pub async fn get_usage(&self) -> Result<pb::Usage> {
        let req = pb::GetUsageRequest {
            namespace: self.namespace.clone(),
        };
        self.unary(
            "GetUsage",
            req,
            |mut c, r| async move { c.get_usage(r).await },
        )
        .await
    }

    pub async fn list_wanted(&self) -> Result<Vec<pb::WantedChunk>> {
        let req = pb::ListWantedRequest {
            namespace: self.namespace.clone(),
        };
        Ok(self
            .unary("ListWanted", req, |mut c, r| async move {
                c.list_wanted(r).await
            })
            .await?
            .chunks)
    }

    /// Not retried: each successful login registers a device.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        device: &str,
    ) -> Result<pb::LoginResponse> {
        let req = pb::LoginRequest {
            user: user.to_owned(),
            password: password.to_owned(),
            device: device.to_owned(),
        };
        self.client
            .clone()
            .login(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated => Error::Refused(format!("Login: {}", s.message())),
                _ => Error::rpc("Login", s, &self.server),
            })
    }

    pub async fn list_devices(&self) -> Result<Vec<pb::Device>> {
        Ok(self
            .unary(
                "ListDevices",
                pb::ListDevicesRequest {},
                |mut c, r| async move { c.list_devices(r).await },
            )
            .await?
            .devices)
    }

    pub async fn revoke_device(&self, device_id: u64) -> Result<()> {
        let req = pb::RevokeDeviceRequest { device_id };
        self.unary("RevokeDevice", req, |mut c, r| async move {
            c.revoke_device(r).await
        })
        .await
        .map(drop)
    }

    pub async fn list_namespaces(&self) -> Result<Vec<pb::NamespaceGrant>> {
        Ok(self
            .unary(
                "ListNamespaces",
                pb::ListNamespacesRequest {},
                |mut c, r| async move { c.list_namespaces(r).await },
            )
            .await?
            .namespaces)
    }

    pub async fn share(&self, user: &str, role: pb::Role) -> Result<()> {
        let req = pb::ShareRequest {
            namespace: self.namespace.clone(),
            user: user.to_owned(),
            role: role as i32,
        };
        self.unary("Share", req, |mut c, r| async move { c.share(r).await })
            .await
            .map(drop)
    }

    pub async fn list_members(&self) -> Result<Vec<pb::Member>> {
        let req = pb::ListMembersRequest {
            namespace: self.namespace.clone(),
        };
        Ok(self
            .unary("ListMembers", req, |mut c, r| async move {
                c.list_members(r).await
            })
            .await?
            .members)
    }

    /// PUTs exactly `body` (with Content-Length) to a presigned URL.
    pub async fn put(&self, url: &str, body: Bytes) -> Result<()> {
        retry("upload", || {
            let req = self
                .http
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body.clone());
            let work = async move {
                let resp = req.send().await.map_err(transfer_err)?;
                check_status(resp).await.map(drop)
            };
            // The key names the bytes too: staging names are random, the bytes are not. Made only
            // when a fault injector is installed: hashing every uploaded byte once more cost a
            // push about 0.28 core-seconds per GiB.
            let key = || format!("{} {}", url_path(url), blake3::hash(&body).to_hex());
            injected(Site::Put, key, work, injected_transfer, |r| r)
        })
        .await
    }

    /// Starts a GET of `len` bytes at `offset` of a stored object; its body is then read frame by
    /// frame, so a pull holds a chunk at a time rather than a whole span. Not retried here: a
    /// body can also fail halfway, and the caller resumes it from what it has (download/group.rs).
    pub async fn get_range(&self, url: &str, offset: u64, len: u64) -> Result<RangeBody> {
        let req = self.http.get(url).header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", offset, offset + len - 1),
        );
        let key = || format!("{} {offset}+{len}", url_path(url));
        let work = async move {
            let resp = check_status(req.send().await.map_err(transfer_err)?).await?;
            Ok(RangeBody::of(resp, offset, len))
        };
        injected(Site::Get, key, work, injected_transfer, |mut body| {
            body.flip = Some(len / 2);
            body
        })
        .await
    }
}

/// The body of a ranged GET ([`Remote::get_range`]).
pub struct RangeBody {
    resp: reqwest::Response,
    /// The server answered with the whole object.
    whole: bool,
    /// Body bytes still to drop before the range starts (`whole` only).
    skip: u64,
    len: u64,
    /// Bytes of the range still to come.
    left: u64,
    /// A simulated fault (crate::faults): the range's byte at this offset arrives flipped.
    flip: Option<u64>,
}

impl RangeBody {
    /// Bytes `offset .. offset + len` of the object in `resp`, a ranged (206) answer or the
    /// whole object (200) from a server that ignores Range, which the range is then cut out of.
    fn of(resp: reqwest::Response, offset: u64, len: u64) -> Self {
        let whole = resp.status() == reqwest::StatusCode::OK;
        RangeBody {
            resp,
            whole,
            skip: if whole { offset } else { 0 },
            len,
            left: len,
            flip: None,
        }
    }

    /// The range's next bytes; `None` once all `len` have come. A body that ends short, or a
    /// ranged answer longer than asked, is a transient error.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let wrong = |got: u64| Error::Transfer {
            detail: format!("asked for {} bytes, got {got}", self.len),
            transient: true,
        };
        loop {
            if self.left == 0 {
                if !self.whole
                    && let Some(extra) = self.resp.chunk().await.map_err(transfer_err)?
                    && !extra.is_empty()
                {
                    return Err(wrong(self.len + extra.len() as u64));
                }
                return Ok(None);
            }
            let Some(mut frame) = self.resp.chunk().await.map_err(transfer_err)? else {
                return Err(wrong(self.len - self.left));
            };
            let skipped = self.skip.min(frame.len() as u64);
            self.skip -= skipped;
            let mut frame = frame.split_off(skipped as usize);
            if frame.is_empty() {
                continue;
            }
            if frame.len() as u64 > self.left {
                if !self.whole {
                    return Err(wrong(self.len - self.left + frame.len() as u64));
                }
                frame.truncate(self.left as usize);
            }
            let at = self.len - self.left;
            if let Some(f) = self.flip
                && (at..at + frame.len() as u64).contains(&f)
            {
                let mut v = frame.to_vec();
                v[(f - at) as usize] ^= 0x01;
                frame = Bytes::from(v);
                self.flip = None;
            }
            self.left -= frame.len() as u64;
            return Ok(Some(frame));
        }
    }
}

/// Runs `work` under the injector's decision for `site` (see [`crate::faults`]): failed before
/// it starts, its answer lost after it ran, or its answer damaged by `corrupt`.
/// `key` names the visit for the injector; it is only made when one is installed.
async fn injected<T>(
    site: Site,
    key: impl FnOnce() -> String,
    work: impl Future<Output = Result<T>>,
    error: impl FnOnce(String) -> Error,
    corrupt: impl FnOnce(T) -> T,
) -> Result<T> {
    if !faults::is_active() {
        return work.await;
    }
    let key = key();
    let why = |f: Fault| format!("injected fault: {f:?} at {site:?} {key}");
    match faults::at(site, &key) {
        None => work.await,
        Some(f @ Fault::Fail) => Err(error(why(f))),
        Some(f @ Fault::LoseReply) => {
            let _ = work.await;
            Err(error(why(f)))
        }
        Some(Fault::Corrupt) => work.await.map(corrupt),
    }
}

fn injected_transfer(detail: String) -> Error {
    Error::Transfer {
        detail,
        transient: true,
    }
}

/// The path of a presigned URL (no host, port or signature): a key stable across runs.
fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.path().to_owned())
}

fn transfer_err(e: reqwest::Error) -> Error {
    // The URL carries a signature: never print it.
    let e = e.without_url();
    let transient =
        e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode();
    Error::Transfer {
        detail: chain(&e),
        transient,
    }
}

async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    Err(Error::Transfer {
        detail: format!("storage answered {status}: {text}"),
        transient: status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP server on 127.0.0.1 that answers one request with `status`, a Content-Length of
    /// `body.len()` (or `claimed`) and `body` written in 3000-byte pieces.
    async fn serve_once(status: &'static str, body: Vec<u8>, claimed: Option<usize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if sock.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                req.push(b[0]);
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                claimed.unwrap_or(body.len())
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            for piece in body.chunks(3000) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
            }
        });
        format!("http://{addr}/object")
    }

    fn object() -> Vec<u8> {
        (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Reads the whole range with `offset` and `len` from a server answering as given.
    async fn read(
        status: &'static str,
        body: Vec<u8>,
        claimed: Option<usize>,
        offset: u64,
        len: u64,
        flip: bool,
    ) -> Result<Vec<u8>> {
        let url = serve_once(status, body, claimed).await;
        let resp = reqwest::get(url).await.unwrap();
        let mut body = RangeBody::of(resp, offset, len);
        if flip {
            body.flip = Some(len / 2);
        }
        let mut out = Vec::new();
        while let Some(frame) = body.next().await? {
            assert!(!frame.is_empty());
            out.extend_from_slice(&frame);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_range_streams_exactly_the_bytes_asked_for() {
        let obj = object();
        let ranged = obj[5000..17_000].to_vec();
        let got = read(
            "206 Partial Content",
            ranged.clone(),
            None,
            5000,
            12_000,
            false,
        )
        .await;
        assert_eq!(got.unwrap(), ranged);
        // A server that ignores Range sends the whole object; the range is cut out of it.
        let got = read("200 OK", obj.clone(), None, 4321, 9000, false).await;
        assert_eq!(got.unwrap(), obj[4321..13_321]);
        let got = read("200 OK", obj.clone(), None, 0, 20_000, false).await;
        assert_eq!(got.unwrap(), obj);
    }

    #[tokio::test]
    async fn a_body_shorter_or_longer_than_asked_is_a_transient_error() {
        let obj = object();
        for (status, body, claimed, offset, len) in [
            // The connection closes before the promised length.
            (
                "206 Partial Content",
                obj[..6000].to_vec(),
                Some(8000),
                0,
                8000,
            ),
            // A complete answer, but shorter than the range.
            ("206 Partial Content", obj[..6000].to_vec(), None, 0, 8000),
            // More than asked.
            ("206 Partial Content", obj[..9000].to_vec(), None, 0, 8000),
            // A whole object that ends before the range does.
            ("200 OK", obj.clone(), None, 15_000, 8000),
        ] {
            let e = read(status, body, claimed, offset, len, false)
                .await
                .expect_err("a wrong length must not pass");
            assert!(e.is_transient(), "{status} {offset}+{len}: {e}");
        }
    }

    #[tokio::test]
    async fn a_simulated_corruption_flips_exactly_one_byte() {
        let obj = object();
        let got = read("206 Partial Content", obj.clone(), None, 0, 20_000, true)
            .await
            .unwrap();
        let diff: Vec<usize> = (0..obj.len()).filter(|&i| got[i] != obj[i]).collect();
        assert_eq!(diff, vec![10_000]);
    }
}
