//! Reference implementation library (filled in below).
