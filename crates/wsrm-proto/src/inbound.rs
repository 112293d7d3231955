//! The receiving half of a session: an RM [`Destination`] plus acknowledgement scheduling
//! (immediate on request-reply transports; AcknowledgementInterval batching with immediate
//! triggers on duplex transports, wire-protocol.md §4.7).

use std::time::{Duration, Instant};

use crate::dest::Destination;
use crate::msg::AckHeader;

#[derive(Debug)]
pub(crate) struct Inbound {
    pub dest: Destination,
    /// Duplex batching (false: every answer carries the ack anyway).
    batching: bool,
    interval: Duration,
    max_window: u32,
    ack_count: u32,
    ack_deadline: Option<Instant>,
    ack_now: bool,
    /// TerminateSequence received for this sequence.
    pub terminated: bool,
}

impl Inbound {
    pub fn new(dest: Destination, batching: bool, interval: Duration, max_window: u32) -> Self {
        Inbound {
            dest,
            batching,
            interval,
            max_window,
            ack_count: 0,
            ack_deadline: None,
            ack_now: false,
            terminated: false,
        }
    }

    /// An accepted message: start the batching timer, or ack at once when the trigger rules
    /// say so.
    pub fn note_accepted(&mut self, now: Instant, ack_requested: bool) {
        if !self.batching {
            return;
        }
        if self.ack_count == 0 {
            self.ack_deadline = Some(now + self.interval);
        }
        self.ack_count += 1;
        if ack_requested || self.ack_count >= self.max_window || self.dest.last.is_some() {
            self.ack_now = true;
        }
    }

    /// Ask for an immediate standalone ack (duplicate, AckRequested, buffer reopened).
    pub fn ack_immediately(&mut self) {
        if self.batching {
            self.ack_now = true;
        }
    }

    /// A standalone ack due now (duplex).
    pub fn take_due_ack(&mut self, now: Instant) -> Option<AckHeader> {
        if !self.batching {
            return None;
        }
        let due = self.ack_now || self.ack_deadline.is_some_and(|d| d <= now);
        if !due {
            return None;
        }
        self.reset();
        Some(self.dest.ack_header())
    }

    /// Whether acks are pending (to piggy-back on an outgoing message).
    pub fn take_piggyback(&mut self) -> Option<AckHeader> {
        if self.batching && (self.ack_count > 0 || self.ack_now) {
            self.reset();
            return Some(self.dest.ack_header());
        }
        None
    }

    fn reset(&mut self) {
        self.ack_count = 0;
        self.ack_deadline = None;
        self.ack_now = false;
    }

    pub fn ack_due(&self, now: Instant) -> bool {
        self.batching && (self.ack_now || self.ack_deadline.is_some_and(|d| d <= now))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ack_now {
            // Due immediately; the caller polls transmits right away.
            return self.ack_deadline;
        }
        self.ack_deadline
    }
}
