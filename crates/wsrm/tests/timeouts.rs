//! SendTimeout on the client: a call that gets no outcome fails with `Timeout` after it, and an
//! HTTP exchange that gets no answer is cut off after it (the driver enforces both, without a
//! timer per call or exchange).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use wsrm::{Binding, Client, ClientError, ClientOptions};
use wsrm_proto::msg::{Action, Body, CreateSequenceResponse, Message, SequenceId};

mod common;

#[derive(Default)]
struct Seen {
    /// Sequence messages received (first transmissions and retransmissions).
    messages: AtomicUsize,
    /// Exchanges whose client gave up before an answer came (the service future was dropped).
    cut_off: AtomicUsize,
}

struct CountDrop(Arc<Seen>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.cut_off.fetch_add(1, Ordering::SeqCst);
    }
}

/// A service that answers CreateSequence and never answers anything else.
async fn black_hole() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let u = Arc::new(std::sync::OnceLock::<String>::new());
    let url_slot = u.clone();
    let addr = common::serve_fn(move |req: Request<hyper::body::Incoming>| {
        let (s, u) = (s.clone(), u.clone());
        async move {
            let b = req.into_body().collect().await.unwrap().to_bytes();
            let m = wsrm_wire::decode(b, &wsrm_wire::Limits::default())
                .unwrap()
                .message;
            if let Body::CreateSequence(cs) = &m.body {
                // an offered reply sequence is accepted (request-reply)
                let accept = cs.offer.as_ref().and_then(|_| u.get().cloned());
                let mut r = Message::new(
                    m.version,
                    Action::CreateSequenceResponse,
                    Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                        identifier: SequenceId::from("urn:uuid:black-hole"),
                        expires: None,
                        incomplete_sequence_behavior: None,
                        accept,
                    })),
                );
                r.relates_to = m.message_id.clone();
                let env = wsrm_wire::encode(&r, &wsrm_wire::Framing::soap12_wsa10()).unwrap();
                let mut resp = hyper::Response::new(Full::new(env));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/soap+xml; charset=utf-8"),
                );
                return Ok::<_, Infallible>(resp);
            }
            if m.sequence.is_some() {
                s.messages.fetch_add(1, Ordering::SeqCst);
            }
            let _guard = CountDrop(s.clone());
            std::future::pending::<()>().await;
            Ok(hyper::Response::new(Full::new(Bytes::new())))
        }
    })
    .await;
    let url = format!("http://{addr}/svc");
    let _ = url_slot.set(url.clone());
    (url, seen)
}

#[tokio::test]
async fn an_unanswered_send_times_out_after_send_timeout() {
    let (url, seen) = black_hole().await;
    let timeout = Duration::from_millis(1500);
    let binding = Binding::ws_http().send_timeout(timeout);
    let client = Client::open(&url, &binding, ClientOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let first = client.start_send("urn:x/OneWay", "<p xmlns=\"urn:x\">1</p>");
    let second = client.start_send("urn:x/OneWay", "<p xmlns=\"urn:x\">2</p>");
    for call in [first, second] {
        // bounded: a call that never fails would hang the test
        let r = tokio::time::timeout(timeout * 4, call)
            .await
            .expect("the send neither completed nor timed out");
        match r {
            Err(ClientError::Timeout { operation, after }) => {
                assert_eq!(operation, "send");
                assert_eq!(after, timeout);
            }
            other => panic!("expected a SendTimeout, got {other:?}"),
        }
    }
    let took = start.elapsed();
    assert!(took >= timeout, "failed after {took:?}, before SendTimeout");
    assert!(took < timeout * 4, "failed only after {took:?}");
    // The hung exchanges themselves were cut off at their SendTimeout, not left open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.cut_off.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.cut_off.load(Ordering::SeqCst) >= 2,
        "hung exchanges were not cut off (messages seen: {})",
        seen.messages.load(Ordering::SeqCst)
    );
    // A call after the timeout is still accepted by the (unharmed) session, and times out too.
    let later = tokio::time::timeout(
        timeout * 4,
        client.send("urn:x/OneWay", "<p xmlns=\"urn:x\">3</p>"),
    )
    .await
    .expect("the send neither completed nor timed out");
    assert!(
        matches!(later, Err(ClientError::Timeout { .. })),
        "{later:?}"
    );
    client.abort();
}

#[tokio::test]
async fn an_unanswered_request_times_out_after_send_timeout() {
    let (url, _seen) = black_hole().await;
    let timeout = Duration::from_millis(1200);
    let binding = Binding::ws2007_http().send_timeout(timeout);
    let opts = ClientOptions {
        request_reply: true,
        ..ClientOptions::default()
    };
    let client = Client::open(&url, &binding, opts).await.unwrap();
    let start = Instant::now();
    let call = client.request("urn:x/Echo", "<p xmlns=\"urn:x\"/>");
    match tokio::time::timeout(timeout * 4, call)
        .await
        .expect("the request neither completed nor timed out")
    {
        Err(ClientError::Timeout { operation, after }) => {
            assert_eq!(operation, "request");
            assert_eq!(after, timeout);
        }
        other => panic!("expected a SendTimeout, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(took >= timeout && took < timeout * 4, "{took:?}");
    client.abort();
}

/// A request the service acknowledges but never answers (its handler gives no reply, as for a
/// one-way operation): its copies are all acknowledged again, so the session fails after
/// MaxRetryCount, saying the reply is missing rather than that the request was not delivered.
#[tokio::test]
async fn a_request_acknowledged_without_a_reply_fails_naming_the_missing_reply() {
    common::init_tracing();
    for binding in [Binding::ws_http(), Binding::ws2007_http()] {
        // No handler: every message is acknowledged and none gets a reply.
        let svc = wsrm::Service::builder(binding.clone())
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let binding = binding.max_retry_count(2);
        let client = common::request_reply_client(&svc.url("/svc"), &binding).await;
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            client.request("urn:x/Echo", "<p xmlns=\"urn:x\"/>"),
        )
        .await
        .expect("the request neither completed nor failed");
        match r {
            Err(ClientError::Faulted(e @ wsrm::SessionError::NoReply { number: 1 })) => {
                assert!(e.to_string().contains("no reply"), "{e}");
            }
            other => panic!("expected NoReply for request 1, got {other:?}"),
        }
        assert!(client.stats().retransmitted >= 2);
    }
}

/// The OpenTimeout of the open tests below.
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a one-way session to `url` with OpenTimeout `t` (bounded at ten times that).
async fn open_within(t: Duration, url: &str) -> Result<Client, ClientError> {
    let binding = Binding::ws_http().open_timeout(t);
    tokio::time::timeout(
        t * 10,
        Client::open(url, &binding, ClientOptions::default()),
    )
    .await
    .expect("the open neither completed nor failed")
}

/// OpenTimeout when nothing can be reached: the open fails after it, naming the last
/// attempt's transport failure (as WCF's open throws its last attempt's exception), not a bare
/// timeout.
#[tokio::test]
async fn an_open_that_cannot_connect_names_the_connection_failure() {
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let start = Instant::now();
    let r = open_within(OPEN_TIMEOUT, &format!("http://{addr}/svc")).await;
    match r {
        Err(ClientError::Unreachable { after, cause }) => {
            assert_eq!(after, OPEN_TIMEOUT);
            assert!(cause.contains("connect"), "{cause}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Retried until OpenTimeout, as WCF does (the service may be starting).
    assert!(
        start.elapsed() >= OPEN_TIMEOUT,
        "gave up after {:?}",
        start.elapsed()
    );
}

/// An HTTP error status without a SOAP answer is retried until OpenTimeout, then named.
#[tokio::test]
async fn an_open_answered_only_with_http_errors_names_the_status() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let addr = common::serve_fn(move |_req: Request<hyper::body::Incoming>| {
        let t = t.clone();
        async move {
            t.fetch_add(1, Ordering::SeqCst);
            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(resp)
        }
    })
    .await;
    let r = open_within(OPEN_TIMEOUT, &format!("http://{addr}/svc")).await;
    match r {
        Err(ClientError::Unreachable { cause, .. }) => {
            assert!(cause.contains("503"), "{cause}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        tries.load(Ordering::SeqCst) >= 2,
        "CreateSequence was not retried ({} attempts)",
        tries.load(Ordering::SeqCst)
    );
}

/// A CreateSequence that gets no answer at all: the open fails with OpenTimeout itself (no
/// transport failure to name).
#[tokio::test]
async fn an_open_without_any_answer_fails_with_open_timeout() {
    let addr = common::serve_fn(move |_req: Request<hyper::body::Incoming>| async move {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
    })
    .await;
    let r = open_within(OPEN_TIMEOUT, &format!("http://{addr}/svc")).await;
    assert!(
        matches!(
            r,
            Err(ClientError::Faulted(wsrm::SessionError::OpenTimeout))
        ),
        "{r:?}"
    );
}
