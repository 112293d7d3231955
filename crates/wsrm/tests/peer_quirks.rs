//! Peer quirks over real HTTP: a scripted service on 127.0.0.1 that answers as the peer did in
//! the interop matrix (docs/interop.md), driven through the public `Client` API.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wsrm::{Binding, Client, ClientOptions};

#[path = "support/gsoap_like.rs"]
mod gsoap_like;

// gSOAP quirk 19 for the last message (docs/engine.md, deviation 12): the session closes at
// once through an early CloseSequence instead of retransmitting the last message until
// MaxRetryCount (with WCF's backoff, minutes) and failing.
#[tokio::test]
async fn rm11_close_recovers_the_last_message_a_peer_will_not_acknowledge_again() {
    let last = 5;
    let (url, seen) = gsoap_like::serve(last).await;
    let client = Client::open(&url, &Binding::ws2007_http(), ClientOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let sends: Vec<_> = (1..=last)
        .map(|i| client.start_send("urn:x/OneWay", format!("<p xmlns=\"urn:x\">{i}</p>")))
        .collect();
    let stats = tokio::time::timeout(Duration::from_secs(20), client.close())
        .await
        .expect("close did not finish")
        .expect("close failed");
    for (i, s) in sends.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), i as u64 + 1);
    }
    assert_eq!(stats.acknowledged, last);
    assert!(seen.last_copies.load(Ordering::SeqCst) >= 2);
    assert_eq!(seen.closes.load(Ordering::SeqCst), 1);
    assert_eq!(seen.terminates.load(Ordering::SeqCst), 1);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
