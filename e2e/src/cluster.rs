//! A private three-node Garage cluster (replication factor 3) on 127.0.0.1, started through
//! `scripts/garage.sh start-cluster` so that the script and the tests share one recipe. Nodes can
//! be stopped (SIGKILL) and started again; every node is stopped on `Drop`.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::garage::{KEY_ID, SECRET};
use crate::wait_for;

pub struct GarageCluster {
    dir: tempfile::TempDir,
    /// The S3 address of node 1, 2, 3 (index 0, 1, 2).
    pub s3_addrs: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage.sh")
}

impl GarageCluster {
    /// Starts three fresh nodes, connects them, applies the layout and imports the test key.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut c = Self {
            dir,
            s3_addrs: vec![],
        };
        c.script(&["start-cluster"], None)?;
        let env = std::fs::read_to_string(c.dir.path().join("env"))?;
        let addrs = env
            .lines()
            .find_map(|l| l.strip_prefix("GARAGE_S3_ADDRS="))
            .context("start-cluster wrote no GARAGE_S3_ADDRS")?;
        c.s3_addrs = addrs.split_whitespace().map(str::to_owned).collect();
        Ok(c)
    }

    fn script(&self, args: &[&str], node: Option<usize>) -> Result<()> {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(args[0]).arg(self.dir.path());
        if let Some(n) = node {
            cmd.arg(n.to_string());
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "scripts/garage.sh {args:?} {node:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Kills node `n` (1..=3), as a crash would.
    pub fn stop_node(&self, n: usize) -> Result<()> {
        self.script(&["stop-node"], Some(n))
    }

    /// Starts node `n` again on its own config and data.
    pub fn start_node(&self, n: usize) -> Result<()> {
        self.script(&["start-node"], Some(n))
    }

    pub fn config(&self, n: usize) -> PathBuf {
        self.dir.path().join(n.to_string()).join("garage.toml")
    }

    /// Runs a garage CLI command through node `n`.
    pub fn garage(&self, n: usize, args: &[&str]) -> Result<String> {
        let out = Command::new("garage")
            .arg("-c")
            .arg(self.config(n))
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "garage (node {n}) {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A bucket the test key may read, write and own (retried while the layout settles).
    pub fn create_bucket(&self) -> Result<String> {
        let name = format!("t{:016x}", rand::random::<u64>());
        wait_for(
            "the cluster to create a bucket",
            Duration::from_secs(30),
            || self.garage(1, &["bucket", "create", &name]).ok(),
        )?;
        self.garage(
            1,
            &[
                "bucket", "allow", "--read", "--write", "--owner", &name, "--key", "test",
            ],
        )?;
        Ok(name)
    }

    /// The `--store` URL of a bucket through node `n`'s S3 endpoint, and its credentials.
    pub fn store(&self, bucket: &str, n: usize) -> (String, Vec<(String, String)>) {
        (
            format!(
                "s3://{bucket}?endpoint=http://{}&region=garage",
                self.s3_addrs[n - 1]
            ),
            vec![
                ("AWS_ACCESS_KEY_ID".to_owned(), KEY_ID.to_owned()),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), SECRET.to_owned()),
            ],
        )
    }

    /// The data blocks node `n` holds on disk, by hash (file names without a `.zst` suffix).
    pub fn blocks(&self, n: usize) -> Result<BTreeSet<String>> {
        fn walk(dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return Ok(());
            };
            for e in rd {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type()?.is_dir() {
                    walk(&e.path(), out)?;
                } else if name.len() >= 64 && !name.contains(".tmp") {
                    out.insert(name.trim_end_matches(".zst").to_owned());
                }
            }
            Ok(())
        }
        let mut out = BTreeSet::new();
        walk(&self.dir.path().join(n.to_string()).join("data"), &mut out)?;
        Ok(out)
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop-cluster"], None);
    }
}
