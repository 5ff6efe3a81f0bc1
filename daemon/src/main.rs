//! The `cairn` binary: parse the command line, set up logging, run one command, map the exit code.

use std::process::ExitCode;

use cairn::cli::{Cli, Command};
use cairn::commands::{self, Ui};
use cairn::config::Config;
use cairn::error::{Error, exit};
use cairn::history;
use clap::Parser;

mod debug;
mod quickstart;

/// Fixes glibc's mmap threshold at 4 MiB. Left alone, glibc raises it to the largest block freed
/// so far (up to 32 MiB), after which the big lists of a scan or a listing (10 MB and more for
/// 100k files) are carved from per-thread heaps that keep their pages once freed: a no-change push
/// of 100k files peaked at 92 MiB, 70 MiB with the threshold fixed (docs/BENCHMARKS.md, B6).
/// Blocks under 4 MiB (read buffers reused file after file) stay in the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets an allocator tunable, which glibc allows at any time from any
    // thread; it takes no pointers. A refusal (0) keeps the default: more memory, nothing else.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(&cli);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<Error>()
                .map_or(exit::ERROR, Error::exit_code);
            eprintln!("cairn: error: {e:#}");
            code
        }
    };
    ExitCode::from(code as u8)
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "cairn=info,warn",
        (false, 2) => "cairn=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let ui = Ui {
        quiet: cli.quiet,
        json: cli.json,
    };
    if let Command::Quickstart = cli.command {
        // Needs no server or token: it starts its own and creates both.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(quickstart::run(ui))?;
        return Ok(exit::OK);
    }
    if let Command::Debug(cairn::cli::DebugCommand::Chunk { file }) = &cli.command {
        debug::chunk(file, ui.json)?;
        return Ok(exit::OK);
    }
    if let Command::Login(a) = &cli.command {
        // Login needs no token (it makes one); the placeholder satisfies the resolver and the
        // server's Login ignores it.
        let mut cfg = Config::resolve(
            cli.server.clone(),
            Some("login".into()),
            cli.home.as_deref(),
        )?;
        if let Some(ca) = &cli.ca_cert {
            cfg.ca_cert = Some(ca.clone());
        }
        let password = read_password(a.password_stdin)?;
        let device = a.device.clone().unwrap_or_else(default_device_name);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return Ok(rt.block_on(cairn::account::login(&cfg, &a.user, &device, &password, ui))?);
    }
    let mut cfg = Config::resolve(cli.server.clone(), cli.token.clone(), cli.home.as_deref())?;
    if let Some(ca) = &cli.ca_cert {
        cfg.ca_cert = Some(ca.clone());
    }
    tracing::debug!(?cfg, "config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &cli.command {
        Command::Push(a) => {
            let s = rt.block_on(commands::push(
                &cfg,
                &a.dir,
                &a.namespace,
                ui,
                a.allow_deletes,
            ))?;
            let human = format!(
                "pushed {}: {} files ({} bytes) scanned, {} chunks, {} uploaded ({} bytes), {} bytes deduplicated, {} committed, {} deleted, {} conflicts in {:.2}s",
                a.dir.display(),
                s.files,
                s.bytes_scanned,
                s.chunks,
                s.chunks_uploaded,
                s.bytes_uploaded,
                s.bytes_deduplicated,
                s.committed,
                s.deleted,
                s.conflicts,
                s.seconds
            );
            warn(ui, &s.warnings);
            let code = report(ui, &s, &human, &s.errors);
            Ok(if s.quota_exceeded > 0 {
                exit::REFUSED
            } else {
                code
            })
        }
        Command::Pull(a) => {
            let s = rt.block_on(commands::pull(
                &cfg,
                &a.dir,
                &a.namespace,
                ui,
                a.allow_deletes,
            ))?;
            let human = format!(
                "pulled into {}: {} files on the server, {} written, {} chunks ({} bytes) downloaded, {} deleted, {} conflicts in {:.2}s",
                a.dir.display(),
                s.files,
                s.files_written,
                s.chunks_downloaded,
                s.bytes_downloaded,
                s.deleted,
                s.conflicts,
                s.seconds
            );
            warn(ui, &s.warnings);
            Ok(report(ui, &s, &human, &s.errors))
        }
        Command::Add(a) => {
            let root = cairn::live::add(&cfg, &a.dir, &a.namespace)?;
            if ui.json {
                println!(
                    "{}",
                    serde_json::json!({ "folder": root, "namespace": a.namespace })
                );
            } else if !ui.quiet {
                eprintln!(
                    "syncing {} with namespace {} (run `cairn daemon`)",
                    root.display(),
                    a.namespace
                );
            }
            Ok(exit::OK)
        }
        Command::Remove(a) => {
            let root = cairn::live::remove(&cfg, &a.dir)?;
            if ui.json {
                println!("{}", serde_json::json!({ "folder": root, "removed": true }));
            } else if !ui.quiet {
                eprintln!("no longer syncing {}", root.display());
            }
            Ok(exit::OK)
        }
        Command::Daemon(a) => {
            let events = cairn::events::Events {
                json: ui.json,
                quiet: ui.quiet,
            };
            let interval = a.scan_interval.map(std::time::Duration::from_secs);
            rt.block_on(cairn::live::daemon(&cfg, interval, events))?;
            Ok(exit::OK)
        }
        Command::Status(a) => {
            let rows = cairn::live::status(&cfg, a.dir.as_deref())?;
            if ui.json {
                println!("{}", serde_json::json!({ "folders": rows }));
            } else {
                for r in &rows {
                    println!(
                        "{}\t{}\t{}\t{} files, {} bytes left{}",
                        r.folder.display(),
                        r.namespace,
                        r.state,
                        r.files_left,
                        r.bytes_left,
                        if r.detail.is_empty() {
                            String::new()
                        } else {
                            format!("\t{}", r.detail)
                        }
                    );
                    for e in &r.errors {
                        println!("  {}: {}", e.path, e.reason);
                    }
                    for w in &r.warnings {
                        println!("  warning: {}: {}", w.path, w.reason);
                    }
                }
            }
            let bad = rows
                .iter()
                .any(|r| r.state == "error" || !r.errors.is_empty());
            Ok(if bad { exit::PARTIAL } else { exit::OK })
        }
        Command::Resume(a) => {
            let r = cairn::resume::resume(&cfg, &a.dir, a.allow_deletes)?;
            if ui.json {
                println!("{}", serde_json::json!(r));
            } else if !ui.quiet {
                eprintln!("{}", r.message);
            }
            Ok(exit::OK)
        }
        Command::Quickstart => unreachable!("quickstart returns before the config is resolved"),
        Command::Versions(a) => {
            let t = history::resolve(&cfg, Some(&a.file), a.namespace.as_deref())?;
            Ok(rt.block_on(history::versions(&cfg, &t, ui))?)
        }
        Command::Log(a) => {
            let t = history::resolve(&cfg, a.path.as_deref(), a.namespace.as_deref())?;
            Ok(rt.block_on(history::log(&cfg, &t, a.limit, ui))?)
        }
        Command::Restore(a) => {
            let t = history::resolve(&cfg, Some(&a.path), a.namespace.as_deref())?;
            let args = history::RestoreArgs {
                version: a.version,
                at: a.at.clone(),
                dry_run: a.dry_run,
            };
            Ok(rt.block_on(history::restore(&cfg, &t, &args, ui))?)
        }
        Command::Trash(a) => {
            let t = history::resolve(&cfg, a.path.as_deref(), a.namespace.as_deref())?;
            Ok(rt.block_on(history::trash(&cfg, &t, ui))?)
        }
        Command::Login(_) => unreachable!("login returns before the token is resolved"),
        Command::Debug(_) => unreachable!("debug returns before the config is resolved"),
        Command::Devices(a) => Ok(match a.action {
            None => rt.block_on(cairn::account::devices(&cfg, ui))?,
            Some(cairn::cli::DevicesAction::Revoke { id }) => {
                rt.block_on(cairn::account::revoke(&cfg, id, ui))?
            }
        }),
        Command::Share(a) => {
            let role = if a.remove { None } else { a.role.as_deref() };
            Ok(rt.block_on(cairn::account::share(&cfg, &a.namespace, &a.user, role, ui))?)
        }
        Command::Members(a) => Ok(rt.block_on(cairn::account::members(&cfg, &a.namespace, ui))?),
        Command::Namespaces => Ok(rt.block_on(cairn::account::namespaces(&cfg, ui))?),
        Command::Usage(a) => {
            let t = history::resolve(&cfg, a.path.as_deref(), a.namespace.as_deref())?;
            Ok(rt.block_on(history::usage(&cfg, &t, ui))?)
        }
    }
}

/// The password for `cairn login`: stdin with `--password-stdin`, else CAIRN_PASSWORD, else a
/// prompt on the terminal (never echoed).
fn read_password(stdin: bool) -> anyhow::Result<String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password("password: ").map_err(|e| {
        anyhow::anyhow!("cannot read a password ({e}); use --password-stdin or CAIRN_PASSWORD")
    })
}

fn default_device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".to_owned())
}

/// Per-path warnings (the paths synced): on stderr, as errors are, unless `-q`.
fn warn(ui: Ui, warnings: &[String]) {
    if !ui.quiet {
        for w in warnings {
            eprintln!("cairn: warning: {w}");
        }
    }
}

/// Prints the summary (JSON on stdout, or a line on stderr) and per-path errors; returns the exit code.
fn report<S: serde::Serialize>(ui: Ui, summary: &S, human: &str, errors: &[String]) -> i32 {
    if ui.json {
        // A summary of plain numbers and strings always serialises.
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
    } else if !ui.quiet {
        eprintln!("{human}");
    }
    for e in errors {
        eprintln!("cairn: {e}");
    }
    if errors.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    }
}
