//! A scripted service on 127.0.0.1 that answers as the gSOAP 2.8 RM 1.1 one-way service did in
//! the interop matrix (docs/interop.md, gSOAP quirks 3, 14 and 19). Shared by the runtime's
//! `peer_quirks.rs` (through the `Client` API) and the command's `peer_quirks.rs` (through
//! `wsrm send`), which include this file by path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use wsrm_proto::msg::{AckHeader, Action, Body, CreateSequenceResponse, Message, SequenceId};

/// The sequence identifier the service hands out (gSOAP's shape, quirk 9).
pub const ID: &str = "urn:uuid:5d2b3c4a-1787-4e12-ab8b-456732000019";

/// What the scripted service saw.
#[derive(Default)]
pub struct Seen {
    /// Copies of the last message received.
    pub last_copies: AtomicUsize,
    /// CloseSequence requests received.
    pub closes: AtomicUsize,
    /// TerminateSequence requests received.
    pub terminates: AtomicUsize,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn envelope(m: &Message) -> Result<Response<Full<Bytes>>, BoxError> {
    let env = wsrm_wire::encode(m, &wsrm_wire::Framing::soap12_wsa10())?;
    let mut resp = Response::new(Full::new(env));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/soap+xml; charset=utf-8"),
    );
    Ok(resp)
}

/// The answer to request `m`: `action` and `body`, related to its MessageID.
fn answer(m: &Message, action: Action, body: Body) -> Message {
    let mut r = Message::new(m.version, action, body);
    r.relates_to = m.message_id.clone();
    r
}

/// An acknowledgement of `1..upto` without `<Final/>`, as gSOAP writes it (quirk 8/14).
fn ack_to(upto: u64) -> AckHeader {
    AckHeader {
        identifier: SequenceId::from(ID),
        ranges: vec![(1, upto)],
        ..AckHeader::default()
    }
}

/// One exchange: messages before `last` get a header-only acknowledgement; the answer to the
/// first copy of `last` is lost (the connection is cut after 200 ms, as when the proxy
/// discarded the copy that carried the ack); every later copy is a duplicate, answered 202
/// without an acknowledgement, as is AckRequested; CloseSequence gets an acknowledgement of
/// `1..last`.
async fn exchange(
    req: Request<hyper::body::Incoming>,
    last: u64,
    seen: Arc<Seen>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let bytes = req.into_body().collect().await?.to_bytes();
    let m = wsrm_wire::decode(bytes, &wsrm_wire::Limits::default())?.message;
    let mut accepted = Response::new(Full::new(Bytes::new()));
    *accepted.status_mut() = hyper::StatusCode::ACCEPTED;
    match (&m.body, &m.sequence) {
        (Body::CreateSequence(_), _) => envelope(&answer(
            &m,
            Action::CreateSequenceResponse,
            Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                identifier: SequenceId::from(ID),
                expires: None,
                incomplete_sequence_behavior: None,
                accept: None,
            })),
        )),
        (Body::CloseSequence { .. }, _) => {
            seen.closes.fetch_add(1, Ordering::SeqCst);
            let mut r = answer(
                &m,
                Action::CloseSequenceResponse,
                Body::CloseSequenceResponse {
                    identifier: SequenceId::from(ID),
                },
            );
            r.ack = Some(ack_to(last));
            envelope(&r)
        }
        (Body::TerminateSequence { .. }, _) => {
            seen.terminates.fetch_add(1, Ordering::SeqCst);
            envelope(&answer(
                &m,
                Action::TerminateSequenceResponse,
                Body::TerminateSequenceResponse {
                    identifier: SequenceId::from(ID),
                },
            ))
        }
        (_, Some(seq)) if seq.number < last => {
            let mut r = Message::new(m.version, Action::SequenceAcknowledgement, Body::Empty);
            r.ack = Some(ack_to(seq.number));
            envelope(&r)
        }
        (_, Some(_)) => {
            if seen.last_copies.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err("the answer carrying the ack is lost".into());
            }
            Ok(accepted)
        }
        _ => Ok(accepted),
    }
}

/// Serves the gSOAP-like service (see [`exchange`]) for a one-way sequence whose last
/// message is `last`, on an ephemeral port of 127.0.0.1; returns its URL and what it saw.
pub async fn serve(last: u64) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr: SocketAddr = listener.local_addr().expect("local address");
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| exchange(req, last, s.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/svc"), seen)
}
