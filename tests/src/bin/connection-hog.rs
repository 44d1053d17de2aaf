//! A local process that holds connections to the provider, as an
//! unprivileged user would (the resource-limit system tests run it under
//! uid 65534): it tries the KMS socket once, opens `count` TCP connections
//! to an HTTP listener and sends each the start of a request whose headers
//! never end, then holds them. Stdin commands: `check` prints how many are
//! still open; end of input exits.
//!
//! Usage: connection-hog <host:port> <count> <kms socket path>
//! Output lines: `uid=<uid> kms=<connected|error kind>`,
//! `opened=<n> failed=<n>`, and per `check` `open=<n> closed=<n>`.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

const HALF_REQUEST: &[u8] = b"GET /status HTTP/1.1\r\nHost: hog\r\nX-Never-Ends: ";

fn still_open(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, count, kms] = args.as_slice() else {
        eprintln!("usage: connection-hog <host:port> <count> <kms socket path>");
        std::process::exit(2);
    };
    let count: usize = count.parse().unwrap_or(0);
    let kms = match UnixStream::connect(kms) {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    };
    println!("uid={} kms={kms}", nix::unistd::getuid());
    let mut held = Vec::with_capacity(count);
    let mut failed = 0usize;
    for _ in 0..count {
        match TcpStream::connect(addr.as_str()) {
            Ok(mut s) => {
                let _ = s.write_all(HALF_REQUEST);
                let _ = s.set_nonblocking(true);
                held.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    println!("opened={} failed={failed}", held.len());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "check" {
            let open = held.iter_mut().map(still_open).filter(|open| *open).count();
            println!("open={open} closed={}", held.len() - open);
        }
    }
}
