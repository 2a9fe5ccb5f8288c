#!/usr/bin/env bash
# ci/tracer-check.sh: check a tracer's capability rings with capring, anywhere (a CI job, a
# laptop, a VM). It gets capring, runs `capring check` on the host with the tracer's profile,
# optionally runs the same catalog on real kernels in QEMU, and collects JUnit files and HTML
# reports under one directory. The GitHub Action in ci/tracer-action/ only calls this script.
#
# Usage:
#   ci/tracer-check.sh --profile PROFILE.toml [--capring PATH] [--out DIR]
#                      [--scenario GLOB]... [--jobs N] [--kernel SERIES]...
#
#   --profile PROFILE  the tracer's capring profile (see harness/PROFILE.md in capring).
#   --capring PATH     a capring binary, or a capring source directory (a checkout: capring
#                      is built there with cargo). Default: `capring` on PATH.
#   --out DIR          where results go (default: capring-results):
#                        DIR/junit/host.xml, DIR/host/ (results.json, runs/, report.tap),
#                        DIR/host/report.html, and per kernel K: DIR/junit/kernel-K.xml,
#                        DIR/kernel-K/ (the guest's results) and DIR/kernel-K/report.html.
#   --scenario GLOB    only scenarios matching GLOB (repeatable on the host, at most one with
#                      --kernel; default: the whole catalog).
#   --jobs N           scenarios run at once on the host (default 1; keep N <= CPUs).
#   --kernel SERIES    also run the catalog inside QEMU on this kernel (a series of
#                      capring's vm/kernels.toml: `cargo xtask kernels list`; repeatable) with `cargo xtask vm-test --kernel K --tracer
#                      PROFILE`. Needs --capring pointing at a capring source directory.
#
# Needs root (capring follows the tracer with ptrace and changes machine-wide settings such
# as perf_event_paranoid; the tracer loads eBPF programs).
#
# Exit status: 0 when every MUST clause passed everywhere, 1 when one failed (see the JUnit
# files and the HTML reports), 2 on bad input, other values when a step could not run.
set -euo pipefail

say() { echo "tracer-check: $*" >&2; }
bad() { say "$*"; exit 2; }

profile="" capring_arg="" out="capring-results" jobs=1
scenarios=() kernels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?}; shift 2 ;;
        --capring) capring_arg=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --scenario) scenarios+=("${2:?}"); shift 2 ;;
        --jobs) jobs=${2:?}; shift 2 ;;
        --kernel) kernels+=("${2:?}"); shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) bad "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$profile" ] || bad "--profile PROFILE.toml is required"
[ -f "$profile" ] || bad "no such profile: $profile"
profile=$(cd "$(dirname "$profile")" && pwd)/$(basename "$profile")

# capring itself: a binary, a source directory to build, or the one on PATH.
src=""
if [ -z "$capring_arg" ]; then
    capring=$(command -v capring) || bad "capring is not on PATH: pass --capring BINARY|SOURCE_DIR"
elif [ -d "$capring_arg" ]; then
    src=$(cd "$capring_arg" && pwd)
    [ -f "$src/harness/Cargo.toml" ] || bad "$capring_arg is not a capring source directory"
    say "building capring in $src"
    (cd "$src" && cargo build --release --locked -p capring-harness --bin capring) >&2
    capring="${CARGO_TARGET_DIR:-$src/target}/release/capring"
elif [ -x "$capring_arg" ]; then
    capring=$(cd "$(dirname "$capring_arg")" && pwd)/$(basename "$capring_arg")
else
    bad "--capring $capring_arg is neither an executable nor a directory"
fi
if [ ${#kernels[@]} -gt 0 ] && [ -z "$src" ]; then
    bad "the kernel matrix (--kernel) needs --capring pointing at a capring source directory"
fi
if [ ${#kernels[@]} -gt 0 ] && [ ${#scenarios[@]} -gt 1 ]; then
    bad "the kernel matrix takes at most one --scenario glob"
fi
say "$("$capring" --version)"

mkdir -p "$out/junit"
out=$(cd "$out" && pwd)
scenario_args=()
for s in ${scenarios[@]+"${scenarios[@]}"}; do scenario_args+=(--scenario "$s"); done

status=0
record() { # the worst exit status wins: 0 < 1 (failures) < 2 (bad input) < others
    local rc=$1
    if [ "$rc" -gt "$status" ]; then status=$rc; fi
}

say "host: capring check --tracer $profile"
rc=0
"$capring" check --tracer "$profile" --out "$out/host" --format junit --jobs "$jobs" \
    --html "$out/host/report.html" ${scenario_args[@]+"${scenario_args[@]}"} \
    >"$out/junit/host.xml" || rc=$?
say "host: exit $rc; JUnit $out/junit/host.xml, report $out/host/report.html"
record "$rc"

for k in ${kernels[@]+"${kernels[@]}"}; do
    say "kernel $k: cargo xtask vm-test --kernel $k --tracer $profile"
    rc=0
    vm_args=(xtask vm-test --kernel "$k" --tracer "$profile")
    for s in ${scenarios[@]+"${scenarios[@]}"}; do vm_args+=(--scenario "$s"); done
    (cd "$src" && cargo "${vm_args[@]}") >&2 || rc=$?
    results="${CARGO_TARGET_DIR:-$src/target}/vm-test/$k/results"
    dest="$out/kernel-$k"
    rm -rf "$dest"
    if [ -d "$results" ]; then
        cp -r "$results" "$dest"
        [ -f "$dest/junit.xml" ] && cp "$dest/junit.xml" "$out/junit/kernel-$k.xml"
        "$capring" report "$dest" --quiet --color never --html "$dest/report.html" >/dev/null || true
        say "kernel $k: exit $rc; report $dest/report.html"
    else
        say "kernel $k: exit $rc; the guest left no results"
        [ "$rc" -ne 0 ] || rc=1
    fi
    record "$rc"
done

say "done: exit $status (results in $out)"
exit "$status"
