//! Link flags for the `cairn` binary.
//!
//! `-z pack-relative-relocs` (DT_RELR) stores the binary's 42,000 relative relocations in a few
//! KB instead of 1 MB of `.rela.dyn`, which the dynamic loader reads in full at every start:
//! that megabyte was a fifth of what a one-shot command's floor of resident memory is made of
//! (docs/BENCHMARKS.md, B6). It needs binutils 2.38 and glibc 2.36 (both in Debian 12); a probe
//! links and runs an empty program with it first, and without either the flag is left out.

use std::path::PathBuf;
use std::process::Command;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") && probe() {
        println!("cargo:rustc-link-arg-bins={FLAG}");
    }
}

/// Can the C compiler (rustc's linker driver on linux-gnu) link with the flag, and does the
/// result run here?
fn probe() -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let (src, exe) = (out.join("relr-probe.c"), out.join("relr-probe"));
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linked = Command::new("cc")
        .args(["-pie", "-fPIE", FLAG, "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&exe).status().is_ok_and(|s| s.success())
}
