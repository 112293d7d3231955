//! The service: accepts reliable sessions on one HTTP(S) address.
//!
//! Data flow: HTTP request → body read under `maxReceivedMessageSize` → `wsrm-wire` decode
//! (bad input answered with the codec's fault and status) → mutual-TLS identity check → the
//! engine's server [`wsrm_proto::Endpoint`] (one driver for all sessions, behind a lock: each
//! exchange runs it inline on its own connection task, a timer task runs it when a deadline is
//! due) → the engine's
//! answer for that exchange, encoded in the client's own SOAP/WS-Addressing version:
//! a message → `200`, a fault → `500`, nothing → `202` with an empty body
//! (wire-protocol.md §1.4, §4.11).
//!
//! Each accepted session gets one handler instance (from the factory given to
//! [`ServiceBuilder::handler`]); deliveries are handed to it one at a time, in order when the
//! binding is Ordered — WCF's PerSession instancing with `ConcurrencyMode.Single`. A handler
//! runs only while deliveries wait for it: on the task of the HTTP exchange that delivered
//! them while it completes without waiting (a few deliveries at most), else on a task of its
//! own until its queue is empty. An idle session holds no task.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;
use wsrm_proto::msg::{Action, Body, Fault, Message, RmVersion, SequenceId};
use wsrm_proto::{
    Endpoint, EndpointConfig, ExchangeId, ReplyToken, ServerEvent, SessionError, SessionId,
    SessionStats,
};

use crate::binding::{Binding, MessageVersion};
use crate::client::FastHash;
use crate::codec;
use crate::error::ServiceError;
use crate::http::{self as h, ConnInfo, Handled, ServerLimits};
use crate::tls::{ClientIdentity, ServerTls};

/// A boxed future returned by [`SessionHandler::handle`].
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One application message delivered to a session handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its number on the session's inbound sequence.
    pub number: u64,
    /// `wsa:Action`.
    pub action: Arc<str>,
    /// The raw content of the SOAP Body.
    pub body: Bytes,
    /// `true` when the client waits for a reply (a two-way operation in a request-reply
    /// session): answer with [`Outcome::Reply`].
    pub expects_reply: bool,
}

/// A handler's answer to a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply of a two-way operation.
    Reply {
        /// Reply action.
        action: Arc<str>,
        /// Reply body content (raw XML of the SOAP Body's content).
        body: Bytes,
    },
    /// No reply (one-way operation).
    NoReply,
}

/// What a handler learns about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The engine's session handle.
    pub id: SessionId,
    /// The inbound sequence identifier (WCF's session id).
    pub sequence: SequenceId,
    /// The reply sequence identifier (request-reply sessions).
    pub reply_sequence: Option<SequenceId>,
    /// The session's WS-RM version.
    pub version: RmVersion,
    /// The mutual-TLS identity that created the session, if any.
    pub identity: Option<ClientIdentity>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Closed cleanly by the client.
    Closed,
    /// Failed (inactivity, peer abort, protocol violation, ...).
    Failed(SessionError),
    /// The service was shut down ([`Service::shutdown`]) while the session was open. Only
    /// sessions kept in memory end this way, after the deliveries queued for their handler;
    /// a session in a durable store outlives the service and goes on after a restart.
    ServiceStopped,
}

/// The application side of one session (one instance per session).
pub trait SessionHandler: Send + 'static {
    /// Handles one delivery; called one at a time, in order when the binding is Ordered.
    /// A panic (here or in the future) is caught and logged: that message counts as handled,
    /// without a reply, and the session goes on with the next one.
    fn handle(&mut self, delivery: Delivery) -> HandlerFuture<'_>;

    /// Called once when the session is over.
    fn ended(&mut self, _end: &SessionEnd) {}

    /// With a store ([`ServiceBuilder::store`]), called right after [`SessionHandler::handle`]
    /// returned for message `number`: the application's own writes to commit in the same
    /// store transaction as the delivery (the inbox, `docs/store.md`). The message counts as
    /// delivered only once that transaction commits; after a crash before it, it is handed out
    /// again. Default: none.
    fn commit(&mut self, _number: u64) -> Option<crate::store::AppWrite> {
        None
    }
}

type Factory = Arc<dyn Fn(&SessionInfo) -> Box<dyn SessionHandler> + Send + Sync>;

/// Which WS-RM versions the service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RmVersions {
    /// Both 1.0 and 1.1; each client is answered in its own version (default).
    #[default]
    Any,
    /// Only the binding's version.
    BindingOnly,
}

/// Configures and starts a [`Service`].
pub struct ServiceBuilder {
    binding: Binding,
    tls: Option<ServerTls>,
    factory: Option<Factory>,
    max_sessions: usize,
    max_buffered_bytes: usize,
    handler_queue: Option<usize>,
    versions: RmVersions,
    path: Option<String>,
    store: Option<crate::store::Store>,
    close_timeout: Duration,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("binding", &self.binding)
            .field("max_sessions", &self.max_sessions)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("handler_queue", &self.handler_queue)
            .finish()
    }
}

/// Per-service counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Sessions created (CreateSequence accepted).
    pub sessions_created: u64,
    /// Sessions currently established (accepted, not ended).
    pub sessions_active: u64,
    /// Sessions closed cleanly.
    pub sessions_closed: u64,
    /// Sessions failed.
    pub sessions_failed: u64,
    /// Messages handed to handlers.
    pub delivered: u64,
    /// HTTP requests refused before the engine (undecodable, oversized, wrong media type,
    /// identity mismatch, buffer cap).
    pub refused: u64,
    /// Application bytes currently buffered for handlers.
    pub buffered_bytes: u64,
}

#[derive(Default)]
struct Counters {
    sessions_created: AtomicU64,
    sessions_active: AtomicU64,
    sessions_closed: AtomicU64,
    sessions_failed: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
}

impl ServiceBuilder {
    /// Hosts sessions with `binding` (by default: echo nothing, acknowledge everything).
    pub fn new(binding: Binding) -> Self {
        ServiceBuilder {
            binding,
            tls: None,
            factory: None,
            max_sessions: 10_000,
            max_buffered_bytes: 64 * 1024 * 1024,
            handler_queue: None,
            versions: RmVersions::Any,
            path: None,
            store: None,
            close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
        }
    }

    /// WCF's ServiceHost CloseTimeout (`ServiceHostCloseTimeoutString`, 00:00:10).
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

    /// How long [`Service::shutdown`] lets the handlers of sessions kept in memory work
    /// through the deliveries already acknowledged before it returns regardless (WCF's
    /// ServiceHost `CloseTimeout`). Default 10 s.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Keeps the sessions in `store` (issue 6). With a durable store (SQLite) every received
    /// message is stored before its acknowledgement leaves, deliveries commit with the
    /// handler's writes ([`SessionHandler::commit`]), replies are cached in the store, and
    /// [`ServiceBuilder::bind`] restores the stored sessions first. Default: none — sessions
    /// live in memory only (WCF's behaviour).
    pub fn store(mut self, store: crate::store::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The handler factory: called once per accepted session (see the module docs for where
    /// handlers run). Default: none — the service acknowledges one-way messages and drops
    /// them; a request is answered with no reply (a standalone acknowledgement).
    pub fn handler<F, H>(mut self, f: F) -> Self
    where
        F: Fn(&SessionInfo) -> H + Send + Sync + 'static,
        H: SessionHandler,
    {
        self.factory = Some(Arc::new(move |i: &SessionInfo| {
            Box::new(f(i)) as Box<dyn SessionHandler>
        }));
        self
    }

    /// HTTPS certificate and key (and, for mutual TLS, the client CA). Required when the
    /// binding's transport is https.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Cap on established sessions (WCF's `maxConcurrentSessions` throttle). Sessions beyond it
    /// wait unaccepted, counting against MaxPendingChannels; further CreateSequence requests are
    /// then refused (`ConnectionLimitReached`). Default 10,000.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.max(1);
        self
    }

    /// Cap on application bytes received but not yet taken by handlers (queued, or in a
    /// handler's hands), across all sessions. Up to half of it goes first come; past that
    /// each session may hold its share of the other half, `n / 2 / sessions` (at least one
    /// message), and a session holding more has its new messages refused until its own
    /// handler has taken enough: no session is kept out by the others' backlog. A refused
    /// one-way message is answered with the session's acknowledgement without it and
    /// BufferRemaining 0 (as WCF answers a message its buffer cannot take), a refused request
    /// with HTTP 202; clients retransmit them later, and each retransmission counts against
    /// their MaxRetryCount, so a handler that stays stuck still fails its session. Nothing is
    /// let in past the cap itself (but for messages checked at the same moment on concurrent
    /// connections, which may pass it together); with more sessions than one message each
    /// fits in half of it, sessions take turns by chance. Each session's queue is paced by flow control first
    /// ([`ServiceBuilder::handler_queue`]); this cap binds when many sessions' handlers fall
    /// behind at once, or for clients that ignore BufferRemaining. Default 64 MiB.
    pub fn max_buffered_bytes(mut self, n: usize) -> Self {
        self.max_buffered_bytes = n;
        self
    }

    /// Deliveries a session's handler queue holds before the session's BufferRemaining
    /// drops (default: the binding's MaxTransferWindowSize). A message counts as taken by the
    /// application once it is queued for the handler; a handler that falls further behind
    /// lowers the session's BufferRemaining by the excess, so a client with flow control
    /// stops sending at `n` + one window queued and polls until the handler catches up. Our
    /// client polls within milliseconds; a WCF client polls only every 30 s once the buffer
    /// is full (min(SendTimeout/2, InactivityTimeout/(2·MaxRetryCount))), so for WCF clients
    /// of a handler that cannot keep up, a larger queue trades memory (`n` messages per
    /// session, within [`ServiceBuilder::max_buffered_bytes`] overall) for fewer such pauses.
    /// A client's call waits while the session has no room: against a handler far slower
    /// than the client's SendTimeout allows for `n` + one window of messages, its calls
    /// time out (the call, not the session: the message is still delivered), as against a
    /// WCF service ("no space available in the reliable channel's transfer window"). The
    /// messages acknowledged ahead of the handler are also what a memory service loses if
    /// it crashes.
    pub fn handler_queue(mut self, n: usize) -> Self {
        self.handler_queue = Some(n.max(1));
        self
    }

    /// Which RM versions to answer (default: both, each in the client's version).
    pub fn rm_versions(mut self, v: RmVersions) -> Self {
        self.versions = v;
        self
    }

    /// Only serve requests for this path (others get 404). Default: every path.
    pub fn path(mut self, p: impl Into<String>) -> Self {
        self.path = Some(p.into());
        self
    }

    /// Binds `addr` (port 0 = ephemeral) and starts serving.
    pub async fn bind(self, addr: SocketAddr) -> Result<Service, ServiceError> {
        self.binding.validate()?;
        let https = self.binding.transport.scheme == crate::binding::Scheme::Https;
        let acceptor = match (&self.tls, https) {
            (Some(t), true) => Some(t.acceptor()?),
            (None, false) => None,
            (None, true) => {
                return Err(ServiceError::Config(
                    "the binding uses https but no server certificate was given".into(),
                ))
            }
            (Some(_), false) => return Err(ServiceError::Config(
                "a server certificate was given but the binding uses http (call Binding::https)"
                    .into(),
            )),
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServiceError::Bind { addr, source })?;
        // Without a handler (and without a store, whose inbox commits go through the handler),
        // one-way deliveries have nothing to run: they complete in the driver.
        let no_handler = self.factory.is_none() && self.store.is_none();
        let factory = self.factory.unwrap_or_else(|| {
            Arc::new(|_: &SessionInfo| Box::new(AckOnly) as Box<dyn SessionHandler>)
        });
        let scheme = self.binding.transport.scheme.as_str();
        let base_url = format!("{scheme}://{local}");
        let cfg = EndpointConfig {
            settings: self.binding.session.clone(),
            version: match self.versions {
                RmVersions::Any => None,
                RmVersions::BindingOnly => Some(self.binding.session.reliable_messaging_version),
            },
            accept_one_way: true,
            accept_request_reply: true,
            // HTTP request/reply only: the service cannot call clients back.
            accept_duplex: false,
            max_sessions: self.max_sessions,
            address: None,
            parked_exchange_timeout: self.binding.transport.send_timeout,
            // The session's handler queue is the application's receive queue: a message
            // counts as taken (BufferRemaining) once it is handed over, already in the
            // acknowledgement that answers it (see `ServerEvent::Delivery` below).
            release_on_delivery: true,
            ..EndpointConfig::default()
        };
        let mut endpoint =
            Endpoint::new(cfg, rand::random()).map_err(|e| ServiceError::Binding(e.into()))?;
        let durable = match &self.store {
            Some(store) => {
                let restored = crate::durable::restore_service(
                    store,
                    &mut endpoint,
                    self.binding.max_message_bytes(),
                )
                .await?;
                Some(crate::durable::DurableService::new(
                    store.clone(),
                    self.binding.message_version,
                    restored,
                ))
            }
            None => None,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            buffered: AtomicUsize::new(0),
            max_buffered: self.max_buffered_bytes,
            mutual: self.tls.as_ref().is_some_and(|t| t.is_mutual()),
            free_queue: self
                .handler_queue
                .unwrap_or(self.binding.session.max_transfer_window_size.max(1) as usize),
        });
        let core = Arc::new_cyclic(|weak| Core {
            driver: Mutex::new(Driver {
                endpoint,
                shared: shared.clone(),
                factory,
                no_handler,
                to_start: Vec::new(),
                max_sessions: self.max_sessions,
                exchanges: HashMap::default(),
                inline: None,
                sessions: HashMap::default(),
                by_sequence: HashMap::default(),
                pending: std::collections::VecDeque::new(),
                owners: HashMap::new(),
                core: weak.clone(),
                next_exchange: 0,
                durable: durable.clone(),
                inactivity: self.binding.session.inactivity_timeout,
                armed: None,
                stopped: false,
                ending: Vec::new(),
            }),
            wake: Notify::new(),
        });
        let timers_task = tokio::spawn(
            timers(core.clone(), shutdown_rx.clone())
                .instrument(tracing::info_span!("service", addr = %local)),
        );
        let core_for_stats = core.clone();
        let front = Arc::new(Front {
            core,
            shared: shared.clone(),
            version: self.binding.message_version,
            framing: wsrm_wire::Framing::new(
                self.binding.message_version.soap,
                self.binding.message_version.addressing,
            ),
            max_body: self.binding.max_message_bytes(),
            body_timeout: self.binding.transport.request_body_timeout,
            exchange_timeout: self.binding.transport.send_timeout,
            path: self.path.clone(),
            durable,
        });
        let limits = ServerLimits {
            max_connections: self.binding.transport.max_connections,
            header_read_timeout: self.binding.transport.request_header_timeout,
        };
        let task = tokio::spawn(
            h::serve(
                listener,
                acceptor,
                limits,
                move |req, info| front.clone().handle(req, info),
                shutdown_rx,
            )
            .instrument(tracing::info_span!("http", addr = %local)),
        );
        tracing::info!(url = %base_url, binding = self.binding.name(), "service listening");
        Ok(Service {
            addr: local,
            base_url,
            shared,
            core: core_for_stats,
            shutdown: shutdown_tx,
            task: Some(task),
            timers: Some(timers_task),
            close_timeout: self.close_timeout,
        })
    }
}

/// A running service. Dropping it stops it.
pub struct Service {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    /// For [`Service::session_stats`], which asks the engine.
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The timer task; at shutdown it hands over what [`Stopped`] holds.
    timers: Option<tokio::task::JoinHandle<Stopped>>,
    close_timeout: Duration,
}

/// What [`Service::shutdown`] left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sessions kept in memory that were open at the shutdown; their handlers were told
    /// [`SessionEnd::ServiceStopped`] after their queued deliveries.
    pub sessions_stopped: usize,
    /// Acknowledged deliveries still queued for a handler, never started, when the close
    /// timeout ran out (0 when every handler finished in time). Handlers of sessions that
    /// ended before the shutdown but still had deliveries queued count too.
    pub unhandled: usize,
    /// Handlers still working (on a delivery or in `ended`) when the close timeout ran out;
    /// they are left running on the runtime.
    pub in_progress: usize,
    /// With a store: acknowledged deliveries that were queued for handlers, not started,
    /// when the service stopped. A durable service does not wait for them; they stay in the
    /// store, and a service started on it delivers them (also those of sessions the clients
    /// already closed). A delivery a handler was working on is not counted: it commits, or
    /// it is delivered again after the restart.
    pub stored: usize,
    /// The service's counters when the shutdown returned (`delivered` includes what the
    /// handlers got during the shutdown).
    pub stats: ServiceStats,
}

impl ShutdownReport {
    /// True when every handler finished its queued deliveries within the close timeout.
    pub fn drained(&self) -> bool {
        self.unhandled == 0 && self.in_progress == 0
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("addr", &self.addr).finish()
    }
}

impl Service {
    /// Starts configuring a service.
    pub fn builder(binding: Binding) -> ServiceBuilder {
        ServiceBuilder::new(binding)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `scheme://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Service-wide counters.
    pub fn stats(&self) -> ServiceStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServiceStats {
            sessions_created: g(&c.sessions_created),
            sessions_active: g(&c.sessions_active),
            sessions_closed: g(&c.sessions_closed),
            sessions_failed: g(&c.sessions_failed),
            delivered: g(&c.delivered),
            refused: g(&c.refused),
            buffered_bytes: self.shared.buffered.load(Ordering::Relaxed) as u64,
        }
    }

    /// Counters of one session by its inbound sequence id, while the session exists (taken
    /// from the engine at the call; nothing is copied per message for it).
    pub fn session_stats(&self, sequence: &SequenceId) -> Option<SessionStats> {
        let d = self.core.lock();
        let session = d.by_sequence.get(sequence)?;
        d.endpoint.stats(*session)
    }

    /// Stops the service gracefully: stops accepting, lets the connections finish the
    /// exchanges under way (up to 1 s) and closes them, then lets the handlers of sessions
    /// kept in memory handle the deliveries already acknowledged, in order, and tells them
    /// [`SessionEnd::ServiceStopped`]. It returns once they are done or the close timeout
    /// ([`ServiceBuilder::close_timeout`], counted from the call) ran out; the report says
    /// what was left. Replies produced after the connections closed are not sent.
    ///
    /// With a durable store the handlers are not waited for: a delivery whose handler had
    /// not committed is handed out again after a restart, and the sessions go on.
    /// Dropping a `Service` instead stops it without waiting for anything.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let deadline = Instant::now() + self.close_timeout;
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let stopped = match self.timers.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => Stopped::default(),
        };
        let runners = stopped.runners;
        let mut report = ShutdownReport {
            sessions_stopped: stopped.sessions,
            stored: stopped.stored,
            ..ShutdownReport::default()
        };
        loop {
            let (mut unhandled, mut in_progress) = (0, 0);
            for r in &runners {
                if let Some(queued) = r.left() {
                    unhandled += queued;
                    in_progress += 1;
                }
            }
            if in_progress == 0 {
                break;
            }
            if Instant::now() >= deadline {
                // A run holding the handler counts as in progress; its queue as unhandled.
                report.unhandled = unhandled;
                report.in_progress = in_progress;
                tracing::warn!(
                    unhandled,
                    in_progress,
                    close_timeout = ?self.close_timeout,
                    "the close timeout ran out before the handlers finished the acknowledged deliveries"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5).min(deadline - Instant::now())).await;
        }
        report.stats = self.stats();
        report
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

struct AckOnly;

impl SessionHandler for AckOnly {
    fn handle(&mut self, _d: Delivery) -> HandlerFuture<'_> {
        Box::pin(async { Outcome::NoReply })
    }
}

struct Shared {
    counters: Counters,
    buffered: AtomicUsize,
    max_buffered: usize,
    mutual: bool,
    /// Deliveries a session's handler queue takes freely ([`ServiceBuilder::handler_queue`],
    /// default the binding's MaxTransferWindowSize); beyond it the queue lowers the session's
    /// BufferRemaining (see [`Runner::backlog`]).
    free_queue: usize,
}

/// The driver behind a lock. HTTP exchanges and handler outcomes run it inline on their own
/// tasks, so a message costs no hand-off to another task and back; the timer task runs it when
/// the engine's next deadline is due and is woken when an input moved that deadline earlier.
struct Core {
    driver: Mutex<Driver>,
    wake: Notify,
}

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, Driver> {
        // A panic while holding the lock is a bug in this crate, not peer input; the driver's
        // state is still consistent between inputs, so keep serving.
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one HTTP exchange's message through the driver: its answer when the engine gave
    /// it at once (the usual case), else a receiver for it, and the handler runs it made due
    /// (to be started once the lock is released). `None` once the service stopped.
    fn exchange(
        &self,
        message: Message,
        identity: Option<ClientIdentity>,
    ) -> Option<(Answer, Vec<Arc<Runner>>)> {
        let mut d = self.lock();
        if d.stopped {
            return None;
        }
        let answer = d.exchange(message, identity);
        if d.rearm() {
            self.wake.notify_one();
        }
        Some((answer, std::mem::take(&mut d.to_start)))
    }

    /// Runs one input through the driver; the handler runs it made due are started on tasks
    /// of their own (the caller is a handler run itself).
    fn input(&self, m: ToDriver) {
        let runs = {
            let mut d = self.lock();
            if d.stopped {
                return;
            }
            d.input(m);
            if d.rearm() {
                self.wake.notify_one();
            }
            std::mem::take(&mut d.to_start)
        };
        for r in runs {
            Runner::spawn(r);
        }
    }
}

/// A session's handler and the deliveries waiting for it, in order. The handler runs only while
/// deliveries wait: the first one queued while it is idle starts a run, on the task that
/// produced it (an HTTP exchange's, usually) as long as the handler completes without waiting,
/// and on a task of its own from the handler's first wait (or after [`Runner::INLINE`]
/// deliveries) on. A run ends when the queue is empty, putting the handler back. So a message
/// costs no hand-off to another task while handlers keep up, and an idle session holds no task.
struct Runner {
    state: Mutex<RunnerState>,
    session: SessionId,
    sequence: SequenceId,
    span: tracing::Span,
    core: std::sync::Weak<Core>,
    shared: Arc<Shared>,
    durable: bool,
}

struct RunnerState {
    queue: std::collections::VecDeque<HandlerMsg>,
    /// The handler while no run has it; `None` during a run and once the session ended.
    idle: Option<Box<dyn SessionHandler>>,
    /// The handler was told the session's end and is gone.
    over: bool,
    /// The session's BufferRemaining was lowered for this queue's backlog and not yet
    /// restored: every delivery the run takes reports the backlog again.
    lowered: bool,
    /// The body bytes of the delivery the handler has (from when the run takes it until it
    /// takes the next one or the run ends), for the buffer cap's shares
    /// ([`Runner::held_bytes`]).
    in_hand: usize,
}

impl Runner {
    /// Deliveries handled on the producing task before the run moves to a task of its own:
    /// an HTTP response waits for the run's part on its task.
    const INLINE: usize = 4;

    fn lock(&self) -> std::sync::MutexGuard<'_, RunnerState> {
        // Only this module's code runs under this lock (never the handler).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` once the handler was told the session's end; else the deliveries queued for it.
    fn left(&self) -> Option<usize> {
        let st = self.lock();
        (!st.over).then(|| {
            st.queue
                .iter()
                .filter(|m| matches!(m, HandlerMsg::Deliver(..)))
                .count()
        })
    }

    /// Queues `m`: whether the handler is idle, i.e. a run must be started, and whether the
    /// queue now holds more than it takes freely (the engine must hear of its backlog).
    fn queue(&self, m: HandlerMsg) -> (bool, bool) {
        let mut st = self.lock();
        st.queue.push_back(m);
        let start = st.idle.is_some() && st.queue.len() == 1;
        (start, st.queue.len() > self.shared.free_queue || st.lowered)
    }

    /// The application bytes the session holds: its queued deliveries' and the one in the
    /// handler's hands.
    fn held_bytes(&self) -> usize {
        let st = self.lock();
        st.queue
            .iter()
            .map(|m| match m {
                HandlerMsg::Deliver(d, _) => d.body.len(),
                HandlerMsg::End(_) => 0,
            })
            .sum::<usize>()
            .saturating_add(st.in_hand)
    }

    /// Marks the queue as lowered (see [`Runner::backlog`]) if its handler has a delivery or
    /// one waits: a run is on, and it restores the backlog when it takes the next one or goes
    /// idle. Under one lock with the run's own check, so the mark cannot fall between a run's
    /// last check and its end. False for an idle, empty queue (nothing would restore it).
    fn lower_if_busy(&self) -> bool {
        let mut st = self.lock();
        let busy = st.in_hand > 0
            || st
                .queue
                .iter()
                .any(|m| matches!(m, HandlerMsg::Deliver(..)));
        st.lowered |= busy;
        busy
    }

    /// The queue's backlog: deliveries queued beyond the [`Shared::free_queue`] it takes
    /// freely. The service counts a delivery as taken by the application when it is queued
    /// (`release_on_delivery`, so that an acknowledgement never advertises a full buffer
    /// while the handler keeps up); a handler that falls behind instead lowers the
    /// session's BufferRemaining by this much, and the client's flow control stops sending
    /// and polls until it catches up (WCF's receive buffer of MaxTransferWindowSize
    /// messages). Read under the driver's lock, which applies it to the engine (so the last
    /// value applied is the newest), and marks the queue as lowered while it is non-zero.
    fn backlog(&self) -> u32 {
        let mut st = self.lock();
        let deliveries = st
            .queue
            .iter()
            .filter(|m| matches!(m, HandlerMsg::Deliver(..)))
            .count();
        let held = deliveries.saturating_sub(self.shared.free_queue);
        st.lowered = held > 0;
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    /// The run's future, when the handler is idle (else a run already has it). `inline`: it
    /// starts on the producing task (see [`Runner::INLINE`]).
    fn take_run(self: Arc<Self>, inline: bool) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let handler = self.lock().idle.take()?;
        let span = self.span.clone();
        Some(Box::pin(self.run(handler, inline).instrument(span)))
    }

    /// Starts a run on a task of its own.
    fn spawn(this: Arc<Self>) {
        if let Some(run) = this.take_run(false) {
            tokio::spawn(run);
        }
    }

    /// Starts a run on the calling task: polled once here, continued on a task of its own
    /// if it has to wait.
    async fn start_inline(this: Arc<Self>) {
        let Some(mut run) = this.take_run(true) else {
            return;
        };
        if futures_util::poll!(run.as_mut()).is_pending() {
            tokio::spawn(run);
        }
    }

    async fn run(self: Arc<Self>, mut handler: Box<dyn SessionHandler>, inline: bool) {
        // Deliveries left before a run that started on the producing task moves off it.
        let mut inline_left = if inline { Self::INLINE } else { 0 };
        loop {
            let (msg, lowered) = {
                let mut st = self.lock();
                match st.queue.pop_front() {
                    Some(m) => {
                        st.in_hand = match &m {
                            HandlerMsg::Deliver(d, _) => d.body.len(),
                            HandlerMsg::End(_) => 0,
                        };
                        (m, st.lowered)
                    }
                    None => {
                        st.in_hand = 0;
                        st.idle = Some(handler);
                        let lowered = st.lowered;
                        drop(st);
                        if lowered {
                            // The buffer cap lowered BufferRemaining while the handler had
                            // the last delivery (`Driver::admits`): restore it now.
                            if let Some(core) = self.core.upgrade() {
                                core.input(ToDriver::Backlog(self.session));
                            }
                        }
                        return;
                    }
                }
            };
            if lowered {
                // The session's BufferRemaining is lowered for this queue: it rises again
                // as the handler takes deliveries (only while the handler is behind).
                if let Some(core) = self.core.upgrade() {
                    core.input(ToDriver::Backlog(self.session));
                }
            }
            let (d, token) = match msg {
                HandlerMsg::Deliver(d, t) => (d, t),
                HandlerMsg::End(end) => {
                    let ended = std::panic::AssertUnwindSafe(|| handler.ended(&end));
                    if std::panic::catch_unwind(ended).is_err() {
                        tracing::error!("the session's handler panicked in `ended`");
                    }
                    if let Some(core) = self.core.upgrade() {
                        core.input(ToDriver::Forget(self.sequence.clone()));
                    }
                    // The session is over: the handler goes, and with it any later run.
                    self.lock().over = true;
                    return;
                }
            };
            let bytes = d.body.len();
            let number = d.number;
            // A handler that panics must not take the delivering HTTP exchange's task down
            // with it (runs start there), nor the session's later messages.
            let call = std::panic::AssertUnwindSafe(async { handler.handle(d).await });
            let outcome = match futures_util::FutureExt::catch_unwind(call).await {
                Ok(o) => o,
                Err(_) => {
                    tracing::error!(
                        number,
                        "the session's handler panicked; the message counts as handled, without a reply"
                    );
                    Outcome::NoReply
                }
            };
            if token.is_none() && !self.durable {
                // A one-way message of a one-way session: nothing waits for the outcome but
                // the buffer accounting; the driver's lock is not needed for that.
                self.shared.buffered.fetch_sub(bytes, Ordering::Relaxed);
            } else {
                let app = if self.durable {
                    let commit = std::panic::AssertUnwindSafe(|| handler.commit(number));
                    std::panic::catch_unwind(commit).unwrap_or_else(|_| {
                        tracing::error!(number, "the session's handler panicked in `commit`");
                        None
                    })
                } else {
                    None
                };
                let Some(core) = self.core.upgrade() else {
                    return;
                };
                core.input(ToDriver::Outcome {
                    token,
                    outcome,
                    bytes,
                    session: self.session,
                    number,
                    app,
                });
            }
            if inline_left > 0 {
                inline_left -= 1;
                if inline_left == 0 {
                    // Off the producing task, onto a task of its own.
                    tokio::task::yield_now().await;
                }
            } else {
                // On a task of its own, the queue may keep filling: yield as the runtime's
                // cooperative budget says, as a channel receiver would.
                tokio::task::consume_budget().await;
            }
        }
    }
}

/// What the timer task hands to [`Service::shutdown`] when the service stops.
#[derive(Default)]
struct Stopped {
    /// The runners of the sessions kept in memory that may still hold deliveries.
    runners: Vec<Arc<Runner>>,
    /// How many of those sessions were open.
    sessions: usize,
    /// Durable: deliveries queued for handlers, not started (left in the store).
    stored: usize,
}

/// Runs the engine's timers until shutdown: retransmissions, acknowledgement intervals,
/// inactivity, parked exchanges.
async fn timers(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) -> Stopped {
    loop {
        let (deadline, runs) = {
            let mut d = core.lock();
            let now = Instant::now().into_std();
            d.endpoint.handle_timeout(now);
            d.pump(None, now);
            d.armed = d.endpoint.poll_timeout();
            (d.armed, std::mem::take(&mut d.to_start))
        };
        for r in runs {
            Runner::spawn(r);
        }
        let deadline = deadline
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = core.wake.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Stopped: later exchanges are refused. The handlers of sessions kept in memory get what
    // their sessions had queued, then the end; their runners go to `Service::shutdown`, which
    // waits for them. Durable sessions are not ended: they go on after a restart.
    let (stopped, to_start) = {
        let mut d = core.lock();
        d.stopped = true;
        let mut runners = Vec::new();
        let mut to_start = std::mem::take(&mut d.to_start);
        let ending = std::mem::take(&mut d.ending);
        let mut stored = 0;
        if d.durable.is_some() {
            // Not waited for: counted, for the report.
            let open = d.sessions.values().filter_map(|s| s.to_handler.clone());
            for r in open.chain(ending.iter().filter_map(std::sync::Weak::upgrade)) {
                stored += r.left().unwrap_or(0);
            }
        } else {
            for slot in d.sessions.values_mut() {
                if let Some(r) = slot.to_handler.take() {
                    if r.queue(HandlerMsg::End(SessionEnd::ServiceStopped)).0 {
                        to_start.push(r.clone());
                    }
                    runners.push(r);
                }
            }
        }
        let stopped = runners.len();
        if d.durable.is_none() {
            runners.extend(ending.iter().filter_map(std::sync::Weak::upgrade));
        }
        d.sessions.clear();
        d.by_sequence.clear();
        d.exchanges.clear();
        d.shared
            .counters
            .sessions_active
            .store(0, Ordering::Relaxed);
        let stopped = Stopped {
            runners,
            sessions: stopped,
            stored,
        };
        (stopped, to_start)
    };
    for r in to_start {
        Runner::spawn(r);
    }
    stopped
}

/// The engine's answer to an exchange: a message (200/500) or nothing (202).
enum Answer {
    /// Given while the exchange's message went through the engine. Boxed where the driver
    /// takes it from the engine: from there it passes through five values (the driver's
    /// slot, this, the lock's result, the exchange's match, the response) before it is
    /// encoded, and one allocation costs less than copying a ~360-byte message five times.
    Now(Option<Box<Message>>),
    /// Later: the exchange is parked (a request waiting for its reply) or, with a durable
    /// store, the answer waits for the store writes before it.
    Later(oneshot::Receiver<Option<Message>>),
}

/// What handler runs hand to the driver.
enum ToDriver {
    Outcome {
        token: Option<ReplyToken>,
        outcome: Outcome,
        bytes: usize,
        session: SessionId,
        number: u64,
        app: Option<crate::store::AppWrite>,
    },
    /// The handler of an ended session is done (durable: forget the sequence).
    Forget(SequenceId),
    /// A session's handler queue changed while its backlog lowers its BufferRemaining.
    Backlog(SessionId),
}

struct Front {
    core: Arc<Core>,
    shared: Arc<Shared>,
    version: MessageVersion,
    /// The framing of `version`'s answers, made once (every answer in the binding's version
    /// uses it).
    framing: wsrm_wire::Framing,
    max_body: usize,
    body_timeout: Duration,
    exchange_timeout: Duration,
    path: Option<String>,
    durable: Option<Arc<crate::durable::DurableService>>,
}

impl Front {
    fn refuse(&self, status: StatusCode) -> Handled {
        self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        Handled::Respond(h::empty(status))
    }

    fn respond(&self, m: Option<&Message>, version: MessageVersion) -> Handled {
        let Some(m) = m else {
            return Handled::Respond(h::empty(StatusCode::ACCEPTED));
        };
        if version == self.version {
            return self.respond_framed(m, version, &self.framing);
        }
        let framing = wsrm_wire::Framing::new(version.soap, version.addressing);
        self.respond_framed(m, version, &framing)
    }

    fn respond_framed(
        &self,
        m: &Message,
        version: MessageVersion,
        framing: &wsrm_wire::Framing,
    ) -> Handled {
        let status = if matches!(m.body, Body::Fault(_)) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        match codec::encode_framed(m, version, framing) {
            Ok(enc) => {
                let mut r = Response::new(Full::new(enc.body));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    codec::content_type_header(enc.content_type),
                );
                Handled::Respond(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a response");
                Handled::Respond(h::empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// The request's head is checked at once and only its body goes into the future: the
    /// head is not part of the future's state, which hyper moves twice per request.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: Arc<ConnInfo>,
    ) -> futures_util::future::Either<
        std::future::Ready<Handled>,
        impl Future<Output = Handled> + Send + 'static,
    > {
        use futures_util::future::Either;
        match self.check_head(&req) {
            Some(refused) => Either::Left(std::future::ready(refused)),
            None => Either::Right(self.handle_body(req.into_body(), info)),
        }
    }

    /// The refusal of a request whose method, path or content type this service does not take.
    fn check_head(&self, req: &Request<Incoming>) -> Option<Handled> {
        if req.method() != http::Method::POST {
            return Some(self.refuse(StatusCode::METHOD_NOT_ALLOWED));
        }
        if let Some(p) = &self.path {
            if req.uri().path() != p {
                return Some(self.refuse(StatusCode::NOT_FOUND));
            }
        }
        // the media type without parameters, compared without allocating
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim())
            .unwrap_or_default();
        let want = codec::media_type(self.version.soap);
        if !media.eq_ignore_ascii_case(want) {
            // WCF's HTTP transport refuses a content type its encoder does not accept.
            return Some(self.refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        None
    }

    async fn handle_body(self: Arc<Self>, body: Incoming, info: Arc<ConnInfo>) -> Handled {
        let body = match h::read_body(body, self.max_body, self.body_timeout).await {
            Ok(b) => b,
            Err(h::ReadError::TooLarge) => return self.refuse(StatusCode::PAYLOAD_TOO_LARGE),
            Err(h::ReadError::TimedOut) => return self.refuse(StatusCode::REQUEST_TIMEOUT),
            Err(h::ReadError::Io) => return Handled::Close,
        };
        let (message, version) = match codec::decode(&body, self.max_body) {
            Ok(x) => x,
            Err(e) => {
                self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, body = %String::from_utf8_lossy(&body), "refused undecodable request");
                let version = codec::error_version(&e, self.version);
                return match codec::error_fault(&e) {
                    Some(m) => {
                        self.respond_framed(&m, version, &codec::error_framing(&e, self.version))
                    }
                    None => Handled::Respond(h::empty(
                        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                    )),
                };
            }
        };
        if version != self.version {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let fault = codec::version_mismatch(self.version, message.version);
            return self.respond(Some(&fault), self.version);
        }
        // The buffer cap: while handlers are behind, refuse new application sequence messages
        // of the sessions holding more than their share (see `Driver::admits`). Below half
        // the cap (every message while handlers keep up) this costs one atomic load.
        let mut message = message;
        if let (Some(seq), Body::Application(b)) = (&message.sequence, &message.body) {
            let held = self.shared.buffered.load(Ordering::Relaxed);
            if held >= self.shared.max_buffered / 2 {
                let admit =
                    self.core
                        .lock()
                        .admits(&message, info.identity.as_ref(), held, b.len());
                match admit {
                    Admit::Yes => {}
                    Admit::Drop => return self.refuse(StatusCode::ACCEPTED),
                    Admit::AckOnly => {
                        // As WCF answers a one-way message its buffer cannot take: the
                        // session's acknowledgement, without it (and BufferRemaining 0).
                        self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        let mut poll =
                            Message::new(message.version, Action::AckRequested, Body::Empty);
                        poll.ack_requested = Some(seq.identifier.clone());
                        poll.to = message.to.clone();
                        poll.reply_to = message.reply_to.clone();
                        poll.message_id = message.message_id.clone();
                        message = poll;
                    }
                }
            }
        }
        let identity = if self.shared.mutual {
            info.identity
        } else {
            None
        };
        if let Some(d) = &self.durable {
            // Mutual TLS: a message for another identity's sequence is refused before anything
            // of it is stored (the driver checks again, for the non-durable path).
            if self.shared.mutual {
                if let Some(refusal) = self.core.lock().check_owner(&message, identity.as_ref()) {
                    return self.respond(Some(&refusal), version);
                }
            }
            // Durable: the message is stored before the engine (and so any ack) sees it.
            if d.before_engine(&message).await.is_err() {
                return Handled::Respond(h::empty(StatusCode::SERVICE_UNAVAILABLE));
            }
        }
        let (answer, runs) = match self.core.exchange(message, identity) {
            Some(x) => x,
            None => return Handled::Respond(h::empty(StatusCode::SERVICE_UNAVAILABLE)),
        };
        for r in runs {
            Runner::start_inline(r).await;
        }
        let mut rx = match answer {
            // the usual case: answered while the message went through the engine
            Answer::Now(m) => return self.respond(m.as_deref(), version),
            Answer::Later(rx) => rx,
        };
        // Durable: usually sent already (no writes pending); then no timer.
        match rx.try_recv() {
            Ok(m) => return self.respond(m.as_ref(), version),
            Err(oneshot::error::TryRecvError::Closed) => {
                return Handled::Respond(h::empty(StatusCode::ACCEPTED))
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        match tokio::time::timeout(self.exchange_timeout, rx).await {
            Ok(Ok(m)) => self.respond(m.as_ref(), version),
            _ => Handled::Respond(h::empty(StatusCode::ACCEPTED)),
        }
    }
}

/// What the buffer cap does with an application message ([`Driver::admits`]).
enum Admit {
    /// Goes on to the engine.
    Yes,
    /// Refused with an empty 202 (a request).
    Drop,
    /// Refused, answered with the session's acknowledgement (a one-way message).
    AckOnly,
}

enum HandlerMsg {
    Deliver(Delivery, Option<ReplyToken>),
    End(SessionEnd),
}

struct SessionSlot {
    info: SessionInfo,
    to_handler: Option<Arc<Runner>>,
    accepted: bool,
}

struct Driver {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    factory: Factory,
    /// No handler was given (and no store): one-way deliveries complete in the driver; only
    /// requests go to the (acknowledge-only) handler.
    no_handler: bool,
    /// Handler runs made due while the lock was held; started by the lock's holder after it.
    to_start: Vec<Arc<Runner>>,
    max_sessions: usize,
    /// The per-message maps use a cheap hasher (keys are ours: exchange and session numbers,
    /// sequence identifiers this service generated).
    exchanges: HashMap<ExchangeId, oneshot::Sender<Option<Message>>, FastHash>,
    /// The exchange whose message is going through the engine right now, and its answer once
    /// the engine gave it (see [`Driver::exchange`]).
    inline: Option<(ExchangeId, Option<Option<Box<Message>>>)>,
    sessions: HashMap<SessionId, SessionSlot, FastHash>,
    /// Sessions by inbound sequence identifier (for [`Service::session_stats`]).
    by_sequence: HashMap<SequenceId, SessionId, FastHash>,
    pending: std::collections::VecDeque<SessionId>,
    owners: HashMap<SequenceId, ClientIdentity>,
    /// For the handler runs, which hand their outcomes back through it.
    core: std::sync::Weak<Core>,
    next_exchange: u64,
    durable: Option<Arc<crate::durable::DurableService>>,
    inactivity: Duration,
    /// The deadline the timer task sleeps until (`None`: none).
    armed: Option<std::time::Instant>,
    /// Set at shutdown: no further input.
    stopped: bool,
    /// The runners of ended sessions, while their runs may still hold deliveries.
    ending: Vec<std::sync::Weak<Runner>>,
}

/// Every sequence identifier a message names (for the mutual-TLS ownership check).
fn identifiers(m: &Message) -> Vec<&SequenceId> {
    let mut v = Vec::new();
    if let Some(s) = &m.sequence {
        v.push(&s.identifier);
    }
    if let Some(a) = &m.ack {
        v.push(&a.identifier);
    }
    if let Some(a) = &m.ack_requested {
        v.push(a);
    }
    match &m.body {
        Body::CloseSequence { identifier, .. }
        | Body::CloseSequenceResponse { identifier }
        | Body::TerminateSequence { identifier, .. }
        | Body::TerminateSequenceResponse { identifier } => v.push(identifier),
        Body::CreateSequence(cs) => {
            if let Some(o) = &cs.offer {
                v.push(&o.identifier);
            }
        }
        Body::Fault(f) => {
            if let Some(id) = f.detail.identifier() {
                v.push(id);
            }
        }
        _ => {}
    }
    v
}

impl Driver {
    /// Whether the buffer cap lets in application message `m` (`len` body bytes) of a
    /// sequence while the handlers hold `held` bytes, at least half of `max_buffered_bytes`.
    /// Past half the cap each session may hold its share of the other half, `max / 2 /
    /// sessions` (at least one message: a session holding none takes one): a session whose
    /// handler queue and handler hold less is let in, one holding more is refused until its
    /// own handler has taken enough. So a session is not kept out by the backlog of others (a
    /// first-come cap let a few sessions' retransmissions find the room others freed while the
    /// rest used up MaxRetryCount), and the total stays within the cap: the shares add up to
    /// the half not given away first come. Nothing is let in past the cap itself. A message of
    /// an unknown sequence goes on to the engine, which faults it.
    ///
    /// A message refused from a one-way session is answered as WCF answers one its buffer
    /// cannot take: with the session's acknowledgement, without the message, and here with
    /// BufferRemaining 0 until the session's handler takes a delivery ([`Admit::AckOnly`]:
    /// the session's backlog is raised, and [`Runner::run`] restores it). A client with flow
    /// control stops and polls instead of resending into a full buffer, and an empty 202
    /// would read as gSOAP's answer to a duplicate it holds (quirk 19), which our client
    /// answers by probing with the next message, each probe a retry. A request is dropped
    /// (202), as WCF's request-reply service drops what it cannot take.
    fn admits(
        &mut self,
        m: &Message,
        identity: Option<&ClientIdentity>,
        held: usize,
        len: usize,
    ) -> Admit {
        let max = self.shared.max_buffered;
        let Some(seq) = m.sequence.as_ref() else {
            return Admit::Yes;
        };
        if self.shared.mutual
            && self
                .owners
                .get(&seq.identifier)
                .is_some_and(|owner| Some(owner) != identity)
        {
            // Another identity's sequence: refused with a fault further on, and no business
            // of its owner's flow control.
            return Admit::Yes;
        }
        let Some((&session, slot)) = self
            .by_sequence
            .get(&seq.identifier)
            .and_then(|session| self.sessions.get(session).map(|slot| (session, slot)))
        else {
            return Admit::Yes;
        };
        let Some(runner) = slot.to_handler.as_ref() else {
            return Admit::Yes;
        };
        let share = max / 2 / self.sessions.len().max(1);
        let own = runner.held_bytes();
        // A session holding nothing takes a message even when the share is smaller than it:
        // every session keeps going, one message at a time (within the cap).
        if held.saturating_add(len) <= max && (own == 0 || own.saturating_add(len) <= share) {
            return Admit::Yes;
        }
        if slot.info.reply_sequence.is_some() {
            return Admit::Drop;
        }
        if runner.lower_if_busy() {
            self.endpoint.set_backlog(session, u32::MAX);
        }
        Admit::AckOnly
    }

    /// After an input: whether the engine's next deadline moved before the one the timer task
    /// sleeps until (it must then be woken).
    fn rearm(&mut self) -> bool {
        match (self.endpoint.poll_timeout(), self.armed) {
            (Some(next), Some(armed)) if next >= armed => false,
            (Some(next), _) => {
                self.armed = Some(next);
                true
            }
            (None, _) => false,
        }
    }

    /// One HTTP exchange's message through the engine (see [`Core::exchange`]).
    fn exchange(&mut self, message: Message, identity: Option<ClientIdentity>) -> Answer {
        let now = Instant::now().into_std();
        if let Some(refusal) = self.check_owner(&message, identity.as_ref()) {
            return Answer::Now(Some(Box::new(refusal)));
        }
        self.next_exchange += 1;
        let ex = ExchangeId(self.next_exchange);
        if let Some(d) = &self.durable {
            if let Some(ack) = &message.ack {
                // Request-reply: the client acknowledges replies on its requests.
                d.replies_acked(&ack.identifier, &ack.ranges);
            }
            // Durable: the answer waits for the writes before it (DurableService::respond).
            let (tx, rx) = oneshot::channel();
            self.exchanges.insert(ex, tx);
            self.endpoint.handle_message(now, message, Some(ex));
            self.pump(identity, now);
            return Answer::Later(rx);
        }
        // the answer, if the engine gives it now, is kept in `inline` by `pump`: no channel
        self.inline = Some((ex, None));
        self.endpoint.handle_message(now, message, Some(ex));
        self.pump(identity, now);
        match self.inline.take() {
            Some((_, Some(answer))) => Answer::Now(answer),
            _ => {
                let (tx, rx) = oneshot::channel();
                self.exchanges.insert(ex, tx);
                Answer::Later(rx)
            }
        }
    }

    fn input(&mut self, m: ToDriver) {
        let now = Instant::now().into_std();
        match m {
            ToDriver::Outcome {
                token,
                outcome,
                bytes,
                session,
                number,
                app,
            } => {
                self.shared.buffered.fetch_sub(bytes, Ordering::Relaxed);
                let mut reply_number = None;
                if let Some(token) = token {
                    match outcome {
                        Outcome::Reply { action, body } => {
                            reply_number = self.endpoint.reply(now, token, action, body).ok();
                        }
                        Outcome::NoReply => {
                            let _ = self.endpoint.reply_none(now, token);
                        }
                    }
                }
                if let (Some(d), Some(slot)) = (&self.durable, self.sessions.get(&session)) {
                    let cached = reply_number
                        .zip(slot.info.reply_sequence.as_ref())
                        .and_then(|(rn, rs)| {
                            self.endpoint
                                .cached_reply(session, number)
                                .map(|m| (rs, rn, m))
                        });
                    d.delivered(&slot.info.sequence, number, app, cached);
                }
                self.pump(None, now);
            }
            ToDriver::Backlog(session) => {
                if let Some(runner) = self
                    .sessions
                    .get(&session)
                    .and_then(|s| s.to_handler.as_ref())
                {
                    self.endpoint.set_backlog(session, runner.backlog());
                }
            }
            ToDriver::Forget(sequence) => {
                if let Some(d) = &self.durable {
                    d.session_ended(&sequence);
                }
            }
        }
    }

    /// With mutual TLS, a message naming a sequence owned by another identity is refused.
    fn check_owner(&self, m: &Message, identity: Option<&ClientIdentity>) -> Option<Message> {
        if !self.shared.mutual {
            return None;
        }
        for id in identifiers(m) {
            if let Some(owner) = self.owners.get(id) {
                if Some(owner) != identity {
                    tracing::warn!(sequence = %id, "message for a sequence owned by another client identity refused");
                    self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    let mut f = Message::new(
                        m.version,
                        wsrm_proto::msg::Action::Fault,
                        Body::Fault(Box::new(Fault::unknown_sequence(id))),
                    );
                    f.relates_to = m.message_id.clone();
                    return Some(f);
                }
            }
        }
        None
    }

    /// Moves transmits to their HTTP exchanges and events to handlers.
    fn pump(&mut self, identity: Option<ClientIdentity>, now: std::time::Instant) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.event(ev, identity);
            }
            while let Some(t) = self.endpoint.poll_transmit(now) {
                progressed = true;
                match t.exchange {
                    Some(ex) => {
                        // the exchange being run inline: its answer goes back directly
                        if matches!(&self.inline, Some((cur, None)) if *cur == ex) {
                            if let Some((_, slot)) = &mut self.inline {
                                *slot = Some(t.message.map(Box::new));
                            }
                            continue;
                        }
                        if let Some(tx) = self.exchanges.remove(&ex) {
                            match &self.durable {
                                // Durable: the answer waits for the writes before it.
                                Some(d) => d.respond(tx, t.message),
                                None => {
                                    let _ = tx.send(t.message);
                                }
                            }
                        }
                    }
                    None => tracing::debug!("duplex transmit has no HTTP exchange; dropped"),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn try_accept(&mut self) {
        while self.active() < self.max_sessions {
            let Some(id) = self.pending.pop_front() else {
                return;
            };
            let Some(slot) = self.sessions.get_mut(&id) else {
                continue;
            };
            if !self.endpoint.accept(id) {
                continue;
            }
            slot.accepted = true;
            self.shared
                .counters
                .sessions_active
                .fetch_add(1, Ordering::Relaxed);
            let handler = (self.factory)(&slot.info);
            slot.to_handler = Some(Arc::new(Runner {
                state: Mutex::new(RunnerState {
                    queue: std::collections::VecDeque::new(),
                    idle: Some(handler),
                    over: false,
                    lowered: false,
                    in_hand: 0,
                }),
                session: id,
                sequence: slot.info.sequence.clone(),
                span: tracing::info_span!("session", sequence = %slot.info.sequence),
                core: self.core.clone(),
                shared: self.shared.clone(),
                durable: self.durable.is_some(),
            }));
        }
    }

    /// Queues `m` for the session's handler, making a run due if the handler is idle; false
    /// when the session has no handler (not accepted, or over).
    fn hand_over(&mut self, session: SessionId, m: HandlerMsg) -> bool {
        let Some(runner) = self
            .sessions
            .get(&session)
            .and_then(|s| s.to_handler.clone())
        else {
            return false;
        };
        let (start, backlogged) = runner.queue(m);
        if backlogged {
            self.endpoint.set_backlog(session, runner.backlog());
        }
        if start {
            self.to_start.push(runner);
        }
        true
    }

    fn active(&self) -> usize {
        self.shared.counters.sessions_active.load(Ordering::Relaxed) as usize
    }

    fn end(&mut self, session: SessionId, end: SessionEnd) {
        if let Some(slot) = self.sessions.remove(&session) {
            if slot.accepted {
                self.shared
                    .counters
                    .sessions_active
                    .fetch_sub(1, Ordering::Relaxed);
            }
            self.owners.remove(&slot.info.sequence);
            if let Some(r) = &slot.info.reply_sequence {
                self.owners.remove(r);
            }
            self.by_sequence.remove(&slot.info.sequence);
            tracing::info!(sequence = %slot.info.sequence, ?end, "session ended");
            if let Some(runner) = slot.to_handler {
                // Its handler may still have deliveries to take: a shutdown waits for it as
                // long as its run holds it (the run drops the last reference once the end
                // was handled).
                self.ending.retain(|r| r.strong_count() > 0);
                self.ending.push(Arc::downgrade(&runner));
                if runner.queue(HandlerMsg::End(end)).0 {
                    self.to_start.push(runner);
                }
            }
        }
        self.pending.retain(|p| *p != session);
        self.try_accept();
    }

    fn event(&mut self, ev: ServerEvent, identity: Option<ClientIdentity>) {
        match ev {
            ServerEvent::SessionCreated {
                session,
                version,
                input,
                output,
                ..
            } => {
                self.shared
                    .counters
                    .sessions_created
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(idn) = identity {
                    self.owners.insert(input.clone(), idn);
                    if let Some(o) = &output {
                        self.owners.insert(o.clone(), idn);
                    }
                }
                tracing::info!(sequence = %input, %version, "session created");
                if let Some(d) = &self.durable {
                    d.session_created(version, &input, output.as_ref(), self.inactivity);
                }
                self.by_sequence.insert(input.clone(), session);
                self.sessions.insert(
                    session,
                    SessionSlot {
                        info: SessionInfo {
                            id: session,
                            sequence: input,
                            reply_sequence: output,
                            version,
                            identity,
                        },
                        to_handler: None,
                        accepted: false,
                    },
                );
                self.pending.push_back(session);
                self.try_accept();
            }
            ServerEvent::Delivery {
                session,
                number,
                action,
                payload,
                reply,
            } => {
                self.shared
                    .counters
                    .delivered
                    .fetch_add(1, Ordering::Relaxed);
                if self.no_handler && reply.is_none() {
                    // Nothing to run it: delivered (and taken, `release_on_delivery`) now.
                    return;
                }
                let bytes = payload.len();
                self.shared.buffered.fetch_add(bytes, Ordering::Relaxed);
                let d = Delivery {
                    number,
                    action,
                    body: payload,
                    expects_reply: reply.is_some(),
                };
                let sent = self.hand_over(session, HandlerMsg::Deliver(d, reply));
                if !sent {
                    self.shared.buffered.fetch_sub(bytes, Ordering::Relaxed);
                }
                // The session's handler queue is the application's receive queue: the message
                // counts as taken (BufferRemaining) once it is queued there; the endpoint
                // counted it so when it emitted the delivery (`release_on_delivery`), so the
                // acknowledgement answering it already does. Memory stays bounded by
                // `max_buffered_bytes`, enforced before messages reach the engine. Counting a
                // message until the handler ran (or until this event, after the answer was
                // written) advertises a full buffer to a client whose window is full, as after
                // every message of a window of 1; WCF's client then waits for its fast-poll
                // interval (min(SendTimeout/2, keep-alive) = 30 s) before sending again, ours
                // for at least 20 ms.
            }
            ServerEvent::Acknowledged { .. } => {}
            ServerEvent::SessionClosed { session } => {
                self.shared
                    .counters
                    .sessions_closed
                    .fetch_add(1, Ordering::Relaxed);
                self.end(session, SessionEnd::Closed);
            }
            ServerEvent::SessionFailed { session, error, .. } => {
                self.shared
                    .counters
                    .sessions_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.end(session, SessionEnd::Failed(error));
            }
        }
    }
}
