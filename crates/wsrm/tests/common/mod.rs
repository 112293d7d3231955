//! Shared test fixtures: a recording echo service.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wsrm::{Delivery, HandlerFuture, Outcome, SessionHandler, SessionInfo};

/// One delivered message as the handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub sequence: String,
    pub number: u64,
    pub action: String,
    pub body: String,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

pub const ECHO: &str = "urn:wsrm:test/Echo";
pub const ONEWAY: &str = "urn:wsrm:test/OneWay";

/// Records every delivery; answers two-way requests with `echo:<body>`.
pub struct Recorder {
    sequence: String,
    log: Log,
}

impl SessionHandler for Recorder {
    fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
        self.log.lock().unwrap().push(Seen {
            sequence: self.sequence.clone(),
            number: d.number,
            action: d.action.to_string(),
            body: String::from_utf8_lossy(&d.body).to_string(),
        });
        let reply = d.expects_reply.then(|| {
            let mut b = b"<echo xmlns=\"urn:wsrm:test\">".to_vec();
            b.extend_from_slice(&d.body);
            b.extend_from_slice(b"</echo>");
            Outcome::Reply {
                action: Arc::from("urn:wsrm:test/EchoResponse"),
                body: Bytes::from(b),
            }
        });
        Box::pin(async move { reply.unwrap_or(Outcome::NoReply) })
    }
}

pub fn recorder(log: &Log) -> impl Fn(&SessionInfo) -> Recorder + Send + Sync + 'static {
    let log = log.clone();
    move |info: &SessionInfo| Recorder {
        sequence: info.sequence.to_string(),
        log: log.clone(),
    }
}

/// A service on 127.0.0.1 (ephemeral port) with the recording echo handler.
pub async fn recording_echo_service(binding: &wsrm::Binding, log: &Log) -> wsrm::Service {
    wsrm::Service::builder(binding.clone())
        .handler(recorder(log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A recording echo service for `binding` and a one-way client session to it that has sent
/// `sent` messages (payloads 1..=sent), each acknowledged.
pub async fn service_with_session(
    binding: &wsrm::Binding,
    sent: usize,
) -> (wsrm::Service, Log, wsrm::Client) {
    let log = Log::default();
    let svc = recording_echo_service(binding, &log).await;
    let c = wsrm::Client::open(&svc.url("/svc"), binding, wsrm::ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=sent {
        c.send(ONEWAY, payload(i)).await.unwrap();
    }
    (svc, log, c)
}

/// Opens a request-reply session to `url`.
pub async fn request_reply_client(url: &str, binding: &wsrm::Binding) -> wsrm::Client {
    let opts = wsrm::ClientOptions {
        request_reply: true,
        ..wsrm::ClientOptions::default()
    };
    wsrm::Client::open(url, binding, opts).await.unwrap()
}

pub fn payload(i: usize) -> String {
    format!("<p xmlns=\"urn:wsrm:payload\">message-{i}</p>")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub type RawClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

pub fn raw_client() -> RawClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// POSTs raw bytes; returns status and body.
pub async fn post_raw(c: &RawClient, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Bytes) {
    use http_body_util::BodyExt;
    let req = http::Request::post(url)
        .header("content-type", content_type)
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (status, b)
}

pub const SOAP12_CT: &str = "application/soap+xml; charset=utf-8";

/// Encodes an engine-level message as SOAP 1.2 + WSA 1.0.
pub fn envelope(m: &wsrm_proto::msg::Message) -> Vec<u8> {
    wsrm_wire::encode(m, &wsrm_wire::Framing::soap12_wsa10())
        .unwrap()
        .to_vec()
}

/// A raw RM 1.1 one-way sequence message `number` of `seq` (SOAP 1.2, WSA 1.0).
pub fn raw_sequence_message(seq: &wsrm_proto::msg::SequenceId, number: u64) -> Vec<u8> {
    let mut m = wsrm_proto::msg::Message::new(
        wsrm_proto::msg::RmVersion::Wsrm11,
        wsrm_proto::msg::Action::Other(std::sync::Arc::from(ONEWAY)),
        wsrm_proto::msg::Body::Application(bytes::Bytes::from_static(b"<x xmlns=\"urn:x\"/>")),
    );
    m.sequence = Some(wsrm_proto::msg::SequenceHeader {
        identifier: seq.clone(),
        number,
        last_message: false,
    });
    m.message_id = Some(std::sync::Arc::from(format!(
        "urn:uuid:00000000-0000-4000-8000-{number:012}"
    )));
    envelope(&m)
}

/// Decodes a response envelope.
pub fn decode(b: &Bytes) -> wsrm_proto::msg::Message {
    wsrm_wire::decode(b.clone(), &wsrm_wire::Limits::default())
        .unwrap()
        .message
}

/// Waits (event-driven polling, bounded) until `cond` holds.
pub async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..4000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

/// Reads from `tcp` until the peer closes it (or the read fails); false if that takes longer
/// than `within`.
pub async fn closed_within(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A scripted HTTP/1.1 server on 127.0.0.1 (an ephemeral port): every request on every
/// connection goes to `f`; an `Err` cuts the connection without an answer. Returns its address.
pub async fn serve_fn<F, Fut, E>(f: F) -> std::net::SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<http_body_util::Full<Bytes>>, E>>
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let f = f.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tcp),
                        hyper::service::service_fn(f),
                    )
                    .await;
            });
        }
    });
    addr
}

/// The entries of `log` once it holds at least `n` (waiting, bounded, as [`wait_for`]). A
/// one-way send completes when the service acknowledges the message, and the service
/// acknowledges on receipt, before its handler has run (as WCF acknowledges messages it
/// buffered): right after a client's `close` the last deliveries may still be on their way to
/// the handler. The caller then checks the entries exactly (a duplicate still shows as more
/// than `n`).
pub async fn settled<T: Clone>(log: &Arc<Mutex<Vec<T>>>, n: usize) -> Vec<T> {
    wait_for(|| log.lock().map(|l| l.len() >= n).unwrap_or(true)).await;
    log.lock().unwrap().clone()
}
