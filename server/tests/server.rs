//! The server in-process on port 0 with a local store, driven by a real tonic client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ::cairn_server::{ServeConfig, admin};
use cairn_proto::ChunkId;
use cairn_proto::pb::cairn_client::CairnClient;
use cairn_proto::pb::*;
use tonic::transport::Channel;
use tonic::{Code, Request};

const NS: &str = "team";

/// The store under test: a local dir by default; `CAIRN_TEST_STORE=s3://BUCKET?endpoint=..&region=..`
/// (with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`) runs the same tests against real S3.
fn test_store(dir: &tempfile::TempDir) -> String {
    std::env::var("CAIRN_TEST_STORE")
        .unwrap_or_else(|_| format!("local:{}", dir.path().join("blobs").display()))
}

/// A server on 127.0.0.1:0 over a temp dir; stops when dropped.
struct TestServer {
    addr: SocketAddr,
    db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("server.db");
        admin::create_namespace(&db, NS).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServeConfig::new(db.clone(), test_store(&dir));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            ::cairn_server::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server failed");
        });
        // The listener is already bound: connections queue until `serve` accepts them.
        Self {
            addr,
            db,
            stop: Some(tx),
            _dir: dir,
        }
    }

    async fn device(&self, namespace: &str, device: &str) -> Device {
        let token = admin::create_token(&self.db, namespace, device).unwrap();
        self.device_with_token(namespace, &token).await
    }

    async fn device_with_token(&self, namespace: &str, token: &str) -> Device {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Device {
            client: CairnClient::new(channel),
            token: token.to_owned(),
            ns: namespace.to_owned(),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One device's client.
struct Device {
    client: CairnClient<Channel>,
    token: String,
    ns: String,
    http: reqwest::Client,
}

fn chunk_ref(bytes: &[u8]) -> ChunkRef {
    ChunkRef {
        id: ChunkId::of(bytes).to_vec(),
        length: bytes.len() as u32,
    }
}

fn file_meta(chunks: &[&[u8]]) -> FileMeta {
    FileMeta {
        kind: EntryKind::File as i32,
        size: chunks.iter().map(|c| c.len() as u64).sum(),
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_000,
        manifest: chunks.iter().map(|c| chunk_ref(c)).collect(),
        symlink_target: String::new(),
    }
}

fn put(path: &str, base: u64, meta: FileMeta) -> CommitItem {
    CommitItem {
        path: path.into(),
        base_version: base,
        meta: Some(meta),
        ..Default::default()
    }
}

fn dir_meta() -> FileMeta {
    FileMeta {
        kind: EntryKind::Dir as i32,
        mode: 0o755,
        ..Default::default()
    }
}

fn delete(path: &str, base: u64) -> CommitItem {
    CommitItem {
        path: path.into(),
        base_version: base,
        delete: true,
        ..Default::default()
    }
}

fn status(r: &CommitResult) -> CommitStatus {
    CommitStatus::try_from(r.status).unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

impl Device {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }

    async fn find_missing(&mut self, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, tonic::Status> {
        let ids = chunks.iter().map(|c| ChunkId::of(c).to_vec()).collect();
        let req = self.req(FindMissingRequest {
            namespace: self.ns.clone(),
            chunk_ids: ids,
        });
        Ok(self.client.find_missing(req).await?.into_inner().missing)
    }

    /// PUTs `sent` for an object declared as `declared` chunks; returns the upload id.
    async fn put_object(&mut self, declared: &[&[u8]], sent: &[u8]) -> String {
        let object = UploadObject {
            chunks: declared.iter().map(|c| chunk_ref(c)).collect(),
        };
        let req = self.req(PrepareUploadRequest {
            namespace: self.ns.clone(),
            objects: vec![object],
        });
        let target = self
            .client
            .prepare_upload(req)
            .await
            .unwrap()
            .into_inner()
            .targets
            .remove(0);
        assert_eq!(target.length, sent.len() as u64);
        let resp = self
            .http
            .put(&target.url)
            .body(sent.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT failed: {}", resp.status());
        target.upload_id
    }

    async fn confirm(&mut self, ids: Vec<String>) -> Vec<UploadOutcome> {
        let req = self.req(ConfirmUploadRequest {
            namespace: self.ns.clone(),
            upload_ids: ids,
        });
        self.client
            .confirm_upload(req)
            .await
            .unwrap()
            .into_inner()
            .outcomes
    }

    /// Uploads the chunks as one pack and checks that it verified.
    async fn upload(&mut self, chunks: &[&[u8]]) {
        let id = self.put_object(chunks, &chunks.concat()).await;
        let outcome = self.confirm(vec![id]).await.remove(0);
        assert!(outcome.ok, "{}", outcome.error);
    }

    async fn commit(&mut self, items: Vec<CommitItem>) -> Vec<CommitResult> {
        self.try_commit(items).await.unwrap()
    }

    async fn try_commit(
        &mut self,
        items: Vec<CommitItem>,
    ) -> Result<Vec<CommitResult>, tonic::Status> {
        let req = self.req(CommitRequest {
            namespace: self.ns.clone(),
            items,
        });
        Ok(self.client.commit(req).await?.into_inner().results)
    }

    async fn manifests(
        &mut self,
        files: &[(&str, u64)],
    ) -> Result<GetManifestsResponse, tonic::Status> {
        let files = files
            .iter()
            .map(|(p, v)| PathVersion {
                path: (*p).into(),
                version: *v,
            })
            .collect();
        let req = self.req(GetManifestsRequest {
            namespace: self.ns.clone(),
            files,
        });
        Ok(self.client.get_manifests(req).await?.into_inner())
    }

    /// Downloads file #`i` of a GetManifests answer with ranged GETs, verifying each chunk.
    async fn download(&self, m: &GetManifestsResponse, i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &m.files[i].chunks {
            let url = &m.objects[c.object as usize].url;
            let range = format!("bytes={}-{}", c.offset, c.offset + u64::from(c.length) - 1);
            let resp = self
                .http
                .get(url)
                .header("range", range)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), reqwest::StatusCode::PARTIAL_CONTENT);
            let bytes = resp.bytes().await.unwrap();
            assert!(
                ChunkId::from_slice(&c.id).unwrap().verify(&bytes),
                "downloaded chunk does not match its id"
            );
            out.extend_from_slice(&bytes);
        }
        out
    }

    async fn changes(&mut self, cursor: u64, wait_ms: u32) -> ListChangesResponse {
        let req = self.req(ListChangesRequest {
            namespace: self.ns.clone(),
            cursor,
            limit: 0,
            wait_ms,
        });
        self.client.list_changes(req).await.unwrap().into_inner()
    }

    async fn tree(&mut self, include_deleted: bool) -> Vec<Entry> {
        let req = self.req(ListTreeRequest {
            namespace: self.ns.clone(),
            after: String::new(),
            limit: 0,
            include_deleted,
        });
        self.client
            .list_tree(req)
            .await
            .unwrap()
            .into_inner()
            .entries
    }
}

#[tokio::test]
async fn an_uploaded_pack_is_committed_and_downloads_byte_for_byte() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let (a, b) = (random_bytes(300_000), random_bytes(70_000));
    assert_eq!(dev.find_missing(&[&a, &b]).await.unwrap().len(), 2);
    dev.upload(&[&a, &b]).await;
    assert!(dev.find_missing(&[&a, &b]).await.unwrap().is_empty());

    let r = dev
        .commit(vec![put("docs/report.bin", 0, file_meta(&[&a, &b, &a]))])
        .await;
    assert_eq!(status(&r[0]), CommitStatus::Committed, "{}", r[0].error);
    assert_eq!((r[0].version, r[0].path.as_str()), (1, "docs/report.bin"));

    let m = dev.manifests(&[("docs/report.bin", 0)]).await.unwrap();
    assert_eq!(m.objects.len(), 1, "the pack is one object, listed once");
    assert_eq!(m.files[0].chunks.len(), 3);
    assert_eq!(dev.download(&m, 0).await, [&a[..], &b, &a].concat());

    let tree = dev.tree(false).await;
    assert_eq!(tree.len(), 1);
    assert!(
        tree[0].meta.as_ref().unwrap().manifest.is_empty(),
        "listings omit manifests"
    );
    let info = dev
        .client
        .get_namespace(dev.req(GetNamespaceRequest {
            namespace: NS.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.head_seq, info.device.as_str(), info.pack_threshold),
        (r[0].seq, "laptop", 8 << 20)
    );
}

#[tokio::test]
async fn wrong_bytes_fail_confirmation_and_the_commit_is_refused() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let claimed = random_bytes(1000);
    let planted = random_bytes(1000);
    let id = dev.put_object(&[&claimed], &planted).await;
    let outcome = dev.confirm(vec![id.clone()]).await.remove(0);
    assert!(!outcome.ok);
    assert!(
        outcome.error.contains(&ChunkId::of(&claimed).to_hex()),
        "{}",
        outcome.error
    );
    assert!(
        !dev.confirm(vec![id]).await.remove(0).ok,
        "a failed upload stays failed"
    );
    assert_eq!(dev.find_missing(&[&claimed]).await.unwrap().len(), 1);

    let r = dev
        .commit(vec![put("a.bin", 0, file_meta(&[&claimed]))])
        .await;
    assert_eq!(status(&r[0]), CommitStatus::Rejected);
    assert!(r[0].error.contains("never uploaded"), "{}", r[0].error);
}

#[tokio::test]
async fn a_never_uploaded_chunk_is_rejected_while_other_items_still_commit() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let ghost = random_bytes(10);
    let dir = dir_meta();
    let r = dev
        .commit(vec![
            put("ghost.bin", 0, file_meta(&[&ghost])),
            put("photos", 0, dir),
        ])
        .await;
    assert_eq!(status(&r[0]), CommitStatus::Rejected);
    assert!(
        r[0].error
            .contains(&format!("chunk {} was never uploaded", ChunkId::of(&ghost))),
        "{}",
        r[0].error
    );
    assert_eq!(status(&r[1]), CommitStatus::Committed);
}

#[tokio::test]
async fn hostile_paths_and_escaping_symlinks_are_rejected() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let empty = file_meta(&[]);
    let mut items: Vec<CommitItem> = [
        "../x",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "nul\0byte",
        "C:\\x",
        "",
    ]
    .iter()
    .map(|p| put(p, 0, empty.clone()))
    .collect();
    let link = FileMeta {
        kind: EntryKind::Symlink as i32,
        symlink_target: "../../etc/passwd".into(),
        ..Default::default()
    };
    items.push(put("sub/link", 0, link));
    for r in dev.commit(items).await {
        assert_eq!(
            status(&r),
            CommitStatus::Rejected,
            "{:?} should be rejected",
            r.path
        );
    }
    let ok = FileMeta {
        kind: EntryKind::Symlink as i32,
        symlink_target: "../other".into(),
        ..Default::default()
    };
    assert_eq!(
        status(&dev.commit(vec![put("sub/link", 0, ok)]).await[0]),
        CommitStatus::Committed
    );
}

#[tokio::test]
async fn a_manifest_whose_lengths_do_not_sum_to_its_size_is_rejected() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let a = random_bytes(100);
    dev.upload(&[&a]).await;
    let mut meta = file_meta(&[&a]);
    meta.size = 99;
    let r = dev.commit(vec![put("a.bin", 0, meta)]).await;
    assert_eq!(status(&r[0]), CommitStatus::Rejected);
    assert!(
        r[0].error
            .contains("manifest lengths sum to 100 but size is 99"),
        "{}",
        r[0].error
    );
    // A lying chunk length is caught against the verified length too.
    let mut meta = file_meta(&[&a]);
    meta.manifest[0].length = 50;
    meta.size = 50;
    assert_eq!(
        status(&dev.commit(vec![put("a.bin", 0, meta)]).await[0]),
        CommitStatus::Rejected
    );
}

#[tokio::test]
async fn a_stale_base_becomes_a_conflict_copy_and_both_versions_are_retrievable() {
    let server = TestServer::start().await;
    let mut laptop = server.device(NS, "laptop").await;
    let mut desktop = server.device(NS, "desktop").await;
    let (v1, v2, v3) = (random_bytes(500), random_bytes(600), random_bytes(700));
    laptop.upload(&[&v1, &v3]).await;
    desktop.upload(&[&v2]).await;

    assert_eq!(
        status(
            &laptop
                .commit(vec![put("notes.txt", 0, file_meta(&[&v1]))])
                .await[0]
        ),
        CommitStatus::Committed
    );
    let r = desktop
        .commit(vec![put("notes.txt", 1, file_meta(&[&v2]))])
        .await;
    assert_eq!((status(&r[0]), r[0].version), (CommitStatus::Committed, 2));

    let r = laptop
        .commit(vec![put("notes.txt", 1, file_meta(&[&v3]))])
        .await
        .remove(0);
    assert_eq!(status(&r), CommitStatus::Conflict, "{}", r.error);
    assert!(
        r.path.starts_with("notes (conflicted copy from laptop ") && r.path.ends_with(").txt"),
        "{}",
        r.path
    );
    assert_eq!(
        r.current.as_ref().unwrap().version,
        2,
        "the winner is reported"
    );

    let m = laptop
        .manifests(&[("notes.txt", 0), (&r.path, 0), ("notes.txt", 1)])
        .await
        .unwrap();
    assert_eq!(laptop.download(&m, 0).await, v2);
    assert_eq!(laptop.download(&m, 1).await, v3);
    assert_eq!(laptop.download(&m, 2).await, v1);

    // Same content again: nothing changes. A stale delete is skipped; a current one tombstones.
    assert_eq!(
        status(
            &laptop
                .commit(vec![put("notes.txt", 1, file_meta(&[&v2]))])
                .await[0]
        ),
        CommitStatus::Unchanged
    );
    let del = |base| delete("notes.txt", base);
    assert_eq!(
        status(&laptop.commit(vec![del(1)]).await[0]),
        CommitStatus::DeleteSkipped
    );
    assert_eq!(
        status(&laptop.commit(vec![del(2)]).await[0]),
        CommitStatus::Committed
    );
    assert_eq!(
        status(&laptop.commit(vec![del(3)]).await[0]),
        CommitStatus::Unchanged
    );
    assert_eq!(
        laptop.tree(false).await.len(),
        1,
        "only the conflict copy is live"
    );
    assert_eq!(laptop.tree(true).await.len(), 2);

    let req = laptop.req(ListVersionsRequest {
        namespace: NS.into(),
        path: "notes.txt".into(),
    });
    let versions = laptop
        .client
        .list_versions(req)
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!(versions[0].deleted);
    assert_eq!(
        laptop
            .manifests(&[("missing.txt", 0)])
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn a_move_tombstones_the_source_and_keeps_its_content() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let a = random_bytes(1234);
    dev.upload(&[&a]).await;
    dev.commit(vec![put("old.bin", 0, file_meta(&[&a]))]).await;
    let mv = CommitItem {
        path: "new.bin".into(),
        move_from: "old.bin".into(),
        move_from_version: 1,
        ..Default::default()
    };
    let r = dev.commit(vec![mv]).await.remove(0);
    assert_eq!(status(&r), CommitStatus::Committed, "{}", r.error);
    let tree = dev.tree(false).await;
    assert_eq!(
        tree.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["new.bin"]
    );
    let m = dev.manifests(&[("new.bin", 0)]).await.unwrap();
    assert_eq!(dev.download(&m, 0).await, a);
}

/// The live tree as (path, is a folder).
async fn live(dev: &mut Device) -> Vec<(String, bool)> {
    dev.tree(false)
        .await
        .into_iter()
        .map(|e| {
            let dir = e.meta.is_some_and(|m| m.kind == EntryKind::Dir as i32);
            (e.path, dir)
        })
        .collect()
}

#[tokio::test]
async fn the_live_paths_stay_a_tree_when_a_folder_and_its_contents_change_at_once() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let (a, b) = (random_bytes(300), random_bytes(400));
    dev.upload(&[&a, &b]).await;
    let r = dev
        .commit(vec![
            put("D", 0, dir_meta()),
            put("D/x", 0, file_meta(&[&a])),
        ])
        .await;
    assert!(r.iter().all(|r| status(r) == CommitStatus::Committed));

    // A file over the folder D while D/x is still live (written elsewhere since this device
    // emptied D): it goes beside the folder, which keeps D/x.
    let r = dev
        .commit(vec![put("D", 1, file_meta(&[&b]))])
        .await
        .remove(0);
    assert_eq!(status(&r), CommitStatus::Conflict, "{}", r.error);
    assert!(r.path.starts_with("D (conflicted copy"), "{}", r.path);
    let copy = r.path.clone();
    assert_eq!(
        live(&mut dev).await,
        [
            ("D".into(), true),
            (copy.clone(), false),
            ("D/x".into(), false)
        ]
    );

    // A folder is deleted only once nothing live is left in it.
    let r = dev.commit(vec![delete("D", 1)]).await.remove(0);
    assert_eq!(status(&r), CommitStatus::DeleteSkipped, "{}", r.error);
    let r = dev.commit(vec![delete("D/x", 1), delete("D", 1)]).await;
    assert_eq!(status(&r[0]), CommitStatus::Committed);
    assert_eq!(status(&r[1]), CommitStatus::Committed, "{}", r[1].error);

    // A file written under the deleted folder brings the folder back.
    let r = dev
        .commit(vec![put("D/y", 0, file_meta(&[&a]))])
        .await
        .remove(0);
    assert_eq!(status(&r), CommitStatus::Committed, "{}", r.error);
    assert_eq!(
        live(&mut dev).await,
        [
            ("D".into(), true),
            (copy.clone(), false),
            ("D/y".into(), false)
        ]
    );

    // Emptied and replaced by a file in one commit: no conflict.
    let r = dev
        .commit(vec![delete("D/y", 1), put("D", 3, file_meta(&[&b]))])
        .await;
    assert_eq!(status(&r[1]), CommitStatus::Committed, "{}", r[1].error);

    // Nothing is written under a live file, and a refused move leaves its source alone.
    let r = dev
        .commit(vec![put("D/z", 0, file_meta(&[&a]))])
        .await
        .remove(0);
    assert_eq!(status(&r), CommitStatus::ParentReplaced);
    assert!(
        r.error.contains("\"D\"") && r.error.contains("no longer a folder"),
        "{}",
        r.error
    );
    let mv = CommitItem {
        path: "D/moved".into(),
        move_from: copy.clone(),
        move_from_version: 1,
        ..Default::default()
    };
    let r = dev.commit(vec![mv]).await.remove(0);
    assert_eq!(status(&r), CommitStatus::ParentReplaced);
    assert_eq!(live(&mut dev).await, [("D".into(), false), (copy, false)]);
}

#[tokio::test]
async fn another_namespace_can_neither_see_nor_commit_our_chunks() {
    let server = TestServer::start().await;
    let mut ours = server.device(NS, "laptop").await;
    let secret = random_bytes(4096);
    ours.upload(&[&secret]).await;

    admin::create_namespace(&server.db, "other").unwrap();
    let mut theirs = server.device("other", "intruder").await;
    assert_eq!(
        theirs.find_missing(&[&secret]).await.unwrap().len(),
        1,
        "no cross-namespace oracle"
    );
    let r = theirs
        .commit(vec![put("stolen.bin", 0, file_meta(&[&secret]))])
        .await;
    assert_eq!(status(&r[0]), CommitStatus::Rejected);

    let req = theirs.req(GetNamespaceRequest {
        namespace: NS.into(),
    });
    assert_eq!(
        theirs.client.get_namespace(req).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    theirs.ns = NS.into();
    assert_eq!(
        theirs.try_commit(vec![]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthenticated() {
    let server = TestServer::start().await;
    let mut dev = server.device_with_token(NS, "cairn_not-a-real-token").await;
    assert_eq!(
        dev.find_missing(&[]).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let req = Request::new(GetNamespaceRequest {
        namespace: NS.into(),
    });
    assert_eq!(
        dev.client.get_namespace(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_list_changes_long_poll_wakes_when_a_commit_lands() {
    let server = TestServer::start().await;
    let mut watcher = server.device(NS, "desktop").await;
    let mut writer = server.device(NS, "laptop").await;
    let quiet = watcher.changes(0, 50).await;
    assert!(
        quiet.entries.is_empty() && quiet.cursor == 0,
        "an idle poll times out empty"
    );

    let poll = tokio::spawn(async move { watcher.changes(0, 30_000).await });
    let seq = writer.commit(vec![put("inbox", 0, dir_meta())]).await[0].seq;
    let got = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll was not woken")
        .unwrap();
    assert_eq!(
        got.entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        ["inbox"]
    );
    assert_eq!(got.cursor, seq);
}

#[tokio::test]
async fn subscribe_sends_the_backlog_then_each_new_commit() {
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    dev.commit(vec![put("a", 0, dir_meta()), put("b", 0, dir_meta())])
        .await;
    let req = dev.req(SubscribeRequest {
        namespace: NS.into(),
        cursor: 0,
    });
    let mut stream = dev.client.subscribe(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 2);
    dev.commit(vec![put("c", 0, dir_meta())]).await;
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.entries[0].path, "c");
    assert!(next.cursor > first.cursor);
}

#[tokio::test]
async fn tampered_or_expired_blob_urls_are_forbidden() {
    if std::env::var("CAIRN_TEST_STORE").is_ok() {
        return; // this checks the local store's own URL signing
    }
    let server = TestServer::start().await;
    let mut dev = server.device(NS, "laptop").await;
    let a = random_bytes(2048);
    dev.upload(&[&a]).await;
    dev.commit(vec![put("a.bin", 0, file_meta(&[&a]))]).await;
    let url = dev
        .manifests(&[("a.bin", 0)])
        .await
        .unwrap()
        .objects
        .remove(0)
        .url;
    assert_eq!(
        dev.http
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        a
    );

    let (head, sig) = url.split_once("&sig=").unwrap();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{head}&sig={flipped}{}", &sig[1..]);
    assert_eq!(
        dev.http.get(&tampered).send().await.unwrap().status(),
        reqwest::StatusCode::FORBIDDEN
    );
    let exp_start = url.find("exp=").unwrap() + 4;
    let exp_end = exp_start + url[exp_start..].find('&').unwrap();
    let expired = format!("{}1{}", &url[..exp_start], &url[exp_end..]);
    assert!(expired.contains("exp=1&"), "{expired}");
    assert_eq!(
        dev.http.get(&expired).send().await.unwrap().status(),
        reqwest::StatusCode::FORBIDDEN
    );
    let other_key = url.replacen("/blob/objects/", "/blob/objects/0", 1);
    assert_eq!(
        dev.http.get(&other_key).send().await.unwrap().status(),
        reqwest::StatusCode::FORBIDDEN
    );
    let as_put = dev.http.put(&url).body(a.clone()).send().await.unwrap();
    assert_eq!(
        as_put.status(),
        reqwest::StatusCode::FORBIDDEN,
        "a GET URL does not allow PUT"
    );
}

#[tokio::test]
async fn the_binary_prints_its_address_and_admin_commands_work_while_it_serves() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let bin = env!("CARGO_BIN_EXE_cairn-server");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--store")
        .arg(format!("local:{}", dir.path().join("blobs").display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    /// Kills the server if the test fails before it is stopped.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    assert!(run(&["namespace", "create", "team"]).status.success());
    let out = run(&["token", "create", "--namespace", "team", "--device", "pc"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bad = run(&["token", "create", "--namespace", "nope", "--device", "pc"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let dev = Device {
        client: CairnClient::new(channel),
        token,
        ns: "team".into(),
        http: reqwest::Client::new(),
    };
    let mut client = dev.client.clone();
    let info = client
        .get_namespace(dev.req(GetNamespaceRequest {
            namespace: "team".into(),
        }))
        .await
        .unwrap();
    assert_eq!(info.into_inner().device, "pc");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = std::time::Instant::now();
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "SIGTERM shuts the server down cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
}
