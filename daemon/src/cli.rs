//! The command line (clap derive): global flags and subcommands, exactly as CLI.md names them.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: content-addressed file sync on your own storage"
)]
pub struct Cli {
    /// The metadata server's URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "CAIRN_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The device token (prefer CAIRN_TOKEN, config.toml or the token file: command lines leak).
    #[arg(
        long,
        env = "CAIRN_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
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
    Push(TransferArgs),
    /// Download the namespace's changes into DIR (one shot).
    Pull(TransferArgs),
    /// List the versions of one file, newest first.
    Versions(VersionsArgs),
    /// Sync DIR continuously with the namespace (writes the `.cairn` root marker).
    Add(FolderArgs),
    /// Stop syncing DIR (its files stay).
    Remove(RemoveArgs),
    /// Sync every added folder both ways until SIGTERM/SIGINT (`--json`: JSON lines of events).
    Daemon(DaemonArgs),
    /// Per folder: up_to_date / syncing / paused / offline / error, what is left, failed paths.
    Status(StatusArgs),
    /// Start an embedded server on a temp dir, push a sample folder, pull it elsewhere, and say
    /// what happened.
    Quickstart,
    /// Lift the delete guard of a folder the daemon syncs: `--allow-deletes` lets the deletions
    /// it holds through once.
    Resume(ResumeArgs),
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The synced folder.
    pub dir: PathBuf,
    /// Apply the deletions the delete guard holds now (once; the guard is armed again after).
    #[arg(long)]
    pub allow_deletes: bool,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The local folder.
    pub dir: PathBuf,
    /// The namespace (synced tree) on the server.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Apply deletions even past the delete guard's limits (config `[delete_guard]`: more than
    /// 50% of the folder's files, from 10 files on, or more than 1000 files).
    #[arg(long)]
    pub allow_deletes: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Seconds between full scans (the safety net behind the watcher); default: config
    /// `scan_interval`, else 600.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub scan_interval: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this folder.
    pub dir: Option<PathBuf>,
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
