//! capring harness library.
