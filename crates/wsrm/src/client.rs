//! The client: one reliable session to a service URL over HTTP(S).
//!
//! A driver task owns the engine's [`wsrm_proto::ClientSession`]: it feeds it decoded HTTP
//! responses, turns every message the engine wants to send into one HTTP request (many may be
//! in flight at once, up to the window), and sleeps until the engine's next deadline. The
//! [`Client`] handle talks to the driver over a channel; it is cheap to clone and may be used
//! from many tasks at once.
//!
//! ## A durable request-reply client
//!
//! With a [`crate::store::Store`] and a label, the session survives a crash of the client
//! process: opening again with the same store, label and URL resumes it. Replies to requests
//! sent before the restart come through [`Client::next_recovered_reply`]; a [`ReplyCommit`]
//! commits the application's own write with each reply, so each reply is taken exactly once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wsrm::store::{SqliteOptions, Store};
//! use wsrm::{Binding, Client, ClientOptions, ReplyCommit};
//!
//! let store = Store::open_sqlite("client.db", &SqliteOptions::default())?;
//! let opts = ClientOptions {
//!     request_reply: true,
//!     store: Some(store),
//!     label: Some("orders".into()),
//!     // Runs inside the store transaction that takes the reply.
//!     reply_commit: Some(ReplyCommit::new(|request, reply| {
//!         let body = reply.body.to_vec();
//!         Some(Box::new(move |tx| {
//!             let c = tx.sqlite().ok_or("not SQLite")?;
//!             c.execute(
//!                 "INSERT INTO replies (request, body) VALUES (?1, ?2)",
//!                 wsrm::store::rusqlite::params![request as i64, body],
//!             )?;
//!             Ok(())
//!         }))
//!     })),
//!     ..ClientOptions::default()
//! };
//! let client = Client::open("http://127.0.0.1:8080/svc", &Binding::ws2007_http(), opts).await?;
//! while let Some(r) = client.next_recovered_reply().await {
//!     println!("request {} (sent before the restart) answered", r.request);
//! }
//! let reply = client.request("urn:example/Order", "<order xmlns=\"urn:example\"/>").await?;
//! println!("reply {}", reply.number);
//! client.close().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use http::{header, Request};
use http_body_util::Full;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;
use wsrm_proto::msg::{Message, SequenceId};
use wsrm_proto::{ClientEvent, ClientSession, ClientState, Pattern, SessionStats, Shape};

use crate::binding::{Binding, MessageVersion};
use crate::codec;
use crate::error::ClientError;
use crate::http::HttpClient;
use crate::tls::ClientTls;

mod commands;
mod durable_client;

/// Options of [`Client::open`] beyond the binding.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `true`: request-reply session (CreateSequence with Offer; `request` available, `send`
    /// still works for one-way operations). `false`: one-way session (no Offer).
    pub request_reply: bool,
    /// Trust anchors and client certificate for `https` URLs.
    pub tls: Option<ClientTls>,
    /// Seed for identifiers (`None`: random).
    pub seed: Option<u64>,
    /// Keep the session in this store (issue 6; one-way sessions): every message is stored
    /// before its first transmission, retransmissions send the stored bytes, and a later
    /// `open` with the same `label` and URL resumes the stored sequence. `None` (default):
    /// the session lives in memory only (WCF's behaviour).
    pub store: Option<crate::store::Store>,
    /// With a store: the key that finds the sequence again after a restart; also the name of
    /// the store cursor recording how many messages were taken (= the highest number stored).
    pub label: Option<String>,
    /// Durable request-reply sessions: the application's own store write for each reply,
    /// run in the transaction that marks the reply delivered, so each reply reaches the
    /// application exactly once across crashes. The reply is handed out (to its
    /// [`Client::request`] caller, or by [`Client::next_recovered_reply`]) only after that
    /// transaction committed. `None`: replies are handed out first and marked delivered
    /// after, so a crash in between hands a reply out once more after the restart (at least
    /// once, never lost).
    pub reply_commit: Option<ReplyCommit>,
}

/// The application's store write for one reply of a durable request-reply session: called
/// with the request's number and the reply; the returned write runs in the delivery
/// transaction (see [`ClientOptions::reply_commit`]). Returning `None` writes nothing.
#[derive(Clone)]
pub struct ReplyCommit(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(u64, &Reply) -> Option<crate::store::AppWrite> + Send + Sync>,
);

impl ReplyCommit {
    /// Wraps the function that makes a reply's application write.
    pub fn new(
        f: impl Fn(u64, &Reply) -> Option<crate::store::AppWrite> + Send + Sync + 'static,
    ) -> Self {
        ReplyCommit(Arc::new(f))
    }
}

impl std::fmt::Debug for ReplyCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyCommit(..)")
    }
}

/// A reply to a request sent before the durable client restarted; see
/// [`Client::next_recovered_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredReply {
    /// The number of the request it answers (with a label, also the input cursor of that
    /// request).
    pub request: u64,
    /// The reply.
    pub reply: Reply,
}

/// A reply to [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply's `wsa:Action`.
    pub action: Arc<str>,
    /// The raw content of the reply's SOAP Body.
    pub body: Bytes,
    /// Its number on the reply sequence.
    pub number: u64,
}

/// What a waiting send or request gets back from the driver. The error is boxed: the value
/// is moved into and out of the call's channel, and an unboxed `ClientError` (144 bytes) made
/// every acknowledged send move that much.
pub(crate) type Outcome<T> = Result<T, Box<ClientError>>;

pub(crate) enum Cmd {
    Send {
        action: Arc<str>,
        body: Bytes,
        done: oneshot::Sender<Outcome<u64>>,
    },
    Request {
        action: Arc<str>,
        body: Bytes,
        done: oneshot::Sender<Outcome<Reply>>,
    },
    Close {
        done: oneshot::Sender<Result<(), ClientError>>,
    },
    Abort,
}

pub(crate) struct Shared {
    /// Becomes true when the session's driver has stopped ([`Client::finished`]).
    done: tokio::sync::watch::Sender<bool>,
    stats: Mutex<SessionStats>,
    output: Mutex<Option<SequenceId>>,
    /// Durable request-reply: replies to requests sent before the restart.
    recovered: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<RecoveredReply>>>,
    /// Durable request-reply: requests from before the restart still waiting for a reply.
    recovered_waiting: std::sync::atomic::AtomicU64,
    /// Why the session failed, once it did: the error of every call made after that.
    failure: Mutex<Option<ClientError>>,
}

/// Marks the driver stopped when dropped: at the end of its run, and also if its task is
/// dropped or panics, so [`Client::finished`] cannot wait forever.
pub(crate) struct DriverDone(pub(crate) Arc<Shared>);

impl Drop for DriverDone {
    fn drop(&mut self) {
        self.0.done.send_replace(true);
    }
}

impl Shared {
    pub(crate) fn new(recovered: Option<mpsc::UnboundedReceiver<RecoveredReply>>) -> Self {
        Shared {
            done: tokio::sync::watch::Sender::new(false),
            stats: Mutex::new(SessionStats::default()),
            output: Mutex::new(None),
            recovered: tokio::sync::Mutex::new(recovered),
            recovered_waiting: std::sync::atomic::AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    /// Records why the session failed (the first reason stays).
    pub(crate) fn fail(&self, e: &ClientError) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert_with(|| e.clone());
        }
    }

    /// Why the session failed, if it did.
    pub(crate) fn failure(&self) -> Option<ClientError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// The error of a call the session can no longer take: why it failed, else `Closed`.
    pub(crate) fn over(&self) -> ClientError {
        self.failure().unwrap_or(ClientError::Closed)
    }
}

impl Cmd {
    /// Answers a command the driver will not carry out with `e`.
    pub(crate) fn refuse(self, e: &ClientError) {
        match self {
            Cmd::Send { done, .. } => {
                let _ = done.send(Err(Box::new(e.clone())));
            }
            Cmd::Request { done, .. } => {
                let _ = done.send(Err(Box::new(e.clone())));
            }
            Cmd::Close { done } => {
                let _ = done.send(Err(e.clone()));
            }
            Cmd::Abort => {}
        }
    }
}

/// A reliable session to one service. Clone it to use it from several tasks.
#[derive(Clone)]
pub struct Client {
    tx: commands::CmdTx,
    shared: Arc<Shared>,
    binding: Arc<Binding>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("sequence", &self.sequence_id())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client {
    /// Opens a session to `url` (CreateSequence handshake, retried as WCF does within the
    /// binding's OpenTimeout).
    pub async fn open(
        url: &str,
        binding: &Binding,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        binding.validate()?;
        let uri = binding.check_url(url)?;
        let tls = options.tls.clone().unwrap_or_default().config()?;
        let http = HttpClient::new(tls, binding.transport.max_idle_connections_per_host);
        let pattern = if options.request_reply {
            Pattern::RequestReply
        } else {
            Pattern::OneWay
        };
        let mut cfg = wsrm_proto::ClientConfig::new(pattern, Shape::RequestReply);
        cfg.settings = binding.session.clone();
        cfg.remote_address = Some(Arc::from(url));
        cfg.local_address = Arc::from(binding.message_version.addressing.anonymous());
        cfg.open_timeout = binding.transport.open_timeout;
        cfg.close_timeout = binding.transport.close_timeout;
        cfg.send_timeout = binding.transport.send_timeout;
        let seed = options.seed.unwrap_or_else(rand::random);
        if let Some(store) = options.store.clone() {
            let parts = (http, uri, cfg, seed);
            return durable_client::open(url, binding, options, store, parts).await;
        }
        let now = Instant::now();
        let session = ClientSession::new(now.into_std(), cfg, seed)
            .map_err(|e| ClientError::Binding(e.into()))?;
        let (tx, rx) = commands::channel();
        let shared = Arc::new(Shared::new(None));
        let (opened_tx, opened_rx) = oneshot::channel();
        let driver = Driver {
            session,
            http,
            host: host_header(&uri),
            uri,
            version: binding.message_version,
            framing: wsrm_wire::Framing::new(
                binding.message_version.soap,
                binding.message_version.addressing,
            ),
            max_body: binding.max_message_bytes(),
            shared: shared.clone(),
            sends: HashMap::default(),
            requests: HashMap::default(),
            close: None,
            opened: Some(opened_tx),
            attempts: Attempts::new(binding.transport.open_timeout),
            inflight: FuturesUnordered::new(),
            calls: CallDeadlines::new(binding.transport.send_timeout),
            exchange_deadlines: ExchangeDeadlines::new(binding.transport.send_timeout),
            ack_template: None,
            seq_template: None,
            limits: codec::limits(binding.max_message_bytes()),
        };
        let span = tracing::info_span!("client", url = %url, pattern = pattern.as_str());
        tokio::spawn(driver.run(rx).instrument(span));
        let open_timeout = binding.transport.open_timeout;
        // The engine enforces OpenTimeout itself; the extra second only guards the channel.
        match tokio::time::timeout(open_timeout + Duration::from_secs(1), opened_rx).await {
            Ok(Ok(Ok(()))) => Ok(Client {
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

    /// Sends a one-way message; completes when the service acknowledged it (or fails with the
    /// session's error, or after SendTimeout). Returns its message number. Several sends may
    /// be outstanding at once; they are numbered in call order.
    pub async fn send(&self, action: &str, body: impl Into<Bytes>) -> Result<u64, ClientError> {
        self.start_send(action, body).await
    }

    /// Queues a one-way message now (numbers follow the order of these calls) and returns a
    /// future that completes when it is acknowledged.
    pub fn start_send(&self, action: &str, body: impl Into<Bytes>) -> Pending<u64> {
        let (done, rx) = oneshot::channel();
        let queued = self
            .tx
            .send(Cmd::Send {
                action: action_arc(action),
                body: body.into(),
                done,
            })
            .is_ok();
        Pending::new(rx, queued, &self.shared)
    }

    /// Sends a request and waits for its reply (request-reply sessions only).
    ///
    /// After SendTimeout the call returns [`ClientError::Timeout`], but a sent message cannot be
    /// taken back: as in WCF, the session keeps retransmitting the request until its reply
    /// arrives or MaxRetryCount faults the session. Meanwhile the request holds its place in
    /// the transmission window, so a service that never replies to it (e.g. a one-way
    /// operation called as two-way) can hold back the session's later messages.
    pub async fn request(
        &self,
        action: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        self.start_request(action, body).await
    }

    /// Queues a request now (numbers follow the order of these calls) and returns a future that
    /// completes with its reply.
    pub fn start_request(&self, action: &str, body: impl Into<Bytes>) -> Pending<Reply> {
        let (done, rx) = oneshot::channel();
        let queued = self
            .tx
            .send(Cmd::Request {
                action: action_arc(action),
                body: body.into(),
                done,
            })
            .is_ok();
        Pending::new(rx, queued, &self.shared)
    }

    /// Closes the session gracefully (1.0: LastMessage + TerminateSequence; 1.1:
    /// CloseSequence + TerminateSequence) after every message was acknowledged; returns the
    /// final counters.
    ///
    /// Close may be called while sends are outstanding: it waits for them (CloseTimeout counts
    /// from this call), and they complete as they are acknowledged. Prefer that to awaiting
    /// every send first, as a WCF client closes after its last call: a destination that
    /// answers a retransmitted duplicate without an acknowledgement (gSOAP) leaves the last
    /// message unacknowledged until CloseSequence (RM 1.1) asks for the final
    /// acknowledgement, which happens only once the session is closing.
    pub async fn close(&self) -> Result<SessionStats, ClientError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Close { done })
            .map_err(|_| self.shared.over())?;
        let t = self.binding.transport.close_timeout;
        match tokio::time::timeout(t + Duration::from_secs(1), rx).await {
            Ok(Ok(Ok(()))) => Ok(self.stats()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout {
                operation: "close",
                after: t,
            }),
        }
    }

    /// Aborts the session: the service is told with a SequenceTerminated fault; pending calls
    /// fail.
    pub fn abort(&self) {
        let _ = self.tx.send(Cmd::Abort);
    }

    /// Resolves once the session's driver has stopped: after the session closed, failed or
    /// was aborted, and the last exchanges it had to send went out (at most about 2 s after
    /// that). A process that exits right after [`Client::abort`] should await this first (with
    /// a timeout of its choice), or the SequenceTerminated fault that tells the service may
    /// not reach it and the service keeps the session until its InactivityTimeout.
    pub async fn finished(&self) {
        let mut rx = self.shared.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Counters of this session (sent, retransmitted, acknowledged, duplicates dropped, window,
    /// RTT).
    pub fn stats(&self) -> SessionStats {
        self.shared.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// The outbound sequence identifier (the session id), once open.
    pub fn sequence_id(&self) -> Option<SequenceId> {
        self.shared.output.lock().ok().and_then(|o| o.clone())
    }

    /// Durable request-reply sessions resumed after a restart: the next reply to a request
    /// that was sent before the restart (its `request()` caller is gone). Requests whose
    /// replies were stored but not yet handed out come first; the others were sent again and
    /// are answered as their replies arrive (the service answers a retransmitted request with
    /// its cached reply). `None` once every such request is answered, for sessions that were
    /// not resumed, or when the session ended (see [`Client::recovered_waiting`]).
    pub async fn next_recovered_reply(&self) -> Option<RecoveredReply> {
        let mut rx = self.shared.recovered.lock().await;
        rx.as_mut()?.recv().await
    }

    /// How many requests from before the restart are still waiting for their reply (0 unless
    /// the session is a resumed durable request-reply session).
    pub fn recovered_waiting(&self) -> u64 {
        self.shared
            .recovered_waiting
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

thread_local! {
    /// The action of the last send or request made on this thread: callers repeat a few
    /// operations' actions, so the next call with the same text shares the `Arc` (a reference
    /// count instead of an allocation, a copy and a later free on the driver's thread).
    static LAST_ACTION: std::cell::RefCell<Option<Arc<str>>> =
        const { std::cell::RefCell::new(None) };
}

/// `action` as an `Arc`, shared with the last call's on this thread when it has the same text.
fn action_arc(action: &str) -> Arc<str> {
    LAST_ACTION
        .try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            match &*last {
                Some(a) if **a == *action => Some(a.clone()),
                _ => {
                    let a: Arc<str> = Arc::from(action);
                    *last = Some(a.clone());
                    Some(a)
                }
            }
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::from(action))
}

/// A queued send or request: resolves with its outcome, or `Timeout` after SendTimeout.
///
/// The driver enforces SendTimeout (a sorted queue of deadlines and one timer): a pending call costs no timer of
/// its own.
pub struct Pending<T> {
    inner: PendingInner<T>,
}

enum PendingInner<T> {
    /// Waiting for the driver's answer.
    Rx(oneshot::Receiver<Outcome<T>>),
    /// The session was over before the call was queued: why.
    Over(Option<ClientError>),
    /// Mapped by [`Pending::map`].
    Mapped(Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>),
}

impl<T: Send + 'static> Pending<T> {
    fn new(rx: oneshot::Receiver<Outcome<T>>, queued: bool, shared: &Shared) -> Self {
        Pending {
            inner: if queued {
                PendingInner::Rx(rx)
            } else {
                PendingInner::Over(Some(shared.over()))
            },
        }
    }

    /// Maps the successful outcome.
    pub fn map<U: Send + 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Pending<U> {
        Pending {
            inner: PendingInner::Mapped(Box::pin(async move { self.await.map(f) })),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            // The driver dropped the sender: the session is over.
            PendingInner::Rx(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(r.map_err(|e| *e)),
                Poll::Ready(Err(_)) => Poll::Ready(Err(ClientError::Closed)),
                Poll::Pending => Poll::Pending,
            },
            PendingInner::Over(e) => Poll::Ready(Err(e.take().unwrap_or(ClientError::Closed))),
            PendingInner::Mapped(f) => f.as_mut().poll(cx),
        }
    }
}

/// SendTimeout of the calls waiting for their outcome, enforced by the driver instead of a
/// timer per call: every call gets the same timeout, so their deadlines, kept in call order,
/// are sorted. Entries of calls answered before their deadline are dropped from the front as
/// the driver turns; the queue holds at most the waiting calls plus those answered behind the
/// oldest waiting one (the window bounds them).
pub(crate) struct CallDeadlines {
    queue: VecDeque<(Instant, CallKind, u64)>,
    after: Duration,
}

/// Which map a waiting call is in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CallKind {
    Send,
    Request,
}

impl CallKind {
    fn operation(self) -> &'static str {
        match self {
            CallKind::Send => "send",
            CallKind::Request => "request",
        }
    }
}

impl CallDeadlines {
    /// Deadlines `after` (SendTimeout) from each call's start.
    pub(crate) fn new(after: Duration) -> Self {
        CallDeadlines {
            queue: VecDeque::new(),
            after,
        }
    }

    /// A call started now and waits under number `n`.
    pub(crate) fn push(&mut self, now: Instant, kind: CallKind, n: u64) {
        self.queue.push_back((now + self.after, kind, n));
    }

    /// Call `n` was answered: its entry leaves at once when it is the oldest (calls are mostly
    /// answered in call order), without the map lookup [`CallDeadlines::next`] would make.
    pub(crate) fn answered(&mut self, kind: CallKind, n: u64) {
        if matches!(self.queue.front(), Some(&(_, k, m)) if k == kind && m == n) {
            self.queue.pop_front();
        }
    }

    /// The earliest deadline of a call still waiting; drops the entries of calls answered.
    pub(crate) fn next<S1, S2>(
        &mut self,
        sends: &HashMap<u64, oneshot::Sender<Outcome<u64>>, S1>,
        requests: &HashMap<u64, oneshot::Sender<Outcome<Reply>>, S2>,
    ) -> Option<Instant>
    where
        S1: std::hash::BuildHasher,
        S2: std::hash::BuildHasher,
    {
        while let Some(&(at, kind, n)) = self.queue.front() {
            let waiting = match kind {
                CallKind::Send => sends.contains_key(&n),
                CallKind::Request => requests.contains_key(&n),
            };
            if waiting {
                return Some(at);
            }
            self.queue.pop_front();
        }
        None
    }

    /// Fails the calls whose deadline passed with `Timeout` (the message itself stays in the
    /// session: WCF's SendTimeout bounds the call, not the sequence).
    pub(crate) fn expire<S1, S2>(
        &mut self,
        now: Instant,
        sends: &mut HashMap<u64, oneshot::Sender<Outcome<u64>>, S1>,
        requests: &mut HashMap<u64, oneshot::Sender<Outcome<Reply>>, S2>,
    ) where
        S1: std::hash::BuildHasher,
        S2: std::hash::BuildHasher,
    {
        while let Some(&(at, kind, n)) = self.queue.front() {
            if at > now {
                return;
            }
            self.queue.pop_front();
            let e = ClientError::Timeout {
                operation: kind.operation(),
                after: self.after,
            };
            match kind {
                CallKind::Send => {
                    if let Some(tx) = sends.remove(&n) {
                        let _ = tx.send(Err(Box::new(e)));
                    }
                }
                CallKind::Request => {
                    if let Some(tx) = requests.remove(&n) {
                        let _ = tx.send(Err(Box::new(e)));
                    }
                }
            }
        }
    }
}

/// SendTimeout of the HTTP exchanges in flight, enforced by the driver instead of a timer
/// per exchange, and without anything per exchange but an entry here: each exchange gets an
/// id in start order, and with one timeout for all, the deadlines ascend with the ids. When
/// the earliest running one passes, [`ExchangeDeadlines::expire`] says which ids are over and
/// the driver drops those exchanges (see `Driver::cut_off`), which is rare and may cost a pass
/// over the exchanges in flight. Finished exchanges leave from the front; entries of finished
/// exchanges behind a hung one are compacted away once they pile up, so the queue holds at
/// most about twice the exchanges in flight.
pub(crate) struct ExchangeDeadlines {
    /// (id, deadline) in id order; the deadline is `None` once the exchange finished.
    queue: VecDeque<(u64, Option<Instant>)>,
    /// The id of the next exchange.
    next_id: u64,
    /// Entries in `queue` whose exchange is still running.
    running: usize,
    after: Duration,
}

impl ExchangeDeadlines {
    /// Deadlines `after` (SendTimeout) from each exchange's start.
    pub(crate) fn new(after: Duration) -> Self {
        ExchangeDeadlines {
            queue: VecDeque::new(),
            next_id: 0,
            running: 0,
            after,
        }
    }

    /// An exchange starting now: its id.
    pub(crate) fn push(&mut self, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, Some(now + self.after)));
        self.running += 1;
        id
    }

    /// Exchange `id` finished (answered or failed) before its deadline.
    pub(crate) fn finish(&mut self, id: u64) {
        // Usually the front (exchanges mostly finish in start order): no search then.
        let at = match self.queue.front() {
            Some(&(front, _)) if front == id => 0,
            _ => match self.queue.binary_search_by_key(&id, |e| e.0) {
                Ok(i) => i,
                Err(_) => return,
            },
        };
        if let Some(e) = self.queue.get_mut(at) {
            if e.1.take().is_some() {
                self.running -= 1;
            }
        }
        while matches!(self.queue.front(), Some((_, None))) {
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.running + 64 {
            self.queue.retain(|e| e.1.is_some());
        }
    }

    /// Removes the exchanges whose deadline passed by `now`; returns the id below which every
    /// exchange still running is over (`None`: none is).
    pub(crate) fn expire(&mut self, now: Instant) -> Option<u64> {
        let mut cut = None;
        while let Some(&(id, at)) = self.queue.front() {
            match at {
                Some(at) if at > now => break,
                Some(_) => {
                    self.running -= 1;
                    cut = Some(id + 1);
                }
                None => {}
            }
            self.queue.pop_front();
        }
        cut
    }

    /// The earliest deadline of an exchange still running.
    pub(crate) fn next(&self) -> Option<Instant> {
        // `finish` and `expire` leave a running exchange at the front (or nothing).
        self.queue.front().and_then(|e| e.1)
    }

    /// How many entries the queue holds (for tests of its bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// The `Host` header for requests to `uri`: its host, with the port unless it is the scheme's
/// default (what the HTTP client would otherwise format for every request).
pub(crate) fn host_header(uri: &http::Uri) -> Option<header::HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match uri.port_u16() {
        Some(p) if Some(p) != default => {
            header::HeaderValue::from_maybe_shared(Bytes::from(format!("{host}:{p}"))).ok()
        }
        _ => header::HeaderValue::from_str(host).ok(),
    }
}

/// A SOAP-over-HTTP POST of an encoded envelope; `host` from [`host_header`].
pub(crate) fn soap_request(
    uri: &http::Uri,
    host: Option<&header::HeaderValue>,
    body: impl Into<crate::http::Envelope>,
    content_type: &'static str,
    soap_action: Option<String>,
) -> Request<crate::http::RequestBody> {
    let mut req = Request::new(Full::new(body.into()));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri.clone();
    if let Some(h) = host {
        req.headers_mut().insert(header::HOST, h.clone());
    }
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        codec::content_type_header(content_type),
    );
    if let Some(sa) = soap_action {
        if let Ok(v) = header::HeaderValue::from_str(&sa) {
            req.headers_mut().insert("soapaction", v);
        }
    }
    req
}

/// Runs one exchange and classifies its outcome for the engine. `number` is the sequence
/// number of the message it carries, `last_message` whether that is the RM 1.0 LastMessage.
pub(crate) async fn exchange(
    http: &HttpClient,
    req: Request<crate::http::RequestBody>,
    max: usize,
    timeout: Duration,
    last_message: bool,
    number: Option<u64>,
) -> ExchangeResult {
    // The drivers' clock: tokio's (paused in tests), as every instant given to the engine.
    let sent = tokio::time::Instant::now().into_std();
    classify(
        http.exchange(req, max, timeout).await,
        last_message,
        number,
        sent,
    )
}

/// Classifies an exchange's outcome for the engine (see [`exchange`]); `sent` is when the
/// request went out.
pub(crate) fn classify(
    r: Result<crate::http::HttpResponse, crate::http::ExchangeError>,
    last_message: bool,
    number: Option<u64>,
    sent: std::time::Instant,
) -> ExchangeResult {
    match r {
        Ok(r) if r.body.is_empty() && r.status.is_success() => {
            tracing::debug!(status = %r.status, "empty response");
            // An accepted LastMessage without an acknowledgement (docs/interop.md, gSOAP
            // quirk 15) is reported to the engine as an empty body.
            if last_message {
                ExchangeResult::Answer(Bytes::new())
            } else {
                ExchangeResult::Nothing(number.map(|n| (n, sent)))
            }
        }
        // SOAP answers: 2xx, 500 (SOAP 1.1/1.2 faults) and 400 (SOAP 1.2 Sender faults, e.g.
        // gSOAP's). An intermediary's 502/503 carries no SOAP answer.
        Ok(r)
            if !r.body.is_empty()
                && (r.status.is_success() || matches!(r.status.as_u16(), 400 | 500)) =>
        {
            ExchangeResult::Answer(r.body)
        }
        Ok(r) if r.status == http::StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::debug!(status = %r.status, number, "message refused for its size");
            ExchangeResult::Failed(number, Failure::TooLarge { reply: false })
        }
        Ok(r) => {
            tracing::debug!(status = %r.status, "exchange failed");
            ExchangeResult::Failed(
                number,
                Failure::Other(format!(
                    "the service answered HTTP {} without a SOAP message",
                    r.status
                )),
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "exchange failed");
            let f = match &e {
                crate::http::ExchangeError::Tls(t) => Failure::Tls(t.clone()),
                crate::http::ExchangeError::TimedOut(_) => Failure::TimedOut,
                crate::http::ExchangeError::TooLarge(_) => Failure::TooLarge { reply: true },
                _ => Failure::Other(e.to_string()),
            };
            ExchangeResult::Failed(number, f)
        }
    }
}

/// What one HTTP exchange produced.
pub(crate) enum ExchangeResult {
    /// A SOAP answer (or, for the LastMessage only, an accepted empty answer).
    Answer(Bytes),
    /// No SOAP answer: connection error, timeout or a non-SOAP error status. Carries the
    /// sequence number of the message it carried, if any, and why.
    Failed(Option<u64>, Failure),
    /// An empty success answer to anything but the LastMessage (202 Accepted). Carries the
    /// sequence number of the message it carried, if any, and when that copy was sent.
    Nothing(Option<(u64, std::time::Instant)>),
}

/// Why an exchange got no SOAP answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// TLS failed (handshake, certificate, or an alert from the peer).
    Tls(String),
    /// No response within the exchange's timeout.
    TimedOut,
    /// The message is larger than the service accepts (HTTP 413), or (`reply`) the answer is
    /// larger than this client accepts (the binding's maximum message size).
    TooLarge {
        /// Whether it was the answer.
        reply: bool,
    },
    /// Anything else: the connection, the HTTP protocol, or an HTTP error status.
    Other(String),
}

impl Failure {
    /// Tells the engine about an exchange that got no SOAP answer: a message that can never
    /// get through for its size ends the session; anything else is a loss signal.
    pub(crate) fn report(
        self,
        session: &mut ClientSession,
        now: std::time::Instant,
        number: Option<u64>,
    ) {
        match (number, self) {
            (Some(n), Failure::TooLarge { reply }) => session.handle_too_large(now, n, reply),
            (n, _) => session.handle_transport_failure(now, n),
        }
    }
}

/// What a driver remembers of failed exchanges, to say why the session failed.
///
/// While the session opens: WCF's open (its CreateSequence requestor) ends at once on a
/// security failure, otherwise retries until OpenTimeout and then throws its last attempt's
/// exception. So here a TLS failure ends the open at once, and an open that ran out of time
/// after exchanges that failed in the transport reports the last such failure.
///
/// Afterwards: a message that exhausts MaxRetryCount while its transmissions failed in the
/// transport (an HTTP error status such as 400 for a body the service cannot read, a refused
/// connection) fails the session naming its last transmission's failure, which WCF's "maximum
/// retry count exceeded" does not.
#[derive(Debug)]
pub(crate) struct Attempts {
    open_timeout: Duration,
    /// The last handshake exchange's failure, unless it timed out or an answer came since.
    last: Option<String>,
    /// The latest failed transmissions of sequence messages, oldest first, at most
    /// [`Attempts::REMEMBERED`]: the message's number and why it got no SOAP answer (`None`:
    /// no answer in time).
    messages: std::collections::VecDeque<(u64, Option<String>)>,
}

impl Attempts {
    /// Failed transmissions remembered (failures are rare; a window's worth covers the
    /// messages that fail together when a service goes away).
    const REMEMBERED: usize = 64;

    pub(crate) fn new(open_timeout: Duration) -> Self {
        Attempts {
            open_timeout,
            last: None,
            messages: std::collections::VecDeque::new(),
        }
    }

    /// A sequence message's exchange (or any exchange, `number` None) got no SOAP answer:
    /// remembered for [`Attempts::error`], then reported to the engine.
    pub(crate) fn report(
        &mut self,
        session: &mut ClientSession,
        now: std::time::Instant,
        number: Option<u64>,
        f: Failure,
    ) {
        if let Some(n) = number {
            let why = match &f {
                Failure::Other(t) => Some(t.clone()),
                Failure::Tls(t) => Some(format!("TLS: {t}")),
                Failure::TimedOut | Failure::TooLarge { .. } => None,
            };
            if self.messages.len() == Self::REMEMBERED {
                self.messages.pop_front();
            }
            self.messages.push_back((n, why));
        }
        f.report(session, now, number);
    }

    /// A handshake exchange failed: returns the error that ends the open at once (TLS).
    fn failed(&mut self, f: Failure) -> Option<ClientError> {
        match f {
            Failure::Tls(t) => Some(ClientError::Tls(t)),
            Failure::TimedOut => {
                self.last = None;
                None
            }
            Failure::Other(t) => {
                self.last = Some(t);
                None
            }
            Failure::TooLarge { reply } => {
                self.last = Some(if reply {
                    "the answer is larger than the binding's maximum message size".to_owned()
                } else {
                    "the service refused the CreateSequence as too large (HTTP 413)".to_owned()
                });
                None
            }
        }
    }

    /// A handshake exchange failed while `opened` waits: a TLS failure ends the open (the
    /// waiting open gets the error and the session is aborted); anything else is a transport
    /// failure for the engine, which retries the CreateSequence.
    pub(crate) fn exchange_failed(
        &mut self,
        session: &mut ClientSession,
        opened: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
        now: std::time::Instant,
        f: Failure,
    ) {
        match self.failed(f) {
            Some(e) => {
                tracing::warn!(error = %e, "cannot open the session");
                if let Some(tx) = opened.take() {
                    let _ = tx.send(Err(e));
                }
                session.abort(now);
            }
            None => session.handle_transport_failure(now, None),
        }
    }

    /// A handshake exchange got an answer.
    pub(crate) fn answered(&mut self) {
        self.last = None;
    }

    /// The error the session's waiting calls get when the engine fails it with `e`.
    pub(crate) fn error(&mut self, e: wsrm_proto::SessionError) -> ClientError {
        match (e, self.last.take()) {
            (wsrm_proto::SessionError::OpenTimeout, Some(cause)) => ClientError::Unreachable {
                after: self.open_timeout,
                cause,
            },
            (e @ wsrm_proto::SessionError::RetryExhausted { number }, _) => {
                let last = self.messages.iter().rev().find(|(n, _)| *n == number);
                match last {
                    Some((_, Some(cause))) => ClientError::Undeliverable {
                        number,
                        cause: cause.clone(),
                    },
                    _ => ClientError::Faulted(e),
                }
            }
            (e, _) => ClientError::Faulted(e),
        }
    }
}

struct Driver {
    session: ClientSession,
    http: HttpClient,
    uri: http::Uri,
    /// The `Host` header of every request, formatted once.
    host: Option<header::HeaderValue>,
    version: MessageVersion,
    /// The framing of every request (`version`'s), made once.
    framing: wsrm_wire::Framing,
    max_body: usize,
    shared: Arc<Shared>,
    /// Keyed by message number (ours); a cheap hasher: one insert and one removal per message.
    sends: HashMap<u64, oneshot::Sender<Outcome<u64>>, FastHash>,
    requests: HashMap<u64, oneshot::Sender<Outcome<Reply>>, FastHash>,
    close: Option<oneshot::Sender<Result<(), ClientError>>>,
    opened: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Failed exchanges, to say why the open or the session failed.
    attempts: Attempts,
    /// The HTTP exchanges in flight, polled by the driver itself (no task per exchange: the
    /// response wakes the driver directly).
    inflight: FuturesUnordered<InFlight>,
    /// SendTimeout of the waiting sends and requests.
    calls: CallDeadlines,
    /// SendTimeout of the HTTP exchanges in flight.
    exchange_deadlines: ExchangeDeadlines,
    /// The service's standalone acknowledgements of our sequence as this crate writes them
    /// (known once the session is open): matched by their fixed start, then only the ranges
    /// and the end are read (anything else is decoded in full).
    ack_template: Option<wsrm_wire::AckTemplate>,
    /// Our one-way messages as the last one was written (sequence, action, `To`): the next
    /// ones are written from it, only their number and body differing (anything else is
    /// encoded the general way, and a one-way message of a new action makes a new template).
    seq_template: Option<wsrm_wire::SequenceTemplate>,
    /// The decoder's limits (from the binding's maximum message size).
    limits: wsrm_wire::Limits,
}

/// The hasher of the per-message maps: foldhash (randomly seeded per process), far cheaper than
/// SipHash for the small keys hashed once or twice per message.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// Fails every call waiting on a session that is over.
pub(crate) fn fail_waiting<S1, S2>(
    sends: &mut HashMap<u64, oneshot::Sender<Outcome<u64>>, S1>,
    requests: &mut HashMap<u64, oneshot::Sender<Outcome<Reply>>, S2>,
    close: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
    e: &ClientError,
) {
    for (_, tx) in sends.drain() {
        let _ = tx.send(Err(Box::new(e.clone())));
    }
    for (_, tx) in requests.drain() {
        let _ = tx.send(Err(Box::new(e.clone())));
    }
    if let Some(tx) = close.take() {
        let _ = tx.send(Err(e.clone()));
    }
}

/// One HTTP exchange in flight: its id (start order, see [`ExchangeDeadlines`]), the sequence
/// number of the message it carries, and the exchange itself.
struct InFlight {
    id: u64,
    number: Option<u64>,
    last_message: bool,
    /// When the request went out (the engine's clock).
    sent: std::time::Instant,
    /// Unboxed: the set of exchanges allocates a node per future anyway.
    exchange: crate::http::Exchange,
}

impl Future for InFlight {
    type Output = (u64, ExchangeResult);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.exchange).poll(cx).map(|r| {
            (
                this.id,
                classify(r.map(|(r, _)| r), this.last_message, this.number, this.sent),
            )
        })
    }
}

/// How long the driver waits, once the session is over, for exchanges still in flight.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// At most this many further commands or finished exchanges are taken per driver turn.
const BATCH: usize = 64;

impl Driver {
    async fn run(mut self, mut rx: commands::CmdRx) {
        let _done = DriverDone(self.shared.clone());
        let mut cmds_open = true;
        // When the session ended: the last exchanges (an RM 1.0 TerminateSequence, which gets
        // no answer from some peers) get up to CLOSE_FLUSH to reach the wire before `close`
        // returns, so a process exiting right after `close` does not cut them off.
        let mut flush_until: Option<Instant> = None;
        // One timer for the driver's whole life, moved only when the next deadline comes
        // earlier than the one it is set to; a later one lets it fire early once (a spare
        // turn), which is cheaper than moving it on every turn as acknowledgements push the
        // retransmission deadline on.
        let sleep = tokio::time::sleep_until(Instant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        // One clock reading per turn, taken when the turn starts (after the wait): a turn
        // takes microseconds, and reading the clock for every command and answer cost more
        // than the engine's work on them.
        let mut now = Instant::now();
        loop {
            self.calls.expire(now, &mut self.sends, &mut self.requests);
            if let Some(cut) = self.exchange_deadlines.expire(now) {
                self.cut_off(cut, now);
            }
            let std_now = now.into_std();
            self.session.handle_timeout(std_now);
            self.pump_transmits(now);
            let finished = self.pump_events();
            if finished {
                let until = *flush_until.get_or_insert_with(|| Instant::now() + CLOSE_FLUSH);
                if self.inflight.is_empty() || Instant::now() >= until {
                    break;
                }
            }
            let deadline = flush_until.unwrap_or_else(|| {
                let engine = self.session.poll_timeout().map(Instant::from_std);
                [
                    engine,
                    self.calls.next(&self.sends, &self.requests),
                    self.exchange_deadlines.next(),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
            });
            if deadline < sleep.deadline() || sleep.is_elapsed() {
                sleep.as_mut().reset(deadline);
            }
            // Biased, finished exchanges first: most turns are woken by one, and then the
            // command channel is not polled before it (each poll of an empty channel
            // registers the driver's waker again). Commands and the timer wait at most while
            // finished exchanges keep coming, which the window bounds; the engine's timers
            // are run at the start of every turn anyway, with the clock read by the branch.
            tokio::select! {
                biased;
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    now = Instant::now();
                    self.finished(done, now);
                    // Every other finished exchange in the same turn (see above).
                    for _ in 0..BATCH {
                        match self.inflight.next().now_or_never() {
                            Some(Some(done)) => self.finished(done, now),
                            _ => break,
                        }
                    }
                }
                cmd = rx.recv(), if cmds_open => {
                    now = Instant::now();
                    match cmd {
                        Some(c) => {
                            self.command(c, now);
                            // Take whatever else is queued in the same turn: one pass of the
                            // engine (timers, transmits, events) serves the whole batch.
                            for _ in 0..BATCH {
                                match rx.try_recv() {
                                    Some(c) => self.command(c, now),
                                    None => break,
                                }
                            }
                        }
                        None => {
                            cmds_open = false;
                            // Every handle is gone: abort unless closing/closed.
                            if !matches!(self.session.state(), ClientState::Closing | ClientState::Closed) {
                                self.session.abort(now.into_std());
                            }
                        }
                    }
                },
                _ = &mut sleep => now = Instant::now(),
            }
        }
        if let Some(tx) = self.close.take() {
            let _ = tx.send(Ok(()));
        }
        // Calls queued behind the end get the session's failure, not just "closed".
        let e = self.shared.over();
        for c in rx.close() {
            c.refuse(&e);
        }
        tracing::debug!("client driver finished");
    }

    /// Drops the exchanges with an id below `cut`, whose SendTimeout passed, and reports each
    /// to the engine as a transport failure. Rare (a peer or network that does not answer), so
    /// it may rebuild the set of exchanges in flight.
    fn cut_off(&mut self, cut: u64, now: Instant) {
        let all = std::mem::take(&mut self.inflight);
        for x in all {
            if x.id < cut {
                tracing::debug!(number = x.number, "exchange timed out");
                self.exchange_done(ExchangeResult::Failed(x.number, Failure::TimedOut), now);
            } else {
                self.inflight.push(x);
            }
        }
    }

    /// A finished exchange: its deadline is dropped and its outcome goes to the engine.
    fn finished(&mut self, (id, done): (u64, ExchangeResult), now: Instant) {
        self.exchange_deadlines.finish(id);
        self.exchange_done(done, now);
    }

    fn exchange_done(&mut self, done: ExchangeResult, now: Instant) {
        if self.opened.is_some() {
            // Opening: a failed handshake exchange may end the open (see `Attempts`).
            match done {
                ExchangeResult::Failed(None, f) => {
                    self.attempts.exchange_failed(
                        &mut self.session,
                        &mut self.opened,
                        now.into_std(),
                        f,
                    );
                    return;
                }
                ExchangeResult::Failed(..) => {}
                _ => self.attempts.answered(),
            }
        }
        match done {
            ExchangeResult::Answer(body) => self.response(body, now.into_std()),
            ExchangeResult::Failed(n, f) => {
                self.attempts
                    .report(&mut self.session, now.into_std(), n, f)
            }
            ExchangeResult::Nothing(Some((n, sent))) => {
                // gSOAP quirk 19 (docs/interop.md): accepted without an ack.
                self.session.handle_empty_answer(now.into_std(), n, sent);
            }
            ExchangeResult::Nothing(None) => {}
        }
    }

    fn command(&mut self, c: Cmd, now: Instant) {
        let now = now.into_std();
        match c {
            Cmd::Send { action, body, done } => match self.session.send(now, action, body) {
                Ok(n) => {
                    self.sends.insert(n, done);
                    self.calls.push(Instant::from_std(now), CallKind::Send, n);
                }
                // Refused: after a failure, the failure is the reason.
                Err(e) => {
                    let e = self.shared.failure().unwrap_or_else(|| e.into());
                    let _ = done.send(Err(Box::new(e)));
                }
            },
            Cmd::Request { action, body, done } => match self.session.request(now, action, body) {
                Ok(n) => {
                    self.requests.insert(n, done);
                    self.calls
                        .push(Instant::from_std(now), CallKind::Request, n);
                }
                Err(e) => {
                    let e = self.shared.failure().unwrap_or_else(|| e.into());
                    let _ = done.send(Err(Box::new(e)));
                }
            },
            Cmd::Close { done } => match self.session.close(now) {
                Ok(()) => {
                    if self.session.state() == ClientState::Closed {
                        let _ = done.send(Ok(()));
                    } else {
                        self.close = Some(done);
                    }
                }
                Err(e) => {
                    let _ = done.send(Err(self.shared.failure().unwrap_or_else(|| e.into())));
                }
            },
            Cmd::Abort => self.session.abort(now),
        }
    }

    fn response(&mut self, body: Bytes, now: std::time::Instant) {
        if body.is_empty() {
            // Only the LastMessage's exchange reports an empty success answer (gSOAP quirk 15).
            self.session.handle_empty_answer_to_last_message(now);
            return;
        }
        // The usual answer, a standalone acknowledgement of our sequence as this crate writes
        // it: read from the template straight to its header, for the engine.
        if let Some(r) = self
            .ack_template
            .as_ref()
            .and_then(|t| t.decode_ack(&body, &self.limits))
        {
            match r {
                Ok(ack) => {
                    tracing::trace!(ack = ?(&ack.ranges, ack.buffer_remaining), "response");
                    self.session.handle_ack(now, ack);
                }
                Err(e) => tracing::debug!(error = %e, "undecodable response dropped"),
            }
            return;
        }
        let decoded = codec::decode(&body, self.max_body).map(|(m, _)| m);
        match decoded {
            Ok(m) => {
                tracing::trace!(action = ?m.action, ack = ?m.ack.as_ref().map(|a| (&a.ranges, a.buffer_remaining)), "response");
                self.session.handle_message(now, m);
            }
            Err(e) => tracing::debug!(error = %e, "undecodable response dropped"),
        }
    }

    fn pump_transmits(&mut self, now: Instant) {
        while let Some(m) = self.session.poll_transmit(now.into_std()) {
            self.spawn_exchange(m, now);
        }
    }

    fn spawn_exchange(&mut self, m: Message, now: Instant) {
        tracing::trace!(
            action = ?m.action,
            number = m.sequence.as_ref().map(|s| s.number),
            ack = ?m.ack.as_ref().map(|a| &a.ranges),
            "transmit"
        );
        let last_message = matches!(m.action, wsrm_proto::msg::Action::LastMessage);
        let number = m.sequence.as_ref().map(|s| s.number);
        // A message of the template's shape goes out as its pieces (one vectored write, the
        // envelope never copied together); any other is written whole.
        let enc = match self.seq_template.as_ref().and_then(|t| t.pieces(&m)) {
            Some(p) => codec::encoded(&m, self.version, crate::http::Envelope::sequence(p)),
            None => {
                if m.sequence.is_some() {
                    self.seq_template = wsrm_wire::SequenceTemplate::new(&m, &self.framing)
                        .or(self.seq_template.take());
                }
                codec::encode_framed(&m, self.version, &self.framing).map(|e| codec::Encoded {
                    body: crate::http::Envelope::from(e.body),
                    content_type: e.content_type,
                    soap_action: e.soap_action,
                })
            }
        };
        let enc = match enc {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an outgoing message");
                return;
            }
        };
        let req = soap_request(
            &self.uri,
            self.host.as_ref(),
            enc.body,
            enc.content_type,
            enc.soap_action,
        );
        let exchange = self.http.start_exchange(req, self.max_body);
        let id = self.exchange_deadlines.push(now);
        self.inflight.push(InFlight {
            id,
            number,
            last_message,
            sent: now.into_std(),
            // Bounded by the driver's deadline (`cut_off`), not a timer of its own.
            exchange,
        });
    }

    /// Dispatches engine events; returns true when the session is over.
    fn pump_events(&mut self) -> bool {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.session.stats();
        }
        let mut over = false;
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Opened { output, .. } => {
                    tracing::info!(sequence = %output, "session opened");
                    self.ack_template = Some(wsrm_wire::AckTemplate::new(
                        self.version.soap,
                        self.version.addressing,
                        self.session.version(),
                        &output,
                    ));
                    if let Ok(mut o) = self.shared.output.lock() {
                        *o = Some(output);
                    }
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                ClientEvent::Acknowledged { number } => {
                    if let Some(tx) = self.sends.remove(&number) {
                        let _ = tx.send(Ok(number));
                        self.calls.answered(CallKind::Send, number);
                    }
                }
                ClientEvent::Reply {
                    request,
                    number,
                    action,
                    payload,
                } => {
                    if let Some(tx) = self.requests.remove(&request) {
                        let _ = tx.send(Ok(Reply {
                            action,
                            body: payload,
                            number,
                        }));
                        self.calls.answered(CallKind::Request, request);
                    }
                }
                ClientEvent::Delivered { number, .. } => {
                    tracing::debug!(number, "unexpected duplex delivery ignored");
                }
                ClientEvent::Closed => {
                    // `close` is answered when the driver finishes (after the flush).
                    tracing::info!("session closed");
                    over = true;
                }
                ClientEvent::Failed {
                    error,
                    unacknowledged,
                } => {
                    tracing::warn!(%error, unacknowledged = unacknowledged.len(), "session failed");
                    let e = self.attempts.error(error);
                    self.shared.fail(&e);
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(Err(e.clone()));
                    }
                    fail_waiting(&mut self.sends, &mut self.requests, &mut self.close, &e);
                    over = true;
                }
            }
        }
        over || matches!(
            self.session.state(),
            ClientState::Closed | ClientState::Failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{action_arc, ExchangeDeadlines};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    /// Exchanges finishing in and out of order leave the earliest running deadline at the
    /// front; expiry cuts exactly the running exchanges whose deadline passed.
    #[test]
    fn exchange_deadlines_track_the_earliest_running_exchange() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = ExchangeDeadlines::new(10 * s);
        let ids: Vec<u64> = (0..5).map(|i| d.push(t0 + i * s)).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert_eq!(d.next(), Some(t0 + 10 * s));
        d.finish(2); // out of order: the front stays
        assert_eq!(d.next(), Some(t0 + 10 * s));
        d.finish(0);
        assert_eq!(d.next(), Some(t0 + 11 * s));
        d.finish(1); // and 2, finished already, leaves with it
        assert_eq!(d.next(), Some(t0 + 13 * s));
        d.finish(1); // twice, or unknown: nothing
        d.finish(99);
        assert_eq!(d.next(), Some(t0 + 13 * s));
        assert_eq!(d.expire(t0 + 12 * s), None, "nothing running is due yet");
        assert_eq!(d.expire(t0 + 13 * s), Some(4), "exchange 3 is over");
        assert_eq!(d.next(), Some(t0 + 14 * s));
        assert_eq!(d.expire(t0 + 100 * s), Some(5));
        assert_eq!(d.next(), None);
        assert_eq!(d.expire(t0 + 200 * s), None);
        // ids go on
        assert_eq!(d.push(t0), 5);
    }

    /// An answered call's deadline leaves at once when it is the oldest; one answered out of
    /// order leaves when it reaches the front. The earliest deadline is always a waiting call's.
    #[test]
    fn call_deadlines_drop_answered_calls() {
        use super::{CallDeadlines, CallKind, FastHash, Outcome, Reply};
        use std::collections::HashMap;
        use tokio::sync::oneshot;
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = CallDeadlines::new(10 * s);
        let mut sends: HashMap<u64, oneshot::Sender<Outcome<u64>>, FastHash> = HashMap::default();
        let requests: HashMap<u64, oneshot::Sender<Outcome<Reply>>, FastHash> = HashMap::default();
        let mut rxs = Vec::new();
        for n in 1..=3u64 {
            let (tx, rx) = oneshot::channel();
            sends.insert(n, tx);
            rxs.push(rx);
            d.push(t0 + s * n as u32, CallKind::Send, n);
        }
        // 2 answered out of order: stays until it is the oldest
        sends.remove(&2);
        d.answered(CallKind::Send, 2);
        assert_eq!(d.next(&sends, &requests), Some(t0 + 11 * s));
        // 1 answered in order: leaves at once; then 2's entry is found answered
        sends.remove(&1);
        d.answered(CallKind::Send, 1);
        assert_eq!(d.next(&sends, &requests), Some(t0 + 13 * s));
        // a request with the same number is another call
        d.answered(CallKind::Request, 3);
        assert_eq!(d.next(&sends, &requests), Some(t0 + 13 * s));
        sends.remove(&3);
        d.answered(CallKind::Send, 3);
        assert_eq!(d.next(&sends, &requests), None);
    }

    /// Behind a hung exchange the entries of finished ones are compacted: the queue stays
    /// within about twice the exchanges running, however many finish behind it.
    #[test]
    fn exchange_deadlines_stay_bounded_behind_a_hung_exchange() {
        let t0 = Instant::now();
        let mut d = ExchangeDeadlines::new(Duration::from_secs(60));
        let hung = d.push(t0);
        for _ in 0..100_000 {
            let id = d.push(t0);
            d.finish(id);
            assert!(d.len() <= 2 * 2 + 64 + 1, "{} entries", d.len());
        }
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(60)));
        d.finish(hung);
        assert_eq!(d.next(), None);
        assert_eq!(d.len(), 0);
    }

    /// Calls repeating an action share its `Arc`; another action gets its own, and then takes
    /// the place of the shared one.
    #[test]
    fn repeated_actions_share_one_arc() {
        let a1 = action_arc("urn:x/OneWay");
        let a2 = action_arc("urn:x/OneWay");
        assert!(Arc::ptr_eq(&a1, &a2));
        let b = action_arc("urn:x/Echo");
        assert_eq!(&*b, "urn:x/Echo");
        assert!(!Arc::ptr_eq(&a1, &b));
        assert!(Arc::ptr_eq(&b, &action_arc("urn:x/Echo")));
        assert_eq!(&*action_arc("urn:x/OneWay"), "urn:x/OneWay");
    }
}
