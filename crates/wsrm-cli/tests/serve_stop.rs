//! `wsrm serve` stopped by SIGINT/SIGTERM while a client sends: it ends the open session, writes
//! what it acknowledged, and its summary counts exactly the lines it wrote.

mod common;

use common::{delivered, free_port, run_wsrm, serve, signal, WSRM};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number after `label` in `text` (e.g. "messages delivered 1234").
fn count_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_stopped_service_counts_exactly_what_it_wrote() {
    for sig in ["INT", "TERM"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let svc = serve(tmp.path(), port, &[]);
        let url = format!("http://127.0.0.1:{port}/svc");
        let mut client = Command::new(WSRM)
            .current_dir(tmp.path())
            .args(["send", &url, "--count", "1000000", "--window", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn send");
        let end = Instant::now() + Duration::from_secs(30);
        while delivered(tmp.path()) < 1000 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&svc, sig);
        let out = svc.wait_with_output().expect("serve output");
        let _ = client.kill();
        let _ = client.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "SIG{sig}: {err}");
        assert!(err.contains("stopped 1,"), "SIG{sig}: {err}");
        assert!(!err.contains("close timeout"), "SIG{sig}: {err}");
        let counted = count_after(&err, "messages delivered").expect("a summary");
        let lines = delivered(tmp.path()) as u64;
        assert!(lines >= 1000, "SIG{sig}: {lines} lines");
        assert_eq!(counted, lines, "SIG{sig}: {err}");
    }
}

#[test]
fn a_close_timeout_must_be_a_positive_number_of_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in ["0", "-1", "soon", "90000"] {
        let opt = format!("--close-timeout={bad}");
        let (code, err) = run_wsrm(tmp.path(), &["serve", "--listen", "127.0.0.1:0", &opt]);
        assert_eq!(code, 2, "--close-timeout {bad}: {err}");
        assert!(err.contains("--close-timeout"), "{err}");
    }
}
