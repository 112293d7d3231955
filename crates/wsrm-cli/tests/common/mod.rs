//! Helpers shared by the CLI's process tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// Sends SIG`sig` (`INT`, `TERM`, ...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// A `wsrm serve` delivering to `dir/delivered.jsonl`, with `extra` arguments; its output is
/// kept for `stop`.
pub fn serve(dir: &Path, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(WSRM)
        .current_dir(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--deliver-to", "delivered.jsonl"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    assert!(
        wait_listening(port, Duration::from_secs(20)),
        "serve did not start"
    );
    child
}

/// Stops a service with SIGINT; returns everything it printed.
pub fn stop(svc: Child) -> String {
    signal(&svc, "INT");
    let out = svc.wait_with_output().expect("serve output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Lines in `dir/delivered.jsonl` (0 before it exists).
pub fn delivered(dir: &Path) -> usize {
    std::fs::File::open(dir.join("delivered.jsonl"))
        .map(|f| std::io::BufReader::new(f).lines().count())
        .unwrap_or(0)
}
