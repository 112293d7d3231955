//! RM Destination for one inbound sequence: validity checks, duplicate detection, ordered and
//! unordered delivery with a receive buffer of MaxTransferWindowSize, acknowledgement ranges
//! capped at 128, BufferRemaining, 1.0 LastMessage and 1.1 Close/Terminate bookkeeping
//! (wire-protocol.md §4.7, §4.8, §4.10).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::msg::{AckHeader, Action, Body, Fault, FaultCode, RmVersion, SequenceId};
use crate::ranges::{RangeSet, MAX_SEQUENCE_RANGES};

/// A message handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub number: u64,
    pub action: Action,
    pub payload: Bytes,
    pub message_id: Option<std::sync::Arc<str>>,
}

/// Where a [`Destination`] puts the messages it releases to the application, in order: a
/// vector, or (the server's per-message path) the endpoint's event queue directly, without a
/// trip through a vector.
pub(crate) trait DeliverySink {
    /// Takes the next released message.
    fn deliver(&mut self, d: Delivered);
}

impl DeliverySink for Vec<Delivered> {
    #[inline]
    fn deliver(&mut self, d: Delivered) {
        self.push(d);
    }
}

/// What [`Destination::admit`] decided for an admitted message.
enum Admitted {
    /// Deliver (or hold) it.
    Deliver,
    /// The 1.0 empty-bodied LastMessage: recorded, never delivered.
    EmptyLast,
}

/// What happened to an incoming sequence message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Admitted (deliveries, if any, were pushed to the output vector).
    Accepted,
    /// Already received: dropped, acknowledge again.
    Duplicate,
    /// Not admitted (buffer full, out of order for a strict destination, range cap): dropped
    /// and not acknowledged.
    Dropped,
    /// 1.1: the sequence is closed; reply SequenceClosed, drop, keep the session.
    Closed(Fault),
    /// A protocol violation that fails the session.
    Violation(Fault),
}

/// Message numbers delivered to the application and not yet released: ascending, distinct.
/// Deliveries are mostly in ascending order and released in that order, so inserts go to the
/// back and removals come from the front (a `BTreeSet` cost a node walk for each).
#[derive(Debug, Default)]
struct Unreleased(VecDeque<u64>);

impl Unreleased {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, n: u64) -> bool {
        match self.0.back() {
            None => {
                self.0.push_back(n);
                true
            }
            Some(&b) if b < n => {
                self.0.push_back(n);
                true
            }
            _ => match self.0.binary_search(&n) {
                Ok(_) => false,
                Err(i) => {
                    self.0.insert(i, n);
                    true
                }
            },
        }
    }

    fn remove(&mut self, n: u64) -> bool {
        if self.0.front() == Some(&n) {
            self.0.pop_front();
            return true;
        }
        match self.0.binary_search(&n) {
            Ok(i) => self.0.remove(i).is_some(),
            Err(_) => false,
        }
    }
}

/// Messages received ahead of a gap (Ordered), waiting for it to fill. Slot `i` of `ring`
/// holds message `next + i`, where `next` is the destination's next number to deliver (every
/// method that depends on it takes it): an insert, and delivering the next message, are O(1)
/// (a `BTreeMap` cost an insert and a removal with node walks for each of them; over parallel
/// HTTP connections most messages arrive ahead of a gap and took that path). Admission keeps
/// messages less than one window ahead, so the ring has at most MaxTransferWindowSize slots;
/// a held message further ahead (only a restored snapshot can have one) is kept in `far`.
#[derive(Debug, Default)]
struct Held {
    ring: VecDeque<Option<Delivered>>,
    far: BTreeMap<u64, Delivered>,
    /// Messages held (`Some` slots plus `far`); the ring is empty when this is 0.
    count: usize,
}

/// Ring capacity (slots) above which an emptied ring gives its memory back.
const HELD_RING_KEEP: usize = 1024;

impl Held {
    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Holds message `d` numbered `n` (`n ≥ next`; a message already held under `n` is
    /// replaced). Messages less than `limit` ahead go to the ring.
    fn insert(&mut self, next: u64, n: u64, d: Delivered, limit: usize) {
        let idx = n
            .checked_sub(next)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < limit);
        let Some(idx) = idx else {
            if self.far.insert(n, d).is_none() {
                self.count += 1;
            }
            return;
        };
        // (Once `next` has moved closer, a message held in `far` may belong to the ring.)
        if !self.far.is_empty() && self.far.remove(&n).is_some() {
            self.count -= 1;
        }
        if self.ring.len() <= idx {
            self.ring.resize_with(idx + 1, || None);
        }
        if let Some(slot) = self.ring.get_mut(idx) {
            if slot.replace(d).is_none() {
                self.count += 1;
            }
        }
    }

    /// Whether message `n` is held.
    fn contains(&self, next: u64, n: u64) -> bool {
        let in_ring = n
            .checked_sub(next)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.ring.get(i))
            .is_some_and(Option::is_some);
        in_ring || self.far.contains_key(&n)
    }

    /// Takes message `next` if it is held; the caller then advances `next` by one.
    fn pop_next(&mut self, next: u64) -> Option<Delivered> {
        // A held front slot is popped whole (taking the message out first and then popping
        // the emptied slot moved it twice).
        let d = match self.ring.front() {
            Some(Some(_)) => self.ring.pop_front().flatten(),
            _ if !self.far.is_empty() => {
                let d = self.far.remove(&next);
                if d.is_some() {
                    self.ring.pop_front();
                }
                d
            }
            _ => None,
        };
        if d.is_some() {
            self.count -= 1;
            if self.count == 0 {
                self.release_ring();
            }
        }
        d
    }

    /// `next` advances past a message that was not held (delivered at once, or the 1.0 empty
    /// LastMessage).
    #[inline]
    fn skip(&mut self) {
        // Nothing held: the ring is empty (the in-order case).
        if self.count != 0 {
            self.ring.pop_front();
        }
    }

    /// Every slot is empty: the ring restarts (its memory kept unless it grew large).
    fn release_ring(&mut self) {
        if self.ring.capacity() > HELD_RING_KEEP {
            self.ring = VecDeque::new();
        } else {
            self.ring.clear();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Destination {
    pub id: SequenceId,
    pub version: RmVersion,
    ordered: bool,
    max_window: u32,
    /// Request-reply server with Ordered, not over HTTP: only `n == next_expected` is admitted
    /// (WCF; over HTTP see docs/engine.md deviation 10).
    pub strict_in_order: bool,
    /// Writes BufferRemaining.
    pub flow_control: bool,
    /// The application is considered to take messages as they are delivered.
    auto_release: bool,
    ranges: RangeSet,
    next_expected: u64,
    held: Held,
    unreleased: Unreleased,
    /// Delivered messages the application has counted as taken but still holds in a queue
    /// of its own beyond what it accepts freely ([`Destination::set_backlog`]): they lower
    /// BufferRemaining, so a flow-controlled source stops sending to a slow application.
    backlog: u32,
    /// The last message number, once known (1.0 LastMessage, 1.1 Close/Terminate).
    pub last: Option<u64>,
    /// 1.0: the LastMessage number is an empty-bodied message that is never delivered.
    empty_last: Option<u64>,
    /// 1.1 CloseSequence seen.
    pub closed: bool,
    pub duplicates: u64,
    pub delivered: u64,
    pub dropped: u64,
}

impl Destination {
    pub fn new(
        id: SequenceId,
        version: RmVersion,
        ordered: bool,
        max_window: u32,
        flow_control: bool,
        auto_release: bool,
    ) -> Self {
        Destination {
            id,
            version,
            ordered,
            max_window: max_window.max(1),
            strict_in_order: false,
            flow_control,
            auto_release,
            ranges: RangeSet::new(),
            next_expected: 1,
            held: Held::default(),
            unreleased: Unreleased::default(),
            backlog: 0,
            last: None,
            empty_last: None,
            closed: false,
            duplicates: 0,
            delivered: 0,
            dropped: 0,
        }
    }

    /// The received numbers.
    #[allow(dead_code)]
    pub fn ranges(&self) -> &RangeSet {
        &self.ranges
    }

    /// Whether `n` was received.
    #[allow(dead_code)]
    pub fn contains(&self, n: u64) -> bool {
        self.ranges.contains(n)
    }

    /// `MaxTransferWindowSize − (delivered but unreleased + held out of order + the
    /// application's backlog)`.
    pub fn buffer_remaining(&self) -> u32 {
        let used = (self.unreleased.len() + self.held.len()) as u32;
        self.max_window
            .saturating_sub(used.saturating_add(self.backlog))
    }

    /// Sets the application's backlog (messages taken but queued beyond what it accepts
    /// freely); returns whether the buffer went from full to non-full. Only BufferRemaining
    /// changes: admission does not, so messages a source sent before it learned of the
    /// backlog are still taken.
    pub fn set_backlog(&mut self, n: u32) -> bool {
        let was_full = self.buffer_remaining() == 0;
        self.backlog = n;
        was_full && self.buffer_remaining() > 0
    }

    /// Whether every message up to the known last number arrived.
    pub fn complete(&self) -> bool {
        match self.last {
            Some(l) => l == 0 || self.ranges.contains_range(1, l),
            None => false,
        }
    }

    /// Releases a delivered message (the application took it); returns whether it was pending
    /// and the buffer went from full to non-full.
    pub fn release(&mut self, n: u64) -> (bool, bool) {
        let was_full = self.buffer_remaining() == 0;
        let removed = self.unreleased.remove(n);
        (removed, removed && was_full && self.buffer_remaining() > 0)
    }

    /// The acknowledgement for this sequence.
    pub fn ack_header(&self) -> AckHeader {
        AckHeader {
            identifier: self.id.clone(),
            ranges: self.ranges.ranges().to_vec(),
            none: self.ranges.is_empty(),
            final_ack: self.version == RmVersion::Wsrm11 && self.last.is_some(),
            nacks: Vec::new(),
            buffer_remaining: if self.flow_control {
                Some(self.buffer_remaining())
            } else {
                None
            },
        }
    }

    /// Processes a sequence message. `admit_extra` is an extra admission condition from the
    /// session (request-reply: fewer than MaxTransferWindowSize unacknowledged replies).
    #[allow(clippy::too_many_arguments)]
    pub fn on_message(
        &mut self,
        n: u64,
        last_marker: bool,
        action: &Action,
        body: &Body,
        message_id: Option<&std::sync::Arc<str>>,
        admit_extra: bool,
        out: &mut Vec<Delivered>,
    ) -> Incoming {
        match self.admit(n, last_marker, action, body, admit_extra) {
            Ok(Admitted::EmptyLast) => self.accept(n, None, out),
            Ok(Admitted::Deliver) => {
                let payload = match body {
                    Body::Application(b) => b.clone(),
                    _ => Bytes::new(),
                };
                let d = Delivered {
                    number: n,
                    action: action.clone(),
                    payload,
                    message_id: message_id.cloned(),
                };
                self.accept(n, Some(d), out)
            }
            Err(r) => r,
        }
    }

    /// As [`Destination::on_message`] for a message the caller owns and no longer needs once
    /// it is delivered: the action, payload and MessageID are moved into the delivery instead
    /// of cloned (three reference counts taken here and released again when the caller drops
    /// the message, on every message of the server's hot path). `message` is left with an
    /// empty payload, `Action::SequenceAcknowledgement` and no MessageID when it was admitted
    /// for delivery; otherwise (duplicate, dropped, fault, 1.0 empty LastMessage) untouched.
    pub fn on_owned_message(
        &mut self,
        n: u64,
        message: &mut crate::msg::Message,
        admit_extra: bool,
        out: &mut impl DeliverySink,
    ) -> Incoming {
        let last_marker = message.sequence.as_ref().is_some_and(|s| s.last_message);
        match self.admit(n, last_marker, &message.action, &message.body, admit_extra) {
            Ok(Admitted::EmptyLast) => self.accept(n, None, out),
            Ok(Admitted::Deliver) => {
                let payload = match &mut message.body {
                    Body::Application(b) => std::mem::take(b),
                    _ => Bytes::new(),
                };
                let action =
                    std::mem::replace(&mut message.action, Action::SequenceAcknowledgement);
                let d = Delivered {
                    number: n,
                    action,
                    payload,
                    message_id: message.message_id.take(),
                };
                self.accept(n, Some(d), out)
            }
            Err(r) => r,
        }
    }

    /// The checks and the admission of [`Destination::on_message`]: `Err` is the outcome of a
    /// message that is not admitted (nothing changed but the counters); `Ok` means its number
    /// was recorded and [`Destination::accept`] must follow.
    fn admit(
        &mut self,
        n: u64,
        last_marker: bool,
        action: &Action,
        body: &Body,
        admit_extra: bool,
    ) -> Result<Admitted, Incoming> {
        if n == 0 {
            return Err(Incoming::Violation(Fault::sequence_terminated(
                FaultCode::Sender,
                &self.id,
                "The message number 0 is not valid.",
            )));
        }
        if n > crate::msg::MAX_MESSAGE_NUMBER {
            return Err(Incoming::Violation(Fault::new(
                FaultCode::Sender,
                crate::msg::FaultKind::MessageNumberRollover,
                "The maximum value for wsrm:MessageNumber has been exceeded.",
                crate::msg::FaultDetail::Rollover {
                    identifier: self.id.clone(),
                    max_message_number: (self.version == RmVersion::Wsrm11)
                        .then_some(crate::msg::MAX_MESSAGE_NUMBER),
                },
            )));
        }
        let is_last_action = matches!(action, Action::LastMessage);
        // One search for the duplicate checks and the insert (the ranges do not change until
        // the insert).
        let pos = self.ranges.position(n);
        match self.version {
            RmVersion::Wsrm10 => {
                if let Some(l) = self.last {
                    if n > l || (last_marker && n != l) {
                        return Err(Incoming::Violation(Fault::last_message_number_exceeded(
                            &self.id,
                        )));
                    }
                } else if last_marker && self.ranges.max().is_some_and(|m| n < m) {
                    return Err(Incoming::Violation(Fault::last_message_number_exceeded(
                        &self.id,
                    )));
                }
            }
            RmVersion::Wsrm11 => {
                if let Some(l) = self.last {
                    if n > l && !self.ranges.contains_at(pos, n) {
                        return Err(Incoming::Closed(Fault::sequence_closed(&self.id)));
                    }
                }
            }
        }
        if self.ranges.contains_at(pos, n) {
            self.duplicates += 1;
            return Err(Incoming::Duplicate);
        }
        let empty =
            is_last_action && matches!(body, Body::Empty) && self.version == RmVersion::Wsrm10;
        // Buffer admission (§4.7 step 5), with a deliberate deviation (docs/engine.md): WCF
        // drops a message when `held + unreleased + ahead ≥ MaxTransferWindowSize`, which over
        // HTTP (requests overtaking each other on parallel connections while the application
        // still holds a few delivered messages) drops messages a compliant source was allowed
        // to send and stalls the session for a retransmission timeout. We admit anything
        // within one window of the first gap (`ahead < W`, which a compliant source never
        // exceeds) as long as at most 2·W messages are buffered; BufferRemaining still
        // advertises `W − buffered`, so the source's quota throttles a slow application.
        let w = u64::from(self.max_window);
        let pending = (self.unreleased.len() + self.held.len()) as u64;
        let fits = if empty {
            true
        } else if self.ordered {
            let ahead = n.saturating_sub(self.next_expected);
            (!self.strict_in_order || n == self.next_expected)
                && ahead < w
                && pending < w.saturating_mul(2)
        } else {
            (self.unreleased.len() as u64) < w.saturating_mul(2)
        };
        // Inserted only when admitted and the ranges stay within WCF's cap (one search).
        if !fits
            || !admit_extra && !empty
            || !self.ranges.insert_capped_at(pos, n, MAX_SEQUENCE_RANGES)
        {
            self.dropped += 1;
            return Err(Incoming::Dropped);
        }
        if last_marker && self.version == RmVersion::Wsrm10 {
            self.last = Some(n);
        }
        Ok(if empty {
            Admitted::EmptyLast
        } else {
            Admitted::Deliver
        })
    }

    /// Delivers (or holds) admitted message `n`: `d` is `None` for the 1.0 empty
    /// LastMessage, which is never delivered.
    #[inline]
    fn accept(&mut self, n: u64, d: Option<Delivered>, out: &mut impl DeliverySink) -> Incoming {
        match d {
            None => self.empty_last = Some(n),
            Some(d) => {
                if !self.ordered {
                    self.push_out(d, out);
                } else if n == self.next_expected {
                    // The next in order (the common case): delivered without a trip through `held`.
                    self.next_expected += 1;
                    self.held.skip();
                    self.push_out(d, out);
                } else {
                    let limit = self.max_window as usize;
                    self.held.insert(self.next_expected, n, d, limit);
                }
            }
        }
        if self.ordered {
            self.release_in_order(out);
        }
        Incoming::Accepted
    }

    /// Ordered: delivers the held messages that are next in order (skipping a 1.0 empty
    /// LastMessage, which is never delivered).
    fn release_in_order(&mut self, out: &mut impl DeliverySink) {
        loop {
            if self.empty_last == Some(self.next_expected) {
                self.next_expected += 1;
                self.held.skip();
                continue;
            }
            if self.held.is_empty() {
                break;
            }
            match self.held.pop_next(self.next_expected) {
                Some(d) => {
                    self.next_expected += 1;
                    self.push_out(d, out);
                }
                None => break,
            }
        }
    }

    #[inline(always)]
    fn push_out(&mut self, d: Delivered, out: &mut impl DeliverySink) {
        if !self.auto_release {
            self.unreleased.insert(d.number);
        }
        self.delivered += 1;
        out.deliver(d);
    }

    /// 1.1 CloseSequence: fixes the last number. `Err` = SequenceTerminated to send.
    pub fn on_close(&mut self, last_msg_number: Option<u64>) -> Result<(), Fault> {
        let received_max = self.ranges.max().unwrap_or(0);
        let l = last_msg_number.unwrap_or(received_max);
        if l < received_max {
            return Err(Fault::sequence_terminated(
                FaultCode::Sender,
                &self.id,
                "The CloseSequence LastMsgNumber is smaller than a message number already received.",
            ));
        }
        if let Some(prev) = self.last {
            if prev != l {
                return Err(Fault::sequence_terminated(
                    FaultCode::Sender,
                    &self.id,
                    "The LastMsgNumber is inconsistent with the one previously received.",
                ));
            }
        }
        self.last = Some(l);
        self.closed = true;
        Ok(())
    }

    /// TerminateSequence. Returns `Ok(true)` for a clean completion, `Ok(false)` when the
    /// sequence ended with doubt (1.1 without Close and with gaps), `Err` for a violation.
    pub fn on_terminate(&mut self, last_msg_number: Option<u64>) -> Result<bool, Fault> {
        match self.version {
            RmVersion::Wsrm10 => {
                if self.complete() {
                    Ok(true)
                } else {
                    Err(Fault::sequence_terminated(
                        FaultCode::Sender,
                        &self.id,
                        "The TerminateSequence was transmitted before the sequence was successfully completed.",
                    ))
                }
            }
            RmVersion::Wsrm11 => {
                let received_max = self.ranges.max().unwrap_or(0);
                if self.closed {
                    if last_msg_number.unwrap_or(0) != self.last.unwrap_or(0)
                        && last_msg_number.is_some()
                    {
                        return Err(Fault::sequence_terminated(
                            FaultCode::Sender,
                            &self.id,
                            "The LastMsgNumber is inconsistent with the one previously received.",
                        ));
                    }
                    return Ok(self.complete());
                }
                if let Some(l) = last_msg_number {
                    if l < received_max {
                        return Err(Fault::sequence_terminated(
                            FaultCode::Sender,
                            &self.id,
                            "The TerminateSequence LastMsgNumber is smaller than a message number already received.",
                        ));
                    }
                    self.last = Some(l);
                    Ok(self.complete())
                } else {
                    self.last = Some(received_max);
                    Ok(false)
                }
            }
        }
    }
}

// Durable sessions (issue 6): rebuilding a destination from a stored snapshot.
impl Destination {
    /// Restores the received ranges, the last number and the delivery position from a
    /// snapshot; `undelivered` messages are delivered again (pushed to `out` when deliverable:
    /// in order when Ordered, held behind gaps otherwise).
    pub(crate) fn restore(
        &mut self,
        ranges: &[(u64, u64)],
        last: Option<u64>,
        delivered_through: u64,
        undelivered: Vec<Delivered>,
        out: &mut Vec<Delivered>,
    ) {
        self.ranges = RangeSet::from_ranges(ranges);
        self.last = last;
        self.next_expected = delivered_through.saturating_add(1);
        for d in undelivered {
            if !self.ranges.contains(d.number) {
                self.ranges.insert(d.number);
            }
            if self.ordered {
                if d.number >= self.next_expected {
                    let limit = self.max_window as usize;
                    self.held.insert(self.next_expected, d.number, d, limit);
                }
            } else {
                self.push_out(d, out);
            }
        }
        if self.ordered {
            // 1.0: an empty LastMessage is never delivered; the watermark skips it.
            if let Some(l) = last {
                if self.version == RmVersion::Wsrm10
                    && l > delivered_through
                    && self.ranges.contains(l)
                    && !self.held.contains(self.next_expected, l)
                {
                    self.empty_last = Some(l);
                }
            }
            self.release_in_order(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> (Action, Body) {
        (
            Action::Other("urn:a".into()),
            Body::Application(Bytes::from_static(b"p")),
        )
    }

    fn recv(d: &mut Destination, n: u64) -> (Incoming, Vec<u64>) {
        let (a, b) = app();
        let mut out = vec![];
        let r = d.on_message(n, false, &a, &b, None, true, &mut out);
        (r, out.iter().map(|x| x.number).collect())
    }

    #[test]
    fn ordered_delivery_holds_out_of_order_until_gap_fills() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, 8, true, false);
        assert_eq!(recv(&mut d, 2), (Incoming::Accepted, vec![]));
        assert_eq!(recv(&mut d, 3), (Incoming::Accepted, vec![]));
        assert_eq!(d.buffer_remaining(), 6);
        assert_eq!(recv(&mut d, 1), (Incoming::Accepted, vec![1, 2, 3]));
        assert_eq!(d.ack_header().ranges, vec![(1, 3)]);
        assert_eq!(d.ack_header().buffer_remaining, Some(5));
    }

    #[test]
    fn an_application_backlog_lowers_buffer_remaining_but_not_admission() {
        // auto-release: every delivery counts as taken at once.
        let mut d = Destination::new("s".into(), RmVersion::Wsrm11, true, 4, true, true);
        assert_eq!(recv(&mut d, 1), (Incoming::Accepted, vec![1]));
        assert_eq!(d.ack_header().buffer_remaining, Some(4));
        assert!(!d.set_backlog(3));
        assert_eq!(d.ack_header().buffer_remaining, Some(1));
        assert!(!d.set_backlog(9));
        assert_eq!(d.ack_header().buffer_remaining, Some(0));
        // Messages the source sent before it learned of the backlog are still taken.
        assert_eq!(recv(&mut d, 2), (Incoming::Accepted, vec![2]));
        // Full → non-full is reported (a duplex destination acks at once then).
        assert!(d.set_backlog(2));
        assert_eq!(d.ack_header().buffer_remaining, Some(2));
        assert!(!d.set_backlog(4));
        assert!(d.set_backlog(0));
        assert_eq!(d.ack_header().buffer_remaining, Some(4));
        // A message held out of order counts with the backlog.
        assert_eq!(recv(&mut d, 4), (Incoming::Accepted, vec![]));
        assert_eq!(d.ack_header().buffer_remaining, Some(3));
    }

    #[test]
    fn duplicates_are_never_delivered_twice() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, false, 8, true, true);
        assert_eq!(recv(&mut d, 1), (Incoming::Accepted, vec![1]));
        assert_eq!(recv(&mut d, 1), (Incoming::Duplicate, vec![]));
        assert_eq!(d.duplicates, 1);
    }

    #[test]
    fn receive_buffer_of_window_drops_beyond_unacknowledged() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, 4, true, false);
        // ordered: (n − next) < 4 → 5 is beyond the window.
        assert_eq!(recv(&mut d, 5), (Incoming::Dropped, vec![]));
        assert_eq!(recv(&mut d, 4), (Incoming::Accepted, vec![]));
        assert!(!d.contains(5));
        // ordered: at most 2·W buffered (delivered-unreleased + held), whatever the window.
        let mut o = Destination::new("o".into(), RmVersion::Wsrm10, true, 4, true, false);
        for n in 1..=8 {
            assert_eq!(recv(&mut o, n).0, Incoming::Accepted, "message {n}");
        }
        assert_eq!(o.ack_header().buffer_remaining, Some(0));
        assert_eq!(recv(&mut o, 9), (Incoming::Dropped, vec![]));
        assert_eq!(o.release(1), (true, false));
        assert_eq!(recv(&mut o, 9), (Incoming::Accepted, vec![9]));
        for n in 2..=5 {
            o.release(n);
        }
        // 6..=9 still unreleased: 4 of 4 used; one more release reopens the buffer.
        assert_eq!(o.release(6), (true, true));
        // unordered: at most 2·W unreleased; BufferRemaining counts W − unreleased.
        let mut u = Destination::new("u".into(), RmVersion::Wsrm10, false, 4, true, false);
        for n in 1..=8 {
            assert_eq!(recv(&mut u, n).0, Incoming::Accepted);
        }
        assert_eq!(recv(&mut u, 9).0, Incoming::Dropped);
        assert_eq!(u.ack_header().buffer_remaining, Some(0));
        assert_eq!(u.release(2), (true, false));
        assert_eq!(recv(&mut u, 9).0, Incoming::Accepted);
    }

    #[test]
    fn unordered_ranges_capped_at_128() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, false, 4096, true, true);
        for i in 0..128u64 {
            assert_eq!(recv(&mut d, i * 2 + 1).0, Incoming::Accepted);
        }
        assert_eq!(recv(&mut d, 1001).0, Incoming::Dropped);
        assert_eq!(d.ack_header().ranges.len(), 128);
    }

    #[test]
    fn last_message_number_exceeded_10() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, 8, true, true);
        recv(&mut d, 1);
        recv(&mut d, 2);
        recv(&mut d, 3);
        let mut out = vec![];
        let r = d.on_message(
            4,
            true,
            &Action::LastMessage,
            &Body::Empty,
            None,
            true,
            &mut out,
        );
        assert_eq!(r, Incoming::Accepted);
        assert!(out.is_empty());
        assert!(d.complete());
        match recv(&mut d, 5).0 {
            Incoming::Violation(f) => {
                assert_eq!(f.kind, crate::msg::FaultKind::LastMessageNumberExceeded)
            }
            o => panic!("{o:?}"),
        }
        // LastMessage numbered below an already-received number.
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, false, 8, true, true);
        recv(&mut d, 3);
        let r = d.on_message(
            2,
            true,
            &Action::LastMessage,
            &Body::Empty,
            None,
            true,
            &mut out,
        );
        assert!(
            matches!(r, Incoming::Violation(f) if f.kind == crate::msg::FaultKind::LastMessageNumberExceeded)
        );
    }

    #[test]
    fn sequence_closed_11_after_close_but_duplicate_acked() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm11, true, 8, true, true);
        for n in 1..=3 {
            recv(&mut d, n);
        }
        d.on_close(Some(3)).unwrap();
        assert!(d.ack_header().final_ack);
        assert!(
            matches!(recv(&mut d, 4).0, Incoming::Closed(f) if f.kind == crate::msg::FaultKind::SequenceClosed)
        );
        assert_eq!(recv(&mut d, 2).0, Incoming::Duplicate);
        // Terminate with an inconsistent LastMsgNumber.
        let f = d.on_terminate(Some(2)).unwrap_err();
        assert_eq!(f.kind, crate::msg::FaultKind::SequenceTerminated);
        assert_eq!(d.on_terminate(Some(3)), Ok(true));
    }

    #[test]
    fn terminate_10_before_complete_is_sequence_terminated() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, 8, true, true);
        recv(&mut d, 1);
        let f = d.on_terminate(None).unwrap_err();
        assert_eq!(f.code, FaultCode::Sender);
        assert_eq!(f.kind, crate::msg::FaultKind::SequenceTerminated);
    }

    #[test]
    fn message_number_rollover_beyond_2_pow_63() {
        let mut d = Destination::new("s".into(), RmVersion::Wsrm11, true, 8, true, true);
        match recv(&mut d, u64::MAX).0 {
            Incoming::Violation(f) => {
                assert_eq!(f.kind, crate::msg::FaultKind::MessageNumberRollover);
                assert_eq!(
                    f.detail,
                    crate::msg::FaultDetail::Rollover {
                        identifier: "s".into(),
                        max_message_number: Some(crate::msg::MAX_MESSAGE_NUMBER)
                    }
                );
            }
            o => panic!("{o:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_unreleased_is_a_set(ops in proptest::collection::vec((proptest::bool::ANY, 0u64..40), 0..200)) {
            let mut u = Unreleased::default();
            let mut model = std::collections::BTreeSet::new();
            for (insert, n) in ops {
                if insert {
                    proptest::prop_assert_eq!(u.insert(n), model.insert(n));
                } else {
                    proptest::prop_assert_eq!(u.remove(n), model.remove(&n));
                }
                proptest::prop_assert_eq!(u.len(), model.len());
                proptest::prop_assert!(u.0.iter().copied().eq(model.iter().copied()));
            }
        }

        /// `Held` behaves as the `BTreeMap` it replaced, used the way `Destination` uses it:
        /// inserts ahead of `next` (in the ring or, beyond `limit`, in `far`), the next message
        /// taken when held, `next` advanced past a message that was not held.
        #[test]
        fn prop_held_is_the_btreemap_it_replaced(
            limit in 1usize..10,
            ops in proptest::collection::vec((0u8..4, 0u64..24), 0..300),
        ) {
            let mut h = Held::default();
            let mut model: BTreeMap<u64, Delivered> = BTreeMap::new();
            let mut next = 1u64;
            let d = |n: u64| Delivered {
                number: n,
                action: Action::Other("a".into()),
                payload: Bytes::new(),
                message_id: None,
            };
            for (op, k) in ops {
                match op {
                    0 | 1 => {
                        // Ahead of a gap: never `next` itself (that one is delivered at once).
                        let n = next + 1 + k;
                        h.insert(next, n, d(n), limit);
                        model.insert(n, d(n));
                    }
                    2 => {
                        let got = h.pop_next(next);
                        proptest::prop_assert_eq!(&got, &model.remove(&next));
                        if got.is_some() {
                            next += 1;
                        }
                    }
                    _ => {
                        if !model.contains_key(&next) {
                            h.skip();
                            next += 1;
                        }
                    }
                }
                proptest::prop_assert_eq!(h.len(), model.len());
                proptest::prop_assert_eq!(h.is_empty(), model.is_empty());
                for n in next.saturating_sub(2)..next + 40 {
                    proptest::prop_assert_eq!(h.contains(next, n), model.contains_key(&n));
                }
                proptest::prop_assert!(h.ring.len() <= limit.max(1) + 1);
            }
        }

        /// An ordered destination fed numbers in any order (duplicates, numbers beyond the
        /// window, releases in between) delivers exactly 1, 2, 3, … once each, and
        /// BufferRemaining counts what it holds.
        #[test]
        fn prop_ordered_out_of_order_delivers_in_order(
            window in 1u32..12,
            auto_release in proptest::bool::ANY,
            ops in proptest::collection::vec((proptest::bool::ANY, 0u64..16), 0..300),
        ) {
            let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, window, true, auto_release);
            let mut delivered: Vec<u64> = Vec::new();
            let mut unreleased: std::collections::BTreeSet<u64> = Default::default();
            for (release, k) in ops {
                if release {
                    if let Some(&n) = unreleased.iter().nth(k as usize % unreleased.len().max(1)) {
                        unreleased.remove(&n);
                        proptest::prop_assert!(d.release(n).0);
                    }
                    continue;
                }
                let n = delivered.len() as u64 + 1 + k;
                let (r, out) = recv(&mut d, n);
                if r == Incoming::Accepted {
                    proptest::prop_assert!(d.contains(n));
                }
                for m in out {
                    proptest::prop_assert_eq!(m, delivered.len() as u64 + 1);
                    delivered.push(m);
                    if !auto_release {
                        unreleased.insert(m);
                    }
                }
                let held = d.ranges().count() - delivered.len() as u64;
                proptest::prop_assert_eq!(d.held.len() as u64, held);
                let used = held + unreleased.len() as u64;
                proptest::prop_assert_eq!(
                    u64::from(d.buffer_remaining()),
                    u64::from(window).saturating_sub(used)
                );
            }
        }
    }

    #[test]
    fn ordered_delivery_in_order_and_behind_an_empty_last_message() {
        // In-order arrivals are delivered at once; a gap holds later ones; the 1.0 empty
        // LastMessage fills its place in the order without being delivered.
        let mut d = Destination::new("s".into(), RmVersion::Wsrm10, true, 8, true, false);
        assert_eq!(recv(&mut d, 1), (Incoming::Accepted, vec![1]));
        assert_eq!(recv(&mut d, 3), (Incoming::Accepted, vec![]));
        let mut out = vec![];
        let r = d.on_message(
            5,
            true,
            &Action::LastMessage,
            &Body::Empty,
            None,
            true,
            &mut out,
        );
        assert_eq!(r, Incoming::Accepted);
        assert!(out.is_empty());
        assert_eq!(recv(&mut d, 4), (Incoming::Accepted, vec![]));
        assert_eq!(recv(&mut d, 2), (Incoming::Accepted, vec![2, 3, 4]));
        assert!(d.complete());
        assert_eq!(d.buffer_remaining(), 4);
        assert_eq!(d.release(3), (true, false));
        assert_eq!(d.release(3), (false, false));
        assert_eq!(d.buffer_remaining(), 5);
    }

    #[test]
    fn empty_ack_before_anything_received() {
        let d = Destination::new("s".into(), RmVersion::Wsrm11, true, 8, false, true);
        let a = d.ack_header();
        assert!(a.none && a.ranges.is_empty() && a.buffer_remaining.is_none());
    }
}
