//! The `cairn-server` binary: `serve`, and admin commands on the same database.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn-server", version, about = "Cairn's metadata server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (gRPC and, for the local store, signed blob URLs on the same port).
    Serve {
        /// Address to bind; `127.0.0.1:0` picks a free port (printed as `listening on ADDR`).
        #[arg(long)]
        listen: SocketAddr,
        /// SQLite database file (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// `local:DIR` or `s3://BUCKET?endpoint=URL&region=R`.
        #[arg(long)]
        store: String,
        /// Base URL clients reach this server at, for local-store blob URLs.
        #[arg(long)]
        public_url: Option<String>,
        /// How often the background garbage collector runs (`0s`: never; run `cairn-server gc`).
        #[arg(long, default_value = "1h", value_parser = cairn_proto::units::parse_duration)]
        gc_interval: Duration,
        /// Chunks uploaded, reported present or left unreferenced more recently than this are
        /// never collected (it must exceed the longest gap between a client's upload and commit).
        #[arg(long, default_value = "24h", value_parser = cairn_proto::units::parse_duration)]
        gc_grace: Duration,
        /// Requests per second each device may make (twice that in bursts); 0: unlimited.
        #[arg(long, default_value_t = cairn_server::DEFAULT_RATE_LIMIT)]
        rate_limit: u32,
        /// Serve TLS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// How long a device token from `cairn login` stays valid (`0s`: until revoked).
        #[arg(long, default_value = "365d", value_parser = cairn_proto::units::parse_duration)]
        device_token_ttl: Duration,
        /// Serve plaintext on a non-loopback address anyway (tokens and data then cross the
        /// network in the clear: only behind a TLS-terminating proxy).
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// Make a development CA and a server certificate signed by it (`ca.pem`, `cert.pem`,
    /// `key.pem` in --out). Clients trust ca.pem (`cairn --ca-cert`). Not for production.
    DevCert {
        #[arg(long)]
        out: PathBuf,
        /// More host names or IP addresses for the certificate (localhost, 127.0.0.1 and ::1 are
        /// always in it).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Garbage collection, once: drop versions past retention, then delete chunks and objects no
    /// retained version references. Safe while `serve` runs.
    Gc {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        store: String,
        /// As `serve --gc-grace`.
        #[arg(long, default_value = "24h", value_parser = cairn_proto::units::parse_duration)]
        grace: Duration,
        /// Also drop versions that stopped being current before this time (RFC 3339, or ms since
        /// the epoch), whatever the namespaces' retention says.
        #[arg(long, value_name = "TIME")]
        drop_before: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read stored chunks and check their BLAKE3; damaged ones are quarantined and devices
    /// that hold the data upload them again. Exits 1 when damage was found.
    Scrub {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        store: String,
        /// Check this many objects, chosen at random, instead of all.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Namespaces (synced trees).
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Namespace tokens (one device, edit rights on one namespace; users log in instead).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Users: people who log in (`cairn login`) and get namespaces shared with them.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Give USER a role on NAMESPACE (owner, edit, view), or remove them with `--role none`.
    Share {
        namespace: String,
        user: String,
        #[arg(long, value_parser = ["owner", "edit", "view", "none"])]
        role: String,
        #[arg(long)]
        db: PathBuf,
    },
}

#[derive(Subcommand)]
enum NamespaceCommand {
    /// Create a namespace.
    Create {
        name: String,
        #[arg(long)]
        db: PathBuf,
        /// A user who owns it (can share it).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Change (and show) a namespace's retention and quota.
    Set {
        name: String,
        #[arg(long)]
        db: PathBuf,
        /// How long a version is kept after it stopped being current (default for new
        /// namespaces: 30d).
        #[arg(long, value_parser = cairn_proto::units::parse_duration)]
        retention: Option<Duration>,
        /// Limit on the current files' total size, e.g. 50GiB; `none` removes it.
        #[arg(long, value_name = "SIZE|none")]
        quota: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password comes from stdin (`--password-stdin`), else one is generated
    /// and printed.
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        db: PathBuf,
    },
    /// Revoke all of a user's devices, or one (`--device NAME`): their tokens stop working and
    /// open streams end within seconds.
    Revoke {
        name: String,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        db: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a device token for a namespace and print it (only the token, on stdout).
    Create {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        db: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            store,
            public_url,
            gc_interval,
            gc_grace,
            rate_limit,
            tls_cert,
            tls_key,
            insecure_plaintext,
            device_token_ttl,
        } => {
            // Settings are checked before the address is printed, so a bad one fails first.
            cairn_server::store::StoreSpec::parse(&store)?;
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| cairn_server::tls::TlsFiles { cert, key });
            if let Some(t) = &tls {
                cairn_server::tls::server_config(t)?;
            } else if !listen.ip().is_loopback() && !insecure_plaintext {
                anyhow::bail!(
                    "--listen {listen} is not a loopback address: refusing to serve tokens and data in plaintext — pass --tls-cert and --tls-key (`cairn-server dev-cert` makes a development pair), or --insecure-plaintext behind a TLS proxy"
                );
            }
            cairn_server::admin::init_db(&db)?;
            let rt = tokio::runtime::Runtime::new()?;
            let config = cairn_server::ServeConfig {
                public_url,
                gc_interval: (!gc_interval.is_zero()).then_some(gc_interval),
                gc_grace,
                rate_limit: std::num::NonZeroU32::new(rate_limit),
                tls,
                device_token_ttl: (!device_token_ttl.is_zero()).then_some(device_token_ttl),
                ..cairn_server::ServeConfig::new(db, store)
            };
            rt.block_on(serve(listen, config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DevCert { out, hosts } => {
            cairn_server::tls::generate_dev_cert(&out, &hosts)?;
            eprintln!(
                "wrote {0}/ca.pem, {0}/cert.pem and {0}/key.pem: serve with --tls-cert {0}/cert.pem --tls-key {0}/key.pem; clients use --ca-cert {0}/ca.pem",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            db,
            store,
            grace,
            drop_before,
            json,
        } => {
            let drop_before_ms = drop_before.as_deref().map(parse_time).transpose()?;
            let opts = cairn_server::gc::GcOptions {
                grace,
                drop_before_ms,
            };
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(cairn_server::collect_garbage(&db, &store, &opts))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "dropped {} old versions; deleted {} chunks ({} bytes) and {} objects ({} bytes); {} expired staging uploads",
                    r.versions_dropped,
                    r.chunks_deleted,
                    r.chunk_bytes_freed,
                    r.objects_deleted,
                    r.object_bytes_freed,
                    r.staging_deleted
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Scrub {
            db,
            store,
            sample,
            json,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(cairn_server::scrub(&db, &store, sample))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "checked {} objects, {} chunks, {} bytes",
                    r.objects_checked, r.chunks_checked, r.bytes_checked
                );
                for b in &r.damaged {
                    eprintln!("DAMAGED chunk {} in {}: {}", b.chunk, b.object, b.reason);
                }
                if !r.damaged.is_empty() {
                    eprintln!(
                        "{} damaged chunks quarantined ({} current files hold them); devices that have the data upload it again on their next sync",
                        r.damaged.len(),
                        r.files_affected
                    );
                }
            }
            Ok(if r.damaged.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Namespace {
            command: NamespaceCommand::Create { name, db, owner },
        } => {
            cairn_server::admin::create_namespace_owned(&db, &name, owner.as_deref())?;
            eprintln!("created namespace {name:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Namespace {
            command:
                NamespaceCommand::Set {
                    name,
                    db,
                    retention,
                    quota,
                },
        } => {
            let quota = quota
                .map(|q| match q.as_str() {
                    "none" => Ok(None),
                    s => cairn_proto::units::parse_size(s)
                        .map(Some)
                        .map_err(|e| anyhow::anyhow!("--quota {e}")),
                })
                .transpose()?;
            let s = cairn_server::admin::set_namespace(&db, &name, retention, quota)?;
            println!("{}", serde_json::to_string(&s)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    password_stdin,
                    db,
                },
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (hex::encode(rand::random::<[u8; 12]>()), true)
            };
            cairn_server::admin::create_user(&db, &name, &password)?;
            if generated {
                println!("{password}");
                eprintln!("created user {name:?}; the password above is shown once");
            } else {
                eprintln!("created user {name:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::Revoke { name, device, db },
        } => {
            let n = cairn_server::admin::revoke(&db, &name, device.as_deref())?;
            eprintln!("revoked {n} device(s) of {name:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Share {
            namespace,
            user,
            role,
            db,
        } => {
            let role = (role != "none").then_some(role.as_str());
            cairn_server::admin::share(&db, &namespace, &user, role)?;
            eprintln!("{user:?} on {namespace:?}: {}", role.unwrap_or("removed"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    namespace,
                    device,
                    db,
                },
        } => {
            let token = cairn_server::admin::create_token(&db, &namespace, &device)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// RFC 3339 (`2026-11-23T10:00:00Z`) or milliseconds since the Unix epoch.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("--drop-before {s:?}: not RFC 3339 or epoch ms ({e})"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

async fn serve(listen: SocketAddr, config: cairn_server::ServeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {listen}: cannot bind: {e}"))?;
    let announce = |addr| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        Ok(())
    };
    cairn_server::serve_when_ready(listener, config, announce, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
