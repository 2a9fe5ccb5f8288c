//! VM runner library.
