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
    /// A PEM CA certificate to trust for an https:// server (besides the system's roots).
    #[arg(long, env = "CAIRN_CA_CERT", global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
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
    /// List the retained versions of one file, newest first.
    Versions(VersionsArgs),
    /// Recent changes under PATH (default: the current folder): when, which device, what.
    Log(LogArgs),
    /// Make an old version current again (no data is copied), undelete a file, or bring a
    /// folder back to how it was at a time (`--at`). The local folder follows.
    Restore(RestoreArgs),
    /// Deleted files that can still be restored (`cairn restore PATH`).
    Trash(TrashArgs),
    /// The namespace's size: current files, stored bytes, dedup savings, old versions, quota.
    Usage(UsageArgs),
    /// Register this device with your user's password; the device token goes to the token file
    /// (mode 0600) in --home.
    Login(LoginArgs),
    /// Your user's devices; `cairn devices revoke ID` cuts one off at once.
    Devices(DevicesArgs),
    /// Share a namespace you own with a user as owner, edit or view (or `--remove` them).
    Share(ShareArgs),
    /// Who can use a namespace, and as what.
    Members(MembersArgs),
    /// The namespaces your user may sync, with your role in each.
    Namespaces,
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
    /// Diagnostics for benchmarks (not a stable interface).
    #[command(hide = true, subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Chunk and hash FILE the way `cairn push` does; print chunks, bytes and seconds.
    Chunk { file: PathBuf },
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
    /// The file: a local path inside a synced folder, or with --namespace a path inside the
    /// namespace (e.g. docs/report.pdf).
    pub file: String,
    /// The namespace FILE is a path in (default: the synced folder FILE is in).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// A file or folder: a local path inside a synced folder, or with --namespace a path inside
    /// the namespace. Default: the current directory (with --namespace: the whole namespace).
    pub path: Option<String>,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file or folder (a local path inside a synced folder, or with --namespace a path in it).
    pub path: String,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Restore this version of the file (see `cairn versions`).
    #[arg(long, conflicts_with = "at")]
    pub version: Option<u64>,
    /// Restore the file or folder as it was at this time: "2h ago", "2026-11-23T10:00:00Z",
    /// "2026-11-23 10:00" (UTC) or "@EPOCH_SECONDS". For a folder, files created since are
    /// deleted and deleted ones come back. Without --version or --at: undelete.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Say what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TrashArgs {
    /// Only under this folder (default: the current one; with --namespace: all of it).
    pub path: Option<String>,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// A path inside the synced folder whose namespace to measure (default: the current one).
    pub path: Option<String>,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Your user name (as `cairn-server user add` created it).
    #[arg(long)]
    pub user: String,
    /// A name for this device (default: the host name).
    #[arg(long)]
    pub device: Option<String>,
    /// Read the password from stdin (one line) instead of the CAIRN_PASSWORD environment
    /// variable or a prompt.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub action: Option<DevicesAction>,
}

#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Revoke device ID (see `cairn devices`): its token stops working, its streams end.
    Revoke { id: u64 },
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    pub namespace: String,
    pub user: String,
    #[arg(long, value_parser = ["owner", "edit", "view"], required_unless_present = "remove")]
    pub role: Option<String>,
    /// Take the user's access away.
    #[arg(long, conflicts_with = "role")]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    pub namespace: String,
}
