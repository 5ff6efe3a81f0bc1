//! The `cairn-server` binary: `serve`, and admin commands on the same database.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    },
    /// Namespaces (synced trees).
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Device tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum NamespaceCommand {
    /// Create a namespace.
    Create {
        name: String,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            store,
            public_url,
        } => {
            // Settings are checked before the address is printed, so a bad one fails first.
            cairn_server::store::StoreSpec::parse(&store)?;
            cairn_server::admin::init_db(&db)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(
                listen,
                cairn_server::ServeConfig {
                    db_path: db,
                    store,
                    public_url,
                },
            ))
        }
        Command::Namespace {
            command: NamespaceCommand::Create { name, db },
        } => {
            cairn_server::admin::create_namespace(&db, &name)?;
            eprintln!("created namespace {name:?}");
            Ok(())
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
            Ok(())
        }
    }
}

async fn serve(listen: SocketAddr, config: cairn_server::ServeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {listen}: cannot bind: {e}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    cairn_server::serve(listener, config, shutdown_signal()).await
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
