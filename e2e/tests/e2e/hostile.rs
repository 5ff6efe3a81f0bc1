//! Hostile input straight at the real server over gRPC: what the `cairn` client would never send.

use anyhow::Result;
use cairn_e2e::{Backend, CairnServer, grpc};
use cairn_proto::ChunkId;
use cairn_proto::pb::{
    ChunkRef, CommitItem, CommitRequest, CommitStatus, ConfirmUploadRequest, EntryKind, FileMeta,
    FindMissingRequest, GetManifestsRequest, PathVersion, PrepareUploadRequest, UploadObject,
};

pub(crate) fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

pub(crate) fn file_item(path: &str, chunks: &[(ChunkId, u32)], size: u64) -> CommitItem {
    CommitItem {
        path: path.into(),
        meta: Some(FileMeta {
            kind: EntryKind::File as i32,
            size,
            mode: 0o644,
            mtime_ns: 1_700_000_000_000_000_000,
            manifest: chunks
                .iter()
                .map(|(id, len)| ChunkRef {
                    id: id.to_vec(),
                    length: *len,
                })
                .collect(),
            symlink_target: String::new(),
        }),
        ..Default::default()
    }
}

pub(crate) async fn commit_one(
    c: &mut grpc::Client,
    item: CommitItem,
) -> Result<cairn_proto::pb::CommitResult> {
    let resp = c
        .commit(CommitRequest {
            namespace: "team".into(),
            items: vec![item],
        })
        .await?
        .into_inner();
    Ok(resp
        .results
        .into_iter()
        .next()
        .expect("one result per item"))
}

/// What FindMissing says of one chunk in `ns`.
async fn missing(c: &mut grpc::Client, ns: &str, id: ChunkId) -> Result<Vec<Vec<u8>>> {
    let req = FindMissingRequest {
        namespace: ns.into(),
        chunk_ids: vec![id.to_vec()],
    };
    Ok(c.find_missing(req).await?.into_inner().missing)
}

/// PUTs `body` to a presigned URL.
async fn put(url: &str, body: Vec<u8>) -> Result<()> {
    let resp = reqwest::Client::new().put(url).body(body).send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "PUT {} -> {}",
        url.split('?').next().unwrap_or(url),
        resp.status()
    );
    Ok(())
}

pub(crate) async fn upload(
    c: &mut grpc::Client,
    ns: &str,
    declared: &[u8],
    sent: Vec<u8>,
) -> Result<(ChunkId, bool, String)> {
    let id = ChunkId::of(declared);
    let chunks = vec![ChunkRef {
        id: id.to_vec(),
        length: declared.len() as u32,
    }];
    let targets = c
        .prepare_upload(PrepareUploadRequest {
            namespace: ns.into(),
            objects: vec![UploadObject { chunks }],
        })
        .await?
        .into_inner()
        .targets;
    put(&targets[0].url, sent).await?;
    let outcome = c
        .confirm_upload(ConfirmUploadRequest {
            namespace: ns.into(),
            upload_ids: vec![targets[0].upload_id.clone()],
        })
        .await?
        .into_inner()
        .outcomes
        .remove(0);
    Ok((id, outcome.ok, outcome.error))
}

fn a_commit_naming_a_chunk_never_uploaded_is_refused(backend: Backend) -> Result<()> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    let token = s.create_token("team", "mallory")?;
    block_on(async {
        let mut c = grpc::connect(&s.url(), &token).await?;
        let ghost = ChunkId::of(b"never uploaded");
        let r = commit_one(&mut c, file_item("ghost.txt", &[(ghost, 14)], 14)).await?;
        assert_eq!(r.status(), CommitStatus::Rejected, "{r:?}");
        assert!(
            r.error.contains(&ghost.to_hex()),
            "the error names the chunk: {}",
            r.error
        );
        Ok(())
    })
}

fn a_chunk_uploaded_with_wrong_bytes_is_refused_and_never_served(backend: Backend) -> Result<()> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    let token = s.create_token("team", "mallory")?;
    block_on(async {
        let mut c = grpc::connect(&s.url(), &token).await?;
        let (id, ok, error) = upload(
            &mut c,
            "team",
            b"the real bytes",
            b"evil bytes!!!!".to_vec(),
        )
        .await?;
        assert!(!ok, "wrong bytes were accepted");
        assert!(!error.is_empty());
        let missing = missing(&mut c, "team", id).await?;
        assert_eq!(
            missing,
            vec![id.to_vec()],
            "a refused chunk must stay missing"
        );
        let r = commit_one(&mut c, file_item("planted.txt", &[(id, 14)], 14)).await?;
        assert_eq!(r.status(), CommitStatus::Rejected, "{r:?}");
        let served = c
            .get_manifests(GetManifestsRequest {
                namespace: "team".into(),
                files: vec![PathVersion {
                    path: "planted.txt".into(),
                    version: 0,
                }],
            })
            .await;
        assert!(
            served.is_err(),
            "a refused commit must not be served: {served:?}"
        );

        // The honest upload of the same id then works.
        let (id2, ok, error) = upload(
            &mut c,
            "team",
            b"the real bytes",
            b"the real bytes".to_vec(),
        )
        .await?;
        assert!(ok && id2 == id, "{error}");
        let r = commit_one(&mut c, file_item("honest.txt", &[(id, 14)], 14)).await?;
        assert_eq!(r.status(), CommitStatus::Committed, "{r:?}");
        Ok(())
    })
}

fn bad_paths_and_inconsistent_manifests_are_refused(backend: Backend) -> Result<()> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    let token = s.create_token("team", "mallory")?;
    block_on(async {
        let mut c = grpc::connect(&s.url(), &token).await?;
        let (id, ok, error) = upload(&mut c, "team", b"0123456789", b"0123456789".to_vec()).await?;
        assert!(ok, "{error}");
        for path in [
            "../escape.txt",
            "a/../../b",
            "/etc/passwd",
            "nul\0byte",
            "a//b",
            "",
            "a/./b",
            "C:\\win",
        ] {
            let r = commit_one(&mut c, file_item(path, &[(id, 10)], 10)).await?;
            assert_eq!(
                r.status(),
                CommitStatus::Rejected,
                "path {path:?} was accepted: {r:?}"
            );
        }
        let r = commit_one(&mut c, file_item("sizes.txt", &[(id, 10)], 11)).await?;
        assert_eq!(
            r.status(),
            CommitStatus::Rejected,
            "lengths summing to 10 with size 11: {r:?}"
        );
        let r = commit_one(&mut c, file_item("lengths.txt", &[(id, 9)], 9)).await?;
        assert_eq!(
            r.status(),
            CommitStatus::Rejected,
            "a chunk declared shorter than it is: {r:?}"
        );
        let r = commit_one(&mut c, file_item("fine.txt", &[(id, 10)], 10)).await?;
        assert_eq!(r.status(), CommitStatus::Committed, "{r:?}");
        Ok(())
    })
}

fn another_namespace_can_neither_probe_nor_reference_our_chunks(backend: Backend) -> Result<()> {
    let s = CairnServer::start(backend)?;
    s.create_namespace("team")?;
    s.create_namespace("rival")?;
    let ours = s.create_token("team", "alice")?;
    let theirs = s.create_token("rival", "eve")?;
    block_on(async {
        let mut alice = grpc::connect(&s.url(), &ours).await?;
        let (id, ok, _) = upload(
            &mut alice,
            "team",
            b"secret plans",
            b"secret plans".to_vec(),
        )
        .await?;
        assert!(ok);

        let mut eve = grpc::connect(&s.url(), &theirs).await?;
        let missing = missing(&mut eve, "rival", id).await?;
        assert_eq!(
            missing,
            vec![id.to_vec()],
            "eve learned that someone stores the chunk"
        );
        let r = eve
            .commit(CommitRequest {
                namespace: "rival".into(),
                items: vec![file_item("stolen.txt", &[(id, 12)], 12)],
            })
            .await?
            .into_inner()
            .results
            .remove(0);
        assert_eq!(r.status(), CommitStatus::Rejected, "{r:?}");
        let denied = eve
            .find_missing(FindMissingRequest {
                namespace: "team".into(),
                chunk_ids: vec![],
            })
            .await;
        assert_eq!(
            denied.map_err(|e| e.code()).err(),
            Some(tonic::Code::PermissionDenied)
        );
        Ok(())
    })
}

crate::on_every_backend!(
    a_commit_naming_a_chunk_never_uploaded_is_refused,
    a_chunk_uploaded_with_wrong_bytes_is_refused_and_never_served,
    bad_paths_and_inconsistent_manifests_are_refused,
    another_namespace_can_neither_probe_nor_reference_our_chunks,
);
