//! Durable sessions (issue 6), service side: received messages are stored before they are
//! acknowledged, deliveries commit with the handler's writes, and a restarted service on the
//! same store restores the session and delivers what was not committed, exactly once.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use wsrm::service::{Delivery, HandlerFuture, Outcome, SessionHandler};
use wsrm::store::{AppWrite, Store};
use wsrm::{Binding, Client, ClientOptions, Service};

/// Records committed deliveries (inside the store transaction); `handle` never returns for
/// numbers above `stall_above` (the crash point: those stay pending).
struct Committer {
    log: Arc<Mutex<Vec<(u64, String)>>>,
    stall_above: u64,
    body: Option<(u64, String)>,
}

impl SessionHandler for Committer {
    fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
        let stall = d.number > self.stall_above;
        self.body = Some((d.number, String::from_utf8_lossy(&d.body).into_owned()));
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            Outcome::NoReply
        })
    }

    fn commit(&mut self, number: u64) -> Option<AppWrite> {
        let log = self.log.clone();
        let body = self.body.take().filter(|(n, _)| *n == number)?;
        Some(Box::new(move |_tx| {
            log.lock().map_err(|_| "poisoned")?.push(body);
            Ok(())
        }))
    }
}

/// A service on `addr` with `store` whose handler is a [`Committer`] stalling above
/// `stall_above`.
async fn committing_service(
    binding: &Binding,
    store: &Store,
    log: &Arc<Mutex<Vec<(u64, String)>>>,
    stall_above: u64,
    addr: std::net::SocketAddr,
) -> Service {
    Service::builder(binding.clone())
        .handler(committer(log, stall_above))
        .store(store.clone())
        .bind(addr)
        .await
        .unwrap()
}

fn committer(
    log: &Arc<Mutex<Vec<(u64, String)>>>,
    stall_above: u64,
) -> impl Fn(&wsrm::SessionInfo) -> Committer + Send + Sync + 'static {
    let log = log.clone();
    move |_| Committer {
        log: log.clone(),
        stall_above,
        body: None,
    }
}

async fn restart_redelivers_uncommitted(binding: Binding, store: Store) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let any = "127.0.0.1:0".parse().unwrap();
    let svc = committing_service(&binding, &store, &log, 10, any).await;
    let addr = svc.local_addr();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=20 {
        assert_eq!(client.send(ONEWAY, payload(i)).await.unwrap(), i as u64);
    }
    let seq = client.sequence_id().unwrap();
    // All 20 acknowledged, hence stored; 1..=10 committed, 11..=20 pending.
    let info = store.destination(&seq).await.unwrap().unwrap();
    assert_eq!(info.ranges, vec![(1, 20)]);
    assert_eq!(info.delivered_through, 10);
    assert_eq!(info.pending, 10);
    // "Crash": the service goes away with its handler stuck; a new one starts on the store.
    svc.shutdown().await;
    let svc = committing_service(&binding, &store, &log, u64::MAX, addr).await;
    for i in 21..=30 {
        assert_eq!(client.send(ONEWAY, payload(i)).await.unwrap(), i as u64);
    }
    client.close().await.unwrap();
    // Every message exactly once, in order.
    let got = settled(&log, 30).await;
    let want: Vec<(u64, String)> = (1..=30).map(|i| (i as u64, payload(i))).collect();
    assert_eq!(got, want);
    svc.shutdown().await;
}

#[tokio::test]
async fn memory_store_restart_redelivers_uncommitted_rm10() {
    init_tracing();
    restart_redelivers_uncommitted(Binding::ws_http(), Store::memory()).await;
}

#[tokio::test]
async fn memory_store_restart_redelivers_uncommitted_rm11() {
    init_tracing();
    restart_redelivers_uncommitted(Binding::ws2007_http(), Store::memory()).await;
}

#[tokio::test]
async fn sqlite_store_commits_deliveries_with_application_writes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.db");
    let store = Store::open_sqlite(&path, &Default::default()).unwrap();
    store
        .commit(wsrm::store::Txn::single(wsrm::store::Op::App(Box::new(
            |tx| {
                tx.sqlite()
                    .ok_or("sqlite")?
                    .execute_batch("CREATE TABLE app_log (n INTEGER PRIMARY KEY, body TEXT)")?;
                Ok(())
            },
        ))))
        .await
        .unwrap();
    struct SqlApp(Option<(u64, String)>);
    impl SessionHandler for SqlApp {
        fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
            self.0 = Some((d.number, String::from_utf8_lossy(&d.body).into_owned()));
            Box::pin(async { Outcome::NoReply })
        }
        fn commit(&mut self, _number: u64) -> Option<AppWrite> {
            let (n, body) = self.0.take()?;
            Some(Box::new(move |tx| {
                tx.sqlite().ok_or("sqlite")?.execute(
                    "INSERT INTO app_log (n, body) VALUES (?1, ?2)",
                    wsrm::store::rusqlite::params![n as i64, body],
                )?;
                Ok(())
            }))
        }
    }
    let binding = Binding::ws2007_http();
    let svc = Service::builder(binding.clone())
        .handler(|_: &wsrm::SessionInfo| SqlApp(None))
        .store(store.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    let sends: Vec<_> = (1..=40)
        .map(|i| client.start_send(ONEWAY, payload(i)))
        .collect();
    for (i, s) in sends.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), i as u64 + 1);
    }
    client.close().await.unwrap();
    svc.shutdown().await;
    store.flush().await.unwrap();
    let rows: Vec<(i64, String)> = store
        .as_sqlite()
        .unwrap()
        .query(|c| {
            let mut st = c.prepare("SELECT n, body FROM app_log ORDER BY n")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    let want: Vec<(i64, String)> = (1..=40).map(|i| (i as i64, payload(i))).collect();
    assert_eq!(rows, want);
    // The closed session was forgotten once its handler was done.
    assert!(store.destinations().await.unwrap().is_empty());
}

/// A store that fills up: the messages that could not be stored are never acknowledged, and
/// everything acknowledged is in the store.
#[tokio::test]
async fn full_store_acknowledges_only_what_was_stored() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.db");
    let opts = wsrm::store::SqliteOptions {
        max_size_bytes: Some(96 * 1024),
        ..Default::default()
    };
    let store = Store::open_sqlite(&path, &opts).unwrap();
    let mut binding = Binding::ws2007_http();
    binding.transport.send_timeout = std::time::Duration::from_secs(3);
    // The handler never finishes, so every message stays pending in the store.
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = Service::builder(binding.clone())
        .handler(committer(&log, 0))
        .store(store.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    let seq = client.sequence_id().unwrap();
    let big = "x".repeat(4000);
    let mut acked = Vec::new();
    let mut failed = 0;
    for i in 1..=60u64 {
        match client.send(ONEWAY, format!("<b>{i}{big}</b>")).await {
            Ok(n) => acked.push(n),
            Err(_) => {
                failed += 1;
                break;
            }
        }
    }
    assert!(failed > 0, "the store never filled up");
    assert!(!acked.is_empty());
    client.abort();
    svc.shutdown().await;
    drop(store);
    // Reopen: every acknowledged number is stored.
    let mut store = None;
    for _ in 0..100 {
        match Store::open_sqlite(&path, &Default::default()) {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let store = store.expect("reopen");
    let info = store
        .destination(&seq)
        .await
        .unwrap()
        .expect("sequence stored");
    let stored = wsrm_proto::ranges::RangeSet::from_ranges(&info.ranges);
    for n in &acked {
        assert!(stored.contains(*n), "{n} acknowledged but not stored");
    }
}

/// Echoes requests; the execution is recorded in the delivery's store transaction, so the
/// log holds committed executions only.
struct Echo {
    log: Arc<Mutex<Vec<(u64, String)>>>,
    body: Option<(u64, String)>,
}

impl SessionHandler for Echo {
    fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
        let body = String::from_utf8_lossy(&d.body).into_owned();
        self.body = Some((d.number, body.clone()));
        Box::pin(async move {
            Outcome::Reply {
                action: Arc::from("urn:wsrm:test/EchoResponse"),
                body: bytes::Bytes::from(format!("<echo xmlns=\"urn:wsrm:test\">{body}</echo>")),
            }
        })
    }

    fn commit(&mut self, number: u64) -> Option<AppWrite> {
        let log = self.log.clone();
        let entry = self.body.take().filter(|(n, _)| *n == number)?;
        Some(Box::new(move |_tx| {
            log.lock().map_err(|_| "poisoned")?.push(entry);
            Ok(())
        }))
    }
}

async fn request_reply_restarts(binding: Binding) {
    let store = Store::memory();
    let log = Arc::new(Mutex::new(Vec::new()));
    let echo = |log: &Arc<Mutex<Vec<(u64, String)>>>| {
        let log = log.clone();
        move |_: &wsrm::SessionInfo| Echo {
            log: log.clone(),
            body: None,
        }
    };
    let mut svc = Service::builder(binding.clone())
        .handler(echo(&log))
        .store(store.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = svc.local_addr();
    // Replies get lost on the way back, so retransmitted requests meet cached replies — also
    // after a restart, when the cache comes from the store.
    let mut pc = wsrm::ProxyConfig::from_url(&svc.url("")).unwrap();
    pc.drop_responses = 0.3;
    pc.seed = 11;
    let proxy = wsrm::Proxy::spawn("127.0.0.1:0".parse().unwrap(), pc)
        .await
        .unwrap();
    let client = request_reply_client(&proxy.url("/svc"), &binding).await;
    let mut pending = Vec::new();
    for i in 1..=24usize {
        pending.push((i, client.start_request(ECHO, payload(i))));
        if i % 6 == 0 {
            // Restart with requests (and lost replies) outstanding.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            svc.shutdown().await;
            svc = Service::builder(binding.clone())
                .handler(echo(&log))
                .store(store.clone())
                .bind(addr)
                .await
                .unwrap();
        }
    }
    for (i, p) in pending {
        let r = p.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("<echo xmlns=\"urn:wsrm:test\">{}</echo>", payload(i))
        );
    }
    client.close().await.unwrap();
    // Every request executed (committed) exactly once, in order.
    let got = log.lock().unwrap().clone();
    let want: Vec<(u64, String)> = (1..=24).map(|i| (i as u64, payload(i))).collect();
    assert_eq!(got, want);
    svc.shutdown().await;
}

#[tokio::test]
async fn request_reply_restarts_replay_stored_replies_rm10() {
    init_tracing();
    request_reply_restarts(Binding::ws_http()).await;
}

#[tokio::test]
async fn request_reply_restarts_replay_stored_replies_rm11() {
    init_tracing();
    request_reply_restarts(Binding::ws2007_http()).await;
}

/// A hostile message number far past the window is neither stored nor acknowledged, and the
/// session keeps working (the store of a sequence is bounded by MAX_RECEIVE_AHEAD).
#[tokio::test]
async fn hostile_far_ahead_number_is_not_stored() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let store = Store::open_sqlite(&path, &Default::default()).unwrap();
    let binding = Binding::ws2007_http();
    let log: Log = Default::default();
    let svc = recording_service(&binding, &store, &log, "127.0.0.1:0").await;
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    client.send(ONEWAY, payload(1)).await.unwrap();
    let seq = client.sequence_id().unwrap();
    let far = wsrm::store::MAX_RECEIVE_AHEAD + 10;
    let c = raw_client();
    let (status, body) = post_raw(
        &c,
        &svc.url("/svc"),
        SOAP12_CT,
        raw_sequence_message(&seq, far),
    )
    .await;
    assert!(status == 200 || status == 202, "status {status}");
    if !body.is_empty() {
        let ack = decode(&body).ack.expect("an acknowledgement");
        assert!(ack.ranges.iter().all(|&(_, u)| u < far), "{:?}", ack.ranges);
    }
    let info = store.destination(&seq).await.unwrap().expect("stored");
    assert!(
        info.ranges.iter().all(|&(_, u)| u < far),
        "{:?}",
        info.ranges
    );
    for i in 2..=3 {
        client.send(ONEWAY, payload(i)).await.unwrap();
    }
    client.close().await.unwrap();
    let got: Vec<String> = settled(&log, 3).await.into_iter().map(|s| s.body).collect();
    assert_eq!(got, (1..=3).map(payload).collect::<Vec<_>>());
    svc.shutdown().await;
}

/// A service on `store` whose handler records what it is given, bound to `addr`.
async fn recording_service(binding: &Binding, store: &Store, log: &Log, addr: &str) -> Service {
    Service::builder(binding.clone())
        .handler(recorder(log))
        .store(store.clone())
        .bind(addr.parse().unwrap())
        .await
        .unwrap()
}

/// Test helper: a raw one-way message `number` of `seq` (WS-RM 1.1, SOAP 1.2).
/// 1.1: a sequence closed with CloseSequence stays closed after a restart: a later number gets
/// SequenceClosed instead of being accepted and delivered.
#[tokio::test]
async fn closed_sequence_stays_closed_after_restart() {
    use wsrm_proto::msg::{Action, Body, FaultKind, Message, RmVersion};
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path().join("c.db"), &Default::default()).unwrap();
    let binding = Binding::ws2007_http();
    let log: Log = Default::default();
    let svc = recording_service(&binding, &store, &log, "127.0.0.1:0").await;
    let addr = svc.local_addr();
    let url = svc.url("/svc");
    let client = Client::open(&url, &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=3 {
        client.send(ONEWAY, payload(i)).await.unwrap();
    }
    let seq = client.sequence_id().unwrap();
    let mut close = Message::new(
        RmVersion::Wsrm11,
        Action::CloseSequence,
        Body::CloseSequence {
            identifier: seq.clone(),
            last_msg_number: Some(3),
        },
    );
    close.message_id = Some(Arc::from("urn:uuid:00000000-0000-4000-8000-0000000c105e"));
    let c = raw_client();
    let (status, body) = post_raw(&c, &url, SOAP12_CT, envelope(&close)).await;
    assert_eq!(status, 200);
    assert!(matches!(
        decode(&body).body,
        Body::CloseSequenceResponse { .. }
    ));
    let info = store.destination(&seq).await.unwrap().expect("stored");
    assert_eq!(info.state, wsrm::store::SequenceState::Closed);
    assert_eq!(info.last_number, Some(3));
    svc.shutdown().await;
    // Restart on the same store: message 4 is refused as the closed sequence's.
    let svc = recording_service(&binding, &store, &log, &addr.to_string()).await;
    let (status, body) = post_raw(&c, &url, SOAP12_CT, raw_sequence_message(&seq, 4)).await;
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    match decode(&body).body {
        Body::Fault(f) => assert_eq!(f.kind, FaultKind::SequenceClosed),
        b => panic!("expected SequenceClosed, got {b:?}"),
    }
    let got: Vec<String> = log.lock().unwrap().iter().map(|s| s.body.clone()).collect();
    assert_eq!(got, (1..=3).map(payload).collect::<Vec<_>>());
    svc.shutdown().await;
    drop(client);
}

/// Expiry while running: a stored session whose client falls silent ends by InactivityTimeout
/// (the engine's timer, as in WCF) and its stored sequence is removed then — not only at the
/// next startup.
#[tokio::test]
async fn silent_session_expires_from_the_store_while_running() {
    init_tracing();
    let binding = Binding::ws2007_http().inactivity_timeout(std::time::Duration::from_secs(2));
    let store = Store::memory();
    let log = Log::default();
    let svc = recording_service(&binding, &store, &log, "127.0.0.1:0").await;
    // A durable client goes away without a word when dropped (a plain one aborts).
    let opts = ClientOptions {
        store: Some(Store::memory()),
        label: Some("silent".into()),
        ..ClientOptions::default()
    };
    let client = Client::open(&svc.url("/svc"), &binding, opts)
        .await
        .unwrap();
    client.send(ONEWAY, payload(1)).await.unwrap();
    assert_eq!(store.destinations().await.unwrap().len(), 1);
    drop(client);
    let started = std::time::Instant::now();
    loop {
        if store.destinations().await.unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the silent session is still stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Not before InactivityTimeout.
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(svc.stats().sessions_failed, 1);
    svc.shutdown().await;
}

/// A session the client closed cleanly while its handler was still behind: the service stops
/// (a crash, for its handler) with deliveries acknowledged and stored but not committed. A
/// restarted service on the same store delivers them, exactly once, although the client is
/// gone.
async fn closed_session_delivers_the_rest_after_a_restart(binding: Binding) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path().join("c.db"), &Default::default()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let any = "127.0.0.1:0".parse().unwrap();
    let svc = committing_service(&binding, &store, &log, 5, any).await;
    let addr = svc.local_addr();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=10 {
        client.send(ONEWAY, payload(i)).await.unwrap();
    }
    client.close().await.unwrap();
    let report = svc.shutdown().await;
    assert_eq!(log.lock().unwrap().len(), 5);
    // 6 was in the handler's hands, 7..=10 queued: left in the store, not waited for.
    assert_eq!((report.stored, report.sessions_stopped), (4, 0));
    let svc = committing_service(&binding, &store, &log, u64::MAX, addr).await;
    let got = settled(&log, 10).await;
    let want: Vec<(u64, String)> = (1..=10).map(|i| (i as u64, payload(i))).collect();
    assert_eq!(got, want);
    svc.shutdown().await;
}

#[tokio::test]
async fn closed_session_delivers_the_rest_after_a_restart_rm10() {
    closed_session_delivers_the_rest_after_a_restart(Binding::ws_http()).await;
}

#[tokio::test]
async fn closed_session_delivers_the_rest_after_a_restart_rm11() {
    closed_session_delivers_the_rest_after_a_restart(Binding::ws2007_http()).await;
}
