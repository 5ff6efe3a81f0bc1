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
    ///
    /// A port found free can be taken by another process before Garage binds it (tests run in
    /// parallel, each starting servers). Garage then runs without that listener, and its S3
    /// address answers as something else: CI once saw a HeadBucket answered by another node's
    /// admin API (HTTP 400, JSON). So the node counts as started only once its S3 address answers
    /// as Garage's S3 API does, and is started afresh on new ports if it does not.
    pub fn start() -> Result<Self> {
        which_garage()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once() {
                Ok(g) => return Ok(g),
                Err(e) => {
                    eprintln!("garage did not start, retrying on new ports: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts were made"))
    }

    fn start_once() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let [rpc, s3, admin] = free_ports()?;
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
        g.wait_for_s3()?;
        Ok(g)
    }

    /// Waits until the S3 address answers as Garage's S3 API; fails at once when something else
    /// answers there.
    fn wait_for_s3(&self) -> Result<()> {
        let answer = wait_for(
            "garage's S3 port to answer",
            Duration::from_secs(30),
            || http_answer(&self.s3_addr),
        )?;
        if !is_s3_answer(&answer) {
            bail!(
                "{} answers, but not as Garage's S3 API (another process holds the port?): {:?}",
                self.s3_addr,
                answer.lines().take(3).collect::<Vec<_>>()
            );
        }
        Ok(())
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
        self.wait_for_s3()
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

/// `N` distinct ports that were free a moment ago on 127.0.0.1: all are held at once, so that one
/// call cannot return the same port twice.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// The status line and headers `addr` answers an unsigned `HEAD /` with (empty if whatever
/// accepted there does not answer HTTP), or `None` while nothing accepts there.
fn http_answer(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.write_all(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = Vec::new();
    // A HEAD answer is headers only; `Connection: close` ends it. A reset or a timeout after some
    // bytes still leaves an answer to judge.
    let _ = tcp.take(16 * 1024).read_to_end(&mut head);
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Garage's S3 API refuses an unsigned request with an XML error; its admin API answers JSON and
/// its RPC port does not speak HTTP.
fn is_s3_answer(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 ")
        && answer.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-type: application/xml")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }

    #[test]
    fn only_an_xml_error_counts_as_garage_s3() {
        let s3 = "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: 214\r\n\r\n";
        let admin = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 159\r\n\r\n";
        assert!(is_s3_answer(s3));
        assert!(!is_s3_answer(admin));
        assert!(!is_s3_answer("\u{0}\u{3}garbage"));
    }
}
