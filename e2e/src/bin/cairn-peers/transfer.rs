//! B3 and B4: initial push of three corpora to the same Garage (cairn push through cairn-server,
//! rclone copy, restic backup; each tool and corpus on a fresh bucket), then pull of each into an
//! empty folder (cairn pull, rclone copy at --transfers 4 and 16, restic restore), every pulled
//! tree compared byte for byte with the corpus.

use crate::util::{
    self, CairnSide, Ctx, cairn, check_same, ensure_tool, measure, ratio, rclone, restic,
};
use anyhow::{Result, ensure};
use cairn_e2e::Backend;
use std::fs;

struct Corpus {
    name: &'static str,
    count: usize,
    size: usize,
}

/// Seconds per tool for one corpus.
#[derive(Default)]
struct Times {
    push: [f64; 3],
    push_rss: [u64; 3],
    pull: [f64; 4],
}

pub fn run(ctx: &Ctx, with_pull: bool) -> Result<()> {
    ensure_tool("rclone")?;
    ensure_tool("restic")?;
    let corpora = if ctx.quick {
        [
            Corpus {
                name: "small",
                count: 200,
                size: 4 << 10,
            },
            Corpus {
                name: "medium",
                count: 20,
                size: 256 << 10,
            },
            Corpus {
                name: "large",
                count: 2,
                size: 8 << 20,
            },
        ]
    } else {
        [
            Corpus {
                name: "small",
                count: 5000,
                size: 4 << 10,
            },
            Corpus {
                name: "medium",
                count: 500,
                size: 256 << 10,
            },
            Corpus {
                name: "large",
                count: 4,
                size: 256 << 20,
            },
        ]
    };
    let mut rows = Vec::new();
    for (i, c) in corpora.iter().enumerate() {
        eprintln!(
            "  b3/b4: corpus {} ({} × {} B), load {}",
            c.name,
            c.count,
            c.size,
            util::load_avg()
        );
        let t = one_corpus(ctx, c, ctx.seed ^ (0xb3 + i as u64), with_pull)?;
        rows.push((c, t));
    }

    println!("### B3 initial push to the same Garage (each tool and corpus on a fresh bucket)\n");
    println!(
        "cairn: `cairn push` through cairn-server (`--store s3://…`); rclone: `rclone copy` with its \
         defaults (`--transfers 4 --checkers 8`); restic: `restic backup` to an s3 repository \
         (`restic init` not timed). Each push starts after a `sync`. Wall seconds; ratio = cairn ÷ \
         peer.\n"
    );
    println!(
        "| corpus | cairn s | rclone s | restic s | cairn ÷ rclone | cairn ÷ restic | peak RSS MiB cairn / rclone / restic |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (c, t) in &rows {
        println!(
            "| {} × {} | {:.2} | {:.2} | {:.2} | {} | {} | {} / {} / {} |",
            c.count,
            human(c.size),
            t.push[0],
            t.push[1],
            t.push[2],
            ratio(t.push[0], t.push[1]),
            ratio(t.push[0], t.push[2]),
            t.push_rss[0] / 1024,
            t.push_rss[1] / 1024,
            t.push_rss[2] / 1024
        );
    }
    println!();
    if !with_pull {
        return Ok(());
    }
    println!("### B4 pull into an empty folder (verified byte for byte against the corpus)\n");
    println!(
        "cairn: `cairn pull` on a fresh device; rclone: `rclone copy` from the bucket at \
         `--transfers 4` (default) and 16; restic: `restic restore latest` with an empty cache. \
         Each pull starts after a `sync` and, as root, with the page cache dropped (Garage reads \
         from disk). Ratio = cairn ÷ peer.\n"
    );
    println!(
        "| corpus | cairn s | rclone t4 s | rclone t16 s | restic s | cairn ÷ rclone t4 | cairn ÷ rclone t16 | cairn ÷ restic |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (c, t) in &rows {
        println!(
            "| {} × {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            c.count,
            human(c.size),
            t.pull[0],
            t.pull[1],
            t.pull[2],
            t.pull[3],
            ratio(t.pull[0], t.pull[1]),
            ratio(t.pull[0], t.pull[2]),
            ratio(t.pull[0], t.pull[3])
        );
    }
    println!();
    Ok(())
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

fn one_corpus(ctx: &Ctx, c: &Corpus, seed: u64, with_pull: bool) -> Result<Times> {
    let g = ctx.garage()?;
    let corpus = ctx.dir(&format!("b3/{}", c.name))?;
    util::write_corpus(&corpus, c.count, c.size, seed)?;
    let mut t = Times::default();

    // cairn. Each push starts with nothing dirty (the corpus just written, the push before).
    let side = CairnSide::start(Backend::Garage)?;
    util::sync()?;
    let (r, v) = cairn(&side.device("pusher")?, "push", &corpus)?;
    ensure!(
        v["files"].as_u64() == Some(c.count as u64),
        "cairn push reported {} files, expected {}",
        v["files"],
        c.count
    );
    (t.push[0], t.push_rss[0]) = (r.secs, r.rss_kib);

    // rclone
    let rbucket = g.create_bucket()?;
    let mut rc = rclone(&g);
    rc.arg("copy").arg(&corpus).arg(format!("G:{rbucket}/c"));
    util::sync()?;
    let r = measure(&rc)?;
    (t.push[1], t.push_rss[1]) = (r.secs, r.rss_kib);

    // restic
    let sbucket = g.create_bucket()?;
    let cache = ctx.dir("b3/restic-cache")?;
    util::run(restic(&g, &sbucket, &cache).args(["init", "-q"]))?;
    let mut sc = restic(&g, &sbucket, &cache);
    sc.args(["backup", "-q"]).arg(&corpus);
    util::sync()?;
    let r = measure(&sc)?;
    (t.push[2], t.push_rss[2]) = (r.secs, r.rss_kib);

    if with_pull {
        let into = ctx.dir("b4/cairn")?;
        let puller = side.device("puller")?;
        util::settle_cold()?;
        let (r, _) = cairn(&puller, "pull", &into)?;
        check_same(&corpus, &into, "cairn pull")?;
        t.pull[0] = r.secs;
        for (k, transfers) in [(1, "4"), (2, "16")] {
            let into = ctx.dir("b4/rclone")?;
            let mut rc = rclone(&g);
            rc.args(["copy", "--transfers", transfers])
                .arg(format!("G:{rbucket}/c"))
                .arg(&into);
            util::settle_cold()?;
            t.pull[k] = measure(&rc)?.secs;
            check_same(&corpus, &into, "rclone copy")?;
        }
        let into = ctx.dir("b4/restic")?;
        let cache = ctx.dir("b4/restic-cache")?;
        let mut sc = restic(&g, &sbucket, &cache);
        sc.args(["restore", "latest", "--target"]).arg(&into);
        util::settle_cold()?;
        t.pull[3] = measure(&sc)?.secs;
        // restic restores the absolute path it backed up below the target.
        let rel = corpus.strip_prefix("/")?;
        check_same(&corpus, &into.join(rel), "restic restore")?;
        fs::remove_dir_all(ctx.work.path().join("b4"))?;
    }
    fs::remove_dir_all(&corpus)?;
    Ok(t)
}
