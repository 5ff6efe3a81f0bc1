//! Link flags for the `cairn` binary: how much of it a one-shot command keeps in memory.
//!
//! - `-z pack-relative-relocs` (DT_RELR) stores the binary's 42,000 relative relocations in a few
//!   KB instead of 1 MB of `.rela.dyn`, which the dynamic loader reads in full at every start.
//! - `--symbol-ordering-file=symbol-order.txt` puts the functions a push or a pull runs (about
//!   3,400 of them, 2.9 MB of the 18 MB of code; `scripts/symbol-order.sh` lists them) together at
//!   the front of the code. The kernel maps 64 KiB around each page a process touches, so code
//!   spread over the whole binary cost a push 9.4 MiB of resident code; packed, a quarter.
//!   A name the file lists that the build does not have (code changed since it was made, another
//!   toolchain) is skipped: the layout gets worse, the program stays the same.
//!
//! Both are tried first: a probe program is linked with the same `rustc`, target and flags, and
//! run. A linker or a C library without them (other than rustc's own lld on Linux with glibc
//! 2.36 or newer) links as before. Numbers: docs/BENCHMARKS.md, B6; reasons:
//! docs/ARCHITECTURE.md, "Code layout".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // The probe must run here, and these flags are ELF ones.
    if !env("TARGET").ends_with("-linux-gnu") || env("TARGET") != env("HOST") {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    let mut candidates = vec![vec!["-Wl,-z,pack-relative-relocs".to_owned()]];
    if order.exists() {
        candidates.push(vec![
            format!("-Wl,--symbol-ordering-file={}", order.display()),
            "-Wl,--no-warn-symbol-ordering".to_owned(),
        ]);
    }
    for flags in candidates {
        if links_and_runs(&out, &flags) {
            for f in flags {
                println!("cargo:rustc-link-arg-bins={f}");
            }
        }
    }
}

/// Does an empty program link with `flags` (as `cairn` will: same rustc, target and flags) and
/// run?
fn links_and_runs(out: &Path, flags: &[String]) -> bool {
    let (src, exe) = (out.join("probe.rs"), out.join("probe"));
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let target = std::env::var("TARGET").unwrap_or_default();
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linked = Command::new(rustc)
        .args(["--target", &target, "--edition", "2021", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(rustflags.split('\x1f').filter(|f| !f.is_empty()))
        .args(flags.iter().map(|f| format!("-Clink-arg={f}")))
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&exe).status().is_ok_and(|s| s.success())
}
