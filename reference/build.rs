//! Compiles the reference tracer's eBPF programs (`ebpf/*.bpf.c`) into `OUT_DIR`.
//!
//! Why a build script: the library embeds the BPF object with
//! `aya::include_bytes_aligned!`, so the object must exist before rustc runs. The
//! object is built with clang for the `bpf` target and then stripped of DWARF
//! (BTF is kept, aya needs it for the `.maps` section and global data), which
//! keeps the static guest binary small.
//!
//! `tracer.bpf.c` becomes four objects, one per combination of the kernel features it can
//! do without (see the comment at its top): `tracer.<output>.<read>.bpf.o` with output
//! `ringbuf` or `perf` and read `split` (bpf_probe_read_{kernel,user}) or `legacy`
//! (bpf_probe_read). `reference/src/ebpf.rs` embeds all four and loads the one its probes
//! choose.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The C sources, each becoming `<stem>.<variant>.bpf.o` in OUT_DIR for every variant.
const SOURCES: &[&str] = &["tracer.bpf.c"];

/// (variant name, extra clang arguments).
const VARIANTS: &[(&str, &[&str])] = &[
    ("ringbuf.split", &[]),
    ("ringbuf.legacy", &["-DCAPRING_LEGACY_READ"]),
    ("perf.split", &["-DCAPRING_PERF_OUTPUT"]),
    (
        "perf.legacy",
        &["-DCAPRING_PERF_OUTPUT", "-DCAPRING_LEGACY_READ"],
    ),
];

const INSTALL_HINT: &str = "install it with: apt-get install -y clang llvm libbpf-dev";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // A plain message is more readable than a panic backtrace.
            eprintln!("error: capring-reference build script: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let source_dir = manifest_dir.join("ebpf");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", source_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LLVM_OBJCOPY");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let include_dirs = system_include_dirs(&clang);

    for source in SOURCES {
        let source_path = source_dir.join(source);
        println!("cargo:rerun-if-changed={}", source_path.display());
        let stem = source.trim_end_matches(".c").trim_end_matches(".bpf");
        for (variant, defines) in VARIANTS {
            let object = out_dir.join(format!("{stem}.{variant}.bpf.o"));
            compile(&clang, &source_path, &object, &include_dirs, defines)?;
            strip_debug_info(&object);
        }
    }
    Ok(())
}

/// clang does not search the multiarch include directory (where `asm/types.h`
/// lives on Debian) when targeting `bpf`, so add it explicitly.
fn system_include_dirs(clang: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let multiarch = Command::new(clang)
        .arg("-print-multiarch")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".to_string());
    let candidate = Path::new("/usr/include").join(multiarch);
    if candidate.is_dir() {
        dirs.push(candidate);
    }
    dirs
}

fn compile(
    clang: &str,
    source: &Path,
    object: &Path,
    include_dirs: &[PathBuf],
    defines: &[&str],
) -> Result<(), String> {
    let mut cmd = Command::new(clang);
    cmd.args([
        "-target",
        "bpf",
        "-g",
        "-O2",
        "-D__TARGET_ARCH_x86",
        "-Wall",
    ]);
    for dir in include_dirs {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(defines);
    cmd.arg("-c").arg(source).arg("-o").arg(object);

    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "`{clang}` was not found (needed to compile the eBPF programs); {INSTALL_HINT}"
            ));
        }
        Err(e) => return Err(format!("could not run `{clang}`: {e}")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let mut message = format!(
            "compiling {} ({}) with `{clang}` failed:\n{stderr}",
            source.display(),
            defines.join(" ")
        );
        if stderr.contains("bpf/bpf_helpers.h") || stderr.contains("asm/types.h") {
            message.push_str(&format!("\nheaders are missing; {INSTALL_HINT}"));
        }
        return Err(message);
    }
    for line in stderr.lines().filter(|l| l.contains("warning:")) {
        println!("cargo:warning={line}");
    }
    Ok(())
}

/// Drops DWARF but keeps `.BTF`/`.BTF.ext`. Optional: without llvm-objcopy the
/// unstripped object still loads, it is only larger.
fn strip_debug_info(object: &Path) {
    let objcopy = env::var("LLVM_OBJCOPY").unwrap_or_else(|_| "llvm-objcopy".to_string());
    match Command::new(&objcopy).arg("--strip-debug").arg(object).status() {
        Ok(status) if status.success() => {}
        Ok(status) => println!("cargo:warning=`{objcopy} --strip-debug` failed ({status}); embedding the unstripped BPF object"),
        Err(_) => println!(
            "cargo:warning=`{objcopy}` not found; embedding the unstripped BPF object (apt-get install -y llvm)"
        ),
    }
}
