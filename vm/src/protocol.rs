//! The line protocol between the guest agent and the host.
//!
//! Every protocol line has the form `@@CAPRING <nonce> <VERB> <args…>` and is
//! written by the agent to the second serial port (`ttyS1`). Lines that do not
//! start with the marker, or carry another nonce, are not protocol lines and
//! are ignored by [`Transcript::feed`].

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;

/// Marker every protocol line starts with.
pub const MARKER: &str = "@@CAPRING";

/// Raw bytes per `FILE` line (base64 makes it 4/3 as long).
pub const FILE_CHUNK: usize = 3 * 1024;

/// The largest file a `deflate` transfer may inflate to (a corrupt stream must not exhaust
/// the host's memory).
pub const MAX_INFLATED: usize = 512 << 20;

/// Compresses a result file for the serial line (zlib stream, level 6). Every byte on `ttyS1`
/// costs an emulated port write, and JSON timelines shrink about 40 times: a catalog's
/// timelines went from 17 s of transfer to well under one.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
}

/// How a guest command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (`code=N` on the wire).
    Code(i32),
    /// A signal killed it (`signal=N`, the signal number).
    Signal(i32),
    /// The agent killed its process group after the command's `timeout_secs` (`timeout`).
    Timeout,
}

impl ExitStatus {
    /// Exit code 0 (a command's own `ok_codes` are judged by
    /// [`crate::settings::GuestCommand::accepts`]).
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code={c}"),
            ExitStatus::Signal(s) => write!(f, "signal={s}"),
            ExitStatus::Timeout => write!(f, "timeout"),
        }
    }
}

impl std::str::FromStr for ExitStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "timeout" {
            return Ok(ExitStatus::Timeout);
        }
        if let Some(v) = s.strip_prefix("code=") {
            return v.parse().map(ExitStatus::Code).map_err(|_| ());
        }
        if let Some(v) = s.strip_prefix("signal=") {
            return v.parse().map(ExitStatus::Signal).map_err(|_| ());
        }
        Err(())
    }
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `HELLO <release> <clocksource>`: the agent is up (PID 1, file systems mounted,
    /// settings read). Starts the test deadline on the host.
    Hello {
        /// `uname -r` of the guest kernel.
        release: String,
        /// The guest's current clocksource (`unknown` when not readable).
        clocksource: String,
    },
    /// `INFO <text>`: something worth showing about the guest (a failed mount, a fallback).
    Info(String),
    /// `START <name>`: the command of that name starts; OUT and ERR lines belong to it.
    Start {
        /// The command's name ([`crate::settings::GuestCommand::name`]).
        name: String,
    },
    /// `OUT <line>`: one line of the running command's stdout (without the newline).
    Out(String),
    /// `ERR <line>`: one line of its stderr, or an error of the agent about it.
    Err(String),
    /// `FILE <path> <base64>`: the next bytes (at most [`FILE_CHUNK`]) of a result file.
    File {
        /// Path relative to the results directory ([`safe_relpath`]).
        path: String,
        /// The decoded bytes of this line.
        chunk: Vec<u8>,
    },
    /// The file is complete: `size` bytes were sent in `FILE` chunks; when `deflated`, those
    /// bytes are a zlib stream ([`deflate`]) of the file.
    FileEnd {
        /// Path relative to the results directory.
        path: String,
        /// Bytes sent in FILE chunks (compressed ones when `deflated`).
        size: u64,
        /// The chunks are a zlib stream (`FILEEND <path> <size> deflate`).
        deflated: bool,
    },
    /// `EXIT <name> <status>`: the command ended (its result files were sent before).
    Exit {
        /// The command's name.
        name: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// `DONE ok|fail`: every command ran; `ok` when each exited with a status it accepts.
    /// Nothing may follow.
    Done {
        /// Whether every command passed.
        ok: bool,
    },
}

impl Event {
    /// Renders the event as one protocol line (without the newline).
    pub fn to_line(&self, nonce: &str) -> String {
        let body = match self {
            Event::Hello {
                release,
                clocksource,
            } => format!("HELLO {release} {clocksource}"),
            Event::Info(t) => format!("INFO {t}"),
            Event::Start { name } => format!("START {name}"),
            Event::Out(t) => format!("OUT {t}"),
            Event::Err(t) => format!("ERR {t}"),
            Event::File { path, chunk } => format!(
                "FILE {path} {}",
                base64::engine::general_purpose::STANDARD.encode(chunk)
            ),
            Event::FileEnd {
                path,
                size,
                deflated,
            } => format!(
                "FILEEND {path} {size}{}",
                if *deflated { " deflate" } else { "" }
            ),
            Event::Exit { name, status } => format!("EXIT {name} {status}"),
            Event::Done { ok } => format!("DONE {}", if *ok { "ok" } else { "fail" }),
        };
        format!("{MARKER} {nonce} {body}")
    }
}

/// A protocol line that carried the right nonce but could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A known verb with missing or unparsable arguments (the whole line).
    #[error("malformed protocol line: {0:?}")]
    Malformed(String),
    /// A verb this host does not know (an agent of another version?).
    #[error("unknown protocol verb {0:?}")]
    UnknownVerb(String),
    /// A second DONE.
    #[error("second DONE line (only one is allowed)")]
    DuplicateDone,
    /// Any other line after DONE (the line).
    #[error("protocol line after DONE: {0:?}")]
    AfterDone(String),
    /// A FILE or FILEEND path that is absolute or climbs out ([`safe_relpath`]).
    #[error("FILE path {0:?} is not a plain relative path")]
    BadPath(String),
    /// A FILE chunk that is not base64 (the path).
    #[error("FILE {0}: chunk is not valid base64")]
    BadBase64(String),
    /// A deflated file that does not inflate, or inflates beyond [`MAX_INFLATED`] (the path).
    #[error("FILE {0}: not a valid zlib stream (or inflates beyond the limit)")]
    BadDeflate(String),
    /// FILEEND announced another size than the FILE chunks delivered (lost or garbled lines).
    #[error("FILE {path}: announced {announced} bytes, received {received}")]
    SizeMismatch {
        /// The file.
        path: String,
        /// Bytes FILEEND announced.
        announced: u64,
        /// Bytes the FILE chunks held.
        received: u64,
    },
}

/// Checks that a FILE path stays inside the output directory.
pub fn safe_relpath(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Parses one line. `Ok(None)`: not a protocol line for this nonce.
pub fn parse_line(nonce: &str, line: &str) -> Result<Option<Event>, ProtocolError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(rest) = line.strip_prefix(MARKER).and_then(|r| r.strip_prefix(' ')) else {
        return Ok(None);
    };
    let Some((got_nonce, rest)) = rest.split_once(' ') else {
        return Ok(None);
    };
    if got_nonce != nonce {
        return Ok(None);
    }
    let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let malformed = || ProtocolError::Malformed(line.to_string());
    let ev = match verb {
        "HELLO" => {
            let mut it = args.split_whitespace();
            let release = it.next().ok_or_else(malformed)?.to_string();
            let clocksource = it.next().unwrap_or("unknown").to_string();
            Event::Hello {
                release,
                clocksource,
            }
        }
        "INFO" => Event::Info(args.to_string()),
        "START" if !args.is_empty() => Event::Start {
            name: args.to_string(),
        },
        "OUT" => Event::Out(args.to_string()),
        "ERR" => Event::Err(args.to_string()),
        "FILE" => {
            let (path, b64) = args.split_once(' ').unwrap_or((args, ""));
            if !safe_relpath(path) {
                return Err(ProtocolError::BadPath(path.to_string()));
            }
            let chunk = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| ProtocolError::BadBase64(path.to_string()))?;
            Event::File {
                path: path.to_string(),
                chunk,
            }
        }
        "FILEEND" => {
            let (path, size) = args.split_once(' ').ok_or_else(malformed)?;
            if !safe_relpath(path) {
                return Err(ProtocolError::BadPath(path.to_string()));
            }
            let (size, deflated) = match size.trim().split_once(' ') {
                Some((n, "deflate")) => (n, true),
                Some(_) => return Err(malformed()),
                None => (size.trim(), false),
            };
            let size = size.parse().map_err(|_| malformed())?;
            Event::FileEnd {
                path: path.to_string(),
                size,
                deflated,
            }
        }
        "EXIT" => {
            let (name, st) = args.split_once(' ').ok_or_else(malformed)?;
            let status = st.trim().parse().map_err(|_| malformed())?;
            Event::Exit {
                name: name.to_string(),
                status,
            }
        }
        "DONE" => match args.trim() {
            "ok" => Event::Done { ok: true },
            "fail" => Event::Done { ok: false },
            _ => return Err(malformed()),
        },
        "START" => return Err(malformed()),
        other => return Err(ProtocolError::UnknownVerb(other.to_string())),
    };
    Ok(Some(ev))
}

/// What happened to one guest command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRecord {
    /// Its name (from START, or from an EXIT without START).
    pub name: String,
    /// How it ended; `None` while running, or when the guest died first.
    pub exit: Option<ExitStatus>,
    /// Its OUT lines, in order.
    pub stdout: Vec<String>,
    /// Its ERR lines, in order.
    pub stderr: Vec<String>,
}

/// Accumulates a protocol stream: what the host knows about the guest run so far.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    nonce: String,
    /// `(release, clocksource)` from HELLO.
    pub hello: Option<(String, String)>,
    /// INFO texts, in order.
    pub infos: Vec<String>,
    /// Every command seen, in START order.
    pub commands: Vec<CommandRecord>,
    /// Completed files (a FILEEND with the right size was seen).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Files whose FILEEND has not arrived yet.
    pub partial_files: BTreeMap<String, Vec<u8>>,
    /// `Some(ok)` once DONE arrived.
    pub done: Option<bool>,
    /// Every line that was rejected, in order.
    pub errors: Vec<ProtocolError>,
    /// Lines that were not protocol lines for our nonce.
    pub ignored_lines: usize,
}

impl Transcript {
    /// An empty transcript that accepts only lines carrying `nonce`.
    pub fn new(nonce: &str) -> Self {
        Transcript {
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    /// Feeds one line; protocol errors are also recorded in `self.errors`.
    pub fn feed(&mut self, line: &str) -> Result<Option<Event>, ProtocolError> {
        let r = self.feed_inner(line);
        if let Err(e) = &r {
            self.errors.push(e.clone());
        }
        r
    }

    /// [`Self::feed`] without recording the error.
    fn feed_inner(&mut self, line: &str) -> Result<Option<Event>, ProtocolError> {
        let Some(ev) = parse_line(&self.nonce, line)? else {
            self.ignored_lines += 1;
            return Ok(None);
        };
        if self.done.is_some() {
            return Err(match ev {
                Event::Done { .. } => ProtocolError::DuplicateDone,
                _ => ProtocolError::AfterDone(line.trim_end().to_string()),
            });
        }
        match &ev {
            Event::Hello {
                release,
                clocksource,
            } => self.hello = Some((release.clone(), clocksource.clone())),
            Event::Info(t) => self.infos.push(t.clone()),
            Event::Start { name } => self.commands.push(CommandRecord {
                name: name.clone(),
                ..Default::default()
            }),
            Event::Out(t) => {
                if let Some(c) = self.commands.last_mut() {
                    c.stdout.push(t.clone())
                }
            }
            Event::Err(t) => {
                if let Some(c) = self.commands.last_mut() {
                    c.stderr.push(t.clone())
                }
            }
            Event::File { path, chunk } => self
                .partial_files
                .entry(path.clone())
                .or_default()
                .extend_from_slice(chunk),
            Event::FileEnd {
                path,
                size,
                deflated,
            } => {
                let data = self.partial_files.remove(path).unwrap_or_default();
                if data.len() as u64 != *size {
                    return Err(ProtocolError::SizeMismatch {
                        path: path.clone(),
                        announced: *size,
                        received: data.len() as u64,
                    });
                }
                let data = if *deflated {
                    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&data, MAX_INFLATED)
                        .map_err(|_| ProtocolError::BadDeflate(path.clone()))?
                } else {
                    data
                };
                self.files.insert(path.clone(), data);
            }
            Event::Exit { name, status } => {
                match self.commands.iter_mut().rev().find(|c| &c.name == name) {
                    Some(c) => c.exit = Some(*status),
                    None => self.commands.push(CommandRecord {
                        name: name.clone(),
                        exit: Some(*status),
                        ..Default::default()
                    }),
                }
            }
            Event::Done { ok } => self.done = Some(*ok),
        }
        Ok(Some(ev))
    }
}

/// Value the agent writes to the isa-debug-exit port on success.
pub const DEBUG_EXIT_OK: u8 = 0x10;

/// Value the agent writes to the isa-debug-exit port on failure.
pub fn debug_exit_fail(code: i32) -> u8 {
    0x20 | (code.clamp(1, 15) as u8)
}

/// What a QEMU exit status says about the isa-debug-exit write, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugExit {
    /// The agent reported success through the port.
    Ok,
    /// The agent reported failure (the low nibble is the clamped exit code).
    Fail(u8),
    /// QEMU exited with some other status (power-off, panic + -no-reboot, …).
    None,
}

/// Decodes QEMU's process exit status: isa-debug-exit makes it `(v << 1) | 1`.
pub fn decode_qemu_status(status: i32) -> DebugExit {
    if status & 1 == 1 {
        let v = (status >> 1) as u8;
        if v == DEBUG_EXIT_OK {
            return DebugExit::Ok;
        }
        if v & 0xf0 == 0x20 {
            return DebugExit::Fail(v & 0x0f);
        }
    }
    DebugExit::None
}
