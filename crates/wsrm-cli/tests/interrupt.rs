//! `wsrm send` stopped by SIGINT or SIGTERM: a memory session is aborted (the service hears of
//! it and ends its session), a durable run stays in its store and `--resume` finishes it
//! exactly once; both exit with 130.

mod common;

use common::{delivered, free_port, serve, signal, stop, WSRM};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starts `wsrm send ARGS`, waits until the service delivered something, then sends `sig`.
fn interrupt(dir: &Path, args: &[&str], sig: &str) -> Output {
    let child = Command::new(WSRM)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    let end = Instant::now() + Duration::from_secs(30);
    while delivered(dir) < 100 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(delivered(dir) >= 100, "nothing was delivered");
    signal(&child, sig);
    child.wait_with_output().expect("send output")
}

/// A durable run interrupted: a service in a fresh directory, and `wsrm send` of `count`
/// messages with `--store sqlite:send.db` stopped by SIGINT once the service delivered some.
/// Returns the directory, the service's port, the service, the run's arguments (for
/// `--resume`) and what the interrupted run printed on standard error.
fn interrupted_durable_run(count: &str) -> (tempfile::TempDir, u16, Child, Vec<String>, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let svc = serve(tmp.path(), port, &[]);
    let url = format!("http://127.0.0.1:{port}/svc");
    let args: Vec<String> = ["send", &url, "--count", count, "--store", "sqlite:send.db"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = interrupt(tmp.path(), &argv, "INT");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    (tmp, port, svc, args, err)
}

/// `wsrm ARGS --resume` in `dir`, to its end.
fn resume(dir: &Path, args: &[String]) -> Output {
    Command::new(WSRM)
        .current_dir(dir)
        .args(args)
        .arg("--resume")
        .stdin(Stdio::null())
        .output()
        .expect("resume")
}

#[test]
fn an_interrupted_send_aborts_its_session_and_the_service_ends_it() {
    for sig in ["INT", "TERM"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let svc = serve(tmp.path(), port, &[]);
        let url = format!("http://127.0.0.1:{port}/svc");
        let out = interrupt(tmp.path(), &["send", &url, "--count", "1000000"], sig);
        let err = String::from_utf8_lossy(&out.stderr);
        let summary = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(130), "SIG{sig}: {err}");
        assert!(
            err.contains("interrupted: the session was aborted"),
            "{err}"
        );
        assert!(summary.contains("of 1000000"), "{summary}");
        let svc_out = stop(svc);
        assert!(svc_out.contains("failed 1"), "SIG{sig}: {svc_out}");
    }
}

#[test]
fn an_interrupted_durable_send_resumes_exactly_once() {
    let (tmp, _port, svc, args, err) = interrupted_durable_run("20000");
    assert!(err.contains("--resume"), "{err}");
    let out = resume(tmp.path(), &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(svc);
    let lines: Vec<String> = std::io::BufReader::new(
        std::fs::File::open(tmp.path().join("delivered.jsonl")).expect("delivered"),
    )
    .lines()
    .map(|l| l.expect("line"))
    .collect();
    assert_eq!(lines.len(), 20000);
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.contains(&format!(">message-{}<", i + 1)),
            "line {}: {l}",
            i + 1
        );
    }
}

/// A durable run resumed against a service that lost its sessions (a memory service that
/// restarted): the service answers UnknownSequence; the error counts inputs from the run's
/// first line and says the run cannot be resumed.
#[test]
fn a_resume_the_service_forgot_says_it_cannot_be_resumed() {
    let (tmp, port, svc, args, _) = interrupted_durable_run("200000");
    stop(svc);
    let taken = delivered(tmp.path());
    let svc = serve(tmp.path(), port, &[]);
    let out = resume(tmp.path(), &args);
    stop(svc);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("UnknownSequence"), "{err}");
    assert!(err.contains("cannot be resumed"), "{err}");
    let first = err
        .split("first: input ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("the first failed input");
    assert!(
        first > taken.saturating_sub(1000),
        "input {first}, {taken} delivered: {err}"
    );
}
