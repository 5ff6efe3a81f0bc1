//! The local-directory store, and the signed, expiring `/blob/{key}` URLs cairn-server serves for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::BlobStore;
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Objects as files under one directory. Writes go to a temp file, are fsynced, then renamed.
pub struct LocalStore {
    dir: PathBuf,
    /// Base of presigned URLs, e.g. `http://127.0.0.1:7070` (no trailing slash).
    base_url: String,
    secret: Vec<u8>,
}

/// Why a signed URL is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    Expired,
    BadSignature,
}

impl LocalStore {
    pub fn new(dir: PathBuf, base_url: &str, secret: Vec<u8>) -> Result<Self> {
        std::fs::create_dir_all(dir.join(".tmp")).map_err(|e| {
            Error::Config(format!(
                "--store local:{}: cannot create directory: {e}",
                dir.display()
            ))
        })?;
        Ok(Self {
            dir,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret,
        })
    }

    fn mac(&self, method: &str, key: &str, exp: u64, len: Option<u64>) -> HmacSha256 {
        // HMAC accepts keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("hmac takes any key length");
        let len = len.map(|l| l.to_string()).unwrap_or_default();
        mac.update(format!("{method}\n{key}\n{exp}\n{len}").as_bytes());
        mac
    }

    /// A URL for `method` on `key` until `exp` (Unix seconds); PUT URLs also bind the length.
    pub fn sign_url(&self, method: &str, key: &str, exp: u64, len: Option<u64>) -> String {
        let sig = hex::encode(self.mac(method, key, exp, len).finalize().into_bytes());
        let len = len.map(|l| format!("&len={l}")).unwrap_or_default();
        format!("{}/blob/{key}?exp={exp}{len}&sig={sig}", self.base_url)
    }

    /// Checks a signature in constant time, then the expiry.
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        exp: u64,
        len: Option<u64>,
        sig: &str,
    ) -> Result<(), SigError> {
        let sig = hex::decode(sig).map_err(|_| SigError::BadSignature)?;
        self.mac(method, key, exp, len)
            .verify_slice(&sig)
            .map_err(|_| SigError::BadSignature)?;
        if exp < unix_now() {
            return Err(SigError::Expired);
        }
        Ok(())
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        if !valid_key(key) {
            return Err(Error::InvalidArgument(format!(
                "invalid object key {key:?}"
            )));
        }
        Ok(self.dir.join(key))
    }

    /// Writes `chunks` to a temp file, fsyncs it, renames it to `key` and fsyncs the folder.
    async fn write_atomic<S>(
        &self,
        key: &str,
        mut chunks: S,
        expect_len: Option<u64>,
    ) -> Result<u64>
    where
        S: futures::Stream<Item = Result<Bytes>> + Unpin,
    {
        let target = self.path_of(key)?;
        let tmp = self
            .dir
            .join(".tmp")
            .join(hex::encode(rand::random::<[u8; 12]>()));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut written = 0u64;
        let result: Result<()> = async {
            while let Some(buf) = chunks.next().await {
                let buf = buf?;
                written += buf.len() as u64;
                if expect_len.is_some_and(|l| written > l) {
                    return Err(Error::InvalidArgument(
                        "body longer than the signed length".into(),
                    ));
                }
                file.write_all(&buf).await?;
            }
            if expect_len.is_some_and(|l| written != l) {
                return Err(Error::InvalidArgument(
                    "body shorter than the signed length".into(),
                ));
            }
            file.sync_all().await?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        // `path_of` joined a valid key (no empty components) to dir, so there is a parent.
        let parent = target.parent().expect("a key has a parent folder");
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::rename(&tmp, &target).await?;
        fsync_dir(parent).await?;
        Ok(written)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keys are server-made: lowercase hex, letters, digits and `/`-separated non-empty parts.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_'))
}

async fn fsync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await??;
    Ok(())
}

fn not_found(key: &str) -> Error {
    Error::NotFound(format!("no stored object {key:?}"))
}

fn io_to_store(key: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        not_found(key)
    } else {
        Error::Io(e)
    }
}

impl BlobStore for LocalStore {
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        len: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(
            async move { Ok(self.sign_url("PUT", key, unix_now() + ttl.as_secs(), Some(len))) },
        )
    }

    fn presign_get<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { Ok(self.sign_url("GET", key, unix_now() + ttl.as_secs(), None)) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|e| io_to_store(key, e))
        })
    }

    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.write_atomic(key, futures::stream::iter([Ok(data)]), None)
                .await?;
            Ok(())
        })
    }

    fn copy<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(self.path_of(from)?)
                .await
                .map_err(|e| io_to_store(from, e))?;
            let stream = tokio_util_stream(file);
            self.write_atomic(to, Box::pin(stream), None).await?;
            Ok(())
        })
    }

    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<super::ByteChunks>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(self.path_of(key)?)
                .await
                .map_err(|e| io_to_store(key, e))?;
            Ok(Box::pin(tokio_util_stream(file)) as super::ByteChunks)
        })
    }

    /// A rename: PUT URLs only ever rename a new temp file over their staging key and never
    /// write a file in place, so the renamed file can no longer change.
    fn promote<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (src, dst) = (self.path_of(from)?, self.path_of(to)?);
            // `path_of` joined a valid key (no empty components) to dir, so there is a parent.
            let parent = dst.parent().expect("a key has a parent folder");
            tokio::fs::create_dir_all(parent).await?;
            tokio::fs::rename(&src, &dst)
                .await
                .map_err(|e| io_to_store(from, e))?;
            fsync_dir(parent).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)?).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io(e)),
                _ => Ok(()),
            }
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.path_of(key)?).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Io(e)),
            }
        })
    }
}

/// Reads a file as a stream of 1 MiB buffers.
fn tokio_util_stream(file: tokio::fs::File) -> impl futures::Stream<Item = Result<Bytes>> {
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(Error::Io(e)), None)),
        }
    })
}

/// The query string of a signed URL.
#[derive(serde::Deserialize)]
struct Signed {
    exp: u64,
    sig: String,
    len: Option<u64>,
}

/// `PUT /blob/{key}` and `GET /blob/{key}` (with `Range: bytes=a-b`) on signed URLs.
pub fn router(store: Arc<LocalStore>) -> Router {
    Router::new()
        .route("/blob/{*key}", get(get_blob).put(put_blob))
        .with_state(store)
}

fn refuse(e: SigError) -> Response {
    let msg = match e {
        SigError::Expired => "URL expired; ask the server for a new one",
        SigError::BadSignature => "bad URL signature",
    };
    (StatusCode::FORBIDDEN, msg).into_response()
}

async fn put_blob(
    State(store): State<Arc<LocalStore>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(len) = q.len else {
        return refuse(SigError::BadSignature);
    };
    if let Err(e) = store.verify("PUT", &key, q.exp, Some(len), &q.sig) {
        return refuse(e);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared != Some(len) {
        return (
            StatusCode::BAD_REQUEST,
            format!("send exactly {len} bytes with a Content-Length header"),
        )
            .into_response();
    }
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| Error::InvalidArgument(format!("body: {e}"))));
    match store.write_atomic(&key, stream, Some(len)).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(Error::InvalidArgument(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
        Err(e) => {
            tracing::error!(error = %e, key, "local store write failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage write failed; retry",
            )
                .into_response()
        }
    }
}

async fn get_blob(
    State(store): State<Arc<LocalStore>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = store.verify("GET", &key, q.exp, None, &q.sig) {
        return refuse(e);
    }
    let Ok(path) = store.path_of(&key) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end, partial) = match range {
        None => (0, size, false),
        Some(r) => match parse_range(r, size) {
            Some((a, b)) => (a, b, true),
            None => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response();
            }
        },
    };
    let mut buf = vec![0u8; (end - start) as usize];
    let read = async {
        file.seek(std::io::SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf).await
    };
    if read.await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if partial {
        let cr = format!("bytes {start}-{}/{size}", end - 1);
        (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_RANGE, cr)],
            buf,
        )
            .into_response()
    } else {
        (StatusCode::OK, buf).into_response()
    }
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` into a half-open range within `size`.
fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().ok()?, size),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(size),
        ),
    };
    (start < end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_owned(), "http://h", vec![7; 32]).unwrap();
        (dir, s)
    }

    #[test]
    fn a_signature_binds_method_key_expiry_and_length() {
        let (_d, s) = store();
        let exp = unix_now() + 60;
        let url = s.sign_url("PUT", "staging/ab", exp, Some(10));
        let sig = url.rsplit("sig=").next().unwrap();
        assert_eq!(s.verify("PUT", "staging/ab", exp, Some(10), sig), Ok(()));
        assert_eq!(
            s.verify("GET", "staging/ab", exp, Some(10), sig),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            s.verify("PUT", "staging/ac", exp, Some(10), sig),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            s.verify("PUT", "staging/ab", exp + 1, Some(10), sig),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            s.verify("PUT", "staging/ab", exp, Some(11), sig),
            Err(SigError::BadSignature)
        );
    }

    #[test]
    fn an_expired_url_is_refused_even_with_a_good_signature() {
        let (_d, s) = store();
        let exp = unix_now() - 1;
        let url = s.sign_url("GET", "objects/ab", exp, None);
        let sig = url.rsplit("sig=").next().unwrap();
        assert_eq!(
            s.verify("GET", "objects/ab", exp, None, sig),
            Err(SigError::Expired)
        );
    }

    #[test]
    fn ranges_are_parsed_within_the_object() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    /// A pull reads several chunks of a pack with one `Range: bytes=a-b` GET on a signed URL.
    #[tokio::test]
    async fn a_signed_get_serves_exactly_the_range_asked_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path().to_owned(), &base, vec![9; 32]).unwrap());
        let pack: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        store
            .put("objects/pack", Bytes::from(pack.clone()))
            .await
            .unwrap();
        let url = store
            .presign_get("objects/pack", Duration::from_secs(60))
            .await
            .unwrap();
        let app = router(store);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let get = |range: Option<&'static str>| {
            let mut r = http.get(&url);
            if let Some(range) = range {
                r = r.header("range", range);
            }
            r.send()
        };

        let r = get(Some("bytes=4096-69631")).await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()[header::CONTENT_RANGE],
            "bytes 4096-69631/100000"
        );
        assert_eq!(&r.bytes().await.unwrap()[..], &pack[4096..69632]);

        // Past the end: clipped to the object, as HTTP says.
        let r = get(Some("bytes=99990-200000")).await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.bytes().await.unwrap()[..], &pack[99990..]);

        let r = get(Some("bytes=100000-")).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */100000");

        // Several ranges in one header are not served (the client never asks for them).
        let r = get(Some("bytes=0-1,5-6")).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        let r = get(None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&r.bytes().await.unwrap()[..], &pack[..]);
    }

    #[test]
    fn keys_that_could_leave_the_directory_are_refused() {
        assert!(valid_key("objects/abc"));
        for k in ["", "../x", "a/../b", "/abs", "a//b", "a/./b", "a\\b"] {
            assert!(!valid_key(k), "{k}");
        }
    }

    #[tokio::test]
    async fn put_get_copy_head_delete_round_trip() {
        let (_d, s) = store();
        s.put("staging/a1", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(s.head("staging/a1").await.unwrap(), Some(5));
        s.copy("staging/a1", "objects/b2").await.unwrap();
        assert_eq!(&s.get("objects/b2").await.unwrap()[..], b"hello");
        s.delete("staging/a1").await.unwrap();
        s.delete("staging/a1").await.unwrap();
        assert_eq!(s.head("staging/a1").await.unwrap(), None);
        assert!(matches!(s.get("staging/a1").await, Err(Error::NotFound(_))));
    }
}
