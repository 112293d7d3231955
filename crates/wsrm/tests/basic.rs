//! Client and service over loopback HTTP without faults.

mod common;

use std::sync::Arc;

use common::*;
use wsrm::{Binding, Client, ClientOptions, Service};

async fn one_way(binding: Binding, n: usize) {
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=n {
        let number = client.send(ONEWAY, payload(i)).await.unwrap();
        assert_eq!(number, i as u64);
    }
    // The service's per-session counters, read from its engine while the session is open.
    let sequence = client.sequence_id().unwrap();
    let on_service = svc.session_stats(&sequence).unwrap();
    assert_eq!(on_service.delivered, n as u64);
    assert_eq!(on_service.duplicates_dropped, 0);
    let stats = client.close().await.unwrap();
    // WS-RM 1.0 closes with an empty LastMessage that takes the next number (§4.2).
    let extra = u64::from(binding.session.reliable_messaging_version == wsrm::RmVersion::Wsrm10);
    assert_eq!(stats.acknowledged, n as u64 + extra);
    assert_eq!(stats.sent, n as u64 + extra);
    // Gone with the session.
    wait_for(|| svc.session_stats(&sequence).is_none()).await;
    let got = settled(&log, n).await;
    assert_eq!(got.len(), n);
    for (i, s) in got.iter().enumerate() {
        assert_eq!(s.number, i as u64 + 1);
        assert_eq!(s.body, payload(i + 1));
        assert_eq!(s.action, ONEWAY);
    }
}

#[tokio::test]
async fn one_way_rm10() {
    init_tracing();
    one_way(Binding::ws_http(), 20).await;
}

#[tokio::test]
async fn one_way_rm11() {
    init_tracing();
    one_way(Binding::ws2007_http(), 20).await;
}

async fn request_reply(binding: Binding, n: usize) {
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let client = request_reply_client(&svc.url("/svc"), &binding).await;
    for i in 1..=n {
        let r = client.request(ECHO, payload(i)).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("<echo xmlns=\"urn:wsrm:test\">{}</echo>", payload(i))
        );
        assert_eq!(&*r.action, "urn:wsrm:test/EchoResponse");
    }
    client.close().await.unwrap();
    assert_eq!(log.lock().unwrap().len(), n);
}

#[tokio::test]
async fn request_reply_rm10() {
    init_tracing();
    request_reply(Binding::ws_http(), 10).await;
}

#[tokio::test]
async fn request_reply_rm11() {
    init_tracing();
    request_reply(Binding::ws2007_http(), 10).await;
}

#[tokio::test]
async fn one_service_answers_each_client_in_its_own_rm_version() {
    init_tracing();
    let log = Log::default();
    let svc = Service::builder(Binding::ws_http())
        .handler(recorder(&log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (i, b) in [Binding::ws_http(), Binding::ws2007_http()]
        .into_iter()
        .enumerate()
    {
        let c = Client::open(&svc.url("/svc"), &b, ClientOptions::default())
            .await
            .unwrap();
        c.send(ONEWAY, payload(i + 1)).await.unwrap();
        c.close().await.unwrap();
    }
    let got: Vec<String> = settled(&log, 2).await.into_iter().map(|s| s.body).collect();
    assert_eq!(got, vec![payload(1), payload(2)]);
}

#[tokio::test]
async fn a_service_configured_to_one_version_refuses_the_other() {
    let svc = Service::builder(Binding::ws_http())
        .rm_versions(wsrm::RmVersions::BindingOnly)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = Binding::ws2007_http().open_timeout(std::time::Duration::from_secs(2));
    let err = Client::open(&svc.url("/svc"), &b, ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, wsrm::ClientError::Faulted(_)), "{err:?}");
    assert_eq!(svc.stats().sessions_created, 0);
}

#[tokio::test]
async fn abort_fails_the_session_on_the_service() {
    let svc = Service::builder(Binding::ws2007_http())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = Client::open(
        &svc.url("/svc"),
        &Binding::ws2007_http(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    c.send(ONEWAY, payload(1)).await.unwrap();
    c.abort();
    let err = c.send(ONEWAY, payload(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            wsrm::ClientError::Closed
                | wsrm::ClientError::Refused(wsrm_proto::SendError::NotOpen)
                | wsrm::ClientError::Faulted(wsrm::SessionError::Aborted)
        ),
        "{err:?}"
    );
    for _ in 0..2000 {
        if svc.stats().sessions_failed == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(svc.stats().sessions_failed, 1);
    assert_eq!(svc.stats().sessions_active, 0);
}

#[tokio::test]
async fn shutdown_closes_open_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let binding = Binding::ws_http();
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    // Two raw keep-alive connections: one after a complete exchange, one that never sent.
    let mut used = tokio::net::TcpStream::connect(svc.local_addr())
        .await
        .unwrap();
    let mut fresh = tokio::net::TcpStream::connect(svc.local_addr())
        .await
        .unwrap();
    used.write_all(b"GET /svc HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = used.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
    // The header read timeout (30 s) is far away: only the shutdown can close them now.
    let start = std::time::Instant::now();
    svc.shutdown().await;
    for tcp in [&mut used, &mut fresh] {
        assert!(
            closed_within(tcp, std::time::Duration::from_secs(5)).await,
            "a connection stayed open after the shutdown"
        );
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

/// A service without a handler acknowledges one-way messages without running anything (no
/// handler task); a request still goes to the acknowledge-only handler (on a task started for
/// it), which answers it with no reply, so the caller's SendTimeout ends the call.
#[tokio::test]
async fn a_service_without_a_handler_acknowledges_and_drops() {
    init_tracing();
    for request_reply in [false, true] {
        let binding = Binding::ws_http().send_timeout(std::time::Duration::from_secs(1));
        let svc = Service::builder(binding.clone())
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let opts = ClientOptions {
            request_reply,
            ..ClientOptions::default()
        };
        let client = Client::open(&svc.url("/svc"), &binding, opts)
            .await
            .unwrap();
        for i in 1..=5 {
            assert_eq!(client.send(ONEWAY, payload(i)).await.unwrap(), i as u64);
        }
        let sequence = client.sequence_id().unwrap();
        if !request_reply {
            assert_eq!(svc.session_stats(&sequence).unwrap().delivered, 5);
            client.close().await.unwrap();
            assert_eq!(svc.stats().delivered, 5);
            wait_for(|| svc.session_stats(&sequence).is_none()).await;
            continue;
        }
        let r = client.request(ECHO, payload(6)).await;
        assert!(matches!(r, Err(wsrm::ClientError::Timeout { .. })), "{r:?}");
        assert_eq!(svc.session_stats(&sequence).unwrap().delivered, 6);
        client.abort();
    }
}

/// A handler that waits on every other message (on a gate the test holds for the first one),
/// recording the order it sees and whether two of its calls ever overlapped.
struct Gated {
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
    inside: Arc<std::sync::atomic::AtomicUsize>,
    overlapped: Arc<std::sync::atomic::AtomicBool>,
    gate: Arc<tokio::sync::Semaphore>,
    ended: Arc<std::sync::atomic::AtomicUsize>,
}

impl wsrm::SessionHandler for Gated {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            if self.inside.fetch_add(1, SeqCst) != 0 {
                self.overlapped.store(true, SeqCst);
            }
            if d.number == 1 {
                // Held until the test saw every message acknowledged.
                let _ = self.gate.acquire().await;
            } else if d.number % 2 == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            self.seen.lock().unwrap().push(d.number);
            self.inside.fetch_sub(1, SeqCst);
            if d.expects_reply {
                wsrm::Outcome::Reply {
                    action: Arc::from("urn:wsrm:test/EchoResponse"),
                    body: d.body,
                }
            } else {
                wsrm::Outcome::NoReply
            }
        })
    }

    fn ended(&mut self, _end: &wsrm::SessionEnd) {
        self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Handlers get one delivery at a time, in order, whether they complete at once or wait; the
/// acknowledgements do not wait for them (the first message's handler call is held until all
/// are acknowledged) as long as the handler's queue is within two windows (beyond that the
/// session's BufferRemaining paces the client: tests/flow_control.rs); `ended` comes once per
/// session.
#[tokio::test]
async fn handlers_run_one_delivery_at_a_time_in_order_and_acks_do_not_wait_for_them() {
    use std::sync::atomic::Ordering::SeqCst;
    init_tracing();
    let binding = Binding::ws_http();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let overlapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = Gated {
        seen: seen.clone(),
        inside: inside.clone(),
        overlapped: overlapped.clone(),
        gate: gate.clone(),
        ended: ended.clone(),
    };
    let (s2, i2, o2, g2, e2) = (seen, inside, overlapped, gate, ended);
    let svc = Service::builder(binding.clone())
        .handler(move |_: &wsrm::SessionInfo| Gated {
            seen: s2.clone(),
            inside: i2.clone(),
            overlapped: o2.clone(),
            gate: g2.clone(),
            ended: e2.clone(),
        })
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    // Two windows (the default MaxTransferWindowSize is 8): the first in the handler's hands,
    // the rest queued.
    let n = 16u64;
    let pending: Vec<_> = (1..=n)
        .map(|i| client.start_send(ONEWAY, payload(i as usize)))
        .collect();
    for p in pending {
        tokio::time::timeout(std::time::Duration::from_secs(20), p)
            .await
            .expect("an acknowledgement waited for the handler")
            .unwrap();
    }
    assert!(h.seen.lock().unwrap().is_empty());
    h.gate.add_permits(1);
    wait_for(|| h.seen.lock().unwrap().len() == n as usize).await;
    assert_eq!(*h.seen.lock().unwrap(), (1..=n).collect::<Vec<_>>());
    assert!(!h.overlapped.load(SeqCst));
    client.close().await.unwrap();
    wait_for(|| h.ended.load(SeqCst) == 1).await;

    // Request-reply: each reply comes from the handler, also when it waited for it.
    h.seen.lock().unwrap().clear();
    h.gate.add_permits(1);
    let opts = ClientOptions {
        request_reply: true,
        ..ClientOptions::default()
    };
    let client = Client::open(&svc.url("/svc"), &binding, opts)
        .await
        .unwrap();
    for i in 1..=6usize {
        let r = client.request(ECHO, payload(i)).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.body), payload(i));
    }
    client.close().await.unwrap();
    assert_eq!(*h.seen.lock().unwrap(), (1..=6).collect::<Vec<_>>());
    assert!(!h.overlapped.load(SeqCst));
    wait_for(|| h.ended.load(SeqCst) == 2).await;
}

/// Panics on message 3 (before and while waiting, by turns of the test's loop); records the rest.
struct Panicky {
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
    wait_first: bool,
}

impl wsrm::SessionHandler for Panicky {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        if d.number == 3 && !self.wait_first {
            panic!("handler bug on message 3 (synchronous)");
        }
        let wait = self.wait_first;
        Box::pin(async move {
            if wait {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if d.number == 3 {
                panic!("handler bug on message 3 (after a wait)");
            }
            self.seen.lock().unwrap().push(d.number);
            wsrm::Outcome::NoReply
        })
    }
}

/// A handler's panic costs its message (counted as handled, logged), not the HTTP exchange that
/// delivered it, the session or the service.
#[tokio::test]
async fn a_panicking_handler_loses_only_its_own_message() {
    init_tracing();
    for wait_first in [false, true] {
        let binding = Binding::ws_http();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let svc = Service::builder(binding.clone())
            .handler(move |_: &wsrm::SessionInfo| Panicky {
                seen: s2.clone(),
                wait_first,
            })
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
            .await
            .unwrap();
        for i in 1..=6 {
            client.send(ONEWAY, payload(i)).await.unwrap();
        }
        wait_for(|| seen.lock().unwrap().len() == 5).await;
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 4, 5, 6]);
        client.close().await.unwrap();
        assert_eq!(svc.stats().delivered, 6);
    }
}

/// A window of 1 (MaxTransferWindowSize 1 on both sides): the acknowledgement answering each
/// message already counts it as taken by the service's handler (`BufferRemaining` 1), so the
/// client sends the next message at once instead of polling with AckRequested for the slot
/// (it did after every message, waiting at least 20 ms each time; a WCF client waits 30 s).
/// Counted at a transparent proxy: one exchange per message and none more.
#[tokio::test]
async fn a_window_of_one_needs_no_polling_between_messages() {
    init_tracing();
    for binding in [Binding::ws_http(), Binding::ws2007_http()] {
        let binding = binding.max_transfer_window_size(1);
        let log = Log::default();
        let svc = recording_echo_service(&binding, &log).await;
        let proxy = wsrm::Proxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            wsrm::ProxyConfig::new(svc.url("/svc").parse().unwrap()),
        )
        .await
        .unwrap();
        let client = Client::open(&proxy.url("/svc"), &binding, ClientOptions::default())
            .await
            .unwrap();
        let n = 20;
        for i in 1..=n {
            client.send(ONEWAY, payload(i)).await.unwrap();
        }
        // The answer to a raw copy of the last message (a duplicate, acknowledged again):
        // nothing waits for the application, so the whole window is free.
        let seq = client.sequence_id().unwrap();
        let mut m = decode(&bytes::Bytes::from(raw_sequence_message(&seq, n as u64)));
        m.version = binding.session.reliable_messaging_version;
        let (status, body) =
            post_raw(&raw_client(), &svc.url("/svc"), SOAP12_CT, envelope(&m)).await;
        assert_eq!(status, 200);
        let ack = decode(&body).ack.expect("an acknowledgement");
        assert_eq!(ack.ranges, vec![(1, n as u64)]);
        assert_eq!(ack.buffer_remaining, Some(1));
        client.close().await.unwrap();
        let got = settled(&log, n).await;
        assert_eq!(got.len(), n);
        let st = proxy.shutdown().await;
        // CreateSequence, the messages, LastMessage (1.0) or CloseSequence (1.1), Terminate.
        assert_eq!(st.forwarded, n as u64 + 3, "{st}");
        svc.shutdown().await;
    }
}

/// Request-reply with a client window (8) wider than the service's (1): the service holds at
/// most its window of unacknowledged replies and drops (HTTP 202) a request beyond it, and a
/// reply is acknowledged only by a later request. The client keeps its requests without a
/// reply within the service's BufferRemaining, so none is dropped: one exchange per request
/// and no retransmission (before, about one request in three waited for its retransmission).
#[tokio::test]
async fn requests_keep_within_a_narrower_service_window() {
    init_tracing();
    for binding in [Binding::ws_http(), Binding::ws2007_http()] {
        let log = Log::default();
        let svc = recording_echo_service(&binding.clone().max_transfer_window_size(1), &log).await;
        let proxy = wsrm::Proxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            wsrm::ProxyConfig::new(svc.url("/svc").parse().unwrap()),
        )
        .await
        .unwrap();
        let opts = ClientOptions {
            request_reply: true,
            ..ClientOptions::default()
        };
        let binding = binding.max_transfer_window_size(8);
        let client = Client::open(&proxy.url("/svc"), &binding, opts)
            .await
            .unwrap();
        let n = 30;
        let pending: Vec<_> = (1..=n)
            .map(|i| client.start_request(ECHO, payload(i)))
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            let r = p.await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                format!("<echo xmlns=\"urn:wsrm:test\">{}</echo>", payload(i + 1))
            );
        }
        let stats = client.close().await.unwrap();
        assert_eq!(stats.retransmitted, 0, "{stats:?}");
        assert_eq!(settled(&log, n).await.len(), n);
        let st = proxy.shutdown().await;
        // CreateSequence, the requests, LastMessage (1.0) or CloseSequence (1.1), Terminate.
        assert_eq!(st.forwarded, n as u64 + 3, "{st}");
        svc.shutdown().await;
    }
}

/// `Client::finished` resolves once the driver stopped: after an abort, whose
/// SequenceTerminated fault has reached the service by then, and after a close.
#[tokio::test]
async fn finished_resolves_after_abort_and_close() {
    init_tracing();
    let binding = Binding::ws_http();
    let (svc, _log, c) = service_with_session(&binding, 1).await;
    c.abort();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.finished())
        .await
        .expect("finished did not resolve after abort");
    assert_eq!(svc.stats().sessions_failed, 1, "{:?}", svc.stats());
    let c = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    c.send(ONEWAY, payload(2)).await.unwrap();
    c.close().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.finished())
        .await
        .expect("finished did not resolve after close");
    assert_eq!(svc.stats().sessions_closed, 1, "{:?}", svc.stats());
}
