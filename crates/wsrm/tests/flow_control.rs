//! A service whose handler is slower than its client: the client is paced by the service's
//! BufferRemaining (per session) and, beyond that, by the service-wide buffer cap; memory
//! stays bounded, and every message still arrives exactly once and in order.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use common::*;
use wsrm::{Binding, Client, ClientOptions, Delivery, HandlerFuture, Outcome, Service};

/// (sequence, number) of each message handled, in the order handled.
type Handled = Arc<Mutex<Vec<(String, u64)>>>;

/// Takes `delay` per message (a gate closed until `open` is set), recording the numbers.
struct Slow {
    sequence: String,
    delay: Duration,
    handled: Handled,
    gate: Arc<tokio::sync::Semaphore>,
}

impl wsrm::SessionHandler for Slow {
    fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
        Box::pin(async move {
            // The gate: held shut by a test until it lets the handlers go.
            let _permit = self.gate.acquire().await;
            tokio::time::sleep(self.delay).await;
            self.handled
                .lock()
                .unwrap()
                .push((self.sequence.clone(), d.number));
            Outcome::NoReply
        })
    }
}

async fn slow_service(
    binding: &Binding,
    delay: Duration,
    cap: usize,
    gate: &Arc<tokio::sync::Semaphore>,
    queue: Option<usize>,
) -> (Service, Handled) {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let gate = gate.clone();
    let mut builder = Service::builder(binding.clone())
        .handler(move |info: &wsrm::SessionInfo| Slow {
            sequence: info.sequence.to_string(),
            delay,
            handled: h.clone(),
            gate: gate.clone(),
        })
        .max_buffered_bytes(cap);
    if let Some(n) = queue {
        builder = builder.handler_queue(n);
    }
    let svc = builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (svc, handled)
}

/// The service counts a message as taken when it is queued for the handler, so that an
/// acknowledgement never advertises a full buffer while the handler keeps up. A handler that
/// falls behind must still pace the client: its queue beyond `handler_queue` (default one
/// window) lowers the session's BufferRemaining, and a client with flow control (WCF's
/// default) stops sending and polls. Before, the queue took everything: the client's sends
/// were all acknowledged at once and the handler was left minutes behind, bounded only by the
/// service-wide byte cap.
async fn a_slow_handler_paces_its_client(binding: Binding, queue: Option<usize>) {
    init_tracing();
    const W: usize = 4;
    const N: usize = 60;
    let binding = binding.max_transfer_window_size(W as u32);
    let open = Arc::new(tokio::sync::Semaphore::new(
        tokio::sync::Semaphore::MAX_PERMITS,
    ));
    let delay = Duration::from_millis(10);
    let (svc, handled) = slow_service(&binding, delay, 64 << 20, &open, queue).await;
    // The handler's queue takes `free` deliveries before BufferRemaining drops.
    let free = queue.unwrap_or(W);
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    let mut most_behind = 0;
    for i in 1..=N {
        client.send(ONEWAY, payload(i)).await.unwrap();
        // Acknowledged but not handled yet: the handler's queue, the one in its hands and
        // what the client sent before it learned of the backlog.
        let behind = i - handled.lock().unwrap().len();
        most_behind = most_behind.max(behind);
        assert!(
            behind <= free + W + 2,
            "{behind} acknowledged messages not handled after message {i} (window {W}, queue {free})"
        );
    }
    let stats = client.close().await.unwrap();
    let got: Vec<u64> = settled(&handled, N)
        .await
        .into_iter()
        .map(|h| h.1)
        .collect();
    assert_eq!(got, (1..=N as u64).collect::<Vec<_>>());
    // Paced by flow control, not by drops: nothing was sent twice.
    assert_eq!(stats.retransmitted, 0, "{stats:?}");
    assert_eq!(svc.stats().refused, 0);
    assert!(
        most_behind > free,
        "the handler never fell behind: {most_behind}"
    );
}

#[tokio::test]
async fn a_slow_handler_paces_its_client_rm10() {
    a_slow_handler_paces_its_client(Binding::ws_http(), None).await;
}

#[tokio::test]
async fn a_slow_handler_paces_its_client_rm11() {
    a_slow_handler_paces_its_client(Binding::ws2007_http(), None).await;
}

/// `ServiceBuilder::handler_queue` moves the point where BufferRemaining starts to drop.
#[tokio::test]
async fn a_longer_handler_queue_lets_the_client_further_ahead() {
    a_slow_handler_paces_its_client(Binding::ws2007_http(), Some(20)).await;
}

/// Beyond the per-session pacing, `max_buffered_bytes` bounds what all sessions' handler
/// queues hold: with handlers stopped, new messages are refused (202, no acknowledgement)
/// once the cap is reached, and the clients retransmit them later. Nothing acknowledged is
/// lost, and when the handlers go on every message is handled exactly once, in order.
#[tokio::test]
async fn the_service_wide_buffer_cap_bounds_queued_bytes() {
    init_tracing();
    const SESSIONS: usize = 4;
    const N: usize = 12;
    const CAP: usize = 4096;
    let binding = Binding::ws2007_http();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (svc, handled) = slow_service(&binding, Duration::ZERO, CAP, &gate, None).await;
    let body = |s: usize, i: usize| format!("<p xmlns=\"urn:x\">{s}-{i}-{}</p>", "x".repeat(400));
    let mut clients = Vec::new();
    let mut pending = Vec::new();
    for s in 0..SESSIONS {
        let c = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
            .await
            .unwrap();
        for i in 1..=N {
            pending.push(c.start_send(ONEWAY, body(s, i)));
        }
        clients.push(c);
    }
    // The handlers are stopped: the queues fill up to the cap and no further.
    let refused = Arc::new(AtomicUsize::new(0));
    wait_for(|| {
        let st = svc.stats();
        refused.store(st.refused as usize, Ordering::Relaxed);
        st.refused >= SESSIONS as u64
    })
    .await;
    let st = svc.stats();
    let one = body(0, 1).len() as u64;
    assert!(
        st.buffered_bytes < CAP as u64 + SESSIONS as u64 * one,
        "{} bytes queued with a cap of {CAP}",
        st.buffered_bytes
    );
    assert!(st.buffered_bytes >= CAP as u64, "{st:?}");
    // Let the handlers go: every message arrives, once, in order per session.
    gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    for p in pending {
        p.await.unwrap();
    }
    for c in &clients {
        c.close().await.unwrap();
    }
    let got = settled(&handled, SESSIONS * N).await;
    assert_eq!(got.len(), SESSIONS * N);
    for c in &clients {
        let seq = c.sequence_id().unwrap().to_string();
        let numbers: Vec<u64> = got.iter().filter(|h| h.0 == seq).map(|h| h.1).collect();
        assert_eq!(numbers, (1..=N as u64).collect::<Vec<_>>(), "session {seq}");
    }
    assert_eq!(svc.stats().buffered_bytes, 0);
    assert_eq!(svc.stats().delivered, (SESSIONS * N) as u64);
    assert!(refused.load(Ordering::Relaxed) >= SESSIONS);
}
