//! Durable sessions (issue 6), client side, request-reply: requests are stored before they
//! leave, replies before they are acknowledged; a client that goes away with requests and
//! replies outstanding and opens again on the same store gets every reply exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wsrm::store::{SqliteOptions, Store};
use wsrm::{Binding, Client, ClientOptions, ReplyCommit, Service};

const LABEL: &str = "rr-test";

/// Replies committed by the application, inside the delivery transaction: request → body.
type Committed = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

fn options(store: &Store, committed: &Committed) -> ClientOptions {
    let committed = committed.clone();
    ClientOptions {
        request_reply: true,
        store: Some(store.clone()),
        label: Some(LABEL.into()),
        seed: Some(rand_seed()),
        reply_commit: Some(ReplyCommit::new(move |request, reply| {
            let committed = committed.clone();
            let body = String::from_utf8_lossy(&reply.body).into_owned();
            Some(Box::new(move |_tx| {
                committed
                    .lock()
                    .map_err(|_| "poisoned")?
                    .entry(request)
                    .or_default()
                    .push(body);
                Ok(())
            }))
        })),
        ..ClientOptions::default()
    }
}

fn rand_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::SeqCst)
}

fn echo_of(i: u64) -> String {
    format!(
        "<echo xmlns=\"urn:wsrm:test\">{}</echo>",
        payload(i as usize)
    )
}

async fn resume_rounds(binding: Binding) {
    // What is tested is delivery across restarts, not the retry budget or the time budget:
    // a resumed session starts from WCF's 2 s RTO and backs off, and in Ordered mode one
    // reply lost a few times in a row holds every later reply behind it for tens of seconds.
    let binding = binding
        .max_retry_count(20)
        .send_timeout(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_sqlite(dir.path().join("client.db"), &SqliteOptions::default()).unwrap();
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    // Lost answers leave replies missing (the request is sent again and the service replays
    // its cached reply) and put later replies behind a gap (stored, not yet handed out).
    let mut pc = wsrm::ProxyConfig::from_url(&svc.url("")).unwrap();
    pc.drop_responses = 0.15;
    pc.drop_requests = 0.05;
    pc.seed = 5;
    let proxy = wsrm::Proxy::spawn("127.0.0.1:0".parse().unwrap(), pc)
        .await
        .unwrap();
    let url = proxy.url("/svc");
    let committed: Committed = Arc::default();
    let total = 60u64;
    let recovered_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut waited = 0u64;
    let mut sequences = std::collections::HashSet::new();
    for round in 0..4u64 {
        let client = Client::open(&url, &binding, options(&store, &committed))
            .await
            .unwrap();
        sequences.insert(client.sequence_id().unwrap());
        let taken = store.cursor(LABEL).await.unwrap().unwrap_or(0);
        if round > 0 {
            assert!(taken > 0, "round {round}: nothing was taken before");
        }
        // Replies to requests of earlier rounds come by `next_recovered_reply`.
        let waiting = client.recovered_waiting();
        let c2 = client.clone();
        let seen = recovered_seen.clone();
        let recovered = tokio::spawn(async move {
            while let Some(r) = c2.next_recovered_reply().await {
                assert_eq!(String::from_utf8_lossy(&r.reply.body), echo_of(r.request));
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let last = round == 3;
        let upto = if last { total } else { (taken + 15).min(total) };
        let mut pending = Vec::new();
        for i in taken + 1..=upto {
            pending.push((i, client.start_request(ECHO, payload(i as usize))));
        }
        if last {
            for (i, p) in pending {
                let r = p.await.unwrap();
                assert_eq!(String::from_utf8_lossy(&r.body), echo_of(i));
            }
            recovered.await.unwrap();
            assert_eq!(client.recovered_waiting(), 0);
            client.close().await.unwrap();
        } else {
            // Go away with requests and replies outstanding: once a third of this round's
            // replies are committed, the rest are in flight, lost, or held behind a gap.
            let until = std::time::Instant::now() + Duration::from_secs(300);
            while (committed.lock().unwrap().len() as u64) < taken + 5 {
                assert!(
                    std::time::Instant::now() < until,
                    "round {round}: no progress in 300 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(pending);
            recovered.abort();
            drop(client);
            tracing::info!(round, waiting, "client dropped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        waited += waiting;
    }
    // The resumes had requests from before to answer, and answered them through
    // `next_recovered_reply`.
    let recovered_seen = recovered_seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        waited > 0 && recovered_seen > 0,
        "waited {waited}, recovered {recovered_seen}"
    );
    // One sequence for the whole run.
    assert_eq!(sequences.len(), 1);
    let got = committed.lock().unwrap().clone();
    assert_eq!(got.len() as u64, total, "every request answered");
    for (i, bodies) in &got {
        assert_eq!(bodies, &vec![echo_of(*i)], "request {i}: exactly one reply");
    }
    // The service executed each request once (its reply cache answered the retransmissions).
    let executed: Vec<u64> = log.lock().unwrap().iter().map(|s| s.number).collect();
    assert_eq!(executed, (1..=total).collect::<Vec<_>>());
    // A clean close forgets the session.
    assert!(store.sources().await.unwrap().is_empty());
    assert!(store.destinations().await.unwrap().is_empty());
    tracing::info!(recovered_seen, "done");
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_reply_client_resumes_and_gets_every_reply_once_rm10() {
    init_tracing();
    resume_rounds(Binding::ws_http()).await;
}

#[tokio::test]
async fn request_reply_client_resumes_and_gets_every_reply_once_rm11() {
    init_tracing();
    resume_rounds(Binding::ws2007_http()).await;
}

/// A stored one-way run is not resumed as request-reply (or the other way round).
#[tokio::test]
async fn stored_pattern_must_match() {
    init_tracing();
    let binding = Binding::ws2007_http();
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let url = svc.url("/svc");
    let store = Store::memory();
    let one_way = ClientOptions {
        store: Some(store.clone()),
        label: Some(LABEL.into()),
        ..ClientOptions::default()
    };
    let c = Client::open(&url, &binding, one_way.clone()).await.unwrap();
    c.send(ONEWAY, payload(1)).await.unwrap();
    drop(c);
    let rr = ClientOptions {
        request_reply: true,
        ..one_way.clone()
    };
    let e = Client::open(&url, &binding, rr.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("one-way session"),
        "unexpected error: {e}"
    );
    // The one-way run resumes and closes; then a request-reply run starts fresh.
    let c = Client::open(&url, &binding, one_way).await.unwrap();
    c.close().await.unwrap();
    let c = Client::open(&url, &binding, rr.clone()).await.unwrap();
    let r = c.request(ECHO, payload(7)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.body), echo_of(7));
    drop(c);
    let e = Client::open(
        &url,
        &binding,
        ClientOptions {
            request_reply: false,
            ..rr
        },
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("request-reply session"),
        "unexpected error: {e}"
    );
}

/// A service on a store shared with a durable request-reply client does not take the client's
/// stored reply sequence for one of its own sessions.
#[tokio::test]
async fn service_on_a_shared_store_leaves_client_reply_sequences_alone() {
    init_tracing();
    let binding = Binding::ws2007_http();
    let log = Log::default();
    let remote = recording_echo_service(&binding, &log).await;
    let store = Store::memory();
    let committed: Committed = Arc::default();
    let c = Client::open(&remote.url("/svc"), &binding, options(&store, &committed))
        .await
        .unwrap();
    c.request(ECHO, payload(1)).await.unwrap();
    drop(c);
    let sources = store.sources().await.unwrap();
    let offered = sources[0]
        .record
        .offered
        .clone()
        .expect("reply sequence stored");
    assert!(store.destination(&offered).await.unwrap().is_some());
    let local = Service::builder(binding.clone())
        .handler(recorder(&log))
        .store(store.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // The local service does not know the client's reply sequence.
    let (status, body) = post_raw(
        &raw_client(),
        &local.url("/svc"),
        SOAP12_CT,
        raw_sequence_message(&offered, 2),
    )
    .await;
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("UnknownSequence"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    local.shutdown().await;
    // The client's run is still there to resume.
    let c = Client::open(&remote.url("/svc"), &binding, options(&store, &committed))
        .await
        .unwrap();
    c.close().await.unwrap();
    assert_eq!(committed.lock().unwrap().len(), 1);
}

/// A durable client's open that cannot reach the service fails as a memory one does: after
/// OpenTimeout, naming the last transport failure; the store is left as it was, and a later
/// open on it (once the service is up) starts the run.
#[tokio::test]
async fn a_durable_open_that_cannot_connect_names_the_connection_failure() {
    init_tracing();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let binding = Binding::ws2007_http().open_timeout(Duration::from_secs(1));
    let store = Store::memory();
    let one_way = ClientOptions {
        store: Some(store.clone()),
        label: Some(LABEL.into()),
        ..ClientOptions::default()
    };
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        Client::open(&format!("http://{addr}/svc"), &binding, one_way.clone()),
    )
    .await
    .expect("the open neither completed nor failed");
    match r {
        Err(wsrm::ClientError::Unreachable { cause, .. }) => {
            assert!(cause.contains("connect"), "{cause}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let c = Client::open(&svc.url("/svc"), &binding, one_way)
        .await
        .unwrap();
    c.send(ONEWAY, payload(1)).await.unwrap();
    c.close().await.unwrap();
    assert_eq!(settled(&log, 1).await.len(), 1);
}
