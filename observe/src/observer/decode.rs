//! Turning a traced system call's registers and memory into a typed [`Call`].
//!
//! The observer reads the arguments at the seccomp stop, before the kernel runs the call,
//! with `process_vm_readv` (the tracee is stopped, so its memory is stable). Unreadable
//! memory never fails the run: the decoded call just says less (`data: None`, `"?"`).

use capring_spec::caps::CapSet;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::timeline::{BpfCmd, Call, CapData, PrctlOp};

fn read_mem(tid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 || len == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        Pid::from_raw(tid),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )
    .ok()?;
    (n == len).then_some(buf)
}

/// A NUL-terminated string from the tracee, reading page by page (at most 4096 bytes).
fn read_cstr(tid: i32, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut a = addr;
    while out.len() < 4096 {
        let chunk = (4096 - (a % 4096)) as usize;
        let bytes = read_mem(tid, a, chunk)?;
        if let Some(i) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..i]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&bytes);
        a += chunk as u64;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// An argv array (at most 32 entries; a longer one ends with "…").
pub(crate) fn read_argv(tid: i32, addr: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..32u64 {
        let Some(p) = read_mem(tid, addr + 8 * i, 8) else {
            break;
        };
        let p = u64::from_ne_bytes(p.try_into().expect("8 bytes"));
        if p == 0 {
            return out;
        }
        out.push(read_cstr(tid, p).unwrap_or_else(|| "?".into()));
    }
    if addr != 0 {
        out.push("…".into());
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn capset(tid: i32, a: [u64; 6]) -> Call {
    let Some(hdr) = read_mem(tid, a[0], 8) else {
        return Call::Capset {
            target: 0,
            data: None,
        };
    };
    let (version, target) = (u32_at(&hdr, 0), u32_at(&hdr, 4) as i32);
    let target = if target == tid { 0 } else { target };
    let words = match version {
        0x1998_0330 => 1,
        0x2007_1026 | 0x2008_0522 => 2,
        _ => return Call::Capset { target, data: None },
    };
    let data = read_mem(tid, a[1], 12 * words).map(|data| {
        let field = |i: usize| {
            let lo = u32_at(&data, 4 * i) as u64;
            let hi = if words == 2 {
                u32_at(&data, 12 + 4 * i) as u64
            } else {
                0
            };
            CapSet::from_bits(lo | hi << 32)
        };
        CapData {
            effective: field(0),
            permitted: field(1),
            inheritable: field(2),
        }
    });
    Call::Capset { target, data }
}

fn prctl(a: [u64; 6]) -> Call {
    let (op, arg) = match (a[0] as i32, a[1]) {
        (libc::PR_CAPBSET_DROP, cap) => (PrctlOp::CapbsetDrop, cap),
        (libc::PR_CAP_AMBIENT, 1) => (PrctlOp::AmbientIsSet, a[2]),
        (libc::PR_CAP_AMBIENT, 2) => (PrctlOp::AmbientRaise, a[2]),
        (libc::PR_CAP_AMBIENT, 3) => (PrctlOp::AmbientLower, a[2]),
        (libc::PR_CAP_AMBIENT, 4) => (PrctlOp::AmbientClearAll, 0),
        (libc::PR_SET_KEEPCAPS, v) => (PrctlOp::SetKeepcaps, v),
        (libc::PR_SET_SECUREBITS, v) => (PrctlOp::SetSecurebits, v),
        (other, v) => (PrctlOp::Other(other as u64), v),
    };
    Call::Prctl { op, arg }
}

/// A uid/gid argument: -1 ("unchanged") stays -1.
fn id(v: u64) -> i64 {
    let v = v as u32;
    if v == u32::MAX {
        -1
    } else {
        i64::from(v)
    }
}

fn bpf(tid: i32, a: [u64; 6]) -> Call {
    let cmd = BpfCmd(a[0] as u32);
    let first = || read_mem(tid, a[1], 4).map(|b| u32_at(&b, 0));
    Call::Bpf {
        cmd,
        prog_type: (cmd == BpfCmd::PROG_LOAD).then(first).flatten(),
        map_type: (cmd == BpfCmd::MAP_CREATE).then(first).flatten(),
    }
}

fn perf_event_open(tid: i32, a: [u64; 6]) -> Call {
    let (kind, config) = read_mem(tid, a[0], 16)
        .map(|b| {
            (
                u32_at(&b, 0),
                u64::from_ne_bytes(b[8..16].try_into().expect("8 bytes")),
            )
        })
        .unwrap_or((u32::MAX, 0));
    Call::PerfEventOpen {
        kind,
        config,
        target_pid: a[1] as i32,
        cpu: a[2] as i32,
    }
}

/// The typed call of system call `nr` with arguments `a`, made by thread `tid`.
pub(crate) fn decode(tid: i32, nr: i64, a: [u64; 6]) -> Call {
    let set_id = |ids: &[u64]| Call::SetId {
        name: capring_spec::sys::syscall_name(nr)
            .unwrap_or("set?id")
            .to_string(),
        ids: ids.iter().map(|v| id(*v)).collect(),
    };
    match nr {
        libc::SYS_capset => capset(tid, a),
        libc::SYS_prctl => prctl(a),
        libc::SYS_setuid | libc::SYS_setgid | libc::SYS_setfsuid | libc::SYS_setfsgid => {
            set_id(&a[..1])
        }
        libc::SYS_setreuid | libc::SYS_setregid => set_id(&a[..2]),
        libc::SYS_setresuid | libc::SYS_setresgid => set_id(&a[..3]),
        libc::SYS_setgroups => {
            let n = (a[0] as usize).min(64);
            let gids = read_mem(tid, a[1], 4 * n)
                .map(|b| b.chunks(4).map(|c| u32_at(c, 0)).collect())
                .unwrap_or_default();
            Call::Setgroups { gids }
        }
        libc::SYS_execve => Call::Execve {
            path: read_cstr(tid, a[0]).unwrap_or_else(|| "?".into()),
            argv: read_argv(tid, a[1]),
        },
        libc::SYS_execveat => Call::Execve {
            path: read_cstr(tid, a[1]).unwrap_or_else(|| "?".into()),
            argv: read_argv(tid, a[2]),
        },
        libc::SYS_bpf => bpf(tid, a),
        libc::SYS_perf_event_open => perf_event_open(tid, a),
        libc::SYS_socket => Call::Socket {
            domain: a[0] as i32,
            kind: a[1] as i32,
            protocol: a[2] as i32,
        },
        libc::SYS_init_module => Call::ModuleLoad {
            name: "(image in memory)".into(),
        },
        libc::SYS_finit_module => Call::ModuleLoad {
            name: std::fs::read_link(format!("/proc/{tid}/fd/{}", a[0] as i32))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| format!("fd {}", a[0] as i32)),
        },
        nr => Call::Unknown { nr },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_only_calls_decode_without_memory() {
        let me = std::process::id() as i32;
        let drop = decode(me, libc::SYS_prctl, [24, 39, 0, 0, 0, 0]);
        assert_eq!(
            drop,
            Call::Prctl {
                op: PrctlOp::CapbsetDrop,
                arg: 39
            }
        );
        let clear = decode(me, libc::SYS_prctl, [47, 4, 0, 0, 0, 0]);
        assert!(matches!(
            clear,
            Call::Prctl {
                op: PrctlOp::AmbientClearAll,
                ..
            }
        ));
        let ids = decode(
            me,
            libc::SYS_setresuid,
            [65534, u32::MAX as u64, 0, 0, 0, 0],
        );
        assert_eq!(
            ids,
            Call::SetId {
                name: "setresuid".into(),
                ids: vec![65534, -1, 0]
            }
        );
        let raw = decode(me, libc::SYS_socket, [17, 3, 768, 0, 0, 0]);
        assert!(raw.is_privileged());
    }

    #[test]
    fn memory_arguments_are_read_from_the_process() {
        // Our own memory stands in for a tracee's: process_vm_readv works on ourselves.
        let me = std::process::id() as i32;
        let hdr: [u32; 2] = [0x2008_0522, 0];
        let data: [u32; 6] = [1 << 5, 1 << 5, 0, 1 << 7, 1 << 7, 0]; // cap_kill | cap_bpf (39 = 32 + 7)
        let call = decode(
            me,
            libc::SYS_capset,
            [hdr.as_ptr() as u64, data.as_ptr() as u64, 0, 0, 0, 0],
        );
        let Call::Capset {
            target: 0,
            data: Some(d),
        } = call
        else {
            panic!("{call:?}");
        };
        assert_eq!(d.effective.names(), vec!["cap_kill", "cap_bpf"]);
        assert!(d.inheritable.is_empty());
        let attr: [u32; 4] = [17, 0, 0, 0];
        let load = decode(me, libc::SYS_bpf, [5, attr.as_ptr() as u64, 16, 0, 0, 0]);
        assert!(matches!(
            load,
            Call::Bpf {
                prog_type: Some(17),
                ..
            }
        ));
        let path = c"/bin/true";
        let argv = [path.as_ptr() as u64, 0u64];
        let exec = decode(
            me,
            libc::SYS_execve,
            [path.as_ptr() as u64, argv.as_ptr() as u64, 0, 0, 0, 0],
        );
        assert_eq!(
            exec,
            Call::Execve {
                path: "/bin/true".into(),
                argv: vec!["/bin/true".into()]
            }
        );
    }
}
