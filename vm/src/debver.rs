//! Debian version ordering (`dpkg --compare-versions` semantics), through the `debversion`
//! crate.
//!
//! `cargo xtask kernels update` uses it to pick the newest package of a series from a
//! `Packages` index (`6.1.176-1` after `6.1.158-1`, `1.0~rc1` before `1.0`), and the catalog
//! uses it to list series oldest first (`5.4` before `5.10`). The same ordering also breaks
//! ties between package names, which are not versions but follow its grammar
//! (`linux-image-6.1.0-9-…` before `linux-image-6.1.0-10-…`).

use std::cmp::Ordering;

use debversion::Version;

/// Compares two Debian version strings as dpkg does: epoch, then upstream version, then
/// Debian revision, each part alternating non-digit runs (`~` sorts before everything, even
/// the end of the string; letters before other characters) and numeric runs.
///
/// A string that is not a Debian version (dpkg would refuse it, e.g. one with `_` or
/// whitespace) sorts before every valid one, and such strings among themselves by bytes, so
/// the order stays total and a malformed index entry is never picked as the newest.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<Version>(), b.parse::<Version>()) {
        (Ok(va), Ok(vb)) => va.cmp(&vb),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}
