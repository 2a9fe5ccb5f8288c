//! Which of the four BPF objects to load, and reading the events they produce.
//!
//! Why this module exists: the reference must run on kernels without the BPF ring buffer
//! (BPF_MAP_TYPE_RINGBUF) and without `bpf_probe_read_{kernel,user}[_str]` (Ubuntu 20.04's
//! 5.4, for one). `build.rs` compiles `tracer.bpf.c` once per combination; [`Support::probe`]
//! asks the running kernel (never its version string) and [`Support::object`] picks the
//! object. `EventSource` hides the difference between one ring buffer and one perf buffer
//! per CPU from the rest of the tracer.
//!
//! The probes are `bpf(2)` calls, so they run in the Required ring, right before loading.

use std::io;
use std::os::fd::AsRawFd;

use aya::maps::perf::{PerfEvent, PerfEventArrayBuffer};
use aya::maps::{MapData, MapType, PerfEventArray, RingBuf};
use serde::Serialize;

/// How events leave the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// One BPF ring buffer shared by all CPUs (`bpf_ringbuf_reserve`/`submit`).
    RingBuf,
    /// A BPF perf event array: one perf buffer per CPU (`bpf_perf_event_output`).
    PerfArray,
}

/// Which helpers read kernel and user memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryRead {
    /// `bpf_probe_read_{kernel,user}[_str]`.
    Split,
    /// `bpf_probe_read[_str]` (the older helpers, for kernels without the split ones).
    Legacy,
}

/// What the running kernel supports, as far as the choice of object goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Support {
    /// The event channel the object writes to: one ring buffer, or per-CPU perf buffers.
    pub output: Output,
    /// The helpers the object reads kernel and user memory with.
    pub read: MemoryRead,
}

static RINGBUF_SPLIT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.ringbuf.split.bpf.o"));
static RINGBUF_LEGACY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.ringbuf.legacy.bpf.o"));
static PERF_SPLIT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.perf.split.bpf.o"));
static PERF_LEGACY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.perf.legacy.bpf.o"));

impl Support {
    /// Asks the kernel: one `BPF_MAP_CREATE` of a ring buffer (aya's `is_map_supported`),
    /// and aya's own probe of `bpf_probe_read_kernel` from `aya::features()`, which the
    /// caller has already run (the four split helpers arrived together). Needs the Required
    /// ring's capabilities. A probe that fails for another reason than "unknown to this
    /// kernel" (e.g. EPERM) answers with the newer variant, so that loading it reports the
    /// real problem.
    pub fn probe() -> Support {
        let output = match aya::sys::is_map_supported(MapType::RingBuf) {
            Ok(false) => Output::PerfArray,
            Ok(true) | Err(_) => Output::RingBuf,
        };
        let read = if aya::features().bpf_probe_read_kernel() {
            MemoryRead::Split
        } else {
            MemoryRead::Legacy
        };
        Support { output, read }
    }

    /// The compiled object for this combination (see `build.rs`).
    pub fn object(self) -> &'static [u8] {
        match (self.output, self.read) {
            (Output::RingBuf, MemoryRead::Split) => RINGBUF_SPLIT,
            (Output::RingBuf, MemoryRead::Legacy) => RINGBUF_LEGACY,
            (Output::PerfArray, MemoryRead::Split) => PERF_SPLIT,
            (Output::PerfArray, MemoryRead::Legacy) => PERF_LEGACY,
        }
    }
}

impl std::fmt::Display for Support {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let output = match self.output {
            Output::RingBuf => "BPF ring buffer",
            Output::PerfArray => "perf event array (no BPF ring buffer here)",
        };
        let read = match self.read {
            MemoryRead::Split => "bpf_probe_read_{kernel,user}",
            MemoryRead::Legacy => "bpf_probe_read (no bpf_probe_read_kernel here)",
        };
        write!(f, "{output}, {read}")
    }
}

/// Pages of each per-CPU perf buffer (a power of two). 64 pages (256 KiB) per CPU: half of
/// what the ring buffer holds for all CPUs together (128 KiB per CPU lost events on a busy
/// 2-CPU host), and within the 516 KiB per CPU that `perf_event_mlock_kb` grants before
/// RLIMIT_MEMLOCK is charged.
pub(crate) const PERF_PAGES: usize = 64;

/// Where user space reads events from.
pub(crate) enum EventSource {
    /// The object's `EVENTS` ring buffer, shared by all CPUs; records arrive in one order.
    Ring(RingBuf<MapData>),
    /// The object's `EVENTS` perf event array, opened on every online CPU.
    Perf {
        /// One mapped perf buffer per online CPU ([`PERF_PAGES`] pages each).
        buffers: Vec<PerfEventArrayBuffer<MapData>>,
        /// Samples the kernel reported lost (PERF_RECORD_LOST) so far.
        lost: u64,
    },
}

impl EventSource {
    /// Opens the perf buffers of every online CPU (perf_event_open: the Required ring).
    pub(crate) fn perf(mut array: PerfEventArray<MapData>) -> Result<EventSource, String> {
        let cpus = aya::util::online_cpus().map_err(|(path, e)| format!("reading {path}: {e}"))?;
        let mut buffers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let buffer = array
                .open(cpu, Some(PERF_PAGES))
                .map_err(|e| format!("opening the perf buffer of CPU {cpu}: {e}"))?;
            buffers.push(buffer);
        }
        Ok(EventSource::Perf { buffers, lost: 0 })
    }

    /// The descriptors to wait on.
    pub(crate) fn poll_fds(&self) -> Vec<libc::pollfd> {
        let fd = |raw| libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        match self {
            EventSource::Ring(ring) => vec![fd(ring.as_raw_fd())],
            EventSource::Perf { buffers, .. } => {
                buffers.iter().map(|b| fd(b.as_raw_fd())).collect()
            }
        }
    }

    /// Hands every available record to `each`, in order per CPU.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        match self {
            EventSource::Ring(ring) => {
                while let Some(record) = ring.next() {
                    each(&record);
                }
            }
            EventSource::Perf { buffers, lost } => {
                let mut joined = Vec::new();
                for buffer in buffers {
                    buffer.for_each(|event| match event {
                        PerfEvent::Sample { head, tail: [] } => each(head),
                        PerfEvent::Sample { head, tail } => {
                            // A sample that wraps around the end of the buffer.
                            joined.clear();
                            joined.extend_from_slice(head);
                            joined.extend_from_slice(tail);
                            each(&joined);
                        }
                        PerfEvent::Lost { count } => *lost += count,
                    });
                }
            }
        }
    }

    /// Samples the perf buffers reported lost (always 0 for the ring buffer, whose losses
    /// the BPF side counts itself).
    pub(crate) fn perf_lost(&self) -> u64 {
        match self {
            EventSource::Ring(_) => 0,
            EventSource::Perf { lost, .. } => *lost,
        }
    }
}

/// Waits until one of `fds` is readable or `millis` pass. Returns false when a signal
/// interrupted the wait (not an error: the caller looks at its stop flag at once).
pub(crate) fn wait(fds: &mut [libc::pollfd], millis: i32) -> io::Result<bool> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the whole call, and
    // its length is passed with it.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
        return Ok(false);
    }
    Ok(true)
}
