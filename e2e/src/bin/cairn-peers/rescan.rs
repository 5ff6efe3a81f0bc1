//! B6: no-change rescan of many small files: `cairn push` of an unchanged, already-pushed folder
//! (a full scan with hash reuse, a fresh process) against Syncthing's rescan of the same folder
//! (`POST /rest/db/scan` after its initial scan; the call answers when the scan is done). Time
//! and peak RSS of each.

use crate::syncthing::{self, FOLDER, FolderOpts, Identity, Syncthing};
use crate::util::{CairnSide, Ctx, cairn, ratio};
use anyhow::{Result, ensure};
use cairn_e2e::Backend;
use std::fs;
use std::time::{Duration, Instant};

pub fn run(ctx: &Ctx) -> Result<()> {
    syncthing::ensure()?;
    let n: u64 = if ctx.quick { 1_000 } else { 100_000 };
    let setup = Duration::from_secs(if ctx.quick { 120 } else { 1800 });
    let root = ctx.dir("b6")?;
    let folder = root.join("folder");
    // 1000 files per directory, 64–576 bytes each (as `cairn-bench idle`).
    let t0 = Instant::now();
    for i in 0..n {
        let dir = folder.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let len = 64 + (i as usize * 7919) % 512;
        fs::write(
            dir.join(format!("f{i:06}.txt")),
            cairn_e2e::tree::random_bytes(crate::util::mix(ctx.seed, i), len),
        )?;
    }
    eprintln!(
        "  b6: {n} files written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Cairn: the first push uploads (local store: the storage is not what this row measures),
    // the second finds nothing to do.
    let side = CairnSide::start(Backend::Local)?;
    let dev = side.device("rescan")?;
    let (first, _) = cairn(&dev, "push", &folder)?;
    eprintln!("  b6: cairn's first push took {:.1} s", first.secs);
    let (c, v) = cairn(&dev, "push", &folder)?;
    ensure!(
        v["files"].as_u64() == Some(n) && v["chunks_uploaded"].as_u64() == Some(0),
        "the second cairn push was not a no-change rescan: {v}"
    );

    // Syncthing: one instance (a folder shared with nobody still scans), no watcher.
    let me = Identity::generate(&root.join("st-home"))?;
    syncthing::configure(
        &me,
        &[],
        &folder,
        &FolderOpts {
            watcher: false,
            rescan_s: 86400,
        },
    )?;
    let st = Syncthing::start(&me)?;
    let t1 = Instant::now();
    st.wait_idle(n, setup)?;
    eprintln!(
        "  b6: Syncthing's initial scan took {:.1} s",
        t1.elapsed().as_secs_f64()
    );
    syncthing::reset_hwm(st.pid())?;
    let t2 = Instant::now();
    st.post(&format!("/rest/db/scan?folder={FOLDER}"), setup)?;
    st.wait_idle(n, Duration::from_secs(60))?;
    let st_secs = t2.elapsed().as_secs_f64();
    let st_hwm = syncthing::vm_hwm(st.pid())?;
    let status = st.status()?;
    ensure!(
        status["localFiles"].as_u64() == Some(n),
        "Syncthing sees {} files, expected {n}",
        status["localFiles"]
    );

    println!("### B6 no-change rescan of {n} small files (64–576 B, 1000 per directory)\n");
    println!(
        "cairn: a second `cairn --json push` of the unchanged, already-pushed folder (a fresh \
         process: full walk + stat, hash reuse, plan, nothing to upload; cairn-server on a local \
         store); time and peak RSS from GNU time. Syncthing: `POST /rest/db/scan` after its \
         initial scan, until the answer and `/rest/db/status` idle; peak RSS = VmHWM of the \
         long-running process after resetting it (`clear_refs`) just before the scan, so it \
         includes what Syncthing holds anyway. Ratio = cairn ÷ Syncthing.\n"
    );
    println!("| tool | s | peak RSS MiB |");
    println!("|---|---:|---:|");
    println!(
        "| cairn push (no change) | {:.2} | {:.1} |",
        c.secs,
        c.rss_kib as f64 / 1024.0
    );
    println!(
        "| Syncthing rescan | {st_secs:.2} | {:.1} |",
        st_hwm as f64 / 1024.0
    );
    println!(
        "| ratio cairn ÷ Syncthing | {} | {} |\n",
        ratio(c.secs, st_secs),
        ratio(c.rss_kib as f64, st_hwm as f64)
    );
    drop(st);
    fs::remove_dir_all(&root)?;
    Ok(())
}
