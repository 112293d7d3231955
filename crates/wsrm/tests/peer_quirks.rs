//! Peer quirks over real HTTP: a scripted service on 127.0.0.1 that answers as the peer did in
//! the interop matrix (docs/interop.md), driven through the public `Client` API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use wsrm::{Binding, Client, ClientOptions};
use wsrm_proto::msg::{AckHeader, Action, Body, CreateSequenceResponse, Message, SequenceId};

mod common;

const ID: &str = "urn:uuid:5d2b3c4a-1787-4e12-ab8b-456732000019";

/// What the scripted service saw.
#[derive(Default)]
struct Seen {
    /// Copies of the last message received.
    last_copies: AtomicUsize,
    /// CloseSequence requests received.
    closes: AtomicUsize,
}

fn respond(m: &Message) -> hyper::Response<Full<Bytes>> {
    let env = wsrm_wire::encode(m, &wsrm_wire::Framing::soap12_wsa10()).unwrap();
    let mut resp = hyper::Response::new(Full::new(env));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/soap+xml; charset=utf-8"),
    );
    resp
}

/// The answer to request `m`: `action` and `body`, related to its MessageID.
fn reply(m: &Message, action: Action, body: Body) -> Message {
    let mut r = Message::new(m.version, action, body);
    r.relates_to = m.message_id.clone();
    r
}

/// An acknowledgement of `1..upto`, without `<Final/>` (as gSOAP writes it).
fn ack_to(upto: u64) -> AckHeader {
    AckHeader {
        identifier: SequenceId::from(ID),
        ranges: vec![(1, upto)],
        ..AckHeader::default()
    }
}

/// A gSOAP 2.8-like RM 1.1 one-way service (gSOAP quirks 3, 14, 19): every message but the
/// last is answered with a header-only acknowledgement; the answer to the first copy of the
/// last message (`last`) is lost on the way (the connection is cut); every later copy is a
/// duplicate, answered 202 without an acknowledgement, and so is AckRequested; CloseSequence is
/// answered with an acknowledgement of `1..last` without `<Final/>`.
async fn gsoap_like(last: u64) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let addr = common::serve_fn(move |req: Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            let b = req.into_body().collect().await.unwrap().to_bytes();
            let m = wsrm_wire::decode(b, &wsrm_wire::Limits::default())
                .unwrap()
                .message;
            let accepted = hyper::Response::builder()
                .status(202)
                .body(Full::new(Bytes::new()))
                .unwrap();
            match (&m.body, &m.sequence) {
                (Body::CreateSequence(_), _) => Ok(respond(&reply(
                    &m,
                    Action::CreateSequenceResponse,
                    Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                        identifier: SequenceId::from(ID),
                        expires: None,
                        incomplete_sequence_behavior: None,
                        accept: None,
                    })),
                ))),
                (Body::CloseSequence { .. }, _) => {
                    s.closes.fetch_add(1, Ordering::SeqCst);
                    let mut r = reply(
                        &m,
                        Action::CloseSequenceResponse,
                        Body::CloseSequenceResponse {
                            identifier: SequenceId::from(ID),
                        },
                    );
                    r.ack = Some(ack_to(last));
                    Ok(respond(&r))
                }
                (Body::TerminateSequence { .. }, _) => Ok(respond(&reply(
                    &m,
                    Action::TerminateSequenceResponse,
                    Body::TerminateSequenceResponse {
                        identifier: SequenceId::from(ID),
                    },
                ))),
                (_, Some(seq)) if seq.number < last => {
                    let mut r =
                        Message::new(m.version, Action::SequenceAcknowledgement, Body::Empty);
                    r.ack = Some(ack_to(seq.number));
                    Ok(respond(&r))
                }
                (_, Some(_)) => {
                    if s.last_copies.fetch_add(1, Ordering::SeqCst) == 0 {
                        // taken, but its answer is lost: cut the connection (after
                        // the client has started closing)
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err("answer lost")
                    } else {
                        Ok(accepted)
                    }
                }
                _ => Ok::<_, &str>(accepted),
            }
        }
    })
    .await;
    (format!("http://{addr}/svc"), seen)
}

// gSOAP quirk 19 for the last message (docs/engine.md, deviation 12): the session closes at
// once through an early CloseSequence instead of retransmitting the last message until
// MaxRetryCount (with WCF's backoff, minutes) and failing.
#[tokio::test]
async fn rm11_close_recovers_the_last_message_a_peer_will_not_acknowledge_again() {
    let last = 5;
    let (url, seen) = gsoap_like(last).await;
    let client = Client::open(&url, &Binding::ws2007_http(), ClientOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let sends: Vec<_> = (1..=last)
        .map(|i| client.start_send("urn:x/OneWay", format!("<p xmlns=\"urn:x\">{i}</p>")))
        .collect();
    let stats = tokio::time::timeout(Duration::from_secs(20), client.close())
        .await
        .expect("close did not finish")
        .expect("close failed");
    for (i, s) in sends.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), i as u64 + 1);
    }
    assert_eq!(stats.acknowledged, last);
    assert!(seen.last_copies.load(Ordering::SeqCst) >= 2);
    assert_eq!(seen.closes.load(Ordering::SeqCst), 1);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
