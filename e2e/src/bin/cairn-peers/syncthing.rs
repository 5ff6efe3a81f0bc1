//! A Syncthing instance for the benchmarks: its own home (`--home`), GUI/REST on a random
//! 127.0.0.1 port with an API key, sync protocol on a random 127.0.0.1 port, global and local
//! discovery, relays, NAT traversal, usage reporting and upgrades off; peers are known by static
//! `tcp://127.0.0.1:PORT` addresses. Killed on drop.

use crate::util;
use anyhow::{Context, Result, bail, ensure};
use cairn_e2e::garage::free_ports;
use cairn_e2e::wait_for;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const FOLDER: &str = "bench";

/// Identity and ports of one instance, known before it starts (peers' configs name each other).
pub struct Identity {
    pub home: PathBuf,
    pub id: String,
    pub listen: u16,
    pub gui: u16,
    pub key: String,
}

impl Identity {
    /// `syncthing generate` in a fresh home: keys and a device id.
    pub fn generate(home: &Path) -> Result<Self> {
        fs::create_dir_all(home)?;
        let out = Command::new("syncthing")
            .args([
                "generate",
                "--no-default-folder",
                "--skip-port-probing",
                "--home",
            ])
            .arg(home)
            .output()
            .context("running syncthing (apt-get install syncthing)")?;
        let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        let id = text
            .lines()
            .find_map(|l| l.split("Device ID: ").nth(1))
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("no device id from `syncthing generate`: {text}"))?;
        let [listen, gui] = free_ports()?;
        Ok(Self {
            home: home.to_owned(),
            id,
            listen,
            gui,
            key: format!("cairn-peers-{:016x}", rand::random::<u64>()),
        })
    }
}

/// Folder settings: the watcher (and its delay) or none, and the periodic rescan interval.
pub struct FolderOpts {
    pub watcher: bool,
    pub rescan_s: u64,
}

/// Writes `me`'s config.xml: one folder at `path` shared with `peers`.
pub fn configure(me: &Identity, peers: &[&Identity], path: &Path, o: &FolderOpts) -> Result<()> {
    let mut devices = String::new();
    let mut folder_devices = format!("<device id=\"{}\"></device>", me.id);
    for p in peers {
        devices.push_str(&format!(
            "<device id=\"{}\" name=\"peer\" compression=\"metadata\"><address>tcp://127.0.0.1:{}</address><autoAcceptFolders>false</autoAcceptFolders></device>\n",
            p.id, p.listen
        ));
        folder_devices.push_str(&format!("<device id=\"{}\"></device>", p.id));
    }
    // The folder marker Syncthing insists on before it syncs a folder.
    fs::create_dir_all(path.join(".stfolder"))?;
    let xml = format!(
        r#"<configuration version="36">
<folder id="{FOLDER}" label="{FOLDER}" path="{path}" type="sendreceive" rescanIntervalS="{rescan}" fsWatcherEnabled="{watcher}" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
<filesystemType>basic</filesystemType>{folder_devices}<minDiskFree unit="%">0</minDiskFree>
</folder>
<device id="{id}" name="self" compression="metadata"><address>dynamic</address></device>
{devices}<gui enabled="true" tls="false" debugging="false"><address>127.0.0.1:{gui}</address><apikey>{key}</apikey></gui>
<options>
<listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
<globalAnnounceEnabled>false</globalAnnounceEnabled>
<localAnnounceEnabled>false</localAnnounceEnabled>
<relaysEnabled>false</relaysEnabled>
<natEnabled>false</natEnabled>
<startBrowser>false</startBrowser>
<urAccepted>-1</urAccepted>
<autoUpgradeIntervalH>0</autoUpgradeIntervalH>
<crashReportingEnabled>false</crashReportingEnabled>
<minHomeDiskFree unit="%">0</minHomeDiskFree>
<setLowPriority>false</setLowPriority>
</options>
</configuration>
"#,
        path = path.display(),
        rescan = o.rescan_s,
        watcher = o.watcher,
        id = me.id,
        gui = me.gui,
        key = me.key,
        listen = me.listen,
    );
    fs::write(me.home.join("config.xml"), xml)?;
    Ok(())
}

/// A running `syncthing serve`, killed on drop.
pub struct Syncthing {
    child: Child,
    gui: u16,
    key: String,
}

impl Syncthing {
    pub fn start(me: &Identity) -> Result<Self> {
        let log = fs::File::create(me.home.join("syncthing.log"))?;
        let child = Command::new("syncthing")
            .args([
                "serve",
                "--no-browser",
                "--no-restart",
                "--no-upgrade",
                "--home",
            ])
            .arg(&me.home)
            .arg(format!("--gui-address=http://127.0.0.1:{}", me.gui))
            .arg(format!("--gui-apikey={}", me.key))
            .env("STNODEFAULTFOLDER", "1")
            .env("STNOUPGRADE", "1")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting syncthing (apt-get install syncthing)")?;
        let s = Self {
            child,
            gui: me.gui,
            key: me.key.clone(),
        };
        wait_for("syncthing's REST API", Duration::from_secs(60), || {
            s.get("/rest/system/ping").ok()
        })
        .with_context(|| format!("see {}", me.home.join("syncthing.log").display()))?;
        Ok(s)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.request("GET", path, Duration::from_secs(10))
    }

    /// A POST that may take long (`/rest/db/scan` answers when the scan is done).
    pub fn post(&self, path: &str, timeout: Duration) -> Result<serde_json::Value> {
        self.request("POST", path, timeout)
    }

    /// One HTTP/1.0 request to the REST API (no chunked replies, the server closes).
    fn request(&self, method: &str, path: &str, timeout: Duration) -> Result<serde_json::Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.gui))?;
        s.set_read_timeout(Some(timeout))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\nContent-Length: 0\r\n\r\n",
            self.key
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            bail!(
                "syncthing {method} {path}: {}",
                head.lines().next().unwrap_or("")
            );
        }
        Ok(if body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body).with_context(|| format!("{path} answered {body:?}"))?
        })
    }

    /// The folder's `/rest/db/status`.
    pub fn status(&self) -> Result<serde_json::Value> {
        self.get(&format!("/rest/db/status?folder={FOLDER}"))
    }

    /// Waits until the folder is idle and holds at least `files` local files.
    pub fn wait_idle(&self, files: u64, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("syncthing to scan {files} files and be idle"),
            timeout,
            || {
                let s = self.status().ok()?;
                (s["state"] == "idle" && s["localFiles"].as_u64()? >= files).then_some(())
            },
        )
    }

    /// Waits until the device `peer` is connected.
    pub fn wait_connected(&self, peer: &str, timeout: Duration) -> Result<()> {
        wait_for("syncthing peers to connect", timeout, || {
            let c = self.get("/rest/system/connections").ok()?;
            (c["connections"][peer]["connected"] == true).then_some(())
        })
    }
}

impl Drop for Syncthing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident set of a process (KiB), and a reset of that peak (`clear_refs` 5).
pub fn vm_hwm(pid: u32) -> Result<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM")
}

pub fn reset_hwm(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of pid {pid}"))
}

pub fn ensure() -> Result<()> {
    util::ensure_tool("syncthing")?;
    ensure!(
        Path::new("/proc/self/clear_refs").exists(),
        "/proc/PID/clear_refs is missing"
    );
    Ok(())
}
