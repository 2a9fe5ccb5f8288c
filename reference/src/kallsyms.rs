//! Reading `/proc/kallsyms`, the start-up Requested operation of the `module_load` event.
//!
//! The kernel shows real symbol addresses only to an opener whose credentials hold
//! CAP_SYSLOG at open time (`kptr_restrict`), so the tracer opens the file inside a
//! Requested ring of exactly {cap_syslog} and reads it after returning to its ring.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};

use serde::Serialize;

/// Counts from one read of `/proc/kallsyms`, attached to `module_load` events as
/// `kernel_symbols` (the tracer reads the file once, at start, not per event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SymbolSummary {
    /// Well-formed lines (`ADDRESS TYPE NAME [MODULE]`); malformed lines are skipped.
    pub symbols: usize,
    /// Symbols whose address is not zero: proof that the open happened with CAP_SYSLOG.
    pub with_addresses: usize,
    /// Distinct loadable modules named in a `[module]` column (the core kernel is not one).
    pub modules: usize,
}

/// Summarizes a `/proc/kallsyms` text read from `reader`; only an I/O error fails.
///
/// The reader is an already opened file: whether addresses are real was decided by the
/// opener's credentials at `open` time, so this needs no capability.
pub fn summarize(reader: impl Read) -> std::io::Result<SymbolSummary> {
    let mut s = SymbolSummary::default();
    let mut modules = BTreeSet::new();
    // Large reads and one reused line buffer: the file has 100k–250k lines, and under
    // emulation a String per line (and 8 KiB reads) cost seconds.
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let mut f = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let (Some(addr), Some(_kind), Some(_name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        s.symbols += 1;
        if addr.iter().any(|&b| b != b'0') {
            s.with_addresses += 1;
        }
        if let Some(m) = f
            .next()
            .and_then(|m| m.strip_prefix(b"["))
            .and_then(|m| m.strip_suffix(b"]"))
        {
            if !modules.contains(m) {
                modules.insert(m.to_vec());
            }
        }
    }
    s.modules = modules.len();
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary() {
        let text = "ffffffff81000000 T _stext\n0000000000000000 t foo\t[ext4]\nffffffffc0000000 t bar\t[xfs]\nbad\n";
        let s = super::summarize(text.as_bytes()).unwrap();
        assert_eq!((s.symbols, s.with_addresses, s.modules), (3, 2, 2));
    }
}
