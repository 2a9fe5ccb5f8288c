//! VM test infrastructure for capring.
//!
//! The crate has two halves:
//!
//! * always compiled (also for the static musl guest agent): [`settings`]
//!   (what the guest is asked to do) and [`protocol`] (the framed lines the
//!   agent prints on the second serial port and the host parses);
//! * behind the default `host` feature: the kernel catalog and lock file,
//!   the private-apt kernel fetcher and its cache, the initramfs writer, the
//!   QEMU runner and the outcome classifier.

pub mod protocol;
pub mod settings;

#[cfg(feature = "host")]
pub mod accel;
#[cfg(feature = "host")]
pub mod apt;
#[cfg(feature = "host")]
pub mod cache;
#[cfg(feature = "host")]
pub mod catalog;
#[cfg(feature = "host")]
pub mod closure;
#[cfg(feature = "host")]
pub mod deb;
#[cfg(feature = "host")]
pub mod debver;
#[cfg(feature = "host")]
pub mod error;
#[cfg(feature = "host")]
pub mod guest;
#[cfg(feature = "host")]
pub mod initramfs;
#[cfg(feature = "host")]
pub mod keyring;
#[cfg(feature = "host")]
pub mod outcome;
#[cfg(feature = "host")]
pub mod qemu;
#[cfg(feature = "host")]
pub mod session;
#[cfg(feature = "host")]
pub mod tracer;

#[cfg(feature = "host")]
pub use error::{Error, Result};
