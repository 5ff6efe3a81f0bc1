//! Accounts and sharing acceptance (issue 5): users log in and register devices, owners share
//! namespaces as owner / edit / view, revocation and removal take effect at once, and nobody can
//! probe or reference another user's chunks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::Result;
use cairn_e2e::tree::{random_bytes, write};
use cairn_e2e::{Backend, CairnServer, Device, grpc, json_ok, wait_for};
use cairn_proto::ChunkId;
use cairn_proto::pb;
use serde_json::Value;

/// A server with users alice (owner of `team`) and bob, each logged in on one device; alice's
/// password too.
fn team() -> Result<(CairnServer, Device, Device, String)> {
    let s = CairnServer::start(Backend::Local)?;
    let alice_pw = s.create_user("alice")?;
    let bob_pw = s.create_user("bob")?;
    s.admin(&["namespace", "create", "team", "--owner", "alice"])?;
    let alice = s.login("alice", &alice_pw, "alice-laptop", "team")?;
    let bob = s.login("bob", &bob_pw, "bob-desktop", "team")?;
    Ok((s, alice, bob, alice_pw))
}

fn cairn(d: &Device, args: &[&str]) -> Result<std::process::Output> {
    Ok(d.cmd().arg("--json").args(args).output()?)
}

fn rt() -> Result<tokio::runtime::Runtime> {
    // Multi-threaded: the stream watcher must run while the test thread waits on it.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

#[test]
fn login_stores_a_private_token_and_devices_lists_and_revokes() -> Result<()> {
    let (s, alice, _bob, _) = team()?;
    let token_file = alice.home.path().join("token");
    let mode = fs::metadata(&token_file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    // A wrong password registers nothing and exits 12.
    let out = alice
        .cmd()
        .args([
            "login",
            "--user",
            "alice",
            "--device",
            "x",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");

    let list = json_ok(cairn(&alice, &["devices"])?, "devices")?;
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{list}");
    assert_eq!(devices[0]["name"], "alice-laptop");
    assert_eq!(devices[0]["current"], true);
    // The token never shows in output.
    let token = alice.token()?;
    assert!(!list.to_string().contains(&token));
    let _ = s;
    Ok(())
}

#[test]
fn a_view_member_reads_but_cannot_commit() -> Result<()> {
    let (_s, alice, bob, _) = team()?;
    let shared = json_ok(
        cairn(&alice, &["share", "team", "bob", "--role", "view"])?,
        "share",
    )?;
    assert_eq!(shared["role"], "view");
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    write(a.path(), "plan.md", b"alice's plan")?;
    alice.push(a.path())?;
    // Bob reads...
    bob.pull(b.path())?;
    assert_eq!(fs::read(b.path().join("plan.md"))?, b"alice's plan");
    // ... but his edit is refused (exit 12) and the server keeps alice's version.
    write(b.path(), "plan.md", b"bob's edit")?;
    let out = bob.run("push", b.path())?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("view"),
        "{out:?}"
    );
    let check = tempfile::tempdir()?;
    alice.pull(check.path())?;
    assert_eq!(fs::read(check.path().join("plan.md"))?, b"alice's plan");
    // Members lists both, with their roles; bob (not an owner) cannot share.
    let members = json_ok(cairn(&bob, &["members", "team"])?, "members")?;
    assert_eq!(
        members["members"],
        serde_json::json!([{"user": "alice", "role": "owner"}, {"user": "bob", "role": "view"}])
    );
    let out = cairn(&bob, &["share", "team", "bob", "--role", "owner"])?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    Ok(())
}

/// Opens a Subscribe stream for `token` on `team` and returns a receiver of its end (the status
/// it ended with).
fn watch_stream(
    rt: &tokio::runtime::Runtime,
    url: String,
    token: String,
) -> Result<std::sync::mpsc::Receiver<tonic::Status>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut client = rt.block_on(grpc::connect(&url, &token))?;
    let mut stream = rt
        .block_on(client.subscribe(pb::SubscribeRequest {
            namespace: "team".into(),
            cursor: 0,
        }))?
        .into_inner();
    rt.spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let _ = tx.send(tonic::Status::ok("ended"));
                    return;
                }
                Err(st) => {
                    let _ = tx.send(st);
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[test]
fn a_removed_member_loses_calls_and_streams_at_once() -> Result<()> {
    let (s, alice, bob, _) = team()?;
    json_ok(
        cairn(&alice, &["share", "team", "bob", "--role", "edit"])?,
        "share",
    )?;
    let rt = rt()?;
    let ended = watch_stream(&rt, s.url(), bob.token()?)?;
    // The stream is open and quiet.
    assert!(ended.recv_timeout(Duration::from_millis(300)).is_err());

    json_ok(
        cairn(&alice, &["share", "team", "bob", "--remove"])?,
        "unshare",
    )?;
    let status = ended.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // His next call fails too, with a clear exit code.
    let dir = tempfile::tempdir()?;
    let out = bob.run("pull", dir.path())?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    Ok(())
}

#[test]
fn a_revoked_device_is_refused_and_its_stream_ends() -> Result<()> {
    let (s, alice, _bob, alice_pw) = team()?;
    let phone = s.login("alice", &alice_pw, "alice-phone", "team")?;
    let rt = rt()?;
    let ended = watch_stream(&rt, s.url(), phone.token()?)?;
    let list = json_ok(cairn(&alice, &["devices"])?, "devices")?;
    let phone_id = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "alice-phone")
        .map(|d| d["id"].as_u64().unwrap())
        .expect("alice-phone is listed");
    json_ok(
        cairn(&alice, &["devices", "revoke", &phone_id.to_string()])?,
        "revoke",
    )?;
    let status = ended.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let dir = tempfile::tempdir()?;
    let out = phone.run("pull", dir.path())?;
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    // A made-up token fails the same way; the laptop is unaffected.
    let mut forged = phone;
    forged.token = format!("cairn_{}", "0".repeat(64));
    assert_eq!(forged.run("pull", dir.path())?.status.code(), Some(12));
    alice.pull(dir.path())?;
    let after = json_ok(cairn(&alice, &["devices"])?, "devices")?;
    let revoked: Vec<&Value> = after["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["revoked"] == true)
        .collect();
    assert_eq!(revoked.len(), 1, "{after}");
    Ok(())
}

#[test]
fn one_user_can_neither_probe_nor_reference_another_users_chunks() -> Result<()> {
    let s = CairnServer::start(Backend::Local)?;
    let (xp, yp) = (s.create_user("xavier")?, s.create_user("yvonne")?);
    s.admin(&["namespace", "create", "xs", "--owner", "xavier"])?;
    s.admin(&["namespace", "create", "ys", "--owner", "yvonne"])?;
    let x = s.login("xavier", &xp, "x-laptop", "xs")?;
    let y = s.login("yvonne", &yp, "y-laptop", "ys")?;
    let dir = tempfile::tempdir()?;
    let secret = random_bytes(rand::random(), 900_000);
    write(dir.path(), "secret.bin", &secret)?;
    y.push(dir.path())?;
    let id = ChunkId::of(&secret);
    let rt = rt()?;
    let mut xc = rt.block_on(grpc::connect(&s.url(), &x.token()?))?;
    // Xavier asks whether his namespace holds Yvonne's chunk: it is missing for him.
    let missing = rt
        .block_on(xc.find_missing(pb::FindMissingRequest {
            namespace: "xs".into(),
            chunk_ids: vec![id.to_vec()],
        }))?
        .into_inner()
        .missing;
    assert_eq!(missing, vec![id.to_vec()]);
    // Asking about her namespace is refused outright (and says nothing about what it holds).
    let err = rt
        .block_on(xc.find_missing(pb::FindMissingRequest {
            namespace: "ys".into(),
            chunk_ids: vec![id.to_vec()],
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A commit naming her chunk, never uploaded by him, is rejected.
    let item = pb::CommitItem {
        path: "stolen.bin".into(),
        meta: Some(pb::FileMeta {
            kind: pb::EntryKind::File as i32,
            size: secret.len() as u64,
            mode: 0o644,
            manifest: vec![pb::ChunkRef {
                id: id.to_vec(),
                length: secret.len() as u32,
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = rt
        .block_on(xc.commit(pb::CommitRequest {
            namespace: "xs".into(),
            items: vec![item],
        }))?
        .into_inner();
    assert_eq!(r.results[0].status(), pb::CommitStatus::Rejected, "{r:?}");
    Ok(())
}

#[test]
fn a_device_over_its_rate_limit_is_told_to_retry_and_the_cli_rides_it_out() -> Result<()> {
    let s = CairnServer::start_with(Backend::Local, &["--rate-limit", "2"])?;
    s.create_namespace("team")?;
    let d = s.device("team", "laptop")?;
    let rt = rt()?;
    let mut c = rt.block_on(grpc::connect(&s.url(), &d.token))?;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(st) = rt.block_on(c.get_namespace(pb::GetNamespaceRequest {
            namespace: "team".into(),
        })) {
            refused = Some(st);
            break;
        }
    }
    let st = refused.expect("20 calls at once exceed 2/s with a burst of 4");
    assert_eq!(st.code(), tonic::Code::ResourceExhausted);
    assert!(st.metadata().get("retry-after-ms").is_some(), "{st:?}");
    // The CLI backs off and retries: a push of a few files still completes.
    let dir = tempfile::tempdir()?;
    for i in 0..3 {
        write(dir.path(), &format!("f{i}.txt"), b"x")?;
    }
    let pushed = wait_for(
        "a push under the rate limit",
        Duration::from_secs(60),
        || d.push(dir.path()).ok(),
    )?;
    assert_eq!(pushed["files"], 3, "{pushed}");
    Ok(())
}

#[test]
fn over_tls_a_device_that_trusts_the_ca_syncs_and_one_that_does_not_is_told_why() -> Result<()> {
    let s = CairnServer::start_tls(Backend::Local)?;
    assert!(s.url().starts_with("https://"));
    wait_for("the namespace", Duration::from_secs(20), || {
        s.create_namespace("team").ok()
    })?;
    let (a, b) = (s.device("team", "laptop")?, s.device("team", "desktop")?);
    let (src, dst) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let content = random_bytes(rand::random(), 2_000_000);
    write(src.path(), "over-tls.bin", &content)?;
    a.push(src.path())?;
    // Chunks travel on the server's own https blob URLs too.
    b.pull(dst.path())?;
    assert_eq!(fs::read(dst.path().join("over-tls.bin"))?, content);

    // Without the CA: refused with a message about the certificate, nothing written.
    let mut stranger = s.device("team", "stranger")?;
    stranger.ca_cert = None;
    let empty = tempfile::tempdir()?;
    let out = stranger.run("pull", empty.path())?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("certificate") || err.contains("tls"), "{err}");
    assert_eq!(fs::read_dir(empty.path())?.count(), 0);
    Ok(())
}

#[test]
fn the_server_refuses_plaintext_on_a_non_loopback_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(cairn_e2e::bin("cairn-server"))
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("db"))
        .arg("--store")
        .arg(format!("local:{}", dir.path().join("blobs").display()))
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("plaintext"),
        "{err}"
    );
    Ok(())
}

#[test]
fn an_expired_device_token_is_refused_and_a_new_login_works() -> Result<()> {
    let s = CairnServer::start_with(Backend::Local, &["--device-token-ttl", "2s"])?;
    let pw = wait_for("the database", Duration::from_secs(20), || {
        s.create_user("alice").ok()
    })?;
    s.admin(&["namespace", "create", "team", "--owner", "alice"])?;
    let d = s.login("alice", &pw, "laptop", "team")?;
    let dir = tempfile::tempdir()?;
    d.pull(dir.path())?;
    // Polls until the token's two seconds are up: then every call is refused with exit 12.
    let out = wait_for("the token to expire", Duration::from_secs(30), || {
        d.run("pull", dir.path())
            .ok()
            .filter(|o| o.status.code() == Some(12))
    })?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );
    let again = s.login("alice", &pw, "laptop-2", "team")?;
    again.pull(dir.path())?;
    Ok(())
}
