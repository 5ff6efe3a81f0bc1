//! A running `cairn daemon` for one device: its JSON-lines events collected on a thread, SIGTERM
//! or SIGKILL on demand, SIGKILL on `Drop`.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Device, wait_for};

impl Device {
    /// `cairn add DIR --namespace NS` (writes the root marker).
    pub fn add(&self, dir: &Path) -> Result<()> {
        let out = self
            .cmd()
            .arg("add")
            .arg(dir)
            .args(["--namespace", &self.namespace])
            .output()?;
        if !out.status.success() {
            bail!("cairn add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts `cairn --json daemon` and waits for its first idle (first full sync done).
    pub fn daemon(&self) -> Result<Daemon> {
        let d = self.daemon_no_wait()?;
        d.wait_event("the daemon's first idle", Duration::from_secs(60), |e| {
            e["event"] == "idle"
        })?;
        Ok(d)
    }

    /// Starts `cairn --json daemon` with a short full-scan interval (the watcher does the work).
    pub fn daemon_no_wait(&self) -> Result<Daemon> {
        let mut child = self
            .cmd()
            .args(["--json", "daemon", "--scan-interval", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning cairn daemon")?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    // A poisoned lock only means a test thread panicked; the test is failing anyway.
                    sink.lock().expect("events lock").push(v);
                }
            }
        });
        Ok(Daemon { child, events })
    }

    /// `cairn --json resume DIR [--allow-deletes]`: the raw output (exit code, stderr).
    pub fn resume(&self, dir: &Path, allow_deletes: bool) -> Result<std::process::Output> {
        let mut c = self.cmd();
        c.args(["--json", "resume"]).arg(dir);
        if allow_deletes {
            c.arg("--allow-deletes");
        }
        Ok(c.output()?)
    }

    /// `cairn --json status`: the parsed summary.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.cmd().args(["--json", "status"]).output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

pub struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Daemon {
    /// Every event so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().expect("events lock").clone()
    }

    /// Events from index `from` on.
    pub fn events_since(&self, from: usize) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .expect("events lock")
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        wait_for(what, timeout, || {
            self.events
                .lock()
                .expect("events lock")
                .iter()
                .find(|e| f(e))
                .cloned()
        })
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        let status = wait_for(
            "the daemon to exit after SIGTERM",
            Duration::from_secs(40),
            || self.child.try_wait().ok().flatten(),
        )?;
        if !status.success() {
            bail!("cairn daemon exited with {status} after SIGTERM");
        }
        Ok(())
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
