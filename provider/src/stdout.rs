//! Everything the commands print on stdout goes through here: a closed
//! pipe (`bao-kms-provider completion bash | head -2`) ends the process
//! quietly with exit 0 instead of a panic. Rust ignores SIGPIPE, so writes
//! to a closed pipe fail with `BrokenPipe`, which `println!` turns into a
//! panic.

use std::io::Write;

/// Writes `bytes` to stdout and flushes; on any write error (the reader
/// went away) exits 0 without a word, as a program killed by SIGPIPE
/// would have stopped.
pub fn write_or_exit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// [`write_or_exit`] of `text` and a newline.
pub fn print_or_exit(text: &str) {
    write_or_exit(format!("{text}\n").as_bytes());
}
