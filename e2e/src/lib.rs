//! Helpers shared by the end-to-end tests: a real Garage S3 server, the real `cairn-server` and
//! `cairn` binaries, and tree builders/comparers. Every process is killed on `Drop`; readiness is
//! polled, never slept for.

pub mod cluster;
pub mod daemon;
pub mod garage;
pub mod grpc;
pub mod proxy;
pub mod tree;

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use garage::Garage;

/// The path of a workspace binary built next to this test (`target/<profile>/<name>`), or next to
/// the bench binary calling it (also in `target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    // A test executable lives in target/<profile>/deps/, a bench binary in target/<profile>/.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut dir = exe.parent().expect("an executable has a parent directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Which blob store a test's cairn-server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a local directory served by cairn-server itself.
    Local,
    /// A real Garage S3 server on 127.0.0.1.
    Garage,
}

/// A running `cairn-server serve`, killed on drop.
pub struct CairnServer {
    child: Child,
    pub addr: String,
    pub db: PathBuf,
    pub store: String,
    pub dir: tempfile::TempDir,
    /// Keeps a private Garage alive as long as the server.
    pub garage: Option<Garage>,
    pub bucket: Option<String>,
    /// The store's credentials (admin commands that touch the store need them too).
    pub envs: Vec<(String, String)>,
    /// Where the development certificates are, when serving TLS.
    pub tls_dir: Option<PathBuf>,
}

impl CairnServer {
    /// Starts cairn-server on a fresh database with the given backend.
    pub fn start(backend: Backend) -> Result<Self> {
        Self::start_with(backend, &[])
    }

    /// As `start`, with more `serve` flags (e.g. `--gc-interval 100ms`).
    pub fn start_with(backend: Backend, serve_args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (store, garage, bucket, envs) = match backend {
            Backend::Local => {
                let blobs = dir.path().join("blobs");
                (format!("local:{}", blobs.display()), None, None, vec![])
            }
            Backend::Garage => {
                let garage = Garage::shared_or_start()?;
                let bucket = garage.create_bucket()?;
                let store = format!("s3://{bucket}?endpoint={}&region=garage", garage.endpoint());
                let envs = vec![
                    ("AWS_ACCESS_KEY_ID".to_owned(), garage.key_id.clone()),
                    ("AWS_SECRET_ACCESS_KEY".to_owned(), garage.secret.clone()),
                ];
                (store, Some(garage), Some(bucket), envs)
            }
        };
        let db = dir.path().join("server.db");
        Self::spawn(dir, db, store, garage, bucket, envs, serve_args)
    }

    fn spawn(
        dir: tempfile::TempDir,
        db: PathBuf,
        store: String,
        garage: Option<Garage>,
        bucket: Option<String>,
        envs: Vec<(String, String)>,
        serve_args: &[&str],
    ) -> Result<Self> {
        let mut child = Command::new(bin("cairn-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(["--store", &store])
            .args(serve_args)
            .envs(envs.clone())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning cairn-server")?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| {
                format!("cairn-server printed {line:?}, expected `listening on ADDR`")
            })?
            .to_owned();
        Ok(Self {
            child,
            addr,
            db,
            store,
            dir,
            garage,
            bucket,
            envs,
            tls_dir: None,
        })
    }

    /// Starts cairn-server on a fresh database with a store URL of the caller's (e.g. a bucket on a
    /// `GarageCluster`) and its credentials.
    pub fn start_on_store(
        store: String,
        envs: Vec<(String, String)>,
        serve_args: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("server.db");
        Self::spawn(dir, db, store, None, None, envs, serve_args)
    }

    /// Starts the server again after `kill()`, on the same address, database and store (daemons
    /// keep their `--server` URL). Retries the bind while the old socket is let go.
    pub fn restart(&mut self, serve_args: &[&str]) -> Result<()> {
        self.kill();
        let mut last = String::new();
        let child = wait_for(
            "cairn-server to bind its old address again",
            Duration::from_secs(20),
            || {
                let mut child = Command::new(bin("cairn-server"))
                    .args(["serve", "--listen", &self.addr, "--db"])
                    .arg(&self.db)
                    .args(["--store", &self.store])
                    .args(serve_args)
                    .envs(self.envs.clone())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .ok()?;
                let stdout = child.stdout.take()?;
                last.clear();
                BufReader::new(stdout).read_line(&mut last).ok()?;
                if last.starts_with("listening on ") {
                    Some(child)
                } else {
                    let _ = child.kill();
                    let _ = child.wait();
                    None
                }
            },
        )
        .with_context(|| format!("last output: {last:?}"))?;
        self.child = child;
        Ok(())
    }

    /// Runs an admin subcommand that needs the store too (`gc`, `scrub`): adds `--db`, `--store`
    /// and the store's credentials. Returns the output whatever the exit status.
    /// `cairn-server gc --json --grace 0s --drop-before CUTOFF_MS`, which must succeed: collects
    /// everything collectable now, dropping versions superseded before `cutoff_ms`.
    pub fn gc_dropping_before(&self, cutoff_ms: i64) -> Result<serde_json::Value> {
        let cutoff = cutoff_ms.to_string();
        let args = ["gc", "--json", "--grace", "0s", "--drop-before", &cutoff];
        json_ok(self.store_admin(&args)?, "cairn-server gc")
    }

    pub fn store_admin(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(bin("cairn-server"))
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .args(["--store", &self.store])
            .envs(self.envs.clone())
            .output()?)
    }

    /// How many stored objects (chunks and packs, not staging uploads) the store holds.
    pub fn stored_objects(&self) -> Result<u64> {
        match (&self.garage, &self.bucket) {
            (Some(g), Some(b)) => g.object_count(b),
            _ => {
                let dir = self.dir.path().join("blobs/objects");
                match std::fs::read_dir(&dir) {
                    Ok(entries) => Ok(entries.count() as u64),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// `https://` when the server was started with `--tls-cert`.
    pub fn url(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA devices must trust when the server serves TLS.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.join("ca.pem"))
    }

    /// Starts cairn-server with TLS on a development certificate (`cairn-server dev-cert`).
    pub fn start_tls(backend: Backend) -> Result<Self> {
        let certs = tempfile::tempdir()?.keep();
        let out = Command::new(bin("cairn-server"))
            .args(["dev-cert", "--out"])
            .arg(&certs)
            .output()?;
        if !out.status.success() {
            bail!("dev-cert failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
        let mut s = Self::start_with(
            backend,
            &[
                "--tls-cert",
                cert.to_str().expect("utf-8 temp path"),
                "--tls-key",
                key.to_str().expect("utf-8 temp path"),
            ],
        )?;
        s.tls_dir = Some(certs);
        Ok(s)
    }

    /// Runs an admin subcommand against this server's database.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("cairn-server"))
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .output()?;
        if !out.status.success() {
            bail!(
                "cairn-server {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    pub fn create_namespace(&self, name: &str) -> Result<()> {
        self.admin(&["namespace", "create", name]).map(drop)
    }

    pub fn create_token(&self, namespace: &str, device: &str) -> Result<String> {
        self.admin(&[
            "token",
            "create",
            "--namespace",
            namespace,
            "--device",
            device,
        ])
    }

    /// A new device with its own home directory and a token for `namespace`.
    pub fn device(&self, namespace: &str, name: &str) -> Result<Device> {
        let token = self.create_token(namespace, name)?;
        Ok(Device {
            home: tempfile::tempdir()?,
            server: self.url(),
            token,
            namespace: namespace.to_owned(),
            ca_cert: self.ca_cert(),
            env: Vec::new(),
        })
    }

    /// `cairn-server user add NAME --password-stdin`; returns the password.
    pub fn create_user(&self, name: &str) -> Result<String> {
        let password = format!("pw-{name}-{}", rand::random::<u32>());
        let mut cmd = Command::new(bin("cairn-server"));
        cmd.args(["user", "add", name, "--password-stdin", "--db"])
            .arg(&self.db);
        let out = output_with_stdin(cmd, &password)?;
        if !out.status.success() {
            bail!(
                "user add {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(password)
    }

    /// A new device that logged in as `user` (`cairn login`, token in its home's token file),
    /// working on `namespace`.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        device: &str,
        namespace: &str,
    ) -> Result<Device> {
        let d = Device {
            home: tempfile::tempdir()?,
            server: self.url(),
            token: String::new(),
            namespace: namespace.to_owned(),
            ca_cert: self.ca_cert(),
            env: Vec::new(),
        };
        let mut cmd = d.cmd();
        cmd.args([
            "--json",
            "login",
            "--user",
            user,
            "--device",
            device,
            "--password-stdin",
        ]);
        json_ok(output_with_stdin(cmd, password)?, "cairn login")?;
        Ok(d)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CairnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One device: a `cairn` home directory plus its server, token and namespace.
pub struct Device {
    pub home: tempfile::TempDir,
    pub server: String,
    pub token: String,
    pub namespace: String,
    /// The CA to trust for a TLS server (`--ca-cert`).
    pub ca_cert: Option<PathBuf>,
    /// More environment for every command of this device (e.g. a faked clock).
    pub env: Vec<(String, String)>,
}

impl Device {
    /// A `cairn` command with this device's server, home and token (token by environment, as
    /// users are told to pass it).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin("cairn"));
        c.arg("--server")
            .arg(&self.server)
            .arg("--home")
            .arg(self.home.path());
        if let Some(ca) = &self.ca_cert {
            c.arg("--ca-cert").arg(ca);
        }
        if self.token.is_empty() {
            // A logged-in device: its token is in the home's token file.
            c.env_remove("CAIRN_TOKEN");
        } else {
            c.env("CAIRN_TOKEN", &self.token);
        }
        c.env_remove("CAIRN_SERVER")
            .env_remove("CAIRN_HOME")
            .env_remove("CAIRN_PASSWORD")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// The token this device sends: the environment's, or the one `cairn login` saved.
    pub fn token(&self) -> Result<String> {
        if !self.token.is_empty() {
            return Ok(self.token.clone());
        }
        Ok(std::fs::read_to_string(self.home.path().join("token"))?
            .trim()
            .to_owned())
    }

    /// Runs `cairn --json <verb> DIR --namespace NS` and returns the output.
    pub fn run(&self, verb: &str, dir: &Path) -> Result<Output> {
        self.run_with(verb, dir, &[])
    }

    /// Runs `cairn --json <verb> DIR --namespace NS <extra...>` and returns the output.
    pub fn run_with(&self, verb: &str, dir: &Path, extra: &[&str]) -> Result<Output> {
        Ok(self
            .cmd()
            .arg("--json")
            .arg(verb)
            .arg(dir)
            .args(["--namespace", &self.namespace])
            .args(extra)
            .output()?)
    }

    /// `push` that must succeed; returns its JSON summary.
    pub fn push(&self, dir: &Path) -> Result<serde_json::Value> {
        json_ok(self.run("push", dir)?, "push")
    }

    /// `pull` that must succeed; returns its JSON summary.
    pub fn pull(&self, dir: &Path) -> Result<serde_json::Value> {
        json_ok(self.run("pull", dir)?, "pull")
    }
}

/// Runs `cmd` with `line` (and a newline) on its stdin; returns its output.
fn output_with_stdin(mut cmd: Command, line: &str) -> Result<Output> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(format!("{line}\n").as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// Checks a command succeeded and parses its one JSON object from stdout.
pub fn json_ok(out: Output, what: &str) -> Result<serde_json::Value> {
    if !out.status.success() {
        bail!(
            "{what} exited {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{what} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Reads a JSON number field as u64, failing with the whole summary in the message.
pub fn field(v: &serde_json::Value, name: &str) -> u64 {
    v.get(name)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("summary has no numeric `{name}`: {v}"))
}
