//! Helpers shared by the CLI's process tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `wsrm` binary under test.
pub const WSRM: &str = env!("CARGO_BIN_EXE_wsrm");

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on 127.0.0.1:`port`, at most `within`.
pub fn wait_listening(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs `wsrm ARGS` in `dir` to its end, with no standard input: exit code (-1 if killed by a
/// signal) and standard error.
pub fn run_wsrm(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(WSRM)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
