//! Free loopback ports.
//!
//! A port is found by binding `127.0.0.1:0` and releasing it. Ports handed
//! out in this process are remembered so that two tests running in parallel
//! never get the same one; another process can still race us, which the
//! OpenBao starter handles by retrying on "address already in use".

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Reserves `count` consecutive free loopback ports and returns the first.
fn reserve(count: u16) -> anyhow::Result<u16> {
    let mut taken = handed_out().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(last) = first.checked_add(count - 1) else {
            continue;
        };
        let range = first..=last;
        if range.clone().all(|p| !taken.contains(&p) && is_free(p)) {
            taken.extend(range);
            return Ok(first);
        }
    }
    anyhow::bail!("no {count} consecutive free loopback ports found")
}

/// One free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    reserve(1)
}

/// A free port `p` with `p + 1` free as well: an OpenBao dev server puts its
/// cluster listener on the port after its API port.
pub fn free_port_pair() -> anyhow::Result<u16> {
    reserve(2)
}
