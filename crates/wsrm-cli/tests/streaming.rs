//! `wsrm send --lines -` reads standard input as a stream: each line is sent as it arrives
//! (a live pipe such as `tail -f log | wsrm send URL --lines -`), not after the input ended,
//! and a line that cannot be sent stops the run after the lines before it.

mod common;

use common::{delivered, free_port, serve, stop, WSRM};
use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits (bounded) until `cond` holds.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A `wsrm serve` delivering into `dir`, and a `wsrm send --lines -` to it whose standard
/// input the test writes.
fn serve_and_send(dir: &std::path::Path) -> (Child, Child, ChildStdin) {
    let port = free_port();
    let svc = serve(dir, port, &[]);
    let url = format!("http://127.0.0.1:{port}/svc");
    let mut send = Command::new(WSRM)
        .args(["send", &url, "--lines", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    let input = send.stdin.take().expect("stdin");
    (svc, send, input)
}

#[test]
fn lines_from_standard_input_are_sent_as_they_arrive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (svc, mut send, mut input) = serve_and_send(tmp.path());
    input.write_all(b"first\n").expect("write");
    input.flush().expect("flush");
    // Delivered while the input is still open: before, the whole input was read first.
    assert!(
        eventually(Duration::from_secs(20), || delivered(tmp.path()) == 1),
        "the first line was not delivered while standard input stayed open"
    );
    assert!(send.try_wait().expect("try_wait").is_none());
    input.write_all(b"second\n").expect("write");
    drop(input);
    let out = send.wait_with_output().expect("send output");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.starts_with("sent 2, "), "{summary}");
    let log = stop(svc);
    assert_eq!(delivered(tmp.path()), 2, "{log}");
    let lines = std::fs::read_to_string(tmp.path().join("delivered.jsonl")).expect("read");
    assert!(
        lines.contains(">first</p>") && lines.contains(">second</p>"),
        "{lines}"
    );
}

#[test]
fn an_unusable_line_on_standard_input_stops_the_run_after_the_lines_before_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (svc, send, mut input) = serve_and_send(tmp.path());
    input
        .write_all(b"ok-1\nbad-\x01-ctl\nok-3\n")
        .expect("write");
    drop(input);
    let out = send.wait_with_output().expect("send output");
    let (summary, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2, character 5: U+0001"), "{err}");
    assert!(err.contains("after the 1 line(s) before it"), "{err}");
    assert!(summary.starts_with("sent 1, "), "{summary}");
    // The line before it arrived, the session closed cleanly; nothing after it was sent.
    let log = stop(svc);
    assert_eq!(delivered(tmp.path()), 1, "{log}");
    assert!(log.contains("closed 1, failed 0"), "{log}");
}
