//! `cairn quickstart`: Cairn's whole loop in one command — an embedded cairn-server with the
//! local-directory store, a sample folder pushed from one device and pulled by another, an edit
//! that uploads only the chunk it touched — and a plain account of what happened.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cairn::commands::{self, PullSummary, PushSummary, Ui};
use cairn::config::Config;

const NAMESPACE: &str = "quickstart";

/// Runs the quickstart in a fresh folder under the system temp dir (kept, so the user can look).
pub async fn run(ui: Ui) -> Result<()> {
    let base = tempfile::Builder::new()
        .prefix("cairn-quickstart-")
        .tempdir()?
        .keep();
    let db = base.join("server/meta.db");
    std::fs::create_dir_all(base.join("server"))?;
    cairn_server::admin::create_namespace(&db, NAMESPACE)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = cairn_server::ServeConfig::new(
        db.clone(),
        format!("local:{}", base.join("server/blobs").display()),
    );
    let server = tokio::spawn(cairn_server::serve(listener, config, async {
        let _ = stopped.await;
    }));

    let result = walk_through(&base, &db, &url, ui).await;
    let _ = stop.send(());
    server.await.context("the embedded server panicked")??;
    result
}

async fn walk_through(base: &Path, db: &Path, url: &str, ui: Ui) -> Result<()> {
    let laptop = device(base, db, url, "laptop")?;
    let desktop = device(base, db, url, "desktop")?;
    let (src, dst) = (base.join("laptop"), base.join("desktop"));
    let photo = sample_folder(&src)?;
    std::fs::create_dir_all(&dst)?;
    let quiet = Ui {
        quiet: true,
        json: false,
    };

    let first = commands::push(&laptop, &src, NAMESPACE, quiet, false).await?;
    let pulled = commands::pull(&desktop, &dst, NAMESPACE, quiet, false).await?;
    let same = same_tree(&src, &dst)?;

    // One byte changed in the middle of the 8 MiB photo: only the chunk around it travels.
    let mut bytes = std::fs::read(&photo)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&photo, &bytes)?;
    let edit = commands::push(&laptop, &src, NAMESPACE, quiet, false).await?;
    let repull = commands::pull(&desktop, &dst, NAMESPACE, quiet, false).await?;
    let same_after_edit = same_tree(&src, &dst)?;

    if ui.json {
        let out = serde_json::json!({
            "base": base, "server": url, "push": first, "pull": pulled, "edit_push": edit,
            "edit_pull": repull, "identical": same && same_after_edit,
        });
        println!("{out}");
    } else if !ui.quiet {
        print_story(base, url, &first, &pulled, &edit, &repull)?;
    }
    if !(same && same_after_edit) {
        bail!(
            "the pulled folder {} differs from {}",
            dst.display(),
            src.display()
        );
    }
    Ok(())
}

fn print_story(
    base: &Path,
    url: &str,
    first: &PushSummary,
    pulled: &PullSummary,
    edit: &PushSummary,
    repull: &PullSummary,
) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "Cairn quickstart — everything lives in {}",
        base.display()
    )?;
    writeln!(
        o,
        "  server    cairn-server on {url}, metadata in server/meta.db, chunks in server/blobs/"
    )?;
    writeln!(
        o,
        "  push      laptop/ → {} files, {} chunks; uploaded {} chunks ({}), {} not sent again (duplicate content)",
        first.files,
        first.chunks,
        first.chunks_uploaded,
        human(first.bytes_uploaded),
        human(first.bytes_deduplicated)
    )?;
    writeln!(
        o,
        "  pull      desktop/ ← {} files written, {} chunks ({}) downloaded and verified (BLAKE3)",
        pulled.files_written,
        pulled.chunks_downloaded,
        human(pulled.bytes_downloaded)
    )?;
    writeln!(
        o,
        "  edit      1 byte changed in photos/beach.raw → {} chunk(s) uploaded ({}), {} reused",
        edit.chunks_uploaded,
        human(edit.bytes_uploaded),
        human(edit.bytes_deduplicated)
    )?;
    writeln!(
        o,
        "  pull      desktop/ ← {} file(s) updated",
        repull.files_written
    )?;
    writeln!(
        o,
        "  result    laptop/ and desktop/ are identical (content and permissions)"
    )?;
    writeln!(
        o,
        "Next: run cairn-server yourself and `cairn push DIR --namespace NS` (see README.md)."
    )?;
    Ok(())
}

/// A device home with its own config.toml, as a user would set one up.
fn device(base: &Path, db: &Path, url: &str, name: &str) -> Result<Config> {
    let home = base.join(format!("home-{name}"));
    std::fs::create_dir_all(&home)?;
    let token = cairn_server::admin::create_token(db, NAMESPACE, name)?;
    std::fs::write(home.join("token"), format!("{token}\n"))?;
    std::fs::set_permissions(home.join("token"), std::fs::Permissions::from_mode(0o600))?;
    Ok(Config::resolve(Some(url.to_owned()), None, Some(&home))?)
}

/// A small tree with what real folders hold: text, nested and empty dirs, an executable, a
/// duplicate, and one larger binary file. Returns the binary file's path.
fn sample_folder(root: &Path) -> Result<PathBuf> {
    let write = |rel: &str, bytes: &[u8]| -> Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().context("sample paths have a parent")?)?;
        std::fs::write(p, bytes)?;
        Ok(())
    };
    write("README.txt", b"This folder was synced by Cairn.\n")?;
    write("notes/2026/todo.md", "- try Cairn\n- café ☕\n".as_bytes())?;
    write("scripts/hello.sh", b"#!/bin/sh\necho hello from cairn\n")?;
    std::fs::set_permissions(
        root.join("scripts/hello.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::create_dir_all(root.join("empty folder"))?;
    let photo: Vec<u8> = {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..8 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    write("photos/beach.raw", &photo)?;
    write("photos/beach (copy).raw", &photo)?;
    Ok(root.join("photos/beach.raw"))
}

/// True when both trees hold the same paths with the same bytes and permission bits.
fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    Ok(listing(a, a)? == listing(b, b)?)
}

fn listing(root: &Path, dir: &Path) -> Result<Vec<(PathBuf, u32, Option<blake3::Hash>)>> {
    let mut out = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root)?.to_owned();
        if rel.as_os_str() == ".cairn" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            out.push((rel, 0, None));
            out.extend(listing(root, &path)?);
        } else {
            out.push((
                rel,
                meta.permissions().mode() & 0o777,
                Some(blake3::hash(&std::fs::read(&path)?)),
            ));
        }
    }
    Ok(out)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
