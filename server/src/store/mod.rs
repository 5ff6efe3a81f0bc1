//! The blob store: where uploaded objects rest. S3-compatible storage or a local directory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::error::{Error, Result};

pub mod local;
pub mod s3;

/// How long presigned URLs stay valid.
pub const URL_TTL: Duration = Duration::from_secs(15 * 60);

/// An object store that can hand out presigned URLs. Keys are server-chosen (`staging/<hex>`,
/// `objects/<hex>`), never client input.
pub trait BlobStore: Send + Sync + 'static {
    /// A URL that accepts one PUT of exactly `len` bytes (sent with a Content-Length header).
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        len: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String>>;
    /// A URL for GETs of the object; clients add a `Range` header for parts of it.
    fn presign_get<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<String>>;
    /// The whole object, or `Error::NotFound`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes>>;
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>>;
    fn copy<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<()>>;
    /// The whole object as a stream of buffers (memory stays bounded whatever its size), or
    /// `Error::NotFound` before the first buffer.
    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteChunks>> {
        Box::pin(async move {
            let bytes = self.get(key).await?;
            Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })) as ByteChunks)
        })
    }
    /// Makes `to` hold what `from` holds now, under a key no presigned URL writes: later writes
    /// to `from` must never reach `to`. `from` may be gone afterwards. S3: a server-side copy
    /// (Garage shares the data blocks); the local store renames the file.
    fn promote<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<()>> {
        self.copy(from, to)
    }
    /// Deleting a missing key is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
    /// The object's size, or `None` when there is no such object.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;
}

/// A parsed `--store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `local:DIR`
    Local(std::path::PathBuf),
    /// `s3://BUCKET?endpoint=URL&region=R`
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
    },
}

impl StoreSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(dir) = s.strip_prefix("local:") {
            if dir.is_empty() {
                return Err(Error::Config("--store local:DIR needs a directory".into()));
            }
            return Ok(StoreSpec::Local(dir.into()));
        }
        if s.starts_with("s3://") {
            let url = url::Url::parse(s)
                .map_err(|e| Error::Config(format!("--store {s:?} is not a valid URL: {e}")))?;
            let bucket = url.host_str().unwrap_or_default().to_owned();
            if bucket.is_empty() {
                return Err(Error::Config(format!(
                    "--store {s:?} names no bucket (s3://BUCKET?endpoint=URL&region=R)"
                )));
            }
            let mut endpoint = None;
            let mut region = "us-east-1".to_owned();
            for (k, v) in url.query_pairs() {
                match &*k {
                    "endpoint" => endpoint = Some(v.into_owned()),
                    "region" => region = v.into_owned(),
                    other => {
                        return Err(Error::Config(format!(
                            "--store: unknown parameter {other:?} (known: endpoint, region)"
                        )));
                    }
                }
            }
            return Ok(StoreSpec::S3 {
                bucket,
                endpoint,
                region,
            });
        }
        Err(Error::Config(format!(
            "--store {s:?} is neither local:DIR nor s3://BUCKET?endpoint=URL&region=R"
        )))
    }
}

/// A fresh content key for a verified object: the BLAKE3 hash of its bytes (for humans and
/// scrub reports) and a random suffix, so a key is never reused after garbage collection deleted
/// an object with the same bytes.
pub fn content_key(hash: &blake3::Hash) -> String {
    format!(
        "objects/{}-{}",
        hash.to_hex(),
        hex::encode(rand::random::<[u8; 8]>())
    )
}

/// A fresh, unguessable staging key.
pub fn staging_key() -> String {
    format!("staging/{}", hex::encode(rand::random::<[u8; 16]>()))
}

pub type DynStore = Arc<dyn BlobStore>;

/// An object's bytes as they arrive.
pub type ByteChunks = BoxStream<'static, Result<Bytes>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_settings_parse_or_name_what_is_wrong() {
        assert_eq!(
            StoreSpec::parse("local:/tmp/x").unwrap(),
            StoreSpec::Local("/tmp/x".into())
        );
        assert_eq!(
            StoreSpec::parse("s3://chunks?endpoint=http://127.0.0.1:3900&region=garage").unwrap(),
            StoreSpec::S3 {
                bucket: "chunks".into(),
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: "garage".into()
            }
        );
        assert!(
            StoreSpec::parse("s3://b?bogus=1")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
        assert!(StoreSpec::parse("ftp://x").is_err());
        assert!(StoreSpec::parse("local:").is_err());
    }
}
