//! transit
