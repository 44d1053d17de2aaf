//! Pure checks: facts in, [`crate::report::Check`]s out. No I/O here.

pub mod cluster;
pub mod node;
