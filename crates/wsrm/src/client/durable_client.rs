//! The durable client (issue 6): a one-way session whose messages are kept in a [`Store`].
//!
//! Chosen by [`super::ClientOptions::store`]. Each message's envelope is recorded (with the
//! input cursor, when the options carry a label) before its first transmission; a
//! retransmission sends the stored bytes, so it is byte-identical to the first transmission;
//! acknowledgements delete stored messages; a clean close forgets the sequence. When the store
//! already holds a sequence with the options' label for this URL, `Client::open` resumes it
//! instead of creating a new one: the unacknowledged messages are retransmitted and new
//! messages continue the numbering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use wsrm_proto::msg::{Body, Message, SequenceId};
use wsrm_proto::snapshot::{SnapshotMessage, SourceSnapshot};
use wsrm_proto::{ClientConfig, ClientEvent, ClientSession, ClientState};

use super::{exchange, soap_request, Cmd, ExchangeResult, Shared};
use crate::binding::MessageVersion;
use crate::codec;
use crate::error::ClientError;
use crate::http::HttpClient;
use crate::store::{SourceRecord, Store, StoreError};

/// Page size when reading stored messages back.
const PAGE: usize = 1024;

fn store_err(e: StoreError) -> ClientError {
    ClientError::Store(e.to_string())
}

/// What a durable client found in its store at open.
pub(super) struct Opened {
    pub session: ClientSession,
    /// 1 + the highest number recorded (messages below it were first sent before).
    pub recorded_next: u64,
    pub envelopes: HashMap<u64, Bytes>,
    pub resumed: Option<SequenceId>,
}

/// Finds the labelled sequence for `url` in `store` and resumes it, or starts a new session.
pub(super) async fn open_session(
    store: &Store,
    label: Option<&str>,
    url: &str,
    cfg: ClientConfig,
    seed: u64,
    max_body: usize,
) -> Result<Opened, ClientError> {
    let now = Instant::now().into_std();
    let found = match label {
        Some(l) => store
            .sources()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|s| s.record.label.as_deref() == Some(l) && s.record.remote == url),
        None => None,
    };
    let Some(info) = found else {
        let session =
            ClientSession::new(now, cfg, seed).map_err(|e| ClientError::Binding(e.into()))?;
        return Ok(Opened {
            session,
            recorded_next: 1,
            envelopes: HashMap::new(),
            resumed: None,
        });
    };
    let id = info.record.id.clone();
    let mut unacknowledged = Vec::new();
    let mut envelopes = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.unacked(&id, after, PAGE).await.map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after = last.number;
        for m in page {
            let (msg, _) =
                codec::decode(&m.envelope, max_body.max(m.envelope.len())).map_err(|e| {
                    ClientError::Store(format!(
                        "stored message {} of {id} cannot be decoded: {e}",
                        m.number
                    ))
                })?;
            let (action, payload) = match (&msg.action, msg.body) {
                (wsrm_proto::msg::Action::Other(a), Body::Application(b)) => (a.clone(), b),
                _ => {
                    return Err(ClientError::Store(format!(
                        "stored message {} of {id} is not an application message",
                        m.number
                    )))
                }
            };
            unacknowledged.push(SnapshotMessage {
                number: m.number,
                action,
                payload,
                message_id: msg.message_id.clone(),
            });
            envelopes.insert(m.number, m.envelope);
        }
    }
    tracing::info!(sequence = %id, next = info.next_number, unacked = unacknowledged.len(), "resuming the stored sequence");
    let snap = SourceSnapshot {
        id: id.clone(),
        version: info.record.version,
        next_number: info.next_number,
        unacknowledged,
        replies: None,
    };
    let session = ClientSession::resume(now, cfg, snap, seed)
        .map_err(|e| ClientError::Store(format!("cannot resume {id}: {e}")))?;
    Ok(Opened {
        session,
        recorded_next: info.next_number,
        envelopes,
        resumed: Some(id),
    })
}

pub(super) struct DurableDriver {
    pub session: ClientSession,
    pub http: HttpClient,
    pub uri: http::Uri,
    pub url: String,
    pub version: MessageVersion,
    pub max_body: usize,
    pub exchange_timeout: Duration,
    pub shared: Arc<Shared>,
    pub store: Store,
    pub label: Option<String>,
    pub recorded_next: u64,
    pub envelopes: HashMap<u64, Bytes>,
    pub resumed: Option<SequenceId>,
    pub sends: HashMap<u64, oneshot::Sender<Result<u64, ClientError>>>,
    pub close: Option<oneshot::Sender<Result<(), ClientError>>>,
    pub opened: Option<oneshot::Sender<Result<(), ClientError>>>,
    pub inflight: JoinSet<ExchangeResult>,
    pub failed: Option<ClientError>,
    /// Set by an exchange task whose message could not be stored.
    pub store_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl DurableDriver {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut cmds_open = true;
        loop {
            let now = Instant::now().into_std();
            self.session.handle_timeout(now);
            self.pump_transmits(now);
            let finished = self.pump_events().await;
            if finished && self.inflight.is_empty() {
                break;
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = rx.recv(), if cmds_open => match cmd {
                    Some(c) => self.command(c),
                    None => {
                        // Every handle is gone. The stored sequence stays for a later resume.
                        cmds_open = false;
                        if !matches!(self.session.state(), ClientState::Closing | ClientState::Closed) {
                            break;
                        }
                    }
                },
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    let now = Instant::now().into_std();
                    match done {
                        Ok(ExchangeResult::Answer(body)) if !body.is_empty() => {
                            match codec::decode(&body, self.max_body) {
                                Ok((m, _)) => self.session.handle_message(now, m),
                                Err(e) => tracing::debug!(error = %e, "undecodable response dropped"),
                            }
                        }
                        // A failed exchange is a loss signal (docs/engine.md, deviation 8);
                        // the retransmission sends the stored bytes.
                        Ok(ExchangeResult::Failed(n)) => self.session.handle_transport_failure(now, n),
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        tracing::debug!("durable client driver finished");
    }

    fn command(&mut self, c: Cmd) {
        let now = Instant::now().into_std();
        match c {
            Cmd::Send { action, body, done } => {
                if let Some(e) = &self.failed {
                    let _ = done.send(Err(e.clone()));
                    return;
                }
                match self.session.send(now, action, body) {
                    Ok(n) => {
                        self.sends.insert(n, done);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e.into()));
                    }
                }
            }
            Cmd::Request { done, .. } => {
                let _ = done.send(Err(ClientError::Store(
                    "request-reply is not available with a durable client store".into(),
                )));
            }
            Cmd::Close { done } => match self.session.close(now) {
                Ok(()) => self.close = Some(done),
                Err(e) => {
                    let _ = done.send(Err(e.into()));
                }
            },
            // Abort keeps the stored sequence (a later open resumes it).
            Cmd::Abort => self.session.abort(now),
        }
    }

    fn pump_transmits(&mut self, now: std::time::Instant) {
        while let Some(m) = self.session.poll_transmit(now) {
            self.exchange(m);
        }
    }

    fn exchange(&mut self, m: Message) {
        let number = m.sequence.as_ref().map(|s| s.number);
        let last_message = matches!(m.action, wsrm_proto::msg::Action::LastMessage);
        let app = match (&m.sequence, &m.body) {
            (Some(s), Body::Application(_)) => Some((s.identifier.clone(), s.number)),
            _ => None,
        };
        let enc = match codec::encode(&m, self.version) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an outgoing message");
                return;
            }
        };
        let mut body = enc.body;
        let mut durable = None;
        if let Some((seq, n)) = app {
            if n >= self.recorded_next {
                // First transmission: stored (with the input cursor) before it leaves.
                self.recorded_next = n + 1;
                self.envelopes.insert(n, body.clone());
                durable = Some(match &self.label {
                    Some(l) => self
                        .store
                        .record_sent_with_cursor(&seq, n, body.clone(), l, n),
                    None => self.store.record_sent(&seq, n, body.clone()),
                });
            } else if let Some(stored) = self.envelopes.get(&n) {
                // A retransmission: the stored bytes, exactly as first sent.
                body = stored.clone();
            }
        }
        let req = soap_request(&self.uri, body, enc.content_type, enc.soap_action);
        let http = self.http.clone();
        let (max, t) = (self.max_body, self.exchange_timeout);
        let store_failed = self.store_failed.clone();
        self.inflight.spawn(async move {
            if let Some(d) = durable {
                if let Err(e) = d.await {
                    tracing::error!(error = %e, "cannot store a message before sending it; not sent");
                    store_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    return ExchangeResult::Nothing(None);
                }
            }
            if store_failed.load(std::sync::atomic::Ordering::SeqCst) {
                return ExchangeResult::Nothing(None);
            }
            exchange(&http, req, max, t, last_message, number).await
        });
    }

    /// Dispatches engine events and records them; returns true when the session is over.
    async fn pump_events(&mut self) -> bool {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.session.stats();
        }
        let mut over = false;
        if self.store_failed.load(std::sync::atomic::Ordering::SeqCst) && self.failed.is_none() {
            let e = ClientError::Store(
                "a message could not be stored, so it was not sent; the stored sequence is kept for a later resume".into(),
            );
            for (_, tx) in self.sends.drain() {
                let _ = tx.send(Err(e.clone()));
            }
            if let Some(tx) = self.close.take() {
                let _ = tx.send(Err(e.clone()));
            }
            self.failed = Some(e);
            over = true;
        }
        let mut acked: Vec<(u64, u64)> = Vec::new();
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Opened { output, .. } => {
                    if self.resumed.as_ref() != Some(&output) {
                        let mut r = SourceRecord::new(
                            output.clone(),
                            self.session.version(),
                            self.url.clone(),
                        );
                        r.label = self.label.clone();
                        // Ordered before every RecordSent of this sequence.
                        if let Err(e) = self.store.create_source(r).await {
                            tracing::error!(error = %e, "cannot store the new sequence");
                            self.failed = Some(store_err(e));
                        }
                    }
                    tracing::info!(sequence = %output, resumed = self.resumed.is_some(), "session opened");
                    if let Ok(mut o) = self.shared.output.lock() {
                        *o = Some(output);
                    }
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(match &self.failed {
                            Some(e) => Err(e.clone()),
                            None => Ok(()),
                        });
                    }
                }
                ClientEvent::Acknowledged { number } => {
                    self.envelopes.remove(&number);
                    match acked.last_mut() {
                        Some((_, u)) if *u + 1 == number => *u = number,
                        _ => acked.push((number, number)),
                    }
                    if let Some(tx) = self.sends.remove(&number) {
                        let _ = tx.send(Ok(number));
                    }
                }
                ClientEvent::Reply { .. } | ClientEvent::Delivered { .. } => {}
                ClientEvent::Closed => {
                    tracing::info!("session closed");
                    let r = match self.session.output_id() {
                        Some(id) => self.store.remove_source(id).await.map_err(store_err),
                        None => Ok(()),
                    };
                    if let Some(tx) = self.close.take() {
                        let _ = tx.send(r);
                    }
                    over = true;
                }
                ClientEvent::Failed {
                    error,
                    unacknowledged,
                } => {
                    tracing::warn!(%error, unacknowledged = unacknowledged.len(), "session failed; the stored sequence is kept");
                    let e = ClientError::Faulted(error);
                    for (_, tx) in self.sends.drain() {
                        let _ = tx.send(Err(e.clone()));
                    }
                    if let Some(tx) = self.close.take() {
                        let _ = tx.send(Err(e.clone()));
                    }
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(Err(e.clone()));
                    }
                    over = true;
                }
            }
        }
        if !acked.is_empty() {
            if let Some(id) = self.session.output_id() {
                // Not awaited: an acknowledgement lost in a crash only means a retransmission.
                drop(self.store.source_acked(id, &acked));
            }
        }
        over || matches!(
            self.session.state(),
            ClientState::Closed | ClientState::Failed
        )
    }
}

/// `Client::open` with a store: resumes the labelled sequence or opens a new one.
pub(super) async fn open(
    url: &str,
    binding: &crate::binding::Binding,
    options: super::ClientOptions,
    store: Store,
    parts: (HttpClient, http::Uri, ClientConfig, u64),
) -> Result<super::Client, ClientError> {
    let (http, uri, cfg, seed) = parts;
    if options.request_reply {
        return Err(ClientError::Store(
            "a durable client store supports one-way sessions only".into(),
        ));
    }
    let max_body = binding.max_message_bytes();
    let opened = open_session(&store, options.label.as_deref(), url, cfg, seed, max_body).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        stats: std::sync::Mutex::new(Default::default()),
        output: std::sync::Mutex::new(None),
    });
    let (opened_tx, opened_rx) = oneshot::channel();
    let driver = DurableDriver {
        session: opened.session,
        http,
        uri,
        url: url.to_owned(),
        version: binding.message_version,
        max_body,
        exchange_timeout: binding.transport.send_timeout,
        shared: shared.clone(),
        store,
        label: options.label.clone(),
        recorded_next: opened.recorded_next,
        envelopes: opened.envelopes,
        resumed: opened.resumed,
        sends: HashMap::new(),
        close: None,
        opened: Some(opened_tx),
        inflight: JoinSet::new(),
        failed: None,
        store_failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let span = tracing::info_span!("client", url = %url, durable = true);
    tokio::spawn(tracing::Instrument::instrument(driver.run(rx), span));
    let open_timeout = binding.transport.open_timeout;
    match tokio::time::timeout(open_timeout + Duration::from_secs(1), opened_rx).await {
        Ok(Ok(Ok(()))) => Ok(super::Client {
            tx,
            shared,
            binding: Arc::new(binding.clone()),
        }),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ClientError::Closed),
        Err(_) => {
            let _ = tx.send(Cmd::Abort);
            Err(ClientError::Timeout {
                operation: "open",
                after: open_timeout,
            })
        }
    }
}
