//! Crash tests with real processes (issue 6).
//!
//! `crash_kills_deliver_every_message_exactly_once_in_order`: `wsrm send` and `wsrm serve`,
//! both on SQLite stores, 5,000 messages through a lossy `wsrm proxy`. A seeded driver
//! SIGKILLs the service or the sender at random moments (at least 20 kills; a kill waits for
//! some random progress, so the run cannot stall on kills alone), restarts them (the sender
//! with `--resume`), and at the end checks that the service's delivered log holds every
//! message exactly once and in order.
//!
//! The other tests check the refusals: a corrupt store, a store held by another process and a
//! store that cannot be created all stop the process at startup with a clear message.

mod common;

use common::{free_port, run_wsrm, wait_listening, WSRM};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const MESSAGES: usize = 5_000;
const MIN_KILLS: u32 = 20;
const RR_REQUESTS: usize = 2_000;

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

/// The children's log level: `warn`, or `WSRM_CRASH_LOG` (e.g. `debug`) to investigate a run
/// kept with `WSRM_CRASH_KEEP`.
fn child_log_level() -> String {
    std::env::var("WSRM_CRASH_LOG").unwrap_or_else(|_| "warn".into())
}

/// A child process that is killed when dropped: a failing assertion must not leave services,
/// proxies and senders running.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}

fn spawn_serve(dir: &Path, port: u16) -> Proc {
    for _ in 0..50 {
        let mut child = Command::new(WSRM)
            .current_dir(dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--store",
                "sqlite:svc.db",
                "--deliver-to",
                "delivered.jsonl",
            ])
            .env("RUST_LOG", child_log_level())
            .stdout(Stdio::null())
            .stderr(log_file(dir, "serve.log"))
            .spawn()
            .expect("spawn serve");
        if wait_listening(port, Duration::from_secs(10)) {
            return Proc(child);
        }
        // The port is still held by the killed process' socket, or startup failed: retry.
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "wsrm serve does not start; see {}",
        dir.join("serve.log").display()
    );
}

fn spawn_send(dir: &Path, url: &str, rr: bool) -> Proc {
    let mut cmd = Command::new(WSRM);
    cmd.current_dir(dir).args([
        "send",
        url,
        "--lines",
        "input.txt",
        "--store",
        "sqlite:send.db",
        "--resume",
    ]);
    if rr {
        cmd.args(["--request-reply", "--replies-to", "replies.jsonl"]);
    }
    Proc(
        cmd.env("RUST_LOG", child_log_level())
            .stdout(log_file(dir, "send.out"))
            .stderr(log_file(dir, "send.log"))
            .spawn()
            .expect("spawn send"),
    )
}

/// The last lines a failed sender wrote to `send.log` (from byte `from`, where its run
/// began) and its exit status: the test's failure message carries them, since the run's
/// directory is deleted unless `WSRM_CRASH_KEEP` is set.
fn sender_failure(dir: &Path, from: u64, st: std::process::ExitStatus) -> String {
    let text = std::fs::read(dir.join("send.log")).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let tail: Vec<String> = String::from_utf8_lossy(&text[start..])
        .lines()
        .rev()
        .take(4)
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{st}: {}", tail.join(" | "))
}

/// The length of `send.log`, where the next sender's output begins.
fn send_log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("send.log")).map_or(0, |m| m.len())
}

/// Complete lines in the delivered log.
fn delivered_lines(path: &Path) -> usize {
    let mut buf = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let _ = f.read_to_end(&mut buf);
            buf.iter().filter(|&&b| b == b'\n').count()
        }
        Err(_) => 0,
    }
}

fn kill(child: &mut Child) {
    // Child::kill is SIGKILL on Unix.
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `messages` lines from `wsrm send` (one-way, or request-reply with `--replies-to`)
/// to `wsrm serve` through a lossy proxy, SIGKILLing one of them at random moments (at
/// least `min_kills` times), and checks the service's delivered log: every message exactly
/// once and in order, on one sequence. Returns the run's directory.
fn crash_run(
    rr: bool,
    messages: usize,
    min_kills: u32,
    progress: std::ops::RangeInclusive<usize>,
    seed: u64,
) -> tempfile::TempDir {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tmp = tempfile::tempdir().expect("tempdir");
    // WSRM_CRASH_KEEP=1 keeps the run's directory (stores, logs) for a post-mortem.
    tmp.disable_cleanup(std::env::var_os("WSRM_CRASH_KEEP").is_some());
    let dir = tmp.path().to_path_buf();
    let input: String = (1..=messages).map(|i| format!("line-{i}\n")).collect();
    std::fs::write(dir.join("input.txt"), input).expect("input");
    let log = dir.join("delivered.jsonl");

    let port = free_port();
    let mut service = spawn_serve(&dir, port);
    let mut proxy = Proc(
        Command::new(WSRM)
            .current_dir(&dir)
            .args(["proxy", "--listen", "127.0.0.1:0"])
            .args(["--to", &format!("http://127.0.0.1:{port}")])
            .args([
                "--drop",
                "0.03",
                "--drop-responses",
                "0.03",
                "--dup",
                "0.02",
            ])
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .stderr(log_file(&dir, "proxy.log"))
            .spawn()
            .expect("spawn proxy"),
    );
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().expect("proxy stdout"))
        .read_line(&mut first)
        .expect("proxy address");
    // "listening on http://127.0.0.1:PORT -> ..."
    let proxy_url = first
        .split_whitespace()
        .nth(2)
        .expect("proxy url")
        .to_string();
    let url = format!("{proxy_url}/svc");

    let started = Instant::now();
    let deadline = started + Duration::from_secs(170);
    let mut log_from = send_log_len(&dir);
    let mut sender = spawn_send(&dir, &url, rr);
    let (mut kills, mut service_kills, mut sender_kills, mut sender_failures) = (0u32, 0, 0, 0);
    // Why each sender that gave up did, for the failure message.
    let mut failures: Vec<String> = Vec::new();
    let finished = loop {
        assert!(
            Instant::now() < deadline,
            "no end after {kills} kills; delivered {} of {messages}; logs in {}",
            delivered_lines(&log),
            dir.display()
        );
        // Wait for some random progress (or the sender's end) before the next kill.
        let target = delivered_lines(&log) + rng.random_range(progress.clone());
        let wait_end = Instant::now() + Duration::from_secs(8);
        let mut exited = None;
        while Instant::now() < wait_end && delivered_lines(&log) < target {
            if let Some(st) = sender.try_wait().expect("try_wait") {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(st) = exited.or_else(|| sender.try_wait().ok().flatten()) {
            if st.success() {
                break true;
            }
            // A run that gave up (e.g. the service was down for a whole retry budget) is
            // resumed like a killed one.
            sender_failures += 1;
            failures.push(sender_failure(&dir, log_from, st));
            assert!(
                sender_failures <= 5,
                "the sender keeps failing ({kills} kills so far; delivered {} of {messages}): {failures:#?}; see {}",
                delivered_lines(&log),
                dir.display()
            );
            log_from = send_log_len(&dir);
            sender = spawn_send(&dir, &url, rr);
            continue;
        }
        if kills >= min_kills + 5 || delivered_lines(&log) >= messages - 100 {
            // Enough kills: let the run finish.
            let st = loop {
                if let Some(st) = sender.try_wait().expect("try_wait") {
                    break st;
                }
                assert!(
                    Instant::now() < deadline,
                    "the sender does not finish; delivered {} of {messages}; logs in {}",
                    delivered_lines(&log),
                    dir.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if st.success() {
                break true;
            }
            sender_failures += 1;
            failures.push(sender_failure(&dir, log_from, st));
            assert!(
                sender_failures <= 5,
                "the sender keeps failing ({kills} kills so far; delivered {} of {messages}): {failures:#?}; see {}",
                delivered_lines(&log),
                dir.display()
            );
            log_from = send_log_len(&dir);
            sender = spawn_send(&dir, &url, rr);
            continue;
        }
        // Random pause inside the progress window, then SIGKILL one of them.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..60)));
        kills += 1;
        if rng.random_bool(0.5) {
            service_kills += 1;
            kill(&mut service);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
            service = spawn_serve(&dir, port);
        } else {
            sender_kills += 1;
            kill(&mut sender);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
            log_from = send_log_len(&dir);
            sender = spawn_send(&dir, &url, rr);
        }
    };
    assert!(finished);
    eprintln!(
        "crash test (request-reply: {rr}): seed {seed}, {kills} kills ({service_kills} service, {sender_kills} sender), {sender_failures} sender failures, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Stop the service the hard way too: the log must already be complete.
    kill(&mut service);
    kill(&mut proxy);
    assert!(kills >= min_kills, "only {kills} kills");

    let text = std::fs::read_to_string(&log).expect("delivered log");
    let mut sequences = std::collections::BTreeSet::new();
    let mut bodies = Vec::new();
    let mut numbers = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        sequences.insert(v["sequence"].as_str().expect("sequence").to_string());
        numbers.push(v["number"].as_u64().expect("number"));
        bodies.push(v["body"].as_str().expect("body").to_string());
    }
    assert_eq!(sequences.len(), 1, "one sequence across all restarts");
    let want_numbers: Vec<u64> = (1..=messages as u64).collect();
    let want_bodies: Vec<String> = (1..=messages)
        .map(|i| format!("<p xmlns=\"urn:wsrm:payload\">line-{i}</p>"))
        .collect();
    assert_eq!(numbers.len(), messages, "message count");
    assert!(
        numbers == want_numbers,
        "numbers are not 1..={messages} in order"
    );
    assert!(
        bodies == want_bodies,
        "bodies are not line-1..line-{messages} in order"
    );
    tmp
}

fn seed() -> u64 {
    std::env::var("WSRM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_128)
}

#[test]
fn crash_kills_deliver_every_message_exactly_once_in_order() {
    crash_run(false, MESSAGES, MIN_KILLS, 30..=220, seed());
}

/// Request-reply: besides every request executed exactly once and in order (the service's
/// log), the sender's `--replies-to` file holds exactly one reply per request, the right one.
#[test]
fn crash_kills_request_reply_every_reply_exactly_once() {
    let requests = RR_REQUESTS;
    let tmp = crash_run(true, requests, MIN_KILLS, 10..=70, seed() ^ 0x5252);
    let text = std::fs::read_to_string(tmp.path().join("replies.jsonl")).expect("replies");
    let mut got = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let request = v["request"].as_u64().expect("request");
        let body = v["body"].as_str().expect("body").to_string();
        assert!(
            got.insert(request, body).is_none(),
            "request {request} has two replies"
        );
    }
    assert_eq!(got.len(), requests, "one reply per request");
    for (request, body) in got {
        assert_eq!(
            body,
            format!("<p xmlns=\"urn:wsrm:payload\">line-{request}</p>"),
            "reply to {request}"
        );
    }
}

#[test]
fn corrupt_store_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let garbage = b"this is not an SQLite database, and wsrm must not start on it".repeat(20);
    std::fs::write(dir.join("bad.db"), &garbage).expect("write");
    let (code, err) = run_wsrm(
        dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "sqlite:bad.db",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("corrupt or not a wsrm store"), "{err}");
    let (code, err) = run_wsrm(
        dir,
        &[
            "send",
            "http://127.0.0.1:9/svc",
            "--count",
            "1",
            "--store",
            "sqlite:bad.db",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("corrupt or not a wsrm store"), "{err}");
    assert_eq!(std::fs::read(dir.join("bad.db")).expect("read"), garbage);
}

#[test]
fn second_process_on_a_store_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let mut first = Proc(
        Command::new(WSRM)
            .current_dir(&dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", "sqlite:one.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    assert!(wait_listening(port, Duration::from_secs(20)));
    let (code, err) = run_wsrm(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "sqlite:one.db",
        ],
    );
    kill(&mut first);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn store_that_cannot_be_created_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing: PathBuf = tmp.path().join("no-such-dir").join("s.db");
    let spec = format!("sqlite:{}", missing.display());
    let (code, err) = run_wsrm(
        tmp.path(),
        &["serve", "--listen", "127.0.0.1:0", "--store", &spec],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot open store"), "{err}");
    // A read-only file system (sysfs): refused the same way, nothing acknowledged.
    let (code, err) = run_wsrm(
        tmp.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "sqlite:/sys/wsrm-test.db",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot open store"), "{err}");
}
