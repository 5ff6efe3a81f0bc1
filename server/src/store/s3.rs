//! The S3-compatible store (AWS, Garage, MinIO, SeaweedFS) through aws-sdk-s3, path-style.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::future::BoxFuture;

use super::{BlobStore, ByteChunks};
use crate::error::{Error, Result};

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Where the bucket is, for messages: the endpoint URL, or AWS itself.
    endpoint: String,
}

fn storage_err(what: &str, key: &str, e: impl std::error::Error) -> Error {
    Error::Storage(format!("S3 {what} {key:?}: {}", DisplayErrorContext(e)))
}

impl S3Store {
    /// Builds the client from the `--store` parts; credentials come from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn new(bucket: String, endpoint: Option<String>, region: String) -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--store s3://{bucket}: set {name} in the environment"
                    ))
                })
        };
        Ok(Self::with_credentials(
            bucket.clone(),
            endpoint,
            region,
            var("AWS_ACCESS_KEY_ID")?,
            var("AWS_SECRET_ACCESS_KEY")?,
        ))
    }

    /// Builds the client with the given access key.
    pub fn with_credentials(
        bucket: String,
        endpoint: Option<String>,
        region: String,
        key_id: String,
        secret: String,
    ) -> Self {
        let creds = Credentials::new(key_id, secret, None, None, "environment");
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(120))
            .build();
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(creds)
            .force_path_style(true)
            .timeout_config(timeouts)
            // Several S3-compatible servers refuse the SDK's default CRC32 chunked uploads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &endpoint {
            conf = conf.endpoint_url(ep);
        }
        Self {
            client: Client::from_conf(conf.build()),
            bucket,
            endpoint: endpoint.unwrap_or_else(|| "AWS S3".to_owned()),
        }
    }

    /// Fails with a clear message when the bucket cannot be reached (checked once at start-up,
    /// before the server says it is listening).
    pub async fn check(&self) -> Result<()> {
        let Err(e) = self.client.head_bucket().bucket(&self.bucket).send().await else {
            return Ok(());
        };
        let status = e.raw_response().map(|r| r.status().as_u16());
        Err(Error::Config(unreachable_bucket(
            &self.bucket,
            &self.endpoint,
            status,
            &DisplayErrorContext(&e).to_string(),
        )))
    }
}

/// The start-up error for a bucket HeadBucket could not reach: what the answer means and what to
/// check. `status` is the HTTP status when the endpoint answered at all; `detail` the SDK's error.
fn unreachable_bucket(bucket: &str, endpoint: &str, status: Option<u16>, detail: &str) -> String {
    let what = match status {
        Some(404) => "no such bucket: create it, or check the name in --store".to_owned(),
        Some(401 | 403) => "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
             and the key's read and write rights on the bucket"
            .to_owned(),
        Some(301) => "the bucket is in another region: set region= in --store".to_owned(),
        Some(s) => format!(
            "HTTP {s}, not an S3 answer: check that endpoint= in --store is the S3 API's \
             address (not an admin or web port)"
        ),
        None => format!("no answer: is the S3 server running? ({detail})"),
    };
    format!("--store: bucket {bucket:?} at {endpoint}: {what}")
}

impl S3Store {
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(o),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(Error::NotFound(format!("no stored object {key:?}")))
            }
            Err(e) => Err(storage_err("GET", key, e)),
        }
    }
}

fn presigning(ttl: Duration) -> Result<PresigningConfig> {
    PresigningConfig::expires_in(ttl)
        .map_err(|e| Error::Internal(format!("presigning config: {e}")))
}

impl BlobStore for S3Store {
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        len: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(len as i64)
                .presigned(presigning(ttl)?)
                .await
                .map_err(|e| storage_err("presign PUT", key, e))?;
            Ok(req.uri().to_owned())
        })
    }

    fn presign_get<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(presigning(ttl)?)
                .await
                .map_err(|e| storage_err("presign GET", key, e))?;
            Ok(req.uri().to_owned())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let body = self
                .get_object(key)
                .await?
                .body
                .collect()
                .await
                .map_err(|e| storage_err("GET body", key, e))?;
            Ok(body.into_bytes())
        })
    }

    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteChunks>> {
        Box::pin(async move {
            let body = self.get_object(key).await?.body;
            let key = key.to_owned();
            let chunks = futures::stream::unfold(Some(body), move |body| {
                let key = key.clone();
                async move {
                    let mut body = body?;
                    match body.next().await? {
                        Ok(b) => Some((Ok(b), Some(body))),
                        Err(e) => Some((Err(storage_err("GET body", &key, e)), None)),
                    }
                }
            });
            Ok(Box::pin(chunks) as ByteChunks)
        })
    }

    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| storage_err("PUT", key, e))?;
            Ok(())
        })
    }

    fn copy<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .copy_source(format!("{}/{from}", self.bucket))
                .key(to)
                .send()
                .await
                .map_err(|e| storage_err("COPY to", to, e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| storage_err("DELETE", key, e))?;
            Ok(())
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
                Err(e) => Err(storage_err("HEAD", key, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::unreachable_bucket;

    #[test]
    fn an_unreachable_bucket_names_the_bucket_the_endpoint_and_what_to_check() {
        let m = |status| unreachable_bucket("b", "http://127.0.0.1:9", status, "refused");
        assert!(m(Some(404)).contains("no such bucket"));
        assert!(m(Some(403)).contains("AWS_SECRET_ACCESS_KEY"));
        assert!(m(Some(400)).contains("HTTP 400, not an S3 answer"));
        assert!(m(None).contains("is the S3 server running? (refused)"));
        for s in [Some(404), Some(403), Some(400), Some(301), None] {
            assert!(m(s).starts_with("--store: bucket \"b\" at http://127.0.0.1:9: "));
        }
    }
}
