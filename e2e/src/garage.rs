//! A real Garage S3 server on 127.0.0.1 for the tests: either the one `scripts/garage.sh` started
//! (its env file named by `CAIRN_E2E_GARAGE`), or a private single node started for this test.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// Deterministic test credentials (a local throwaway server; not secrets).
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Garage node the test can create buckets on.
pub struct Garage {
    pub config: PathBuf,
    pub s3_addr: String,
    pub key_id: String,
    pub secret: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Garage {
    /// Uses the Garage named by `CAIRN_E2E_GARAGE` (an env file from scripts/garage.sh), or starts a
    /// private one.
    pub fn shared_or_start() -> Result<Self> {
        match std::env::var_os("CAIRN_E2E_GARAGE") {
            Some(file) => Self::from_env_file(Path::new(&file)),
            None => Self::start(),
        }
    }

    fn from_env_file(file: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_owned)
                .with_context(|| format!("{} has no {k}=", file.display()))
        };
        Ok(Self {
            config: PathBuf::from(get("GARAGE_CONFIG")?),
            s3_addr: get("GARAGE_S3_ADDR")?,
            key_id: get("AWS_ACCESS_KEY_ID")?,
            secret: get("AWS_SECRET_ACCESS_KEY")?,
            child: None,
            _dir: None,
        })
    }

    /// Starts a fresh single-node Garage on free loopback ports and imports the test key.
    pub fn start() -> Result<Self> {
        which_garage()?;
        let dir = tempfile::tempdir()?;
        let [rpc, s3, admin] = [free_port()?, free_port()?, free_port()?];
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                d = dir.path().display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("garage.log"))?;
        let child = Command::new("garage")
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting garage")?;
        let mut g = Self {
            config,
            s3_addr: format!("127.0.0.1:{s3}"),
            key_id: KEY_ID.into(),
            secret: SECRET.into(),
            child: Some(child),
            _dir: Some(dir),
        };
        g.configure()?;
        Ok(g)
    }

    fn configure(&mut self) -> Result<()> {
        wait_for("garage to answer `status`", Duration::from_secs(30), || {
            self.garage(&["status"]).ok()
        })?;
        let node = self.garage(&["node", "id", "-q"])?;
        let node = node.split('@').next().unwrap_or_default().trim().to_owned();
        self.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.garage(&["layout", "apply", "--version", "1"])?;
        self.garage(&["key", "import", "--yes", KEY_ID, SECRET, "-n", "test"])?;
        Ok(())
    }

    /// Kills a private node (SIGKILL, as a crash). Its config and data stay for `restart`.
    pub fn stop(&mut self) -> Result<()> {
        let Some(c) = &mut self.child else {
            bail!("only a private Garage (not CAIRN_E2E_GARAGE's) can be stopped by a test");
        };
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Starts a private node stopped by `stop` again on the same config, data and ports, and
    /// waits until it answers S3 requests.
    pub fn restart(&mut self) -> Result<()> {
        let Some(dir) = &self._dir else {
            bail!("only a private Garage can be restarted by a test");
        };
        let log = std::fs::File::options()
            .append(true)
            .create(true)
            .open(dir.path().join("garage.log"))?;
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting garage again")?;
        self.child = Some(child);
        wait_for(
            "garage to answer `status` again",
            Duration::from_secs(30),
            || self.garage(&["status"]).ok(),
        )?;
        wait_for(
            "garage's S3 port to accept again",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(&self.s3_addr).ok(),
        )?;
        Ok(())
    }

    /// How many block files a private node holds on disk (0 for a shared one).
    pub fn block_files(&self) -> usize {
        fn walk(d: &Path) -> usize {
            std::fs::read_dir(d).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        self._dir
            .as_ref()
            .map_or(0, |d| walk(&d.path().join("data")))
    }

    /// Runs a garage CLI command against this node.
    pub fn garage(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a fresh bucket the test key may read, write and own. Retries while the new layout
    /// settles (a just-started node can refuse for a moment).
    pub fn create_bucket(&self) -> Result<String> {
        let name = format!("t{:016x}", rand::random::<u64>());
        wait_for("garage to create a bucket", Duration::from_secs(30), || {
            self.garage(&["bucket", "create", &name]).ok()
        })?;
        self.garage(&[
            "bucket", "allow", "--read", "--write", "--owner", &name, "--key", "test",
        ])?;
        Ok(name)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3_addr)
    }

    /// How many objects a bucket holds (from `garage bucket info`).
    pub fn object_count(&self, bucket: &str) -> Result<u64> {
        let info = self.garage(&["bucket", "info", bucket])?;
        info.lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix("Objects:")
                    .map(|v| v.trim().replace([',', ' '], ""))
            })
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no object count in `garage bucket info`: {info}"))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which_garage() -> Result<()> {
    match Command::new("garage").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "the e2e tests need Garage on PATH: run scripts/test.sh (it installs it), or \
             `cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,sqlite,lmdb`"
        ),
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
