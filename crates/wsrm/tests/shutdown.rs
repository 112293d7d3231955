//! `Service::shutdown`: acknowledged deliveries reach the handlers of sessions kept in memory
//! before it returns, within the close timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wsrm::{Binding, Client, ClientOptions, Service, SessionEnd};

/// Records deliveries and the end; the first delivery waits for the gate.
struct Held {
    seen: Arc<Mutex<Vec<u64>>>,
    ends: Arc<Mutex<Vec<SessionEnd>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl wsrm::SessionHandler for Held {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        Box::pin(async move {
            if d.number == 1 {
                let _ = self.gate.acquire().await;
            }
            self.seen.lock().unwrap().push(d.number);
            wsrm::Outcome::NoReply
        })
    }

    fn ended(&mut self, end: &SessionEnd) {
        self.ends.lock().unwrap().push(end.clone());
    }
}

struct Fixture {
    svc: Service,
    client: Client,
    seen: Arc<Mutex<Vec<u64>>>,
    ends: Arc<Mutex<Vec<SessionEnd>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

/// A service whose handler holds message 1 until the gate opens, and a client session to it
/// that has `n` (at most 64) messages acknowledged (none handled yet).
async fn acknowledged_not_handled(n: u64, close_timeout: Option<Duration>) -> Fixture {
    let binding = Binding::ws2007_http();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (s, e, g) = (seen.clone(), ends.clone(), gate.clone());
    let mut builder = Service::builder(binding.clone())
        .handler(move |_: &wsrm::SessionInfo| Held {
            seen: s.clone(),
            ends: e.clone(),
            gate: g.clone(),
        })
        // Room for every message in the handler's queue: a fuller queue would pace the
        // client (tests/flow_control.rs), and these messages must all be acknowledged.
        .handler_queue(64);
    if let Some(t) = close_timeout {
        builder = builder.close_timeout(t);
    }
    let svc = builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    let pending: Vec<_> = (1..=n)
        .map(|i| client.start_send(ONEWAY, payload(i as usize)))
        .collect();
    for p in pending {
        tokio::time::timeout(Duration::from_secs(20), p)
            .await
            .expect("not acknowledged")
            .unwrap();
    }
    assert!(seen.lock().unwrap().is_empty());
    Fixture {
        svc,
        client,
        seen,
        ends,
        gate,
    }
}

/// Stops `svc` while the handler is held: the shutdown must still wait after 300 ms; then
/// opens the gate and returns the shutdown's report.
async fn stop_while_held(
    svc: Service,
    gate: &tokio::sync::Semaphore,
    why: &str,
) -> wsrm::ShutdownReport {
    let stop = tokio::spawn(svc.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stop.is_finished(), "shutdown returned while {why}");
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("shutdown did not return after the handler finished")
        .unwrap()
}

/// A graceful stop waits for the handler to take every acknowledged message, in order, then
/// tells it the session ended with the service.
#[tokio::test]
async fn shutdown_waits_for_the_handlers_to_take_acknowledged_messages() {
    let n = 40;
    let f = acknowledged_not_handled(n, None).await;
    let why = format!("{n} acknowledged messages were still queued for the handler");
    let report = stop_while_held(f.svc, &f.gate, &why).await;
    assert_eq!(
        (
            report.sessions_stopped,
            report.unhandled,
            report.in_progress
        ),
        (1, 0, 0)
    );
    assert!(report.drained());
    assert_eq!(report.stats.delivered, n);
    assert_eq!(report.stats.sessions_active, 0);
    assert_eq!(*f.seen.lock().unwrap(), (1..=n).collect::<Vec<_>>());
    assert_eq!(*f.ends.lock().unwrap(), vec![SessionEnd::ServiceStopped]);
    f.client.abort();
}

/// A handler that does not finish within the close timeout does not hold the shutdown; the
/// report counts what it left.
#[tokio::test]
async fn shutdown_gives_up_on_handlers_after_the_close_timeout() {
    let n = 25;
    let f = acknowledged_not_handled(n, Some(Duration::from_millis(400))).await;
    let start = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), f.svc.shutdown())
        .await
        .expect("shutdown outlived its close timeout");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "returned after {took:?}"
    );
    assert_eq!(
        (
            report.sessions_stopped,
            report.unhandled,
            report.in_progress
        ),
        (1, n as usize - 1, 1)
    );
    assert!(!report.drained());
    assert!(f.seen.lock().unwrap().is_empty());
    assert!(f.ends.lock().unwrap().is_empty());
    f.client.abort();
}

/// Sessions that ended before the stop are not told again; a service without sessions stops
/// at once.
#[tokio::test]
async fn shutdown_ends_only_the_sessions_still_open() {
    let f = acknowledged_not_handled(3, None).await;
    f.gate.add_permits(1);
    f.client.close().await.unwrap();
    wait_for(|| f.ends.lock().unwrap().len() == 1).await;
    let start = std::time::Instant::now();
    let report = f.svc.shutdown().await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (
            report.sessions_stopped,
            report.unhandled,
            report.in_progress
        ),
        (0, 0, 0)
    );
    assert_eq!(report.stats.sessions_closed, 1);
    assert_eq!(*f.ends.lock().unwrap(), vec![SessionEnd::Closed]);
    assert_eq!(*f.seen.lock().unwrap(), vec![1, 2, 3]);
}

/// A session the client closed while its handler still had acknowledged messages queued (the
/// close does not wait for the handler): the shutdown waits for those too.
#[tokio::test]
async fn shutdown_waits_for_handlers_of_sessions_that_already_closed() {
    let n = 30;
    let f = acknowledged_not_handled(n, None).await;
    f.client.close().await.unwrap();
    let why = format!("a closed session's handler had {n} messages queued");
    let report = stop_while_held(f.svc, &f.gate, &why).await;
    assert_eq!(
        (
            report.sessions_stopped,
            report.unhandled,
            report.in_progress
        ),
        (0, 0, 0)
    );
    assert_eq!(*f.seen.lock().unwrap(), (1..=n).collect::<Vec<_>>());
    assert_eq!(*f.ends.lock().unwrap(), vec![SessionEnd::Closed]);
}
