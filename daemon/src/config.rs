//! Settings resolved once: flag > environment > `config.toml` > `token` file, validated, secrets redacted.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::guard::Limits;

/// A device token. Its `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where this device keeps its config and state.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub config: PathBuf,
    pub data: PathBuf,
}

impl Dirs {
    /// `--home DIR` holds both; otherwise the XDG config and data dirs, `cairn` inside each.
    pub fn resolve(home: Option<&Path>) -> Result<Self> {
        if let Some(h) = home {
            return Ok(Dirs {
                config: h.to_owned(),
                data: h.to_owned(),
            });
        }
        let missing = || {
            Error::Config("cannot find a home directory for cairn's config and state — pass --home DIR or set CAIRN_HOME".into())
        };
        let config = dirs::config_dir().ok_or_else(missing)?.join("cairn");
        let data = dirs::data_dir().ok_or_else(missing)?.join("cairn");
        Ok(Dirs { config, data })
    }

    pub fn state_db(&self) -> PathBuf {
        self.data.join("state.db")
    }
}

/// What the server commands need, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub token: Token,
    pub dirs: Dirs,
    /// How often the daemon rescans every folder as a safety net (config `scan_interval`, seconds).
    pub scan_interval: std::time::Duration,
    /// When a sync's deletions wait for `cairn resume --allow-deletes` (config `[delete_guard]`).
    pub delete_guard: Limits,
    /// A PEM CA certificate to trust for an https:// server besides the system's roots
    /// (`--ca-cert`, `CAIRN_CA_CERT`, config `ca_cert`; e.g. `cairn-server dev-cert`'s ca.pem).
    pub ca_cert: Option<PathBuf>,
}

/// The daemon's default full-scan interval.
pub const DEFAULT_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// Seconds between the daemon's full scans.
    scan_interval: Option<u64>,
    delete_guard: Option<GuardConfig>,
    ca_cert: Option<PathBuf>,
}

/// `[delete_guard]` in config.toml; a missing key keeps its default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardConfig {
    max_percent: Option<u64>,
    max_files: Option<u64>,
    percent_floor: Option<u64>,
}

impl GuardConfig {
    fn resolve(self, file: &Path) -> Result<Limits> {
        let d = Limits::default();
        let limits = Limits {
            max_percent: self.max_percent.unwrap_or(d.max_percent),
            max_files: self.max_files.unwrap_or(d.max_files),
            percent_floor: self.percent_floor.unwrap_or(d.percent_floor),
        };
        if limits.max_percent > 100 {
            return Err(Error::Config(format!(
                "{}: delete_guard.max_percent must be 0 to 100 (100 turns the percent rule off)",
                file.display()
            )));
        }
        Ok(limits)
    }
}

impl Config {
    /// Resolves server and token. `server` and `token` are the flag-or-environment values (clap
    /// already applied flag > env).
    pub fn resolve(
        server: Option<String>,
        token: Option<String>,
        home: Option<&Path>,
    ) -> Result<Self> {
        let dirs = Dirs::resolve(home)?;
        let file_path = dirs.config.join("config.toml");
        let file = read_file_config(&file_path)?;
        let server = server.or(file.server).ok_or_else(|| {
            Error::Config(format!(
                "no server configured — pass --server URL, set CAIRN_SERVER, or put `server = \"http://HOST:PORT\"` in {}",
                file_path.display()
            ))
        })?;
        let server = validate_server(&server)?;
        let scan_interval = match file.scan_interval {
            Some(0) => {
                return Err(Error::Config(format!(
                    "{}: scan_interval must be at least 1 (seconds)",
                    file_path.display()
                )));
            }
            Some(s) => std::time::Duration::from_secs(s),
            None => DEFAULT_SCAN_INTERVAL,
        };
        let delete_guard = file.delete_guard.unwrap_or_default().resolve(&file_path)?;
        let token = match (token, file.token, file.token_file) {
            (Some(t), _, _) | (None, Some(t), _) => t,
            (None, None, Some(tf)) => {
                let tf = if tf.is_relative() {
                    dirs.config.join(tf)
                } else {
                    tf
                };
                read_token_file(&tf)?
            }
            (None, None, None) => {
                let tf = dirs.config.join("token");
                if tf.exists() {
                    read_token_file(&tf)?
                } else {
                    return Err(Error::Config(format!(
                        "no device token — set CAIRN_TOKEN, pass --token, put `token = \"...\"` or `token_file = \"...\"` in {}, or write it to {}",
                        file_path.display(),
                        tf.display()
                    )));
                }
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::Config("the device token is empty or has spaces or control characters — check CAIRN_TOKEN / --token / the token file".into()));
        }
        let ca_cert = file.ca_cert.map(|c| {
            if c.is_relative() {
                dirs.config.join(c)
            } else {
                c
            }
        });
        Ok(Config {
            server,
            token: Token(token),
            dirs,
            scan_interval,
            delete_guard,
            ca_cert,
        })
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {} — fix the file (keys: server, token, token_file, scan_interval, [delete_guard] max_percent / max_files / percent_floor)",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_token_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })
}

fn validate_server(s: &str) -> Result<String> {
    let s = s.trim().trim_end_matches('/');
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() <= "https://".len() {
        return Err(Error::Config(format!(
            "server {s:?} is not an http:// or https:// URL — check --server / CAIRN_SERVER"
        )));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = Config {
            server: "http://x".into(),
            token: Token("s3cr3t".into()),
            dirs: Dirs {
                config: "/c".into(),
                data: "/d".into(),
            },
            scan_interval: DEFAULT_SCAN_INTERVAL,
            delete_guard: Limits::default(),
            ca_cert: None,
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn flags_win_over_the_config_file_and_the_token_file_is_the_last_resort() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("config.toml"),
            "server = \"http://file:1\"\n",
        )
        .unwrap();
        std::fs::write(home.path().join("token"), "tok-from-file\n").unwrap();
        let c = Config::resolve(None, None, Some(home.path())).unwrap();
        assert_eq!(c.server, "http://file:1");
        assert_eq!(c.token.expose(), "tok-from-file");
        let c = Config::resolve(
            Some("http://flag:2/".into()),
            Some("t2".into()),
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(c.server, "http://flag:2");
        assert_eq!(c.token.expose(), "t2");
    }

    #[test]
    fn the_delete_guard_limits_come_from_the_config_file_with_defaults_for_the_rest() {
        let home = tempfile::tempdir().unwrap();
        let cfg = |text: &str| {
            std::fs::write(home.path().join("config.toml"), text).unwrap();
            Config::resolve(
                Some("http://s:1".into()),
                Some("t".into()),
                Some(home.path()),
            )
        };
        assert_eq!(cfg("").unwrap().delete_guard, Limits::default());
        let c = cfg("[delete_guard]\nmax_files = 200\n").unwrap();
        assert_eq!(
            c.delete_guard,
            Limits {
                max_files: 200,
                ..Limits::default()
            }
        );
        let err = cfg("[delete_guard]\nmax_percent = 150\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("delete_guard.max_percent"), "{err}");
        let err = cfg("[delete_guard]\nmax_precent = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_precent"), "{err}");
    }

    #[test]
    fn a_missing_server_names_the_settings_to_use() {
        let home = tempfile::tempdir().unwrap();
        let err = Config::resolve(None, Some("t".into()), Some(home.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--server") && err.contains("CAIRN_SERVER"),
            "{err}"
        );
    }
}
