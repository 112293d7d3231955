//! Hostile and malformed input: each is answered as WCF would (fault + HTTP status) or cut off
//! at bounded cost, and a session already running keeps working without losing anything.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsrm::{Binding, Client, ClientError, ClientOptions, Service, SessionError};
use wsrm_proto::msg::{
    Action, Body, CreateSequence, FaultKind, Message, RmVersion, SequenceHeader, SequenceId,
};

struct Fixture {
    svc: Service,
    log: Log,
    client: Client,
    binding: Binding,
}

async fn fixture(binding: Binding, max_sessions: usize) -> Fixture {
    let log = Log::default();
    let svc = Service::builder(binding.clone())
        .max_sessions(max_sessions)
        .handler(recorder(&log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=3 {
        client.send(ONEWAY, payload(i)).await.unwrap();
    }
    Fixture {
        svc,
        log,
        client,
        binding,
    }
}

impl Fixture {
    /// The running session still works and nothing acknowledged was lost.
    async fn still_fine(self) {
        for i in 4..=6 {
            self.client.send(ONEWAY, payload(i)).await.unwrap();
        }
        self.client.close().await.unwrap();
        let got: Vec<String> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.body.clone())
            .collect();
        let want: Vec<String> = (1..=6).map(payload).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn malformed_xml_gets_400() {
    let f = fixture(Binding::ws_http(), 100).await;
    let c = raw_client();
    let (status, body) = post_raw(
        &c,
        &f.svc.url("/svc"),
        SOAP12_CT,
        b"<s:Envelope><oops".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.is_empty());
    f.still_fine().await;
}

#[tokio::test]
async fn wrong_soap_version_is_refused() {
    let f = fixture(Binding::ws_http(), 100).await;
    let c = raw_client();
    // SOAP 1.1 media type to a SOAP 1.2 binding: the transport refuses it.
    let (status, _) = post_raw(
        &c,
        &f.svc.url("/svc"),
        "text/xml; charset=utf-8",
        b"<x/>".to_vec(),
    )
    .await;
    assert_eq!(status, 415);
    // A SOAP 1.1 envelope under the SOAP 1.2 media type: a VersionMismatch fault.
    let m = Message::new(RmVersion::Wsrm10, Action::AckRequested, Body::Empty);
    let env11 = wsrm_wire::encode(
        &Message {
            ack_requested: Some(SequenceId::from("urn:uuid:x")),
            ..m
        },
        &wsrm_wire::Framing::new(wsrm::SoapVersion::Soap11, wsrm::AddressingVersion::Wsa10),
    )
    .unwrap();
    let (status, body) = post_raw(&c, &f.svc.url("/svc"), SOAP12_CT, env11.to_vec()).await;
    assert_eq!(status, 500);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("VersionMismatch"), "{text}");
    f.still_fine().await;
}

#[tokio::test]
async fn unknown_sequence_gets_the_fault() {
    let f = fixture(Binding::ws_http(), 100).await;
    let c = raw_client();
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from(ONEWAY)),
        Body::Application(Bytes::from_static(b"<x xmlns=\"urn:x\"/>")),
    );
    m.sequence = Some(SequenceHeader {
        identifier: SequenceId::from("urn:uuid:no-such-sequence"),
        number: 1,
        last_message: false,
    });
    m.message_id = Some(Arc::from("urn:uuid:m1"));
    let (status, body) = post_raw(&c, &f.svc.url("/svc"), SOAP12_CT, envelope(&m)).await;
    assert_eq!(status, 500);
    match decode(&body).body {
        Body::Fault(fault) => {
            assert_eq!(fault.kind, FaultKind::UnknownSequence);
            assert_eq!(
                fault.detail.identifier().map(|i| i.as_str()),
                Some("urn:uuid:no-such-sequence")
            );
        }
        other => panic!("{other:?}"),
    }
    f.still_fine().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let f = fixture(Binding::ws_http(), 100).await;
    let c = raw_client();
    let big = vec![b'a'; 65_537];
    let (status, _) = post_raw(&c, &f.svc.url("/svc"), SOAP12_CT, big).await;
    assert_eq!(status, 413);
    f.still_fine().await;
}

/// A client whose WS-Addressing version differs from the service's: the service answers the
/// CreateSequence with a fault it cannot relate to it (it could not read the MessageID), and the
/// open fails with that fault at once instead of waiting out OpenTimeout (1 min).
#[tokio::test]
async fn an_addressing_version_mismatch_fails_the_open_at_once_with_the_services_fault() {
    init_tracing();
    let log = Log::default();
    let svc = recording_echo_service(&Binding::ws_http(), &log).await;
    let binding = Binding::ws_http().addressing(wsrm::AddressingVersion::Wsa200408);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        Client::open(&svc.url("/svc"), &binding, ClientOptions::default()),
    )
    .await
    .expect("the open waited for OpenTimeout");
    match r {
        Err(ClientError::Faulted(SessionError::RemoteFault(f))) => {
            assert!(f.reason.contains("message version"), "{f:?}");
        }
        other => panic!("expected the service's fault, got {other:?}"),
    }
    assert_eq!(svc.stats().sessions_created, 0);
}

/// A client message larger than the service accepts: the service answers 413, and the client
/// fails the session at once (SequenceTerminated to the service) with MessageTooLarge instead
/// of retransmitting it to MaxRetryCount (about half a minute of backed-off retries here, and
/// "maximum retry count exceeded" as the reason). The messages before it were delivered, and
/// the service ends the session on the fault.
#[tokio::test]
async fn a_message_larger_than_the_service_accepts_fails_the_session_at_once() {
    init_tracing();
    let (svc, log, c) = service_with_session(&Binding::ws_http(), 3).await;
    let big = format!("<p xmlns=\"urn:wsrm:test\">{}</p>", "x".repeat(70_000));
    let r = tokio::time::timeout(Duration::from_secs(10), c.send(ONEWAY, big))
        .await
        .expect("the oversized message was retried instead of failing the session");
    assert!(
        matches!(
            r,
            Err(ClientError::Faulted(SessionError::MessageTooLarge {
                number: 4
            }))
        ),
        "{r:?}"
    );
    assert_eq!(c.stats().retransmitted, 0);
    assert_eq!(settled(&log, 3).await.len(), 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while svc.stats().sessions_failed == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(svc.stats().sessions_failed, 1, "{:?}", svc.stats());
}

/// A body the service cannot read (a control character XML cannot carry): the service answers
/// every transmission HTTP 400 (WCF's answer to an unreadable message), the client retries it to
/// MaxRetryCount as WCF does, and the session's error names that answer instead of only
/// "maximum retry count exceeded". A service that went away is named the same way.
#[tokio::test]
async fn retries_exhausted_in_the_transport_name_the_last_failure() {
    init_tracing();
    let binding = Binding::ws_http().max_retry_count(2);
    let (svc, log, c) = service_with_session(&binding, 2).await;
    let unreadable = "<p xmlns=\"urn:wsrm:test\">\u{1}</p>";
    let r = tokio::time::timeout(Duration::from_secs(20), c.send(ONEWAY, unreadable))
        .await
        .expect("not failed in time");
    match &r {
        Err(ClientError::Undeliverable { number: 3, cause }) => {
            assert!(cause.contains("HTTP 400"), "{cause}")
        }
        other => panic!("{other:?}"),
    }
    let shown = r.unwrap_err().to_string();
    assert!(
        shown.contains("maximum retry count exceeded for message 3"),
        "{shown}"
    );
    assert_eq!(c.stats().retransmitted, 2);
    assert_eq!(settled(&log, 2).await.len(), 2);
    // Calls after the failure get its reason, while the driver still runs and after it ended
    // (before: "refused: the session no longer accepts messages", then "no longer running").
    let same = |r: Result<(), ClientError>| {
        assert!(
            matches!(r, Err(ClientError::Undeliverable { number: 3, .. })),
            "{r:?}"
        )
    };
    same(c.send(ONEWAY, payload(9)).await.map(|_| ()));
    c.finished().await;
    same(c.send(ONEWAY, payload(10)).await.map(|_| ()));
    same(c.close().await.map(|_| ()));

    // The service stops: the next message's transmissions are refused by the OS.
    let c = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    c.send(ONEWAY, payload(1)).await.unwrap();
    svc.shutdown().await;
    let r = tokio::time::timeout(Duration::from_secs(20), c.send(ONEWAY, payload(2)))
        .await
        .expect("not failed in time");
    match &r {
        Err(ClientError::Undeliverable { number: 2, cause }) => {
            assert!(cause.to_lowercase().contains("connect"), "{cause}")
        }
        other => panic!("{other:?}"),
    }
}

/// Request-reply: a reply larger than the client accepts (the service's limit is higher) can
/// never be received: the session fails at once with ReplyTooLarge.
#[tokio::test]
async fn a_reply_larger_than_the_client_accepts_fails_the_session_at_once() {
    init_tracing();
    let log = Log::default();
    let svc = recording_echo_service(
        &Binding::ws2007_http().max_received_message_size(1 << 20),
        &log,
    )
    .await;
    let binding = Binding::ws2007_http();
    let c = Client::open(
        &svc.url("/svc"),
        &binding,
        ClientOptions {
            request_reply: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.request(ECHO, payload(1)).await.unwrap();
    // The request fits the service's limit (1 MiB); its echo does not fit the client's (64 KiB).
    let big = format!("<p xmlns=\"urn:wsrm:test\">{}</p>", "x".repeat(66_000));
    let r = tokio::time::timeout(Duration::from_secs(10), c.request(ECHO, big))
        .await
        .expect("the request was retried instead of failing the session")
        .map(|reply| reply.body.len());
    assert!(
        matches!(
            r,
            Err(ClientError::Faulted(SessionError::ReplyTooLarge {
                number: 2
            }))
        ),
        "{r:?}"
    );
}

/// A service whose header read timeout is `t`, and a raw connection to it.
async fn connected_with_header_timeout(t: Duration) -> (Fixture, tokio::net::TcpStream) {
    let mut b = Binding::ws_http();
    b.transport.request_header_timeout = t;
    let f = fixture(b, 100).await;
    let tcp = tokio::net::TcpStream::connect(f.svc.local_addr())
        .await
        .unwrap();
    (f, tcp)
}

#[tokio::test]
async fn slow_drip_requests_are_cut_off() {
    let (f, mut tcp) = connected_with_header_timeout(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    tcp.write_all(b"POST /svc HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Keep dripping, but never finish the head: the server closes the connection on its own,
    // within 1 to 1.25 times the header read timeout.
    let mut buf = [0u8; 1024];
    let mut total = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                r = tcp.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if tcp.write_all(b"X").await.is_err() {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a dripping request head was not cut off");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "cut off after {took:?}"
    );
    let text = String::from_utf8_lossy(&total);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    f.still_fine().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_read_timeout() {
    let (f, mut tcp) = connected_with_header_timeout(Duration::from_millis(300)).await;
    // One complete exchange, then silence.
    let req = b"GET /svc HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(req).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
    let start = std::time::Instant::now();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(10)).await,
        "an idle connection stayed open"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    f.still_fine().await;
}

#[tokio::test]
async fn more_sessions_than_allowed_are_refused_as_server_too_busy() {
    let f = fixture(Binding::ws_http(), 2).await;
    let second = Client::open(&f.svc.url("/svc"), &f.binding, ClientOptions::default())
        .await
        .unwrap();
    let err = Client::open(&f.svc.url("/svc"), &f.binding, ClientOptions::default())
        .await
        .unwrap_err();
    match &err {
        ClientError::Faulted(SessionError::Refused(fault)) => {
            assert_eq!(fault.kind, FaultKind::ConnectionLimitReached, "{fault:?}");
        }
        other => panic!("{other:?}"),
    }
    second.send(ONEWAY, payload(100)).await.unwrap();
    second.close().await.unwrap();
    f.log.lock().unwrap().retain(|s| s.body != payload(100));
    f.still_fine().await;
}

#[tokio::test]
async fn create_sequence_flood_is_bounded() {
    let f = fixture(Binding::ws_http(), 20).await;
    let c = raw_client();
    let url = f.svc.url("/svc");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (c, url) = (c.clone(), url.clone());
        set.spawn(async move {
            let mut m = Message::new(
                RmVersion::Wsrm10,
                Action::CreateSequence,
                Body::CreateSequence(Box::new(CreateSequence {
                    acks_to: String::new(),
                    expires: None,
                    offer: None,
                })),
            );
            m.message_id = Some(Arc::from(format!("urn:uuid:flood-{i}").as_str()));
            m.to = Some(Arc::from(url.as_str()));
            post_raw(&c, &url, SOAP12_CT, envelope(&m)).await
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (status, body) = r.unwrap();
        match (status, decode(&body).body) {
            (200, Body::CreateSequenceResponse(_)) => created += 1,
            (500, Body::Fault(fault)) => {
                assert_eq!(fault.kind, FaultKind::ConnectionLimitReached);
                refused += 1;
            }
            (s, b) => panic!("{s} {b:?}"),
        }
    }
    // 20 sessions at most, one of which is the fixture's own.
    assert_eq!((created, refused), (19, 81));
    assert_eq!(f.svc.stats().sessions_created, 20);
    f.still_fine().await;
}

#[tokio::test]
async fn unknown_must_understand_header_gets_must_understand_fault_with_not_understood() {
    let f = fixture(Binding::ws_http(), 100).await;
    let c = raw_client();
    let env = concat!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
        r#"xmlns:a="http://www.w3.org/2005/08/addressing">"#,
        r#"<s:Header><a:Action s:mustUnderstand="1">urn:wsrm:test/OneWay</a:Action>"#,
        r#"<a:MessageID>urn:uuid:00000000-0000-4000-8000-0000000000aa</a:MessageID>"#,
        r#"<x:Secret xmlns:x="urn:example:unknown" s:mustUnderstand="true">1</x:Secret>"#,
        r#"</s:Header><s:Body><p xmlns="urn:wsrm:payload">x</p></s:Body></s:Envelope>"#
    );
    let (status, body) = post_raw(&c, &f.svc.url("/svc"), SOAP12_CT, env.as_bytes().to_vec()).await;
    assert_eq!(status, 500);
    let text = String::from_utf8_lossy(&body);
    // SOAP 1.2 MustUnderstand fault, naming the header in an env:NotUnderstood header.
    assert!(text.contains("MustUnderstand"), "{text}");
    assert!(text.contains("NotUnderstood"), "{text}");
    assert!(text.contains("urn:example:unknown"), "{text}");
    assert!(text.contains(":Secret\""), "{text}");
    f.still_fine().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_after_the_body_read_timeout() {
    let mut b = Binding::ws_http();
    b.transport.request_body_timeout = Duration::from_millis(300);
    let f = fixture(b, 100).await;
    let mut tcp = tokio::net::TcpStream::connect(f.svc.local_addr())
        .await
        .unwrap();
    // A complete head announcing 1000 bytes, then only the first 20 of them.
    tcp.write_all(
        b"POST /svc HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml; charset=utf-8\r\nContent-Length: 1000\r\n\r\n<s:Envelope xmlns:s=",
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    f.still_fine().await;
}
