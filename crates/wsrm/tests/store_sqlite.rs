//! The SQLite store: persistence across reopen and across a killed process, exactly-once
//! delivery across crashes, group commit, locking, and every failure mode (corrupt file,
//! unknown schema, read-only, full disk).
//!
//! Tests that need a second process re-run this test binary with `--exact <test name>` and an
//! environment variable that makes the same test function play the child's part.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use bytes::Bytes;
use wsrm::store::{
    rusqlite, DestRecord, Op, SequenceState, SourceRecord, SqliteOptions, SqliteStore, Store,
    StoreError, Txn, APPLICATION_ID, SCHEMA_VERSION,
};
use wsrm::RmVersion;
use wsrm_proto::msg::SequenceId;

const CHILD_ENV: &str = "WSRM_STORE_TEST_CHILD";
const PATH_ENV: &str = "WSRM_STORE_TEST_PATH";

fn sid(s: &str) -> SequenceId {
    SequenceId::from(s)
}

fn kib(n: u64) -> Bytes {
    let mut v = format!("<m n='{n}'>").into_bytes();
    v.resize(1024, b'x');
    Bytes::from(v)
}

fn open(path: &Path) -> Store {
    Store::open_sqlite(path, &SqliteOptions::default()).expect("open store")
}

/// Spawns this test binary running only `test`, as a child with `mode`.
fn spawn_child(test: &str, mode: &str, path: &Path) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(PATH_ENV, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

fn child_mode() -> Option<(String, PathBuf)> {
    let mode = std::env::var(CHILD_ENV).ok()?;
    let path = std::env::var(PATH_ENV).ok()?;
    Some((mode, PathBuf::from(path)))
}

/// Reads the child's stdout lines with a given prefix into a channel (the harness prints its
/// own lines too).
fn child_lines(child: &mut Child, prefix: &'static str) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test <name> ... ` without a newline before the test runs.
            if let Some(at) = line.find(prefix) {
                if tx.send(line[at + prefix.len()..].to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let s = sid("src");
    let d = sid("dst");
    {
        let store = open(&path);
        let mut rec = SourceRecord::new(s.clone(), RmVersion::Wsrm11, "http://127.0.0.1:1/");
        rec.label = Some("run".into());
        rec.extra = Bytes::from_static(&[0, 1, 2, 255]);
        store.create_source(rec).wait().expect("create");
        store
            .create_dest(DestRecord::new(d.clone(), RmVersion::Wsrm10, "acks"))
            .wait()
            .expect("create");
        for n in 1..=20 {
            store
                .record_sent_with_cursor(&s, n, kib(n), "lines", n * 3)
                .wait()
                .expect("record");
            store
                .received(&d, n, "act", kib(n), false)
                .wait()
                .expect("recv");
        }
        store.source_acked(&s, &[(1, 10)]).wait().expect("ack");
        for n in 1..=5 {
            store.mark_delivered(&d, n).wait().expect("deliver");
        }
        // Dropped without any close call.
    }
    let store = open(&path);
    let src = store.source(&s).wait().expect("read").expect("source kept");
    assert_eq!(src.next_number, 21);
    assert_eq!(src.unacked, 10);
    assert_eq!(src.record.label.as_deref(), Some("run"));
    assert_eq!(src.record.extra, Bytes::from_static(&[0, 1, 2, 255]));
    assert_eq!(store.cursor("lines").wait().expect("cursor"), Some(60));
    let msgs = store.unacked(&s, 0, 100).wait().expect("page");
    assert_eq!(
        msgs.iter().map(|m| m.number).collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    assert!(msgs.iter().all(|m| m.envelope == kib(m.number)));
    let dst = store
        .destination(&d)
        .wait()
        .expect("read")
        .expect("dest kept");
    assert_eq!(dst.ranges, vec![(1, 20)]);
    assert_eq!(dst.delivered_through, 5);
    assert_eq!(dst.pending, 15);
    let pend = store.undelivered(&d, 0, 100).wait().expect("page");
    assert_eq!(pend.first().map(|m| m.number), Some(6));
    assert_eq!(pend.len(), 15);
}

#[test]
fn recovery_reads_are_paged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let s = sid("big");
    let total = 2_500u64;
    {
        let store = open(&path);
        store
            .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
            .wait()
            .expect("create");
        let pending: Vec<_> = (1..=total)
            .map(|n| store.record_sent(&s, n, kib(n)))
            .collect();
        for p in pending {
            p.wait().expect("durable");
        }
    }
    let store = open(&path);
    let mut after = 0;
    let mut seen = 0u64;
    let mut pages = 0;
    loop {
        let page = store.unacked(&s, after, 256).wait().expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 256);
        for m in &page {
            seen += 1;
            assert_eq!(m.number, seen);
            assert_eq!(m.envelope, kib(m.number));
        }
        after = page.last().map(|m| m.number).unwrap_or(after);
        pages += 1;
    }
    assert_eq!(seen, total);
    assert_eq!(pages, 10);
}

#[test]
fn group_commit_shares_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(dir.path().join("g.db"), &SqliteOptions::default()).expect("open");
    let handle: Store = store.clone().into();
    let s = sid("g");
    handle
        .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
        .wait()
        .expect("create");
    let before = store.stats();
    // Hold the writer thread busy, queue 100 writes behind it, then let it go: they are all
    // committed by one SQLite transaction.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let blocker = store.query(move |_| {
        let _ = started_tx.send(());
        let _ = release_rx.recv();
        Ok(())
    });
    started_rx.recv().expect("writer blocked");
    let pending: Vec<_> = (1..=100)
        .map(|n| handle.record_sent(&s, n, kib(n)))
        .collect();
    // Nothing is reported durable while the commit has not happened.
    let mut first = handle.record_sent(&s, 101, kib(101));
    assert!(first.try_result().is_none());
    release_tx.send(()).expect("release");
    blocker.wait().expect("blocker");
    for p in pending {
        p.wait().expect("durable");
    }
    first.wait().expect("durable");
    let after = store.stats();
    assert_eq!(after.transactions - before.transactions, 101);
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(after.failed, 0);

    // A failing transaction inside a batch fails alone.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let blocker = store.query(move |_| {
        let _ = started_tx.send(());
        let _ = release_rx.recv();
        Ok(())
    });
    started_rx.recv().expect("writer blocked");
    let ok1 = handle.record_sent(&s, 102, kib(102));
    let bad = handle.record_sent(&sid("missing"), 1, kib(1));
    let ok2 = handle.record_sent(&s, 103, kib(103));
    release_tx.send(()).expect("release");
    blocker.wait().expect("blocker");
    ok1.wait().expect("ok1");
    assert!(matches!(
        bad.wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    ok2.wait().expect("ok2");
    let stats = store.stats();
    assert_eq!(stats.commits - after.commits, 1);
    assert_eq!(stats.failed, 1);
    let info = handle.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.unacked, 103);
}

#[test]
fn second_open_in_process_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let first = open(&path);
    match Store::open_sqlite(&path, &SqliteOptions::default()) {
        Err(StoreError::Locked { path: p, lock }) => {
            assert_eq!(p, path);
            assert_eq!(lock, dir.path().join("s.db.lock"));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Read-only opens are refused too while a writer holds the store.
    assert!(matches!(
        Store::open_sqlite(&path, &SqliteOptions::default().read_only(true)),
        Err(StoreError::Locked { .. })
    ));
    drop(first);
    let again = open(&path);
    drop(again);
}

#[test]
fn second_process_is_refused() {
    if let Some((mode, path)) = child_mode() {
        if mode == "hold" {
            let store = open(&path);
            say("CHILD ready".into());
            // Hold the store until the parent closes our stdin.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(store);
        }
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut child = spawn_child("second_process_is_refused", "hold", &path);
    let lines = child_lines(&mut child, "CHILD ");
    assert_eq!(lines.recv().expect("child ready"), "ready");
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("must refuse");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(child.stdin.take());
    let status = child.wait().expect("child exit");
    assert!(status.success());
    // The child is gone: the store opens.
    open(&path);
}

#[test]
fn killed_writer_loses_nothing_reported_durable() {
    if let Some((mode, path)) = child_mode() {
        if mode == "write" {
            let store = open(&path);
            let s = sid("crash");
            store
                .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
                .wait()
                .expect("create");
            // Keep a window of writes in flight (like a sender), reporting each durable one;
            // the parent kills us at some point.
            let mut inflight = std::collections::VecDeque::new();
            for n in 1..=1_000_000u64 {
                inflight.push_back((n, store.record_sent_with_cursor(&s, n, kib(n), "taken", n)));
                if inflight.len() >= 32 {
                    if let Some((k, c)) = inflight.pop_front() {
                        c.wait().expect("durable");
                        say(format!("CHILD durable {k}"));
                    }
                }
            }
        }
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut child = spawn_child(
        "killed_writer_loses_nothing_reported_durable",
        "write",
        &path,
    );
    let lines = child_lines(&mut child, "CHILD durable ");
    let mut reported = 0u64;
    while reported < 300 {
        let line = lines.recv().expect("child reports");
        reported = line.parse().expect("number");
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Lines reported before the kill may still sit in the pipe.
    while let Ok(line) = lines.recv() {
        reported = reported.max(line.parse().expect("number"));
    }
    let store = open(&path);
    let s = sid("crash");
    let info = store
        .source(&s)
        .wait()
        .expect("read")
        .expect("sequence durable");
    let stored = info.next_number - 1;
    assert!(stored >= reported, "stored {stored} < reported {reported}");
    // What is stored is exactly the prefix 1..=stored (commits are in order), each message
    // intact, and the cursor matches the last stored message (same transaction).
    assert_eq!(info.unacked, stored);
    assert_eq!(store.cursor("taken").wait().expect("cursor"), Some(stored));
    let mut after = 0;
    let mut expect = 1;
    loop {
        let page = store.unacked(&s, after, 500).wait().expect("page");
        let Some(last) = page.last() else { break };
        after = last.number;
        for m in page {
            assert_eq!(m.number, expect);
            assert_eq!(m.envelope, kib(expect));
            expect += 1;
        }
    }
    assert_eq!(expect - 1, stored);
}

#[test]
fn killed_service_delivers_exactly_once() {
    let d = sid("inbox");
    if let Some((mode, path)) = child_mode() {
        if mode == "deliver" {
            let store = open(&path);
            // Deliver every pending message with an application write, reporting each
            // commit; the parent kills us at some point.
            loop {
                let page = store.undelivered(&d, 0, 16).wait().expect("page");
                if page.is_empty() {
                    say("CHILD done".into());
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    return;
                }
                for m in page {
                    let n = m.number;
                    let payload = m.payload.clone();
                    store
                        .deliver(&d, n, move |tx| {
                            let c = tx.sqlite().ok_or("durable store expected")?;
                            c.execute(
                                "INSERT INTO app_delivered (number, payload) VALUES (?1, ?2)",
                                rusqlite::params![n as i64, payload.as_ref()],
                            )?;
                            Ok(())
                        })
                        .wait()
                        .expect("delivered");
                    say(format!("CHILD delivered {n}"));
                }
            }
        }
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let total = 3_000u64;
    {
        let store = open(&path);
        store
            .create_dest(DestRecord::new(d.clone(), RmVersion::Wsrm10, "acks"))
            .wait()
            .expect("create");
        store
            .commit(Txn::single(Op::App(Box::new(|tx| {
                let c = tx.sqlite().ok_or("durable store expected")?;
                c.execute(
                    "CREATE TABLE app_delivered (number INTEGER PRIMARY KEY, payload BLOB)",
                    [],
                )?;
                Ok(())
            }))))
            .wait()
            .expect("app table");
        let pending: Vec<_> = (1..=total)
            .map(|n| store.received(&d, n, "act", kib(n), false))
            .collect();
        for p in pending {
            p.wait().expect("received");
        }
    }
    let mut reported_max = 0u64;
    let mut kills = 0;
    // Kill the delivering process three times, then let a fourth run finish.
    loop {
        let mut child = spawn_child("killed_service_delivers_exactly_once", "deliver", &path);
        let lines = child_lines(&mut child, "CHILD ");
        let mut got = 0;
        let mut done = false;
        while let Ok(line) = lines.recv() {
            if line == "done" {
                done = true;
                break;
            }
            let n: u64 = line
                .strip_prefix("delivered ")
                .and_then(|x| x.parse().ok())
                .expect("delivered line");
            assert!(
                n > reported_max,
                "message {n} handed out again after its commit"
            );
            reported_max = n;
            got += 1;
            if kills < 3 && got == 400 {
                break;
            }
        }
        if done {
            drop(child.stdin.take());
            assert!(child.wait().expect("exit").success());
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
        // Drain what the killed child reported before dying.
        while let Ok(line) = lines.recv() {
            if let Some(n) = line
                .strip_prefix("delivered ")
                .and_then(|x| x.parse::<u64>().ok())
            {
                assert!(n > reported_max, "message {n} handed out again");
                reported_max = n;
            }
        }
    }
    assert_eq!(kills, 3);
    let store = open(&path);
    let rows: Vec<(u64, Vec<u8>)> = store
        .as_sqlite()
        .expect("sqlite")
        .query(|c| {
            let mut st = c.prepare("SELECT number, payload FROM app_delivered ORDER BY number")?;
            let v = st
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        })
        .wait()
        .expect("app rows");
    // Every message exactly once (the primary key would have refused a second insert, and the
    // count shows none is missing), each with its own payload.
    assert_eq!(rows.len() as u64, total);
    for (i, (n, p)) in rows.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1);
        assert_eq!(Bytes::from(p.clone()), kib(*n));
    }
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.pending, 0);
    assert_eq!(info.delivered_through, total);
}

/// Bytes of a file, to check a refused store is left untouched.
fn contents(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}

#[test]
fn garbage_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
    match &err {
        StoreError::Corrupt { path: p, reason } => {
            assert_eq!(p, &path);
            assert_eq!(reason, "not an SQLite database (bad header)");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains("refusing to open it"));
    assert_eq!(contents(&path), garbage);
}

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    std::fs::write(&path, b"").expect("write");
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
    assert!(
        matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("empty")),
        "{err:?}"
    );
    assert!(contents(&path).is_empty());
}

fn filled_store(path: &Path, messages: u64) {
    let store = open(path);
    let s = sid("s");
    store
        .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
        .wait()
        .expect("create");
    let pending: Vec<_> = (1..=messages)
        .map(|n| store.record_sent(&s, n, kib(n)))
        .collect();
    for p in pending {
        p.wait().expect("durable");
    }
}

#[test]
fn truncated_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    filled_store(&path, 300);
    let full = contents(&path);
    assert!(full.len() > 200_000, "store is {} bytes", full.len());
    let cut = &full[..full.len() / 2];
    std::fs::write(&path, cut).expect("truncate");
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(contents(&path), cut);
}

#[test]
fn overwritten_pages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    filled_store(&path, 300);
    let mut bytes = contents(&path);
    // Scribble over the second page (a b-tree page), keeping the header intact.
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("write");
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(contents(&path), bytes);
}

#[test]
fn other_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
    }
    let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
    assert!(
        matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("another application")),
        "{err:?}"
    );
}

#[test]
fn unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    filled_store(&path, 3);
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        let app: i64 = c
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .expect("app id");
        assert_eq!(app, i64::from(APPLICATION_ID));
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        c.pragma_update(None, "user_version", 99).expect("bump");
    }
    match Store::open_sqlite(&path, &SqliteOptions::default()) {
        Err(StoreError::UnsupportedSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
}

#[test]
fn missing_store_without_create_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.db");
    assert!(matches!(
        Store::open_sqlite(&path, &SqliteOptions::default().create(false)),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        Store::open_sqlite(&path, &SqliteOptions::default().read_only(true)),
        Err(StoreError::NotFound { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn unwritable_location_is_a_clear_error() {
    // Root can write almost anywhere, but not into sysfs, and not under a missing directory.
    for path in [
        PathBuf::from("/sys/wsrm-store-test.db"),
        PathBuf::from("/nonexistent-wsrm-dir/sub/s.db"),
    ] {
        let err = Store::open_sqlite(&path, &SqliteOptions::default()).expect_err("refused");
        match &err {
            StoreError::Open { path: p, reason } => {
                assert_eq!(p, &path);
                assert!(reason.contains("lock file"), "{reason}");
            }
            other => panic!("expected Open, got {other:?}"),
        }
        assert!(err.to_string().starts_with("cannot open store"));
    }
}

#[test]
fn read_only_store_refuses_writes_and_reports_nothing_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    filled_store(&path, 5);
    let store =
        Store::open_sqlite(&path, &SqliteOptions::default().read_only(true)).expect("open ro");
    // Reads work.
    let s = sid("s");
    assert_eq!(store.unacked(&s, 0, 10).wait().expect("page").len(), 5);
    // Writes fail with ReadOnly, and then the store refuses every write.
    let err = store
        .record_sent(&s, 6, kib(6))
        .wait()
        .expect_err("read-only");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let err = store
        .source_acked(&s, &[(1, 5)])
        .wait()
        .expect_err("refused");
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("reopen"));
    assert!(matches!(
        store.remove_expired(std::time::SystemTime::now()).wait(),
        Err(StoreError::Poisoned { .. })
    ));
    drop(store);
    let store = open(&path);
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.unacked, 5);
    assert_eq!(info.next_number, 6);
}

#[test]
fn full_disk_fails_clearly_and_nothing_unstored_is_reported_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let s = sid("s");
    let mut ok = Vec::new();
    let mut first_error = None;
    {
        // 256 KiB cap: about 200 messages of 1 KiB fit.
        let store = Store::open_sqlite(
            &path,
            &SqliteOptions::default().max_size_bytes(Some(256 * 1024)),
        )
        .expect("open");
        store
            .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
            .wait()
            .expect("create");
        // Waves of 8 pipelined writes (a sender's window): failures hit whole group-commit
        // batches, never a write reported durable.
        let mut after_error = Vec::new();
        for wave in 0..75u64 {
            let pending: Vec<_> = (1..=8u64)
                .map(|i| {
                    let n = wave * 8 + i;
                    (n, store.record_sent(&s, n, kib(n)))
                })
                .collect();
            for (n, c) in pending {
                match c.wait() {
                    Ok(()) => {
                        assert!(first_error.is_none(), "message {n} durable after a failure");
                        ok.push(n);
                    }
                    Err(e) if first_error.is_none() => first_error = Some(e),
                    Err(e) => after_error.push(e),
                }
            }
        }
        let first = first_error.as_ref().expect("the cap is hit");
        assert!(matches!(first, StoreError::Full { .. }), "{first:?}");
        assert!(first.to_string().contains("full"));
        assert!(after_error
            .iter()
            .all(|e| matches!(e, StoreError::Full { .. } | StoreError::Poisoned { .. })));
        assert!(matches!(
            store.set_cursor("x", 1).wait(),
            Err(StoreError::Poisoned { .. })
        ));
        assert!(ok.len() > 100, "only {} stored", ok.len());
    }
    // After reopening (without the cap): exactly what was reported durable is there.
    let store = open(&path);
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = store.unacked(&s, after, 100).wait().expect("page");
        let Some(last) = page.last() else { break };
        after = last.number;
        stored.extend(page.into_iter().map(|m| m.number));
    }
    assert_eq!(stored, ok);
    // And the store works again.
    store
        .record_sent(&s, 601, kib(601))
        .wait()
        .expect("writable");
}

#[test]
fn application_hitting_full_disk_fails_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let d = sid("d");
    let store = Store::open_sqlite(
        &path,
        &SqliteOptions::default().max_size_bytes(Some(128 * 1024)),
    )
    .expect("open");
    store
        .create_dest(DestRecord::new(d.clone(), RmVersion::Wsrm10, "a"))
        .wait()
        .expect("create");
    store
        .received(&d, 1, "a", kib(1), false)
        .wait()
        .expect("recv");
    let err = store
        .deliver(&d, 1, |tx| {
            let c = tx.sqlite().ok_or("durable store expected")?;
            c.execute("CREATE TABLE big (b BLOB)", [])?;
            for _ in 0..1000 {
                c.execute("INSERT INTO big VALUES (zeroblob(4096))", [])?;
            }
            Ok(())
        })
        .wait()
        .expect_err("full");
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    drop(store);
    let store = open(&path);
    // The delivery did not happen: the message is still pending.
    let pend = store.undelivered(&d, 0, 10).wait().expect("page");
    assert_eq!(pend.len(), 1);
}

#[test]
fn store_stays_open_while_a_handle_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(dir.path().join("s.db"), &SqliteOptions::default()).expect("open");
    let path = store.path().to_path_buf();
    assert_eq!(path, dir.path().join("s.db"));
    let handle: Store = store.into();
    let clone = handle.clone();
    drop(handle);
    // A clone keeps the store open.
    clone.set_cursor("a", 1).wait().expect("still open");
    drop(clone);
    // Closed: the lock is free again.
    open(&path);
}

#[test]
fn panicking_read_does_not_stop_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(dir.path().join("s.db"), &SqliteOptions::default()).expect("open");
    let r = store
        .query(|_| -> rusqlite::Result<()> { panic!("application read bug") })
        .wait();
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    let handle: Store = store.into();
    handle.set_cursor("still", 1).wait().expect("writer alive");
    assert_eq!(handle.cursor("still").wait().expect("read"), Some(1));
}

/// Group commit keeps the received ranges of a sequence in memory across the bare `Received`
/// ops of one batch and writes them back once; any other op touching the sequence row sees
/// (and keeps) what they did, refusals change nothing, and a reopened store reads the same.
#[test]
fn received_ranges_batched_within_one_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    let store = open(&path);
    let d = sid("urn:uuid:batched");
    store
        .create_dest(DestRecord::new(d.clone(), RmVersion::Wsrm11, "urn:a"))
        .wait()
        .expect("create");
    let sqlite = store.as_sqlite().expect("sqlite").clone();
    let before = sqlite.stats().commits;
    // Hold the writer so everything below lands in one batch.
    let (started_tx, started_rx) = mpsc::channel();
    let hold = sqlite.query(move |_| {
        let _ = started_tx.send(());
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    });
    started_rx.recv().expect("writer held");
    let r1 = store.received(&d, 1, "urn:x", kib(1), false);
    let r3 = store.received(&d, 3, "urn:x", kib(3), false);
    let unknown = store.received(&sid("urn:uuid:nope"), 1, "urn:x", kib(1), false);
    let far = store.received(
        &d,
        wsrm::store::MAX_RECEIVE_AHEAD + 10,
        "urn:x",
        kib(9),
        false,
    );
    let deliver1 = store.mark_delivered(&d, 1);
    // A savepoint transaction in the middle reads and writes the sequence row.
    let closed = store.set_dest_state(&d, SequenceState::Closed, None);
    // So does a two-op transaction (the empty 1.0 LastMessage: received and delivered).
    let last = store.commit(
        Txn::new()
            .with(Op::Received {
                sequence: d.clone(),
                number: 5,
                action: String::new(),
                payload: Bytes::new(),
                last: true,
            })
            .with(Op::Deliver {
                sequence: d.clone(),
                number: 5,
                app: None,
            }),
    );
    let r2 = store.received(&d, 2, "urn:x", kib(2), false);
    let dup = store.received(&d, 3, "urn:x", kib(33), false);
    let r4 = store.received(&d, 4, "urn:x", kib(4), false);
    hold.wait().expect("hold");
    r1.wait().expect("1");
    r3.wait().expect("3");
    assert!(matches!(
        unknown.wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    assert!(matches!(far.wait(), Err(StoreError::Invalid { .. })));
    deliver1.wait().expect("deliver 1");
    closed.wait().expect("closed");
    last.wait().expect("last");
    r2.wait().expect("2");
    dup.wait().expect("dup");
    r4.wait().expect("4");
    assert_eq!(sqlite.stats().commits, before + 1, "one batch");
    let check = |store: &Store| {
        let info = store.destination(&d).wait().expect("read").expect("stored");
        assert_eq!(info.ranges, vec![(1, 5)]);
        assert_eq!(info.state, SequenceState::Closed);
        assert_eq!(info.last_number, Some(5));
        assert_eq!(info.pending, 3);
        let pend = store.undelivered(&d, 0, 10).wait().expect("page");
        assert_eq!(
            pend.iter().map(|p| p.number).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        // The duplicate did not replace the stored message.
        assert_eq!(pend[1].payload, kib(3));
    };
    check(&store);
    drop(store);
    drop(sqlite);
    check(&open(&path));
}
