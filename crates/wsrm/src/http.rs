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
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::ClientIdentity;

/// The response body type used everywhere in this crate.
pub(crate) type Body = Full<Bytes>;

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
pub(crate) async fn body_bytes<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while !body.is_end_stream() {
        let Some(frame) = body.as_mut().frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match (&mut joined, first.take()) {
            (Some(j), _) => j.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(f)) => {
                let mut j = BytesMut::with_capacity(f.len() + data.len());
                j.extend_from_slice(&f);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(match joined {
        Some(j) => j.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Reads a whole request body under the size limit and read timeout.
pub(crate) async fn read_body(
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let limited = Limited::new(body, max);
    let mut read = std::pin::pin!(body_bytes(limited));
    // A small request is usually in whole already (read with its head): then no timer is made
    // (making one reads the runtime handle, a reference count all threads share).
    let read = match futures_util::poll!(read.as_mut()) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => match tokio::time::timeout(timeout, read).await {
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
        let (entry, mut conn_shutdown, activity) = OpenConns::register(&open);
        tokio::spawn(async move {
            let _permit = permit;
            let _entry = entry;
            match tls {
                None => {
                    let info = Arc::new(ConnInfo {
                        peer,
                        identity: None,
                    });
                    serve_conn(tcp, info, activity, handler, &mut conn_shutdown).await;
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
                    serve_conn(stream, info, activity, handler, &mut conn_shutdown).await;
                }
            }
        });
    }
    sweeper.abort();
    // Every open connection's signal: they finish their requests in flight and close.
    open.lock().unwrap_or_else(|e| e.into_inner()).stop.clear();
}

/// The open connections: each one's stop signal and what the slow-drip sweep (see [`sweep`])
/// observes of it. A connection task polls its signal's receiver each time it runs, which is a
/// load of the receiver's state; polling a `watch` receiver's `changed()` instead locked the
/// waiter list that every connection of the service shares, on every request.
#[derive(Default)]
struct OpenConns {
    next: u64,
    stop: std::collections::HashMap<u64, Watched>,
}

/// An open connection as the sweep sees it.
struct Watched {
    /// Dropped when the service shuts down (the connection finishes its requests in flight and
    /// closes); [`Stop::Idle`] when the sweep found it idle for the header read timeout.
    tx: tokio::sync::oneshot::Sender<Stop>,
    activity: Arc<Activity>,
    last_heads: u64,
    idle_looks: u32,
}

/// Why a connection is told to stop (a dropped sender: the service shuts down).
enum Stop {
    /// No request head completed for the header read timeout while none was being handled.
    Idle,
}

impl OpenConns {
    /// Registers a new connection: its entry (which unregisters it when dropped), its signal
    /// and its activity counters.
    fn register(
        open: &Arc<std::sync::Mutex<OpenConns>>,
    ) -> (
        OpenConn,
        tokio::sync::oneshot::Receiver<Stop>,
        Arc<Activity>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let activity = Arc::new(Activity::default());
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        let id = o.next;
        o.next += 1;
        o.stop.insert(
            id,
            Watched {
                tx,
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
            rx,
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
            let _ = w.tx.send(Stop::Idle);
        }
    }
}

async fn serve_conn<S, H, F>(
    io: S,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    handler: H,
    stop: &mut tokio::sync::oneshot::Receiver<Stop>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Handled> + Send + 'static,
{
    // The sweep counts idleness from here: the TLS handshake before it has its own timeout.
    activity
        .heads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        }
        s = &mut *stop => match s {
            Ok(Stop::Idle) => {
                tracing::debug!(
                    "no complete request head within the header read timeout; connection closed"
                );
            }
            // dropped: the service is shutting down
            Err(_) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
        },
    }
}

/// What the slow-drip sweep observes of a connection: request heads completed (hyper calls
/// the service once a head is in) and requests being handled.
#[derive(Default)]
struct Activity {
    heads: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
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

/// A pooled HTTP/1.1 client for `http` and `https` URLs.
///
/// Cloning shares the pool; a clone is one reference count (the exchange futures each hold
/// one), where cloning hyper's client copies its connector, TLS configuration and pool handles.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Arc<
        hyper_util::client::legacy::Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Body,
        >,
    >,
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
    /// Response larger than allowed.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    TimedOut(Duration),
}

impl HttpClient {
    /// Builds a client; `tls` is used for `https` URLs.
    pub fn new(tls: rustls::ClientConfig, max_idle_per_host: usize) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        HttpClient {
            inner: Arc::new(inner),
        }
    }

    /// Sends one request and reads the whole response (at most `max_body` bytes) within
    /// `timeout`.
    pub async fn exchange(
        &self,
        req: Request<Body>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<HttpResponse, ExchangeError> {
        match tokio::time::timeout(timeout, self.exchange_untimed(req, max_body)).await {
            Ok(r) => r,
            Err(_) => Err(ExchangeError::TimedOut(timeout)),
        }
    }

    /// [`HttpClient::exchange`] without a timeout: the caller bounds it.
    pub async fn exchange_untimed(
        &self,
        req: Request<Body>,
        max_body: usize,
    ) -> Result<HttpResponse, ExchangeError> {
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| ExchangeError::Http(error_chain(&e)))?;
        let status = resp.status();
        let body = response_body(resp.into_body(), max_body).await?;
        Ok(HttpResponse { status, body })
    }

    /// Sends one request and returns the response head and body as received (for the proxy).
    pub async fn forward(
        &self,
        req: Request<Body>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response<Body>, ExchangeError> {
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| ExchangeError::Http(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = response_body(body, max_body).await?;
            Ok(Response::from_parts(parts, Full::new(body)))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ExchangeError::TimedOut(timeout)),
        }
    }
}

/// Reads a response body of at most `max_body` bytes.
async fn response_body(body: Incoming, max_body: usize) -> Result<Bytes, ExchangeError> {
    body_bytes(Limited::new(body, max_body)).await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ExchangeError::TooLarge(max_body)
        } else {
            ExchangeError::Http(e.to_string())
        }
    })
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
