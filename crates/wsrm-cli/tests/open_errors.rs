//! `wsrm send` when the session cannot work: the error names the cause, a TLS failure ends the
//! open at once with a hint at the option that mends it, an unreachable service is retried
//! until `--open-timeout`, and a message over the service's size limit ends the run at once
//! with a summary of what went out.

mod common;

use common::{free_port, run_wsrm, wait_listening, WSRM};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Runs `wsrm ARGS` to its end: exit code and standard error.
fn run(args: &[&str]) -> (i32, String) {
    run_wsrm(&std::env::temp_dir(), args)
}

/// A service process, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a CA and a server certificate for localhost into `dir`; returns the CA's path.
fn certificates(dir: &Path) -> std::path::PathBuf {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    dir.join("ca.pem")
}

/// A `wsrm serve` on 127.0.0.1:`port` with `extra` options.
fn serve(port: u16, extra: &[String]) -> Serve {
    let child = Command::new(WSRM)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wsrm serve");
    let s = Serve(child);
    assert!(
        wait_listening(port, Duration::from_secs(20)),
        "serve did not start"
    );
    s
}

fn serve_tls(dir: &Path, port: u16, client_ca: bool) -> Serve {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut extra = vec![
        "--tls-cert".to_owned(),
        file("server.pem"),
        "--tls-key".to_owned(),
        file("server.key"),
    ];
    if client_ca {
        extra.extend(["--client-ca".to_owned(), file("ca.pem")]);
    }
    serve(port, &extra)
}

/// `wsrm send URL --count 1 --tls-ca CA`, with an open timeout long enough that a TLS failure
/// shows as itself, not as a timeout.
fn send_one_trusting(url: &str, ca: &str) -> (i32, String) {
    run(&[
        "send",
        url,
        "--count",
        "1",
        "--tls-ca",
        ca,
        "--open-timeout",
        "30",
    ])
}

#[test]
fn send_to_nothing_listening_names_the_connection_failure() {
    let url = format!("http://127.0.0.1:{}/svc", free_port());
    let start = Instant::now();
    let (code, err) = run(&["send", &url, "--count", "1", "--open-timeout", "0.5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no session opened within 500ms"), "{err}");
    assert!(err.contains("connect"), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(500), "{err}");
}

#[test]
fn send_refuses_a_bad_open_timeout() {
    for bad in ["0", "90000", "soon"] {
        let (code, err) = run(&[
            "send",
            "http://127.0.0.1:1/svc",
            "--count",
            "1",
            "--open-timeout",
            bad,
        ]);
        assert_eq!(code, 2, "--open-timeout {bad}: {err}");
        assert!(err.contains("--open-timeout"), "{err}");
    }
}

#[test]
fn send_to_an_untrusted_service_fails_at_once_with_a_hint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = certificates(tmp.path());
    let port = free_port();
    let _svc = serve_tls(tmp.path(), port, false);
    let url = format!("https://localhost:{port}/svc");
    // The default OpenTimeout (60 s) would show as a timeout here: a TLS failure ends at once.
    let (code, err) = run(&["send", &url, "--count", "1", "--open-timeout", "30"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains("--tls-ca"), "{err}");
    assert!(!err.contains("no session opened"), "{err}");
    let ca = ca.to_str().expect("utf-8 path");
    let (code, err) = run(&["send", &url, "--count", "3", "--tls-ca", ca]);
    assert_eq!(code, 0, "{err}");
}

/// The certificate `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost` makes is
/// self-signed with basicConstraints CA:TRUE; given to the client as its own CA it still fails
/// ("CaUsedAsEndEntity"), and the error says what to change.
#[test]
fn a_self_signed_ca_certificate_as_the_services_fails_with_a_hint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("cert");
    std::fs::write(tmp.path().join("server.pem"), cert.pem()).expect("write");
    std::fs::write(tmp.path().join("server.key"), key.serialize_pem()).expect("write");
    let port = free_port();
    let _svc = serve_tls(tmp.path(), port, false);
    let url = format!("https://localhost:{port}/svc");
    let ca = tmp.path().join("server.pem").display().to_string();
    let (code, err) = send_one_trusting(&url, &ca);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CaUsedAsEndEntity"), "{err}");
    assert!(err.contains("basicConstraints=critical,CA:FALSE"), "{err}");
    assert!(!err.contains("no session opened"), "{err}");
}

#[test]
fn send_without_the_client_certificate_a_service_wants_fails_at_once_with_a_hint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = certificates(tmp.path());
    let port = free_port();
    let _svc = serve_tls(tmp.path(), port, true);
    let url = format!("https://localhost:{port}/svc");
    let (code, err) = send_one_trusting(&url, ca.to_str().expect("utf-8 path"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

/// A message over the service's size limit (64 KiB) ends the run at once: the service answers
/// 413, the error names the message, and the summary says how many inputs went out.
#[test]
fn a_message_over_the_size_limit_ends_the_run_at_once_with_a_summary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _svc = serve(port, &[]);
    let lines = ["a".to_owned(), "b".repeat(70_000), "c".to_owned()].join("\n");
    std::fs::write(tmp.path().join("in.txt"), lines).expect("write");
    let input = tmp.path().join("in.txt").display().to_string();
    let url = format!("http://127.0.0.1:{port}/svc");
    let start = Instant::now();
    let out = Command::new(WSRM)
        .args(["send", &url, "--lines", &input])
        .stdin(Stdio::null())
        .output()
        .expect("run wsrm send");
    let (summary, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("message 2 is larger than the destination accepts"),
        "{err}"
    );
    assert!(summary.contains(" of 3,"), "{summary}");
    // Retransmitting to MaxRetryCount took ~26 s.
    assert!(start.elapsed() < Duration::from_secs(20), "{summary}");
}

/// A line XML cannot carry (a control character) is refused before anything is sent: a
/// service would answer it HTTP 400 on every retransmission (25 s, then "maximum retry count
/// exceeded"). Not UTF-8 is refused the same way.
#[test]
fn input_xml_cannot_carry_is_refused_before_sending() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nothing listens: an attempt to send would take the open timeout.
    let url = format!("http://127.0.0.1:{}/svc", free_port());
    for (content, says) in [
        (
            &b"ok-1\nbad-\x01-ctl\nok-3\n"[..],
            "line 2, character 5: U+0001",
        ),
        (&b"ok\n\x1b[1m\n"[..], "line 2, character 1: U+001B"),
        (&b"caf\xe9\n"[..], "UTF-8"),
    ] {
        let input = tmp.path().join("in.txt");
        std::fs::write(&input, content).expect("write");
        let input = input.display().to_string();
        let start = Instant::now();
        let (code, err) = run(&["send", &url, "--lines", &input, "--open-timeout", "30"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    }
}
