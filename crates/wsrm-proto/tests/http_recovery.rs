//! Recovery behaviour that matters over HTTP (docs/engine.md, deviations): a failed exchange
//! is a loss signal (retransmit at once, a bounded number of times), a failed CreateSequence
//! exchange is retried early with backoff, a destination buffer that advertised
//! BufferRemaining 0 is polled after a few RTTs rather than WCF's 30 s, and a destination
//! admits messages that overtook each other within one window even while the application
//! still holds earlier ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsrm_proto::msg::{
    AckHeader, Action, Body, CreateSequenceResponse, Message, RmVersion, SequenceId,
};
use wsrm_proto::{ClientConfig, ClientSession, ClientState, Pattern, Shape, FAST_RETRIES};

fn open(now: Instant) -> (ClientSession, SequenceId) {
    open_version(now, RmVersion::Wsrm11)
}

fn open_version(now: Instant, version: RmVersion) -> (ClientSession, SequenceId) {
    let mut cfg = ClientConfig::new(Pattern::OneWay, Shape::RequestReply);
    cfg.settings.reliable_messaging_version = version;
    let mut c = ClientSession::new(now, cfg, 1).unwrap();
    let cs = c.poll_transmit(now).unwrap();
    let id = SequenceId::from("urn:uuid:00000000-0000-4000-8000-000000000001");
    let mut csr = Message::new(
        version,
        Action::CreateSequenceResponse,
        Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
            identifier: id.clone(),
            expires: None,
            incomplete_sequence_behavior: None,
            accept: None,
        })),
    );
    csr.relates_to = cs.message_id.clone();
    c.handle_message(now, csr);
    assert_eq!(c.state(), ClientState::Open);
    (c, id)
}

fn ack(id: &SequenceId, ranges: Vec<(u64, u64)>, br: Option<u32>) -> Message {
    ack_version(RmVersion::Wsrm11, id, ranges, br)
}

fn ack_version(
    version: RmVersion,
    id: &SequenceId,
    ranges: Vec<(u64, u64)>,
    br: Option<u32>,
) -> Message {
    let mut m = Message::new(version, Action::SequenceAcknowledgement, Body::Empty);
    m.ack = Some(AckHeader {
        identifier: id.clone(),
        ranges,
        buffer_remaining: br,
        ..AckHeader::default()
    });
    m
}

fn number(m: &Message) -> Option<u64> {
    m.sequence.as_ref().map(|s| s.number)
}

#[test]
fn failed_exchange_retransmits_at_once_then_leaves_it_to_the_timer() {
    let now = Instant::now();
    let (mut c, id) = open(now);
    c.send(now, Arc::from("urn:a"), Bytes::from_static(b"<p/>"))
        .unwrap();
    let m = c.poll_transmit(now).unwrap();
    assert_eq!(number(&m), Some(1));
    assert!(c.poll_transmit(now).is_none());
    // Each failure of the exchange resends message 1 at once, FAST_RETRIES times.
    for attempt in 1..=FAST_RETRIES {
        let t = now + Duration::from_millis(u64::from(attempt));
        c.handle_transport_failure(t, Some(1));
        let r = c.poll_transmit(t).expect("immediate retransmission");
        assert_eq!(number(&r), Some(1), "attempt {attempt}");
        assert!(c.poll_transmit(t).is_none());
    }
    assert_eq!(c.stats().retransmitted, u64::from(FAST_RETRIES));
    // The next failure waits for the retransmission timer (a dead peer meets the backoff).
    let t = now + Duration::from_millis(10);
    c.handle_transport_failure(t, Some(1));
    assert!(c.poll_transmit(t).is_none());
    let deadline = c.poll_timeout().unwrap();
    assert!(deadline > t);
    c.handle_timeout(deadline);
    let r = c.poll_transmit(deadline).expect("timer retransmission");
    assert_eq!(number(&r), Some(1));
    // Once acknowledged, a late failure report of it changes nothing.
    c.handle_message(deadline, ack(&id, vec![(1, 1)], None));
    c.handle_transport_failure(deadline, Some(1));
    assert!(c.poll_transmit(deadline).is_none());
    // Unknown numbers are ignored.
    c.handle_transport_failure(deadline, Some(99));
    assert!(c.poll_transmit(deadline).is_none());
}

/// Reports FAST_RETRIES failed handshake exchanges, 1 ms apart from `now`; each must be resent
/// at once (`check` inspects the resent message). Returns the time of the last one.
fn fast_handshake_retries(
    c: &mut ClientSession,
    now: Instant,
    check: impl Fn(&Message),
) -> Instant {
    let mut t = now;
    for attempt in 0..FAST_RETRIES {
        t += Duration::from_millis(1);
        c.handle_transport_failure(t, None);
        assert_eq!(c.poll_timeout(), Some(t), "attempt {attempt}");
        c.handle_timeout(t);
        check(&c.poll_transmit(t).expect("resent at once"));
    }
    t
}

#[test]
fn failed_create_sequence_exchange_is_retried_early_with_backoff() {
    let now = Instant::now();
    let cfg = ClientConfig::new(Pattern::OneWay, Shape::RequestReply);
    let mut c = ClientSession::new(now, cfg, 1).unwrap();
    let _cs = c.poll_transmit(now).unwrap();
    // Without a failure signal the requestor waits WCF's 10 s.
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(10)));
    // The first FAST_RETRIES failures are retried at once.
    let t = fast_handshake_retries(&mut c, now, |m| {
        assert!(matches!(m.body, Body::CreateSequence(_)));
    });
    // Then backoff: twice the time since the first attempt, at least 50 ms.
    c.handle_transport_failure(t, None);
    let t1 = c.poll_timeout().unwrap();
    assert_eq!(t1, t + Duration::from_millis(50));
    c.handle_timeout(t1);
    let again = c.poll_transmit(t1).expect("CreateSequence resent");
    assert!(matches!(again.body, Body::CreateSequence(_)));
    c.handle_transport_failure(t1, None);
    let t2 = c.poll_timeout().unwrap();
    assert_eq!(t2, t1 + 2 * (t1 - now));
}

#[test]
fn zero_buffer_remaining_is_polled_quickly_with_backoff() {
    let now = Instant::now();
    let (mut c, id) = open(now);
    c.send(now, Arc::from("urn:a"), Bytes::from_static(b"<p/>"))
        .unwrap();
    c.send(now, Arc::from("urn:a"), Bytes::from_static(b"<p/>"))
        .unwrap();
    let _ = c.poll_transmit(now).unwrap();
    // Message 1 acknowledged with no buffer left: message 2 must wait.
    let t = now + Duration::from_millis(1);
    c.handle_message(t, ack(&id, vec![(1, 1)], Some(0)));
    assert!(c.poll_transmit(t).is_none());
    let first_poll = c.poll_timeout().unwrap();
    assert!(
        first_poll - t < Duration::from_secs(1),
        "polls long before WCF's 30 s: {:?}",
        first_poll - t
    );
    c.handle_timeout(first_poll);
    let p = c.poll_transmit(first_poll).expect("AckRequested poll");
    assert_eq!(p.action, Action::AckRequested);
    // Still full: the next poll comes later (backoff), still far below 30 s.
    c.handle_message(first_poll, ack(&id, vec![(1, 1)], Some(0)));
    let second_poll = c.poll_timeout().unwrap();
    assert!(
        second_poll - first_poll > first_poll - t,
        "{:?} then {:?}",
        first_poll - t,
        second_poll - first_poll
    );
    c.handle_timeout(second_poll);
    let p = c.poll_transmit(second_poll).expect("second poll");
    assert_eq!(p.action, Action::AckRequested);
    // The buffer reopened: message 2 goes out.
    c.handle_message(second_poll, ack(&id, vec![(1, 1)], Some(8)));
    let m = c
        .poll_transmit(second_poll)
        .expect("message 2 after the quota reopened");
    assert_eq!(number(&m), Some(2));
}

#[test]
fn failed_close_sequence_exchange_is_retried_early_with_backoff() {
    let now = Instant::now();
    let (mut c, id) = open(now);
    c.send(now, Arc::from("urn:a"), Bytes::from_static(b"<p/>"))
        .unwrap();
    let _ = c.poll_transmit(now).unwrap();
    c.handle_message(now, ack(&id, vec![(1, 1)], None));
    c.close(now).unwrap();
    let close = c.poll_transmit(now).expect("CloseSequence");
    assert!(matches!(close.body, Body::CloseSequence { .. }));
    // WCF's requestor would wait 10 s; the first FAST_RETRIES failures are retried at once.
    let t = fast_handshake_retries(&mut c, now, |m| {
        assert!(matches!(m.body, Body::CloseSequence { .. }));
        assert_eq!(m.message_id, close.message_id);
    });
    // Then 50 ms, doubling.
    c.handle_transport_failure(t, None);
    let t1 = c.poll_timeout().unwrap();
    assert_eq!(t1, t + Duration::from_millis(50));
    c.handle_timeout(t1);
    let again = c.poll_transmit(t1).expect("CloseSequence resent");
    assert!(matches!(again.body, Body::CloseSequence { .. }));
    assert_eq!(again.message_id, close.message_id);
    c.handle_transport_failure(t1, None);
    assert_eq!(c.poll_timeout().unwrap(), t1 + Duration::from_millis(100));
}

// RM 1.0 TerminateSequence is one-way: the session is closed once it is sent. Through a lossy
// intermediary its exchange may fail outright (the proxy's 502: the destination never saw it),
// and the destination then keeps the sequence until its inactivity timeout (interop, proxy
// seeds 3, 6, 8, 11 and 14 against CXF: "CXF saw TerminateSequence x0"). Such a failure sends
// it again, at most FAST_RETRIES times; a failure with a message number changes nothing.
#[test]
fn failed_rm10_terminate_sequence_exchange_is_sent_again_a_few_times() {
    let now = Instant::now();
    let v = RmVersion::Wsrm10;
    let (mut c, id) = open_version(now, v);
    c.send(now, Arc::from("urn:x/OneWay"), Bytes::from_static(b"<p/>"))
        .unwrap();
    assert_eq!(c.poll_transmit(now).as_ref().and_then(number), Some(1));
    c.handle_message(now, ack_version(v, &id, vec![(1, 1)], None));
    c.close(now).unwrap();
    let last = c.poll_transmit(now).unwrap();
    assert_eq!((number(&last), last.action), (Some(2), Action::LastMessage));
    c.handle_message(now, ack_version(v, &id, vec![(1, 2)], None));
    let terminate = c.poll_transmit(now).unwrap();
    assert_eq!(terminate.action, Action::TerminateSequence);
    assert_eq!(c.state(), ClientState::Closed);
    assert!(c.poll_transmit(now).is_none());
    c.handle_transport_failure(now, Some(2));
    assert!(
        c.poll_transmit(now).is_none(),
        "a numbered exchange: nothing"
    );
    for _ in 0..FAST_RETRIES {
        c.handle_transport_failure(now, None);
        let again = c.poll_transmit(now).unwrap();
        assert_eq!(again.action, Action::TerminateSequence);
        assert_eq!(again.body, terminate.body);
        assert!(c.poll_transmit(now).is_none());
    }
    c.handle_transport_failure(now, None);
    assert!(c.poll_transmit(now).is_none(), "at most FAST_RETRIES more");
    assert_eq!(c.state(), ClientState::Closed);
}
