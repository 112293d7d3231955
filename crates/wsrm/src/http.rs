//! HTTP plumbing shared by the service and the intermediary: a hyper 1 HTTP/1.1 server with a
//! connection limit, a header-read timeout (slow-drip defence), a whole-request read timeout and
//! a body size limit; optional TLS (with the client-certificate identity attached to each
//! request); and a pooled HTTP(S) client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::ClientIdentity;

mod envelope;
mod pool;

pub(crate) use envelope::Envelope;
pub(crate) use pool::Exchange;

/// The response body type used everywhere in this crate.
pub(crate) type Body = Full<Bytes>;

/// The request body type of [`HttpClient`]: an [`Envelope`], one buffer or a sequence message's
/// pieces.
pub(crate) type RequestBody = Full<Envelope>;

/// Limits of the HTTP server side.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    /// Simultaneous TCP connections; further connections wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time allowed to receive a request's head (and, for TLS, the handshake).
    pub header_read_timeout: Duration,
}

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// Remote socket address.
    #[allow(dead_code)]
    pub peer: SocketAddr,
    /// The TLS client certificate's identity, when mutual TLS authenticated one.
    pub identity: Option<ClientIdentity>,
}

/// A handler's verdict on an exchange.
pub(crate) enum Handled {
    /// Send this response.
    Respond(Response<Body>),
    /// Close the connection without any response.
    Close,
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Larger than the limit.
    TooLarge,
    /// Not received within the body read timeout.
    TimedOut,
    /// The connection failed.
    Io,
}

/// Reads a body to its end into one `Bytes`: what `collect().await?.to_bytes()` gives, without
/// the frame queue `collect` allocates for every body. A body in one data frame (the usual
/// case) is handed over as it is, several are joined; empty frames and trailers are dropped.
/// A body that knows it is complete (all of its `Content-Length` received) is not polled
/// again for its end: that poll could wait for the connection task to close the body.
///
/// A future of its own (not an `async fn`): it is `Unpin` for an `Unpin` body, so a caller
/// can poll it once and move it on (see [`read_body`]), and it is small — it is part of every
/// exchange's state, which is moved and boxed per message.
pub(crate) struct BodyBytes<B> {
    body: B,
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl<B> BodyBytes<B> {
    pub(crate) fn new(body: B) -> Self {
        BodyBytes {
            body,
            first: None,
            joined: None,
        }
    }
}

impl<B> Future for BodyBytes<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Output = Result<Bytes, B::Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        while !this.body.is_end_stream() {
            let frame = match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            match (&mut this.joined, this.first.take()) {
                (Some(j), _) => j.extend_from_slice(&data),
                (None, None) => this.first = Some(data),
                (None, Some(f)) => {
                    let mut j = BytesMut::with_capacity(f.len() + data.len());
                    j.extend_from_slice(&f);
                    j.extend_from_slice(&data);
                    this.joined = Some(j);
                }
            }
        }
        Poll::Ready(Ok(match this.joined.take() {
            Some(j) => j.freeze(),
            None => this.first.take().unwrap_or_default(),
        }))
    }
}

/// Reads a whole request body under the size limit and read timeout.
pub(crate) async fn read_body(
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let mut read = BodyBytes::new(Limited::new(body, max));
    // A small request is usually in whole already (read with its head): then no timer is made
    // (making one reads the runtime handle, a reference count all threads share), and the
    // timer's state is boxed where it is made, so that this future (part of every request's)
    // stays small.
    let read = match futures_util::poll!(&mut read) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => match Box::pin(tokio::time::timeout(timeout, read)).await {
            Ok(r) => r,
            Err(_) => return Err(ReadError::TimedOut),
        },
    };
    match read {
        Ok(b) => Ok(b),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ReadError::TooLarge)
            } else {
                Err(ReadError::Io)
            }
        }
    }
}

/// A response with an empty body and the given status.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by handler")
    }
}

impl std::error::Error for CloseConnection {}

/// Runs the accept loop until `shutdown` turns true. Each connection is served on its own task.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(std::sync::Mutex::new(OpenConns::default()));
    let sweeper = tokio::spawn(sweep(
        open.clone(),
        limits.header_read_timeout,
        shutdown.clone(),
    ));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let (entry, activity) = OpenConns::register(&open);
        tokio::spawn(async move {
            let _permit = permit;
            let _entry = entry;
            match tls {
                None => {
                    let info = Arc::new(ConnInfo {
                        peer,
                        identity: None,
                    });
                    serve_conn(tcp, info, activity, handler).await;
                }
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                            .await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ClientIdentity::from_der(c.as_ref()));
                    let info = Arc::new(ConnInfo { peer, identity });
                    serve_conn(stream, info, activity, handler).await;
                }
            }
        });
    }
    sweeper.abort();
    // Every open connection's signal: they finish their requests in flight and close.
    let all: Vec<Watched> = open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stop
        .drain()
        .map(|(_, w)| w)
        .collect();
    for w in all {
        w.activity.stop(Stop::Shutdown);
    }
}

/// The open connections: what the slow-drip sweep (see [`sweep`]) observes of each, and its
/// stop signal ([`Activity::stop`]). A connection task looks at its signal each time it runs,
/// which is one atomic load; polling a `watch` receiver's `changed()` instead locked the
/// waiter list that every connection of the service shares on every request, and a `oneshot`
/// receiver per connection cost ~0.2 k instructions per request.
#[derive(Default)]
struct OpenConns {
    next: u64,
    stop: std::collections::HashMap<u64, Watched>,
}

/// An open connection as the sweep sees it.
struct Watched {
    activity: Arc<Activity>,
    last_heads: u64,
    idle_looks: u32,
}

/// Why a connection is told to stop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Stop {
    /// No request head completed for the header read timeout while none was being handled.
    Idle = 1,
    /// The service shuts down: the connection finishes its requests in flight and closes.
    Shutdown = 2,
}

impl OpenConns {
    /// Registers a new connection: its entry (which unregisters it when dropped), its signal
    /// and its activity counters.
    fn register(open: &Arc<std::sync::Mutex<OpenConns>>) -> (OpenConn, Arc<Activity>) {
        let activity = Arc::new(Activity::default());
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        let id = o.next;
        o.next += 1;
        o.stop.insert(
            id,
            Watched {
                activity: activity.clone(),
                last_heads: 0,
                idle_looks: 0,
            },
        );
        (
            OpenConn {
                open: open.clone(),
                id,
            },
            activity,
        )
    }
}

/// A connection's registration in [`OpenConns`].
struct OpenConn {
    open: Arc<std::sync::Mutex<OpenConns>>,
    id: u64,
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop
            .remove(&self.id);
    }
}

/// How many looks per header read timeout the sweep takes, plus one.
const LOOKS: u32 = 5;

/// Slow-drip defence: a connection on which no request head completes for the header read
/// timeout while no request is being handled (a head dripping in, or an idle keep-alive
/// connection) is closed. One task per service looks at every open connection four times per
/// timeout and stops one after five idle looks in a row, so between 1 and 1.25 times the
/// timeout after its last activity. A request costs two counter updates; a connection has no
/// timer of its own (a timer per connection, polled each time the connection's task ran, cost
/// ~0.25 k instructions per request).
async fn sweep(
    open: Arc<std::sync::Mutex<OpenConns>>,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let period = (timeout / (LOOKS - 1)).max(Duration::from_millis(1));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
        }
        let idle: Vec<Watched> = {
            let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
            o.stop
                .extract_if(|_, w| {
                    let heads = w.activity.heads.load(Relaxed);
                    if heads != w.last_heads || w.activity.in_flight.load(Relaxed) > 0 {
                        w.last_heads = heads;
                        w.idle_looks = 0;
                        return false;
                    }
                    w.idle_looks += 1;
                    w.idle_looks >= LOOKS
                })
                .map(|(_, w)| w)
                .collect()
        };
        for w in idle {
            w.activity.stop(Stop::Idle);
        }
    }
}

async fn serve_conn<S, H, F>(io: S, info: Arc<ConnInfo>, activity: Arc<Activity>, handler: H)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    // The sweep counts idleness from here: the TLS handshake before it has its own timeout.
    activity
        .heads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The waker the stop signal wakes: this future is its task's own (spawned per
    // connection), so a waker from any of its polls wakes the task.
    let waker = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
    activity.set_waker(waker);
    let signal = activity.clone();
    let seen = activity;
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = Busy::start(&seen);
        let fut = handler(req, info.clone());
        async move {
            let r = fut.await;
            drop(busy);
            match r {
                Handled::Respond(r) => Ok::<_, CloseConnection>(r),
                Handled::Close => Err(CloseConnection),
            }
        }
    });
    // The head-read timeout is the service's sweep (see [`sweep`]), not hyper's own: hyper's
    // arms a timer for every request head (clock readings, a timer registered and removed
    // each time), which cost more than the reliable messaging layer's work on an ack.
    // Responses are written flattened (head and body in one buffer, one plain write): most
    // are an acknowledgement of a few hundred bytes, for which the vectored write's
    // per-piece bookkeeping cost more than copying the body (callgrind: −0.3 k instructions
    // per message; throughput +1 % in three alternating runs, BENCHMARKS.md).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        .writev(false);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // The connection first: it is what wakes this task for every request; the stop signal is
    // looked at (one load) only when the connection waits.
    let stopped = std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = conn.as_mut().poll(cx) {
            return std::task::Poll::Ready(Err(r));
        }
        match signal.stopped() {
            Some(s) => std::task::Poll::Ready(Ok(s)),
            None => std::task::Poll::Pending,
        }
    })
    .await;
    match stopped {
        Err(r) => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        }
        Ok(Stop::Idle) => {
            tracing::debug!(
                "no complete request head within the header read timeout; connection closed"
            );
        }
        Ok(Stop::Shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// What the slow-drip sweep observes of a connection: request heads completed (hyper calls
/// the service once a head is in) and requests being handled.
#[derive(Default)]
struct Activity {
    heads: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    /// 0, or the [`Stop`] the connection was told.
    stop: std::sync::atomic::AtomicU8,
    /// Wakes the connection's task (set once when it starts serving).
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Activity {
    /// Tells the connection to stop: sets the signal, then wakes its task (which looks at the
    /// signal whenever it runs and the connection waits, so it sees it: either it runs after
    /// the signal was set, or the wake below comes after its look).
    fn stop(&self, why: Stop) {
        self.stop
            .store(why as u8, std::sync::atomic::Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The waker [`Activity::stop`] wakes. A signal set before it was (no waker to wake then)
    /// is seen at the connection's first look.
    fn set_waker(&self, w: std::task::Waker) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    /// The stop signal, if given.
    fn stopped(&self) -> Option<Stop> {
        match self.stop.load(std::sync::atomic::Ordering::Acquire) {
            1 => Some(Stop::Idle),
            2 => Some(Stop::Shutdown),
            _ => None,
        }
    }
}

/// A request being handled (dropped when its handling ends, also when it is cancelled).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(a: &Arc<Activity>) -> Busy {
        use std::sync::atomic::Ordering::Relaxed;
        a.heads.fetch_add(1, Relaxed);
        a.in_flight.fetch_add(1, Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A pooled HTTP/1.1 client for `http` and `https` URLs (the pool: `pool.rs`).
///
/// Cloning shares the pool; a clone is one reference count.
#[derive(Clone)]
pub(crate) struct HttpClient {
    pool: Arc<pool::Pool>,
}

/// One HTTP response, fully read.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
}

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Connection or protocol failure.
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    /// TLS failed: the handshake, a certificate (ours refused or the peer's not trusted), or
    /// an alert from the peer. A security failure, which trying again does not mend (WCF does
    /// not retry its security failures either).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// Response larger than allowed.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    TimedOut(Duration),
}

impl HttpClient {
    /// Builds a client; `tls` is used for `https` URLs. At most `max_idle_per_host` idle
    /// connections are kept per destination, each for at most 90 s (hyper-util's default).
    pub fn new(tls: rustls::ClientConfig, max_idle_per_host: usize) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        HttpClient {
            pool: Arc::new(pool::Pool::new(
                connector,
                max_idle_per_host,
                Duration::from_secs(90),
            )),
        }
    }

    /// Sends one request and reads the whole response (at most `max_body` bytes) within
    /// `timeout`.
    pub async fn exchange(
        &self,
        req: Request<RequestBody>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<HttpResponse, ExchangeError> {
        match tokio::time::timeout(timeout, self.start_exchange(req, max_body)).await {
            Ok(r) => r.map(|(r, _)| r),
            Err(_) => Err(ExchangeError::TimedOut(timeout)),
        }
    }

    /// [`HttpClient::exchange`] without a timeout (the caller bounds it), as a named, `Unpin`
    /// future ([`Exchange`]) that a caller can keep in a collection without boxing it. Its
    /// output's second part (the response head) is `None`.
    pub fn start_exchange(&self, req: Request<RequestBody>, max_body: usize) -> Exchange {
        Exchange::new(self.pool.clone(), req, max_body, false)
    }

    /// Sends one request and returns the response head and body as received (for the proxy).
    pub async fn forward(
        &self,
        req: Request<RequestBody>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response<Body>, ExchangeError> {
        let exchange = Exchange::new(self.pool.clone(), req, max_body, true);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((r, head))) => {
                let mut resp = Response::new(Full::new(r.body));
                if let Some(parts) = head {
                    *resp.headers_mut() = parts.headers;
                    *resp.version_mut() = parts.version;
                }
                *resp.status_mut() = r.status;
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExchangeError::TimedOut(timeout)),
        }
    }
}

/// The [`ExchangeError`] for a response body that could not be read under `max_body`.
pub(crate) fn body_error(
    e: Box<dyn std::error::Error + Send + Sync>,
    max_body: usize,
) -> ExchangeError {
    if e.downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        ExchangeError::TooLarge(max_body)
    } else {
        transport_error("", &*e)
    }
}

/// The [`ExchangeError`] for a connection or protocol failure `e`, its text prefixed with
/// `context` (if not empty): [`ExchangeError::Tls`] when a TLS error is among its causes.
pub(crate) fn transport_error(
    context: &str,
    e: &(dyn std::error::Error + 'static),
) -> ExchangeError {
    let text = if context.is_empty() {
        error_chain(e)
    } else {
        format!("{context}: {}", error_chain(e))
    };
    if is_tls_failure(e) {
        ExchangeError::Tls(text)
    } else {
        ExchangeError::Http(text)
    }
}

/// Whether a `rustls` error is among `e` and its sources. An `io::Error` does not list the
/// error it wraps among its sources, so each one's inner error is looked at too.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if is_tls_failure(inner) {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// Renders an error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
