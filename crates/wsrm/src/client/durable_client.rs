//! The durable client (issue 6): a session whose messages are kept in a [`Store`].
//!
//! Chosen by [`super::ClientOptions::store`]. Each message's envelope is recorded (with the
//! input cursor, when the options carry a label) before its first transmission; a
//! retransmission sends the stored bytes, so it is byte-identical to the first transmission;
//! acknowledgements delete stored one-way messages; a clean close forgets the sequence. When
//! the store already holds a sequence with the options' label for this URL, `Client::open`
//! resumes it instead of creating a new one: the unacknowledged messages are retransmitted and
//! new messages continue the numbering.
//!
//! Request-reply sessions also store the offered reply sequence (as a destination record):
//! * a reply is written to the store (`Received`) by its exchange task, and the write awaited,
//!   *before* the engine sees it — the engine acknowledges what it was fed, and the service
//!   drops an acknowledged reply from its cache, so an acknowledged reply is always durable
//!   here;
//! * a request stays stored until its reply was handed to the application: the delivery
//!   transaction marks the reply delivered, deletes the request and runs the application's
//!   [`super::ReplyCommit`] write, if any;
//! * on resume, stored replies not yet handed out come out again (in order behind a gap), the
//!   other stored requests are retransmitted until answered, and replies to requests from
//!   before the restart are handed out by `Client::next_recovered_reply`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use wsrm_proto::msg::{Body, Message, SequenceId};
use wsrm_proto::snapshot::{ReplySnapshot, SnapshotMessage, SourceSnapshot};
use wsrm_proto::{ClientConfig, ClientEvent, ClientSession, ClientState};

use super::{
    exchange, soap_request, Cmd, ExchangeResult, Failure, Outcome, RecoveredReply, Reply,
    ReplyCommit, Shared,
};
use crate::binding::MessageVersion;
use crate::codec;
use crate::error::ClientError;
use crate::http::HttpClient;
use crate::store::{DestRecord, Op, SourceRecord, Store, StoreError, Txn};

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
    /// Request-reply: the numbers of the stored two-way requests (from before the restart).
    pub recovered: HashSet<u64>,
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
    let rr = cfg.pattern == wsrm_proto::Pattern::RequestReply;
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
            recovered: HashSet::new(),
        });
    };
    let id = info.record.id.clone();
    match (&info.record.offered, rr) {
        (Some(_), false) => {
            return Err(ClientError::Store(format!(
                "the stored sequence {id} is a request-reply session; open it with request_reply"
            )))
        }
        (None, true) => {
            return Err(ClientError::Store(format!(
                "the stored sequence {id} is a one-way session; open it without request_reply"
            )))
        }
        _ => {}
    }
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
    let recovered: HashSet<u64> = unacknowledged
        .iter()
        .filter(|m| m.message_id.is_some())
        .map(|m| m.number)
        .collect();
    let replies = match &info.record.offered {
        Some(input) => Some(reply_snapshot(store, input).await?),
        None => None,
    };
    tracing::info!(sequence = %id, next = info.next_number, unacked = unacknowledged.len(),
        waiting_replies = recovered.len(), "resuming the stored sequence");
    let snap = SourceSnapshot {
        id: id.clone(),
        version: info.record.version,
        next_number: info.next_number,
        unacknowledged,
        replies,
    };
    let session = ClientSession::resume(now, cfg, snap, seed)
        .map_err(|e| ClientError::Store(format!("cannot resume {id}: {e}")))?;
    Ok(Opened {
        session,
        recorded_next: info.next_number,
        envelopes,
        resumed: Some(id),
        recovered,
    })
}

/// The record of a first transmission, awaited by it and by any retransmission sent before it
/// completed (`Err` carries the store's error text).
pub(super) type Recording =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<(), String>>>;

fn recording(d: crate::store::Durable) -> Recording {
    use futures_util::FutureExt;
    async move { d.await.map_err(|e| e.to_string()) }
        .boxed()
        .shared()
}

/// The stored reply sequence of a request-reply session (stored replies keep their RelatesTo
/// with the action, `crate::durable::stored_action`).
async fn reply_snapshot(store: &Store, input: &SequenceId) -> Result<ReplySnapshot, ClientError> {
    let d = store
        .destination(input)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            ClientError::Store(format!(
                "the stored request-reply session has no record of its reply sequence {input}"
            ))
        })?;
    let mut undelivered = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .undelivered(input, after, PAGE)
            .await
            .map_err(store_err)?;
        let Some(last) = page.last() else { break };
        after = last.number;
        undelivered.extend(page.into_iter().map(crate::durable::snapshot_message));
    }
    Ok(ReplySnapshot {
        id: input.clone(),
        ranges: d.ranges,
        last_number: d.last_number,
        delivered_through: d.delivered_through,
        undelivered,
    })
}

/// Request-reply: the answer of an exchange, with its reply written to the store first.
async fn store_reply(
    store: &Store,
    input: &SequenceId,
    body: Bytes,
    max_body: usize,
) -> Result<Option<Message>, StoreError> {
    let m = match codec::decode(&body, max_body) {
        Ok((m, _)) => m,
        Err(e) => {
            tracing::debug!(error = %e, "undecodable response dropped");
            return Ok(None);
        }
    };
    if let (Some(seq), Body::Application(payload)) = (&m.sequence, &m.body) {
        if seq.identifier == *input {
            let action = match &m.action {
                wsrm_proto::msg::Action::Other(a) => {
                    crate::durable::stored_action(a, m.relates_to.as_deref())
                }
                // Application replies always have an application action.
                _ => String::new(),
            };
            match store
                .received(
                    input,
                    seq.number,
                    &action,
                    payload.clone(),
                    seq.last_message,
                )
                .await
            {
                Ok(()) => {}
                // Too far ahead of the first gap: not stored, so not fed (never acknowledged).
                Err(StoreError::Invalid { reason }) => {
                    tracing::warn!(%reason, number = seq.number, "reply not stored; dropped");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(m))
}

/// What an exchange task hands back to the driver.
pub(super) enum Answer {
    /// As the HTTP exchange ended (one-way sessions, and answers before the session opened).
    Raw(ExchangeResult),
    /// Request-reply: the decoded answer, its reply (if any) already stored.
    Decoded(Box<Message>),
}

pub(super) struct DurableDriver {
    pub session: ClientSession,
    pub http: HttpClient,
    pub uri: http::Uri,
    /// The `Host` header of every request, formatted once.
    pub host: Option<http::HeaderValue>,
    pub url: String,
    pub version: MessageVersion,
    pub max_body: usize,
    pub exchange_timeout: Duration,
    pub shared: Arc<Shared>,
    pub store: Store,
    pub label: Option<String>,
    pub recorded_next: u64,
    pub envelopes: HashMap<u64, Bytes>,
    /// Records of first transmissions not known to be durable yet: a retransmission of such a
    /// message waits for the same record (it must not leave before its first copy could).
    pub recording: HashMap<u64, Recording>,
    pub resumed: Option<SequenceId>,
    pub sends: HashMap<u64, oneshot::Sender<Outcome<u64>>>,
    pub requests: HashMap<u64, oneshot::Sender<Outcome<Reply>>>,
    /// SendTimeout of the waiting sends and requests.
    pub calls: super::CallDeadlines,
    /// Request-reply: two-way requests stored until their reply is delivered.
    pub two_way: HashSet<u64>,
    /// Request-reply: requests from before the restart still waiting for their reply.
    pub recovered: HashSet<u64>,
    pub recovered_tx: Option<mpsc::UnboundedSender<RecoveredReply>>,
    pub reply_commit: Option<ReplyCommit>,
    /// Request-reply: the offered reply sequence, once open.
    pub input: Option<SequenceId>,
    pub close: Option<oneshot::Sender<Result<(), ClientError>>>,
    pub opened: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Failed exchanges, to say why the open or the session failed.
    pub attempts: super::Attempts,
    pub inflight: JoinSet<Answer>,
    /// Why the session failed (store or engine), once it did: the error of every later call
    /// (see [`DurableDriver::record_failure`]).
    pub failed: Option<ClientError>,
    /// Set by an exchange task whose message could not be stored.
    pub store_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl DurableDriver {
    pub(super) async fn run(mut self, mut rx: super::commands::CmdRx) {
        let _done = super::DriverDone(self.shared.clone());
        let mut cmds_open = true;
        loop {
            let now = Instant::now();
            self.calls.expire(now, &mut self.sends, &mut self.requests);
            let now = now.into_std();
            self.session.handle_timeout(now);
            self.pump_transmits(now);
            let finished = self.pump_events().await;
            if finished && self.inflight.is_empty() {
                break;
            }
            let engine = self.session.poll_timeout().map(Instant::from_std);
            let deadline = match (engine, self.calls.next(&self.sends, &self.requests)) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a
                    .or(b)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            };
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
                    if self.opened.is_some()
                        && !matches!(done, Ok(Answer::Raw(ExchangeResult::Failed(..))))
                    {
                        self.attempts.answered();
                    }
                    match done {
                        Ok(Answer::Decoded(m)) => self.session.handle_message(now, *m),
                        Ok(Answer::Raw(ExchangeResult::Answer(body))) if body.is_empty() => {
                            // Only the LastMessage's exchange reports an empty success answer
                            // (gSOAP quirk 15).
                            self.session.handle_empty_answer_to_last_message(now);
                        }
                        Ok(Answer::Raw(ExchangeResult::Answer(body))) => {
                            match codec::decode(&body, self.max_body) {
                                Ok((m, _)) => self.session.handle_message(now, m),
                                Err(e) => tracing::debug!(error = %e, "undecodable response dropped"),
                            }
                        }
                        // A failed exchange is a loss signal (docs/engine.md, deviation 8);
                        // the retransmission sends the stored bytes.
                        Ok(Answer::Raw(ExchangeResult::Failed(n, f))) => self.exchange_failed(now, n, f),
                        // gSOAP quirk 19 (docs/interop.md): accepted without an ack.
                        Ok(Answer::Raw(ExchangeResult::Nothing(Some((n, sent))))) => {
                            self.session.handle_empty_answer(now, n, sent)
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        // Calls queued behind the end get the session's failure, not just "closed".
        let e = self.shared.over();
        for c in rx.close() {
            c.refuse(&e);
        }
        tracing::debug!("durable client driver finished");
    }

    /// An exchange got no SOAP answer: a loss signal for the engine, or, for a handshake
    /// exchange, possibly the end of the open (see [`super::Attempts`]).
    fn exchange_failed(&mut self, now: std::time::Instant, n: Option<u64>, f: Failure) {
        if n.is_none() && self.opened.is_some() {
            self.attempts
                .exchange_failed(&mut self.session, &mut self.opened, now, f);
            return;
        }
        self.attempts.report(&mut self.session, now, n, f);
    }

    /// The session failed with `e` (the first reason stays): later calls get it, here and,
    /// once this driver ended, through the shared state.
    fn record_failure(&mut self, e: ClientError) {
        self.shared.fail(&e);
        self.failed.get_or_insert(e);
    }

    fn command(&mut self, c: Cmd) {
        let now = Instant::now().into_std();
        match c {
            Cmd::Send { action, body, done } => {
                if let Some(e) = &self.failed {
                    let _ = done.send(Err(Box::new(e.clone())));
                    return;
                }
                match self.session.send(now, action, body) {
                    Ok(n) => {
                        self.sends.insert(n, done);
                        self.calls
                            .push(Instant::from_std(now), super::CallKind::Send, n);
                    }
                    Err(e) => {
                        let _ = done.send(Err(Box::new(e.into())));
                    }
                }
            }
            Cmd::Request { action, body, done } => {
                if let Some(e) = &self.failed {
                    let _ = done.send(Err(Box::new(e.clone())));
                    return;
                }
                match self.session.request(now, action, body) {
                    Ok(n) => {
                        self.two_way.insert(n);
                        self.requests.insert(n, done);
                        self.calls
                            .push(Instant::from_std(now), super::CallKind::Request, n);
                    }
                    Err(e) => {
                        let _ = done.send(Err(Box::new(e.into())));
                    }
                }
            }
            Cmd::Close { done } => match self.session.close(now) {
                Ok(()) => self.close = Some(done),
                Err(e) => {
                    let _ = done.send(Err(self.failed.clone().unwrap_or_else(|| e.into())));
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
        let mut durable: Option<Recording> = None;
        if let Some((seq, n)) = app {
            if n >= self.recorded_next {
                // First transmission: stored (with the input cursor) before it leaves.
                self.recorded_next = n + 1;
                self.envelopes.insert(n, body.clone());
                let record = match &self.label {
                    Some(l) => self
                        .store
                        .record_sent_with_cursor(&seq, n, body.clone(), l, n),
                    None => self.store.record_sent(&seq, n, body.clone()),
                };
                let record = recording(record);
                self.forget_recorded();
                self.recording.insert(n, record.clone());
                durable = Some(record);
            } else {
                if let Some(stored) = self.envelopes.get(&n) {
                    // A retransmission: the stored bytes, exactly as first sent.
                    body = stored.clone();
                }
                // Not before the first copy's record is durable (the engine may retransmit
                // at once, e.g. after a failed exchange; a crash in between would otherwise
                // leave the service with a message the store does not know).
                durable = self.recording.get(&n).cloned();
            }
        }
        let req = soap_request(
            &self.uri,
            self.host.as_ref(),
            body,
            enc.content_type,
            enc.soap_action,
        );
        let http = self.http.clone();
        let (max, t) = (self.max_body, self.exchange_timeout);
        let store_failed = self.store_failed.clone();
        let replies = self.input.clone().map(|i| (self.store.clone(), i));
        self.inflight.spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            if let Some(d) = durable {
                if let Err(e) = d.await {
                    tracing::error!(error = %e, "cannot store a message before sending it; not sent");
                    store_failed.store(true, SeqCst);
                    return Answer::Raw(ExchangeResult::Nothing(None));
                }
            }
            if store_failed.load(SeqCst) {
                return Answer::Raw(ExchangeResult::Nothing(None));
            }
            let r = exchange(&http, req, max, t, last_message, number).await;
            let (Some((store, input)), ExchangeResult::Answer(body)) = (replies, &r) else {
                return Answer::Raw(r);
            };
            if body.is_empty() {
                return Answer::Raw(r);
            }
            // Request-reply: a reply is durable before the engine sees (and acknowledges) it.
            match store_reply(&store, &input, body.clone(), max).await {
                Ok(Some(m)) if !store_failed.load(SeqCst) => Answer::Decoded(Box::new(m)),
                Ok(_) => Answer::Raw(ExchangeResult::Nothing(None)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a reply; not taken");
                    store_failed.store(true, SeqCst);
                    Answer::Raw(ExchangeResult::Nothing(None))
                }
            }
        });
    }

    /// Drops the records known to be complete, once there are more than a window's worth.
    fn forget_recorded(&mut self) {
        if self.recording.len() > 256 {
            self.recording.retain(|_, r| r.peek().is_none());
        }
    }

    /// Fails every waiting call (the stored sequence stays for a later resume).
    fn fail_all(&mut self, e: &ClientError) {
        super::fail_waiting(&mut self.sends, &mut self.requests, &mut self.close, e);
        // Recovered replies still waiting stay stored; the channel ends.
        self.recovered_tx = None;
    }

    /// A reply is ready for the application: one transaction marks it delivered, deletes its
    /// request and runs the application's write. With a [`ReplyCommit`] the reply is handed
    /// out after that transaction committed (exactly once); without, at once (a crash before
    /// the commit hands it out again after the restart).
    fn deliver_reply(&mut self, request: u64, reply: Reply) {
        self.two_way.remove(&request);
        let (Some(input), Some(output)) = (self.input.clone(), self.session.output_id().cloned())
        else {
            return;
        };
        let app = self
            .reply_commit
            .as_ref()
            .and_then(|c| (c.0)(request, &reply));
        let exactly_once = self.reply_commit.is_some();
        let txn = Txn::new()
            .with(Op::Deliver {
                sequence: input,
                number: reply.number,
                app,
            })
            .with(Op::SourceAcked {
                sequence: output,
                ranges: vec![(request, request)],
            });
        let durable = self.store.commit(txn);
        enum To {
            Caller(oneshot::Sender<Outcome<Reply>>),
            Recovered(mpsc::UnboundedSender<RecoveredReply>),
            Nobody,
        }
        let to = match self.requests.remove(&request) {
            Some(tx) => To::Caller(tx),
            None if self.recovered.remove(&request) => {
                self.shared.recovered_waiting.store(
                    self.recovered.len() as u64,
                    std::sync::atomic::Ordering::SeqCst,
                );
                let to = match &self.recovered_tx {
                    Some(tx) => To::Recovered(tx.clone()),
                    None => To::Nobody,
                };
                if self.recovered.is_empty() {
                    // Every request from before the restart is answered: the stream ends.
                    self.recovered_tx = None;
                }
                to
            }
            None => To::Nobody,
        };
        let hand_out = move |r: Result<Reply, ClientError>| match to {
            To::Caller(tx) => {
                let _ = tx.send(r.map_err(Box::new));
            }
            To::Recovered(tx) => match r {
                Ok(reply) => {
                    let _ = tx.send(RecoveredReply { request, reply });
                }
                Err(e) => {
                    tracing::error!(request, error = %e, "a recovered reply could not be delivered")
                }
            },
            To::Nobody => {}
        };
        if exactly_once {
            tokio::spawn(async move {
                match durable.await {
                    Ok(()) => hand_out(Ok(reply)),
                    Err(e) => {
                        tracing::error!(request, error = %e, "cannot commit a reply's delivery");
                        hand_out(Err(store_err(e)));
                    }
                }
            });
        } else {
            hand_out(Ok(reply));
            tokio::spawn(async move {
                if let Err(e) = durable.await {
                    tracing::error!(request, error = %e, "cannot record a reply's delivery; it will be handed out again after a restart");
                }
            });
        }
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
            self.fail_all(&e);
            self.record_failure(e);
            over = true;
        }
        let mut acked: Vec<(u64, u64)> = Vec::new();
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Opened { output, input } => {
                    if self.resumed.as_ref() != Some(&output) {
                        let mut r = SourceRecord::new(
                            output.clone(),
                            self.session.version(),
                            self.url.clone(),
                        );
                        r.label = self.label.clone();
                        r.offered = input.clone();
                        let mut txn = Txn::new();
                        if let Some(i) = &input {
                            // The reply sequence, stored like an inbound sequence of a
                            // service; found again through the source's `offered`.
                            let mut d = DestRecord::new(
                                i.clone(),
                                self.session.version(),
                                self.url.clone(),
                            );
                            d.label = self.label.clone();
                            txn.push(Op::CreateDest(d));
                        }
                        txn.push(Op::CreateSource(r));
                        // Ordered before every RecordSent of this sequence.
                        if let Err(e) = self.store.commit(txn).await {
                            tracing::error!(error = %e, "cannot store the new sequence");
                            self.record_failure(store_err(e));
                        }
                    }
                    self.input = input;
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
                    if self.two_way.contains(&number) {
                        // Deleted with the delivery of its reply (the reply's RelatesTo finds
                        // its number after a restart).
                        continue;
                    }
                    match acked.last_mut() {
                        Some((_, u)) if *u + 1 == number => *u = number,
                        _ => acked.push((number, number)),
                    }
                    if let Some(tx) = self.sends.remove(&number) {
                        let _ = tx.send(Ok(number));
                    }
                }
                ClientEvent::Reply {
                    request,
                    number,
                    action,
                    payload,
                } => {
                    self.envelopes.remove(&request);
                    self.deliver_reply(
                        request,
                        Reply {
                            action,
                            body: payload,
                            number,
                        },
                    );
                }
                ClientEvent::Delivered { .. } => {}
                ClientEvent::Closed => {
                    tracing::info!("session closed");
                    let mut txn = Txn::new();
                    if let Some(id) = self.session.output_id() {
                        txn.push(Op::RemoveSource {
                            sequence: id.clone(),
                        });
                    }
                    if let Some(i) = &self.input {
                        txn.push(Op::RemoveDest {
                            sequence: i.clone(),
                        });
                    }
                    let r = self.store.commit(txn).await.map_err(store_err);
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
                    let e = self.attempts.error(error);
                    self.record_failure(e.clone());
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(Err(e.clone()));
                    }
                    self.fail_all(&e);
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
    let (http, uri, mut cfg, seed) = parts;
    // Giving up (MaxRetryCount, e.g. while the service restarts) keeps the stored sequence
    // resumable: the service is not told to terminate it (docs/engine.md, deviation 11).
    cfg.terminate_on_retry_exhausted = false;
    let max_body = binding.max_message_bytes();
    let opened = open_session(&store, options.label.as_deref(), url, cfg, seed, max_body).await?;
    let (tx, rx) = super::commands::channel();
    let (recovered_tx, recovered_rx) = if opened.recovered.is_empty() {
        (None, None)
    } else {
        let (t, r) = mpsc::unbounded_channel();
        (Some(t), Some(r))
    };
    let shared = Arc::new(Shared::new(recovered_rx));
    shared.recovered_waiting.store(
        opened.recovered.len() as u64,
        std::sync::atomic::Ordering::SeqCst,
    );
    let (opened_tx, opened_rx) = oneshot::channel();
    let input = if opened.resumed.is_some() {
        opened.session.input_id().cloned()
    } else {
        None
    };
    let driver = DurableDriver {
        session: opened.session,
        http,
        host: super::host_header(&uri),
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
        recording: HashMap::new(),
        resumed: opened.resumed,
        sends: HashMap::new(),
        requests: HashMap::new(),
        calls: super::CallDeadlines::new(binding.transport.send_timeout),
        two_way: opened.recovered.clone(),
        recovered: opened.recovered,
        recovered_tx,
        reply_commit: options.reply_commit.clone(),
        // A resumed session retransmits at once (before its Opened event is handled): the
        // stored reply sequence must be known to the first exchanges. A new session sends no
        // request before `open` returns, which is after its Opened event stored the sequence.
        input,
        close: None,
        opened: Some(opened_tx),
        attempts: super::Attempts::new(binding.transport.open_timeout),
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
