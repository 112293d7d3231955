//! The sending half of a session: an RM [`Source`] plus the close protocol
//! (1.0 LastMessage + TerminateSequence; 1.1 CloseSequence + TerminateSequence with their
//! responses and final-ack validation; wire-protocol.md §4.10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::RngCore;

use crate::msg::{AckHeader, Action, Body, Fault, FaultCode, Message, RmVersion, SequenceId};
use crate::source::{Source, FAST_RETRIES};
use crate::types::{earliest, REQUESTOR_RETRY_INTERVAL};

/// `urn:uuid:` + lowercase GUID from the seeded RNG (WCF's `UniqueId` format).
pub(crate) fn new_urn(rng: &mut SmallRng) -> Arc<str> {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    let u = uuid::Builder::from_random_bytes(b).into_uuid();
    Arc::from(format!("urn:uuid:{}", u.hyphenated()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    Open,
    /// Close requested: waiting for every message (1.0: including LastMessage) to be acked.
    Draining,
    /// 1.1 CloseSequence sent.
    Closing {
        mid: Arc<str>,
        next: Instant,
    },
    /// 1.1 TerminateSequence sent.
    Terminating {
        mid: Arc<str>,
        next: Instant,
    },
    /// Terminated (1.0: TerminateSequence sent; 1.1: response received).
    Done,
}

#[derive(Debug)]
pub(crate) struct Outbound {
    pub src: Source,
    pub stage: Stage,
    /// ReplyTo on Close/Terminate requests (None = anonymous WSA 1.0).
    pub reply_to: Option<Arc<str>>,
    /// 1.0: TerminateSequence carries a MessageID (request-reply client).
    pub ts_with_mid: bool,
    pub close_deadline: Option<Instant>,
    close_timeout: Duration,
    /// A control message to send now (first attempt of Close/Terminate).
    pending: Option<Message>,
    /// Close/Terminate exchanges that failed without an answer (backoff of early retries).
    control_failures: u32,
    /// 1.1: CloseSequence goes out while draining without waiting for every acknowledgement
    /// (see [`Outbound::close_early`]).
    close_early: bool,
}

impl Outbound {
    pub fn new(src: Source, reply_to: Option<Arc<str>>, ts_with_mid: bool) -> Self {
        Outbound {
            src,
            stage: Stage::Open,
            reply_to,
            ts_with_mid,
            close_deadline: None,
            close_timeout: Duration::from_secs(60),
            pending: None,
            control_failures: 0,
            close_early: false,
        }
    }

    pub fn version(&self) -> RmVersion {
        self.src.version
    }

    pub fn id(&self) -> Option<&SequenceId> {
        self.src.id.as_ref()
    }

    pub fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Starts closing. 1.0 appends the empty-bodied LastMessage. Draining is bounded by
    /// MaxRetryCount; `timeout` bounds the 1.1 CloseSequence/TerminateSequence handshake.
    pub fn close(&mut self, now: Instant, timeout: Duration, lastmessage_mid: Option<Arc<str>>) {
        if self.stage != Stage::Open {
            return;
        }
        if self.version() == RmVersion::Wsrm10 {
            let two_way = false;
            // Rollover is impossible in practice here; if it happened, draining ends anyway.
            let _ = self.src.enqueue(
                Action::LastMessage,
                Body::Empty,
                lastmessage_mid,
                None,
                true,
                two_way,
            );
        }
        self.stage = Stage::Draining;
        self.close_timeout = timeout;
        let _ = now;
    }

    /// 1.1, while draining: sends CloseSequence now instead of after the last acknowledgement.
    /// For a destination that will not acknowledge the last message again (gSOAP quirk 19):
    /// its CloseSequenceResponse carries the acknowledgement of everything it holds (quirk 14),
    /// which is then checked as any final acknowledgement is (exactly `1..last`, else the
    /// session faults, as MaxRetryCount would have failed it). Returns whether it was armed.
    pub fn close_early(&mut self) -> bool {
        if self.stage != Stage::Draining || self.version() != RmVersion::Wsrm11 || self.close_early
        {
            return false;
        }
        self.close_early = true;
        true
    }

    fn last_number(&self) -> Option<u64> {
        let l = self.src.last_assigned();
        (l > 0).then_some(l)
    }

    fn close_msg(&self, mid: &Arc<str>) -> Option<Message> {
        let id = self.id()?.clone();
        let mut m = Message::new(
            self.version(),
            Action::CloseSequence,
            Body::CloseSequence {
                identifier: id,
                last_msg_number: self.last_number(),
            },
        );
        m.message_id = Some(mid.clone());
        m.reply_to = self.reply_to.clone();
        Some(m)
    }

    fn terminate_msg(&self, mid: Option<&Arc<str>>) -> Option<Message> {
        let id = self.id()?.clone();
        let last = if self.version() == RmVersion::Wsrm11 {
            self.last_number()
        } else {
            None
        };
        let mut m = Message::new(
            self.version(),
            Action::TerminateSequence,
            Body::TerminateSequence {
                identifier: id,
                last_msg_number: last,
            },
        );
        m.message_id = mid.cloned();
        if mid.is_some() {
            m.reply_to = self.reply_to.clone();
        }
        Some(m)
    }

    /// Whether [`Outbound::poll_control`] may return a message: when not (open, nothing
    /// pending) it returns `None` and changes nothing. Inline, so the session's
    /// `poll_transmit` skips the call (and its large frame) in the open state.
    #[inline]
    pub fn control_may_be_due(&self) -> bool {
        self.pending.is_some() || !matches!(self.stage, Stage::Open)
    }

    /// The next control message (Close/Terminate) due now, if any.
    pub fn poll_control(&mut self, now: Instant, rng: &mut SmallRng) -> Option<Message> {
        // Checked before `take`: taking a `None` still copies the whole (~350-byte) Option.
        if self.pending.is_some() {
            return self.pending.take();
        }
        if matches!(self.stage, Stage::Open) {
            return None;
        }
        match &self.stage {
            Stage::Draining if self.src.all_done() || self.close_early => match self.version() {
                RmVersion::Wsrm10 => {
                    let mid = self.ts_with_mid.then(|| new_urn(rng));
                    let m = self.terminate_msg(mid.as_ref());
                    self.stage = Stage::Done;
                    m
                }
                RmVersion::Wsrm11 => {
                    let mid = new_urn(rng);
                    let m = self.close_msg(&mid);
                    self.stage = Stage::Closing {
                        mid,
                        next: now + REQUESTOR_RETRY_INTERVAL,
                    };
                    self.close_deadline = Some(now + self.close_timeout);
                    m
                }
            },
            Stage::Closing { mid, next } if *next <= now => {
                let mid = mid.clone();
                let m = self.close_msg(&mid);
                self.stage = Stage::Closing {
                    mid,
                    next: now + REQUESTOR_RETRY_INTERVAL,
                };
                m
            }
            Stage::Terminating { mid, next } if *next <= now => {
                let mid = mid.clone();
                let m = self.terminate_msg(Some(&mid));
                self.stage = Stage::Terminating {
                    mid,
                    next: now + REQUESTOR_RETRY_INTERVAL,
                };
                m
            }
            _ => None,
        }
    }

    /// The exchange carrying the 1.1 CloseSequence or TerminateSequence failed without an
    /// answer (docs/engine.md deviation 8): retry at once for the first
    /// [`FAST_RETRIES`](crate::FAST_RETRIES) failures, then after 50 ms, doubling per failure,
    /// instead of WCF's fixed 10 s requestor interval (never later than that).
    pub fn control_failed(&mut self, now: Instant) -> bool {
        match &mut self.stage {
            Stage::Closing { next, .. } | Stage::Terminating { next, .. } => {
                self.control_failures = self.control_failures.saturating_add(1);
                let delay = match self.control_failures.checked_sub(FAST_RETRIES + 1) {
                    None => Duration::ZERO,
                    Some(k) => Duration::from_millis(50)
                        .saturating_mul(1u32 << k.min(16))
                        .min(REQUESTOR_RETRY_INTERVAL),
                };
                let at = now + delay;
                if at < *next {
                    *next = at;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Whether a control message is due at `now` (cheap check used before polling).
    pub fn control_due(&self, now: Instant) -> bool {
        self.pending.is_some()
            || match &self.stage {
                Stage::Draining => self.src.all_done() || self.close_early,
                Stage::Closing { next, .. } | Stage::Terminating { next, .. } => *next <= now,
                _ => false,
            }
    }

    /// Earliest deadline of this half.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stage_t = match &self.stage {
            Stage::Closing { next, .. } | Stage::Terminating { next, .. } => Some(*next),
            _ => None,
        };
        let close_t = if self.stage == Stage::Done {
            None
        } else {
            self.close_deadline
        };
        earliest(earliest(self.src.poll_timeout(), stage_t), close_t)
    }

    /// Whether a final ack is allowed now (we sent Close/Terminate).
    pub fn final_expected(&self) -> bool {
        matches!(
            self.stage,
            Stage::Closing { .. } | Stage::Terminating { .. } | Stage::Done
        )
    }

    /// Validates a 1.1 final ack: exactly `1..last`, or none when nothing was sent.
    pub fn validate_final(&self, ack: &AckHeader) -> Result<(), Fault> {
        if !self.final_expected() {
            let id = self.id().cloned().unwrap_or_default();
            return Err(Fault::sequence_terminated(
                FaultCode::Sender,
                &id,
                "An unsolicited final acknowledgement was received.",
            ));
        }
        if self.covers_exactly(ack) {
            Ok(())
        } else {
            Err(Fault::invalid_acknowledgement(ack.clone()))
        }
    }

    /// Whether `ack` acknowledges exactly `1..last` (nothing when nothing was sent).
    fn covers_exactly(&self, ack: &AckHeader) -> bool {
        match self.last_number() {
            None => ack.ranges.is_empty(),
            Some(l) => ack.ranges == [(1, l)],
        }
    }

    /// A CloseSequenceResponse arrived. Returns `Ok(true)` when it matched.
    ///
    /// Its ack must be final (WCF); a non-final ack that already covers exactly `1..last` is
    /// accepted as well: gSOAP 2.8's CloseSequenceResponse carries ranges without `<Final/>`
    /// (docs/interop.md, gSOAP quirk 14). Anything else (no ack, a gap, more than was sent)
    /// still faults the session.
    pub fn on_close_response(
        &mut self,
        now: Instant,
        relates_to: Option<&Arc<str>>,
        ack: Option<&AckHeader>,
        rng: &mut SmallRng,
    ) -> Result<bool, Fault> {
        let Stage::Closing { mid, .. } = &self.stage else {
            return Ok(false);
        };
        if relates_to != Some(mid) {
            return Ok(false);
        }
        match ack {
            Some(a) if a.final_ack => self.validate_final(a)?,
            Some(a) if self.covers_exactly(a) => {
                tracing::debug!("CloseSequenceResponse without Final accepted: acks cover 1..last");
            }
            _ => {
                let id = self.id().cloned().unwrap_or_default();
                return Err(Fault::sequence_terminated(
                    FaultCode::Sender,
                    &id,
                    "The CloseSequenceResponse did not carry a final acknowledgement.",
                ));
            }
        }
        let mid = new_urn(rng);
        self.pending = self.terminate_msg(Some(&mid));
        self.stage = Stage::Terminating {
            mid,
            next: now + REQUESTOR_RETRY_INTERVAL,
        };
        Ok(true)
    }

    /// A TerminateSequenceResponse arrived (or, 1.1, UnknownSequence for our id after
    /// Terminate). Returns whether it completed the terminate.
    pub fn on_terminate_response(&mut self, relates_to: Option<&Arc<str>>, any: bool) -> bool {
        if let Stage::Terminating { mid, .. } = &self.stage {
            if any || relates_to == Some(mid) {
                self.stage = Stage::Done;
                return true;
            }
        }
        false
    }
}
