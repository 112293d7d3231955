//! `ClientSession::handle_ack(ack)` does exactly what `handle_message` does with a
//! `SequenceAcknowledgement` message carrying that ack and nothing else: two sessions made
//! alike are driven through the same generated script (sends, requests, acknowledgements of
//! our sequence — random ones and ones of everything sent so far — of the offered one and of
//! unknown ones, with valid and invalid ranges, Final, None and BufferRemaining, timers, close), one given each ack as a message, the other as
//! the header alone, and after every step both have the same state, statistics, deadline,
//! events and messages to send.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use wsrm_proto::msg::{
    AckHeader, Action, Body, CreateSequenceResponse, Message, RmVersion, SequenceId,
};
use wsrm_proto::{ClientConfig, ClientSession, ClientState, Pattern, Shape};

#[derive(Debug, Clone)]
enum Step {
    Send,
    Request,
    /// An acknowledgement: of our sequence (0), the offered one (1) or an unknown one (2).
    Ack {
        whose: u8,
        ranges: Vec<(u64, u64)>,
        none: bool,
        final_ack: bool,
        buffer_remaining: Option<u32>,
    },
    /// An acknowledgement of our sequence's messages 1 to n (with `Final` in 1.1).
    AckUpTo(u64, bool),
    Wait(u64),
    Close,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let ack = (
        0u8..3,
        proptest::collection::vec((0u64..12, 0u64..4), 0..4),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0u32..10),
    )
        .prop_map(|(whose, spans, none, final_ack, buffer_remaining)| {
            // mostly ascending, disjoint ranges from the spans; some overlapping or beyond
            // what was sent, which the engine refuses
            let mut lo = 0;
            let ranges = spans
                .into_iter()
                .map(|(gap, len)| {
                    let l = lo + gap;
                    let u = l + len;
                    lo = u + 1;
                    (l, u)
                })
                .collect();
            Step::Ack {
                whose,
                ranges,
                none,
                final_ack,
                buffer_remaining,
            }
        });
    proptest::collection::vec(
        prop_oneof![
            3 => Just(Step::Send),
            1 => Just(Step::Request),
            5 => ack,
            2 => (1u64..15, any::<bool>()).prop_map(|(n, f)| Step::AckUpTo(n, f)),
            1 => (1u64..5_000).prop_map(Step::Wait),
            1 => Just(Step::Close),
        ],
        1..40,
    )
}

const OURS: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";

fn session(
    now: Instant,
    pattern: Pattern,
    v: RmVersion,
    open: bool,
) -> (ClientSession, Option<SequenceId>) {
    let mut cfg = ClientConfig::new(pattern, Shape::RequestReply);
    cfg.settings.reliable_messaging_version = v;
    let mut c = ClientSession::new(now, cfg, 7).expect("valid settings");
    let cs = c.poll_transmit(now).expect("CreateSequence");
    let offered = match &cs.body {
        Body::CreateSequence(b) => b.offer.as_ref().map(|o| o.identifier.clone()),
        _ => None,
    };
    if open {
        let mut csr = Message::new(
            v,
            Action::CreateSequenceResponse,
            Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                identifier: SequenceId::from(OURS),
                expires: None,
                incomplete_sequence_behavior: None,
                accept: offered.as_ref().map(|_| Default::default()),
            })),
        );
        csr.relates_to = cs.message_id.clone();
        c.handle_message(now, csr);
        assert_eq!(c.state(), ClientState::Open, "{pattern:?} {v:?}");
    }
    (c, offered)
}

/// Everything observable of a session, drained.
fn observe(c: &mut ClientSession, now: Instant) -> String {
    let mut out = format!("{:?} {:?} {:?}\n", c.state(), c.stats(), c.poll_timeout());
    while let Some(m) = c.poll_transmit(now) {
        out.push_str(&format!("T {m:?}\n"));
    }
    while let Some(e) = c.poll_event() {
        out.push_str(&format!("E {e:?}\n"));
    }
    out
}

/// `ack` to `a` as a standalone acknowledgement message, to `b` as the header alone.
fn give_both(
    a: &mut ClientSession,
    b: &mut ClientSession,
    now: Instant,
    v: RmVersion,
    ack: AckHeader,
) {
    let mut m = Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
    m.ack = Some(ack.clone());
    a.handle_message(now, m);
    b.handle_ack(now, ack);
}

fn run(pattern: Pattern, v: RmVersion, open: bool, script: &[Step]) -> Result<(), TestCaseError> {
    let mut now = Instant::now();
    let (mut a, offered) = session(now, pattern, v, open);
    let (mut b, _) = session(now, pattern, v, open);
    prop_assert_eq!(observe(&mut a, now), observe(&mut b, now));
    for step in script {
        match step {
            Step::Send => {
                let action: Arc<str> = Arc::from("urn:test/OneWay");
                let x = a.send(now, action.clone(), Bytes::from_static(b"<p/>"));
                let y = b.send(now, action, Bytes::from_static(b"<p/>"));
                prop_assert_eq!(x, y);
            }
            Step::Request => {
                let action: Arc<str> = Arc::from("urn:test/Echo");
                let x = a.request(now, action.clone(), Bytes::from_static(b"<q/>"));
                let y = b.request(now, action, Bytes::from_static(b"<q/>"));
                prop_assert_eq!(x, y);
            }
            Step::Ack {
                whose,
                ranges,
                none,
                final_ack,
                buffer_remaining,
            } => {
                let identifier = match (whose, &offered) {
                    (0, _) => SequenceId::from(OURS),
                    (1, Some(o)) => o.clone(),
                    _ => SequenceId::from("urn:uuid:unknown"),
                };
                let ack = AckHeader {
                    identifier,
                    ranges: ranges.clone(),
                    none: *none && ranges.is_empty(),
                    final_ack: *final_ack,
                    nacks: Vec::new(),
                    buffer_remaining: *buffer_remaining,
                };
                give_both(&mut a, &mut b, now, v, ack);
            }
            Step::AckUpTo(n, final_ack) => {
                let ack = AckHeader {
                    identifier: SequenceId::from(OURS),
                    ranges: vec![(1, *n)],
                    final_ack: *final_ack,
                    ..AckHeader::default()
                };
                give_both(&mut a, &mut b, now, v, ack);
            }
            Step::Wait(ms) => {
                now += Duration::from_millis(*ms);
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
            Step::Close => {
                prop_assert_eq!(a.close(now), b.close(now));
            }
        }
        prop_assert_eq!(
            observe(&mut a, now),
            observe(&mut b, now),
            "after {:?}",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(256)))]

    #[test]
    fn handle_ack_is_handle_message_of_a_standalone_ack(
        pattern in prop_oneof![Just(Pattern::OneWay), Just(Pattern::RequestReply)],
        v in prop_oneof![Just(RmVersion::Wsrm10), Just(RmVersion::Wsrm11)],
        open in prop_oneof![4 => Just(true), 1 => Just(false)],
        script in steps(),
    ) {
        run(pattern, v, open, &script)?;
    }
}
