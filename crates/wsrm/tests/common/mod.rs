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
