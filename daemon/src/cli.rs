//! The command line (clap derive): global flags and subcommands, exactly as CLI.md names them.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "Cairn: content-addressed file sync on your own storage")]
pub struct Cli {
    /// The metadata server's URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "CAIRN_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The device token (prefer CAIRN_TOKEN, config.toml or the token file: command lines leak).
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// This device's config and state directory (default: the XDG config and data dirs).
    #[arg(long, env = "CAIRN_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print one JSON object (the summary) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload DIR's changes to the namespace (one shot; never changes local files except to
    /// rename a file the server stored as a conflict copy).
    Push(FolderArgs),
    /// Download the namespace's changes into DIR (one shot).
    Pull(FolderArgs),
    /// List the versions of one file, newest first.
    Versions(VersionsArgs),
}

#[derive(Debug, Args)]
pub struct FolderArgs {
    /// The local folder.
    pub dir: PathBuf,
    /// The namespace (synced tree) on the server.
    #[arg(long, short = 'n')]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The file's path inside the namespace (e.g. docs/report.pdf).
    pub file: String,
    #[arg(long, short = 'n')]
    pub namespace: String,
}
