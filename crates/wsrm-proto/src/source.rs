//! RM Source for one outbound sequence: numbering, transmission window with slow start and
//! congestion avoidance, RTT estimation, retransmission with exponential backoff, MaxRetryCount,
//! selective acknowledgement, acknowledgement validation and BufferRemaining quota
//! (wire-protocol.md §4.5, §4.6, §4.8).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::msg::{
    AckHeader, Action, Body, Fault, Message, RmVersion, SequenceHeader, SequenceId,
    MAX_MESSAGE_NUMBER,
};
use crate::ranges::{is_canonical, slice_contains_range, RangeSet};
use bytes::Bytes;

/// How many attempts of one message may be retransmitted at once after a transport failure
/// (`Source::transport_failed`); later failures wait for the retransmission timer.
pub const FAST_RETRIES: u32 = 3;

/// WCF's assumed RTT when none was measured (`UnknownInitiationTime`).
pub const UNKNOWN_INITIATION_TIME: Duration = Duration::from_secs(2);
/// Minimum slack added to the RTT for the retransmission timeout.
const RTO_SLACK_US: i64 = 400_000;
/// Upper bound on the backed-off retransmission timeout (keeps arithmetic finite).
const MAX_RTO_US: i64 = 24 * 3600 * 1_000_000;

#[derive(Debug, Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub(crate) struct Entry {
    pub number: u64,
    pub action: Action,
    /// Application payload (`None`: empty body, e.g. the 1.0 LastMessage). Kept small so the
    /// window and send queue move little memory.
    pub payload: Option<Bytes>,
    pub message_id: Option<Arc<str>>,
    pub reply_to: Option<Arc<str>>,
    /// [`LAST`] (1.0 `<LastMessage/>` marker) and [`TWO_WAY`] (needs an application reply
    /// before it counts as transferred: request-reply over HTTP), fixed when queued. One byte
    /// for the two keeps an entry at 128 bytes (see [`Entry::rtt_sample_us`]).
    kind: u8,
    pub retries: u32,
    pub last_sent: Option<Instant>,
    /// Covered by an acknowledgement.
    pub acked: bool,
    /// The reply arrived (only meaningful when `two_way`).
    pub replied: bool,
    /// Queued for retransmission.
    pub resend: bool,
    /// Round-trip sample (µs) taken when the message first became done, measured from its
    /// last transmission, or [`NO_SAMPLE`] while none was taken. Taken at acknowledgement time
    /// rather than when the window slides over it: a message selectively acknowledged behind
    /// a lost head would otherwise report the head's whole recovery time as its round trip
    /// and drive the timeout up. A sentinel rather than an `Option<i64>` (samples are never
    /// negative): it keeps an entry at 128 bytes, which the compiler moves with a few inline
    /// stores instead of a `memcpy` call (an entry is moved when queued and when the window
    /// slides over it, once per message each).
    pub rtt_sample_us: i64,
}

/// [`Entry::rtt_sample_us`] when no sample was taken (samples are `≥ 0`).
const NO_SAMPLE: i64 = -1;
/// [`Entry::kind`]: the 1.0 LastMessage.
const LAST: u8 = 1;
/// [`Entry::kind`]: a two-way request.
const TWO_WAY: u8 = 2;

impl Entry {
    fn kind(last: bool, two_way: bool) -> u8 {
        (if last { LAST } else { 0 }) | (if two_way { TWO_WAY } else { 0 })
    }

    /// 1.0 `<LastMessage/>` marker.
    fn last(&self) -> bool {
        self.kind & LAST != 0
    }

    /// Needs an application reply before it counts as transferred (request-reply over HTTP).
    fn two_way(&self) -> bool {
        self.kind & TWO_WAY != 0
    }

    fn done(&self) -> bool {
        self.acked && (!self.two_way() || self.replied)
    }

    /// Marks the entry acknowledged (if it was not yet); true when that made it done.
    #[inline]
    fn acknowledge(&mut self, now: Instant) -> bool {
        if self.acked {
            return false;
        }
        self.acked = true;
        self.note_done(now);
        self.done()
    }

    /// Records the round-trip sample the first time the message becomes done.
    fn note_done(&mut self, now: Instant) {
        if self.rtt_sample_us == NO_SAMPLE && self.done() {
            if let Some(t) = self.last_sent {
                self.rtt_sample_us = us(now.saturating_duration_since(t));
            }
        }
    }

    /// The round-trip sample the window slide feeds to the estimator: the one taken when the
    /// message became done, else measured now from its last transmission.
    fn slide_sample(&self, now: Instant) -> Option<i64> {
        if self.rtt_sample_us != NO_SAMPLE {
            Some(self.rtt_sample_us)
        } else {
            self.last_sent.map(|t| us(now.saturating_duration_since(t)))
        }
    }
}

/// The numbers of the window entries marked acknowledged (selectively acknowledged, or two-way
/// requests acknowledged but not replied), one bit per number. An acknowledgement's ranges are
/// applied to it a word (64 numbers) at a time: the new numbers of a range are its bits not set
/// yet, found with a mask, where a list of ranges needed a merge walk of the ack's ranges with
/// it and inserts in the middle of a vector (an out-of-order ack carries a few ranges, most of
/// them known).
#[derive(Debug, Clone, Default)]
struct AckedSet {
    /// The number bit 0 of `words[0]` stands for; at most the window start while a bit is set.
    base: u64,
    /// Bit `i` of word `w` stands for number `base + 64·w + i`.
    words: Vec<u64>,
    /// Bits set.
    count: u64,
}

impl AckedSet {
    /// Whether no number is set.
    #[inline]
    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The word index and bit offset of `n`, when `n ≥ base`.
    fn position(&self, n: u64) -> Option<(usize, u32)> {
        let off = n.checked_sub(self.base)?;
        Some((usize::try_from(off / 64).ok()?, (off % 64) as u32))
    }

    /// Sets `lower..=upper` (all at or above `ws`, the window start) and calls `on_new(n)`
    /// for each number that was not set, ascending; returns whether any was new.
    fn insert_range(
        &mut self,
        ws: u64,
        lower: u64,
        upper: u64,
        mut on_new: impl FnMut(u64),
    ) -> bool {
        if lower > upper {
            return false;
        }
        if self.count == 0 {
            // Every word is 0: the set restarts at the window.
            self.base = ws;
        }
        let (Some((wl, bl)), Some((wh, bh))) = (self.position(lower), self.position(upper)) else {
            return false;
        };
        if self.words.len() <= wh {
            self.words.resize(wh + 1, 0);
        }
        let mut any = false;
        let mut w = wl;
        let mut mask = u64::MAX << bl;
        loop {
            if w >= wh {
                mask &= u64::MAX >> (63 - bh);
            }
            let Some(word) = self.words.get_mut(w) else {
                break;
            };
            let mut new = mask & !*word;
            *word |= mask;
            if new != 0 {
                any = true;
                let at = self.base + 64 * w as u64;
                while new != 0 {
                    self.count += 1;
                    on_new(at + u64::from(new.trailing_zeros()));
                    new &= new - 1;
                }
            }
            if w >= wh {
                break;
            }
            w += 1;
            mask = u64::MAX;
        }
        any
    }

    /// Applies the ranges of an acknowledgement that reach into the window `ws..end` (`ranges`
    /// ascending and disjoint, none ending below `ws`; the part of each outside the window is
    /// ignored, and the ranges from the first starting at `end` on): sets their numbers and
    /// calls `on_new(n)` for each that was not set, ascending. Returns whether any was new.
    ///
    /// [`AckedSet::insert_range`] for a whole ack: the words the window needs are made ready
    /// once, and a range within one word (the usual case) is one mask.
    fn insert_ranges(
        &mut self,
        ws: u64,
        end: u64,
        ranges: &[(u64, u64)],
        mut on_new: impl FnMut(u64),
    ) -> bool {
        if ws >= end {
            return false;
        }
        if self.count == 0 {
            // Every word is 0: the set restarts at the window.
            self.base = ws;
        }
        // The words up to the window's last number (`base ≤ ws` while a bit is set).
        let Some(last) = (end - 1).checked_sub(self.base) else {
            return false;
        };
        let Ok(need) = usize::try_from(last / 64 + 1) else {
            return false;
        };
        if self.words.len() < need {
            self.words.resize(need, 0);
        }
        let base = self.base;
        let mut any = false;
        for &(l, u) in ranges {
            if l >= end {
                break;
            }
            // Offsets from `base`, cut to the window (no underflow: `ws ≥ base`).
            let lo = l.max(ws) - base;
            let hi = u.min(end - 1) - base;
            if lo > hi {
                continue;
            }
            let (mut w, wh) = ((lo / 64) as usize, (hi / 64) as usize);
            let mut mask = u64::MAX << (lo % 64);
            if w == wh {
                // Within one word (the usual case): one mask, and usually nothing new (most of
                // an ack's ranges are known).
                mask &= u64::MAX >> (63 - hi % 64);
                if let Some(word) = self.words.get_mut(w) {
                    let mut new = mask & !*word;
                    if new != 0 {
                        *word |= mask;
                        any = true;
                        let at = base + 64 * w as u64;
                        while new != 0 {
                            self.count += 1;
                            on_new(at + u64::from(new.trailing_zeros()));
                            new &= new - 1;
                        }
                    }
                }
                continue;
            }
            // The same word walk as `insert_range`'s, on purpose: one helper for both measured
            // slower in the engine harness (1,010 -> 1,057 instructions per ack, BENCHMARKS.md,
            // session 9), and this runs for every acknowledgement.
            loop {
                if w >= wh {
                    mask &= u64::MAX >> (63 - hi % 64);
                }
                let Some(word) = self.words.get_mut(w) else {
                    break;
                };
                let mut new = mask & !*word;
                *word |= mask;
                if new != 0 {
                    any = true;
                    let at = base + 64 * w as u64;
                    while new != 0 {
                        self.count += 1;
                        on_new(at + u64::from(new.trailing_zeros()));
                        new &= new - 1;
                    }
                }
                if w >= wh {
                    break;
                }
                w += 1;
                mask = u64::MAX;
            }
        }
        any
    }

    /// How many consecutive numbers from `ws` (the window start) are set.
    fn leading_run(&self, ws: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let Some(off) = ws.checked_sub(self.base) else {
            return 0;
        };
        let Ok(mut w) = usize::try_from(off / 64) else {
            return 0;
        };
        let b = (off % 64) as u32;
        let Some(&first) = self.words.get(w) else {
            return 0;
        };
        let mut run = u64::from((first >> b).trailing_ones().min(64 - b));
        if run < u64::from(64 - b) {
            return run;
        }
        loop {
            w += 1;
            match self.words.get(w) {
                Some(&word) => {
                    let t = word.trailing_ones();
                    run += u64::from(t);
                    if t < 64 {
                        return run;
                    }
                }
                None => return run,
            }
        }
    }

    /// How many numbers of `lower..=upper` are set.
    fn count_in(&self, lower: u64, upper: u64) -> u64 {
        if self.count == 0 || lower > upper {
            return 0;
        }
        let lower = lower.max(self.base);
        if lower > upper {
            return 0;
        }
        let (Some((wl, bl)), Some((wh, bh))) = (self.position(lower), self.position(upper)) else {
            return 0;
        };
        let mut n = 0;
        for w in wl..=wh.min(self.words.len().saturating_sub(1)) {
            let from = if w == wl { bl } else { 0 };
            let to = if w == wh { bh } else { 63 };
            let mask = (u64::MAX >> (63 - (to - from))) << from;
            if let Some(word) = self.words.get(w) {
                n += u64::from((word & mask).count_ones());
            }
        }
        n
    }

    /// Clears every number ≤ `n`.
    fn remove_through(&mut self, n: u64) {
        if self.count == 0 {
            return;
        }
        let Some(k) = n.checked_add(1).and_then(|k| k.checked_sub(self.base)) else {
            return;
        };
        // Whole words first, then the low bits of the next one.
        let whole = k / 64;
        if whole >= self.words.len() as u64 {
            self.words.fill(0);
            self.count = 0;
            return;
        }
        if whole > 0 {
            // `whole < words.len()`.
            for w in self.words.drain(..whole as usize) {
                self.count -= u64::from(w.count_ones());
            }
            self.base += whole * 64;
        }
        let bits = (k % 64) as u32;
        if bits > 0 {
            if let Some(w) = self.words.first_mut() {
                let low = *w & (u64::MAX >> (64 - bits));
                self.count -= u64::from(low.count_ones());
                *w &= !low;
            }
        }
    }

    /// The set as ascending inclusive ranges (diagnostics and tests).
    fn to_ranges(&self) -> Vec<(u64, u64)> {
        let mut r: Vec<(u64, u64)> = Vec::new();
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let n = self.base + 64 * w as u64 + u64::from(bits.trailing_zeros());
                match r.last_mut() {
                    Some(last) if last.1 + 1 == n => last.1 = n,
                    _ => r.push((n, n)),
                }
                bits &= bits - 1;
            }
        }
        r
    }
}

/// Equal when the same numbers are set (the words may differ in layout).
#[cfg(test)]
impl PartialEq for AckedSet {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.to_ranges() == other.to_ranges()
    }
}

/// Why a transmission could not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceFailure {
    /// A message would exceed 1 + MaxRetryCount transmissions.
    RetryExhausted(u64),
}

/// A transmission chosen by [`Source::poll_next`]: the window entry and whether the message
/// requests an acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transmission {
    idx: usize,
    ack_requested: bool,
}

/// Counters of one outbound sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// First transmissions.
    pub sent: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// Messages acknowledged (for two-way requests: replied).
    pub acknowledged: u64,
}

#[derive(Debug, Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub(crate) struct Source {
    pub id: Option<SequenceId>,
    pub version: RmVersion,
    entries: VecDeque<Entry>,
    in_window: usize,
    /// The numbers of the window entries with `acked` set (selectively acknowledged, or
    /// two-way requests acknowledged but not replied): `handle_ack` compares an ack's ranges
    /// with these instead of walking the window. Empty in the in-order one-way case.
    acked: AckedSet,
    window_start: u64,
    next_number: u64,
    pub window_size: u32,
    max_window: u32,
    ssthresh: u32,
    loss_window: u32,
    startup: bool,
    ca_count: u64,
    quota: i64,
    /// The BufferRemaining of the latest acknowledgement that carried one (two-way requests:
    /// the quota is recomputed from it when a reply arrives, see [`Source::slide_two_way`]).
    last_br: Option<i64>,
    /// How many entries of the window are done but not slid yet (behind one that is not):
    /// the requests without their reply are `in_window − done_in_window`, counted without a
    /// walk over the window.
    done_in_window: usize,
    flow_control: bool,
    mean_rtt_us: i64,
    serr_us: i64,
    timeout_us: i64,
    retry_deadline: Option<Instant>,
    /// When the retry timer last expired (a loss was detected).
    loss_time: Option<Instant>,
    max_rto_us: i64,
    max_retry: u32,
    request_acks: bool,
    check_consistency: bool,
    resend_queue: VecDeque<u64>,
    /// The gSOAP quirk-19 probe chain (see [`Source::probe_past_head`]): the window's messages
    /// from its head through this number drew, in order, an empty answer to a retransmission,
    /// so the destination holds them. Meaningful only while at or past `window_start`.
    probed_through: u64,
    /// When the chain reached `probed_through`: only a copy of the next message sent since
    /// then can extend it.
    probed_at: Option<Instant>,
    /// When an acknowledgement last moved `window_start`, i.e. since when every message before
    /// the head is known to be held by the destination (`None`: nothing has moved it since
    /// the sequence began or was restored; the head has no predecessor in flight). An empty
    /// answer tells the quirk-19 logic something only for a copy sent since then.
    head_since: Option<Instant>,
    /// When the destination last acknowledged anything (an answer came back): a transmission
    /// that failed in the transport after that was lost on its own, not with the destination.
    answered_at: Option<Instant>,
    /// Messages whose last copy (sent at the given time) failed in the transport past
    /// [`FAST_RETRIES`] before the destination answered anything since: retransmitted by the
    /// next acknowledgement, which shows the destination alive (or by the timer, if none
    /// comes). At most one entry per copy that failed.
    lost: Vec<(u64, Instant)>,
    /// A two-way request was queued (or restored) at some point: an entry may be
    /// acknowledged without being done.
    two_way_queued: bool,
    highest_sent: u64,
    pub counters: SourceCounters,
    /// Tests only: every acknowledgement takes the general path (to compare the in-order fast
    /// path with it).
    #[cfg(test)]
    pub general_only: bool,
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Source {
    pub fn new(
        version: RmVersion,
        max_window: u32,
        max_retry: u32,
        flow_control: bool,
        request_acks: bool,
        check_consistency: bool,
    ) -> Self {
        let max_window = max_window.max(1);
        let mut s = Source {
            id: None,
            version,
            entries: VecDeque::new(),
            in_window: 0,
            acked: AckedSet::default(),
            window_start: 1,
            probed_through: 0,
            probed_at: None,
            head_since: None,
            next_number: 1,
            window_size: 1,
            max_window,
            ssthresh: max_window,
            loss_window: max_window,
            startup: true,
            ca_count: 0,
            quota: i64::from(i32::MAX),
            last_br: None,
            done_in_window: 0,
            flow_control,
            mean_rtt_us: 0,
            serr_us: 0,
            timeout_us: 0,
            retry_deadline: None,
            loss_time: None,
            max_rto_us: MAX_RTO_US,
            max_retry,
            request_acks,
            check_consistency,
            resend_queue: VecDeque::new(),
            answered_at: None,
            lost: Vec::new(),
            two_way_queued: false,
            highest_sent: 0,
            counters: SourceCounters::default(),
            #[cfg(test)]
            general_only: false,
        };
        s.set_initial_rtt(UNKNOWN_INITIATION_TIME);
        s
    }

    /// Seeds the RTT estimator with the initiation time (§4.5 step 4).
    pub fn set_initial_rtt(&mut self, rtt: Duration) {
        self.mean_rtt_us = us(rtt).max(1);
        self.serr_us = self.mean_rtt_us / 2;
        self.recompute_timeout();
    }

    fn recompute_timeout(&mut self) {
        self.timeout_us = (self.mean_rtt_us + RTO_SLACK_US)
            .max(self.mean_rtt_us + 4 * self.serr_us)
            .clamp(1, self.max_rto_us);
    }

    /// Caps the (backed-off) retransmission timeout. The sessions use
    /// InactivityTimeout / (2·MaxRetryCount) — the keep-alive interval — so that the
    /// 1 + MaxRetryCount transmissions of a message, not the peer's inactivity timer, decide
    /// when a session gives up (WCF's doubling is unbounded; see docs/engine.md).
    pub fn set_max_rto(&mut self, d: Duration) {
        self.max_rto_us = us(d).clamp(1, MAX_RTO_US);
        self.recompute_timeout();
    }

    /// Current retransmission timeout.
    pub fn rto(&self) -> Duration {
        Duration::from_micros(self.timeout_us.max(0) as u64)
    }

    /// Smoothed RTT in microseconds ([`Source::rtt`] without the `Duration`).
    #[inline]
    pub fn rtt_us(&self) -> u64 {
        self.mean_rtt_us.max(0) as u64
    }

    /// Smoothed RTT (inline: part of the session's inline `stats`).
    #[inline]
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.mean_rtt_us.max(0) as u64)
    }

    /// Number the next enqueued message will get.
    #[allow(dead_code)]
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Highest number transmitted so far (0 if none).
    #[allow(dead_code)]
    pub fn highest_sent(&self) -> u64 {
        self.highest_sent
    }

    /// Highest number assigned (0 if none): the 1.1 "last".
    pub fn last_assigned(&self) -> u64 {
        self.next_number - 1
    }

    /// Remaining flow-control quota.
    #[allow(dead_code)]
    pub fn quota(&self) -> i64 {
        self.quota
    }

    /// Whether the quota is exhausted (fast polling, §4.8).
    /// A request still waiting for its reply does not count: the reply brings a fresh
    /// acknowledgement, so there is nothing to poll for.
    pub fn quota_exhausted(&self) -> bool {
        self.flow_control && self.quota <= 0 && !self.reply_due()
    }

    /// Whether a two-way request in the window is still waiting for its reply.
    fn reply_due(&self) -> bool {
        self.two_way_queued
            && self
                .entries
                .iter()
                .take(self.in_window)
                .any(|e| e.two_way() && !e.replied)
    }

    /// Whether every assigned number is done.
    pub fn all_done(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether messages are waiting to be (re)transmitted now. When not, [`Source::poll_next`]
    /// returns `Ok(None)` and changes nothing (the session checks this first, inline).
    #[inline]
    pub fn has_pending_transmit(&self) -> bool {
        !self.resend_queue.is_empty() || self.can_admit()
    }

    #[inline]
    fn can_admit(&self) -> bool {
        self.in_window < self.entries.len()
            && (self.in_window as u64) < u64::from(self.window_size)
            && (!self.flow_control || self.quota > 0)
    }

    /// Queues a message; returns its number (numbers are consecutive, FIFO).
    pub fn enqueue(
        &mut self,
        action: Action,
        body: Body,
        message_id: Option<Arc<str>>,
        reply_to: Option<Arc<str>>,
        last: bool,
        two_way: bool,
    ) -> Option<u64> {
        if self.next_number > MAX_MESSAGE_NUMBER {
            return None;
        }
        let number = self.next_number;
        self.next_number += 1;
        self.two_way_queued |= two_way;
        self.entries.push_back(Entry {
            number,
            action,
            payload: match body {
                Body::Application(b) => Some(b),
                _ => None,
            },
            message_id,
            reply_to,
            kind: Entry::kind(last, two_way),
            retries: 0,
            last_sent: None,
            rtt_sample_us: NO_SAMPLE,
            acked: false,
            replied: false,
            resend: false,
        });
        Some(number)
    }

    /// Numbers assigned but not yet acknowledged (including queued, never-sent ones).
    pub fn unacknowledged(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|e| !e.done() && !e.last())
            .map(|e| e.number)
            .collect()
    }

    /// Peer quirk (gSOAP 2.8 RM 1.0, docs/interop.md gSOAP quirk 15): the destination accepts
    /// the empty-bodied LastMessage (HTTP 202) but never acknowledges it. When the LastMessage
    /// is the only message left (every application message is acknowledged) and has been
    /// transmitted, it is given up so the close can proceed to TerminateSequence: it carries
    /// no application data and the destination took it. Returns whether it was given up.
    pub fn give_up_last_message(&mut self) -> bool {
        let only_last = self.entries.len() == 1
            && self.in_window == 1
            && self
                .entries
                .front()
                .is_some_and(|e| e.last() && e.last_sent.is_some());
        if !only_last {
            return false;
        }
        self.entries.clear();
        self.in_window = 0;
        self.done_in_window = 0;
        self.acked = AckedSet::default();
        self.window_start += 1;
        self.resend_queue.clear();
        self.retry_deadline = None;
        true
    }

    /// Message `number`'s entry while it is in the window.
    fn in_window_entry(&self, number: u64) -> Option<&Entry> {
        number
            .checked_sub(self.window_start)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.in_window)
            .and_then(|i| self.entries.get(i))
    }

    /// Whether message `number` is a request the destination acknowledged and has not
    /// answered yet.
    pub fn acknowledged_without_reply(&self, number: u64) -> bool {
        self.in_window_entry(number)
            .is_some_and(|e| e.two_way() && e.acked && !e.replied)
    }

    /// Whether message `number` was put on the wire and is not done yet (not acknowledged, or
    /// a request without its reply).
    pub fn is_outstanding(&self, number: u64) -> bool {
        self.in_window_entry(number)
            .is_some_and(|e| !e.done() && e.last_sent.is_some())
    }

    /// The destination answered (an acknowledgement came): it is alive, so the copies that
    /// failed in the transport since its previous answer are retransmitted now (see
    /// [`Source::transport_failed`]), unless acknowledged or sent again meanwhile.
    fn answered(&mut self, now: Instant) {
        self.answered_at = Some(now);
        if self.lost.is_empty() {
            return;
        }
        for (n, sent) in std::mem::take(&mut self.lost) {
            self.resend_copy(n, sent);
        }
    }

    /// The window entry of a message that was put on the wire (`None` outside the window).
    fn sent_entry_mut(&mut self, number: u64) -> Option<&mut Entry> {
        let idx = usize::try_from(number.checked_sub(self.window_start)?).ok()?;
        if idx >= self.in_window {
            return None;
        }
        self.entries.get_mut(idx)
    }

    /// The transport reported that the last transmission of message `number` certainly did
    /// not get through (no HTTP response: connection error, or an intermediary's 5xx other
    /// than a SOAP fault). WCF waits for the retransmission timer; we retransmit at once for
    /// the first [`FAST_RETRIES`] attempts of a message, so a dead peer still meets the
    /// timer's exponential backoff and MaxRetryCount. Past those, as soon as the destination
    /// is known to be alive: at once when it acknowledged something since this copy went out,
    /// else at its next acknowledgement (see [`Source::handle_ack`]). The loss was then this
    /// exchange's alone, and the timer, which only an acknowledgement moving the window
    /// resets, would make a window head lost a few times in a row wait its backed-off interval
    /// (0.4, 0.8, 1.6, 3.2 s …) while the rest of the window stalls behind it (MaxRetryCount
    /// still bounds the message). Returns whether a retransmission was queued now.
    ///
    /// Unknown, done (acknowledged; a request also replied) or already queued messages are
    /// ignored. A request acknowledged without its reply counts: the answer that failed was to
    /// bring the reply, which the destination replays for a copy (wire-protocol.md §4.11);
    /// waiting for the timer cost such a request its backed-off retransmission interval per
    /// failure (0.4, 0.8, 1.6 s … through a lossy intermediary).
    pub fn transport_failed(&mut self, number: u64) -> bool {
        let Some(e) = self.sent_entry_mut(number) else {
            return false;
        };
        let (Some(sent), retries) = (e.last_sent, e.retries) else {
            return false;
        };
        if e.done() || e.resend {
            return false;
        }
        let alive = self.answered_at.is_some_and(|a| a > sent);
        if retries >= FAST_RETRIES && !alive {
            if !self.lost.contains(&(number, sent)) {
                self.lost.push((number, sent));
            }
            return false;
        }
        self.resend_copy(number, sent)
    }

    /// Queues message `number` for retransmission if the copy sent at `sent` is still its
    /// last and it is neither done nor queued already; true if queued (one more retry).
    fn resend_copy(&mut self, number: u64, sent: Instant) -> bool {
        let Some(e) = self.sent_entry_mut(number) else {
            return false;
        };
        if e.done() || e.resend || e.last_sent != Some(sent) {
            return false;
        }
        e.resend = true;
        e.retries = e.retries.saturating_add(1);
        self.resend_queue.push_back(number);
        true
    }

    /// Peer quirk (gSOAP 2.8, docs/interop.md gSOAP quirk 19): a destination that answers a
    /// duplicate with an empty HTTP 202 and never re-acknowledges it over an anonymous
    /// back-channel. If the *retransmitted* window head (one-way) drew such an answer, its
    /// acknowledgement was lost for good; the next message's cumulative acknowledgement will
    /// cover it. So the next message is sent now: retransmitted if it is already in the window,
    /// else admitted although the window collapsed. Returns whether a probe was queued.
    ///
    /// The probe goes on past a probe that drew such an answer too (its acknowledgement was
    /// lost as well; a CI run of 2026-12-07, `wsrm->gsoap rm1.0 one-way proxy`: the answers to
    /// 98 and 99 both went to the proxy's duplicates, and 100 had been discarded out of order,
    /// so probing only with 99 left the session retransmitting 98 and 99 until MaxRetryCount).
    /// Only along the chain: an empty answer means "held" only for a message whose every
    /// predecessor the destination held when it answered (else gSOAP's out-of-order discard
    /// answers the same, quirk 4), so it counts for the head, then for the message after the
    /// last one that counted; and only for a copy `sent` after that was known (the head: since
    /// the acknowledgement that made it the head; the next: since the chain reached its
    /// predecessor). Answers on concurrent connections arrive in any order: a 202 to a copy of
    /// the head that overtook its predecessor can be read after the predecessor's ack. Each
    /// such answer queues at most one probe, and every probe counts as a retry, so
    /// MaxRetryCount still bounds a destination that never acknowledges.
    pub fn probe_past_head(&mut self, now: Instant, number: u64, sent: Instant) -> bool {
        let chained = self.probed_through >= self.window_start
            && number == self.probed_through.saturating_add(1)
            && self.probed_at.is_some_and(|at| sent >= at);
        let head = number == self.window_start && self.sent_since_head(sent);
        if !head && !chained {
            return false;
        }
        let Some(idx) = number
            .checked_sub(self.window_start)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return false;
        };
        if idx >= self.in_window {
            return false;
        }
        let stalled = |e: &Entry| !e.acked && !e.two_way() && !e.last() && e.retries > 0;
        if !self.entries.front().is_some_and(stalled) || !self.entries.get(idx).is_some_and(stalled)
        {
            return false;
        }
        self.probed_through = number;
        self.probed_at = Some(now);
        let next = self
            .entries
            .iter_mut()
            .take(self.in_window)
            .skip(idx + 1)
            .find(|e| !e.done());
        if let Some(e) = next {
            if e.resend {
                return false;
            }
            e.resend = true;
            e.retries = e.retries.saturating_add(1);
            self.resend_queue.push_back(e.number);
            return true;
        }
        // Nothing further in the window: admit the next message although the window collapsed.
        let wider = u32::try_from(self.in_window + 1).unwrap_or(u32::MAX);
        if self.entries.len() > self.in_window
            && self.window_size < wider
            && wider <= self.max_window
        {
            self.window_size = wider;
            return true;
        }
        false
    }

    /// Whether `number`, whose retransmission as the window head drew an empty success answer
    /// (gSOAP quirk 19, see [`Self::probe_past_head`]), is the last message assigned, one-way,
    /// and the only one still unacknowledged: no later message can carry its acknowledgement.
    /// Only for a copy `sent` after its predecessors were known held: a copy that overtook its
    /// predecessor draws the same empty answer when the destination discards it, and ending
    /// the sequence on that (CloseSequence) would lose the message.
    pub fn unprobeable_last(&self, number: u64, sent: Instant) -> bool {
        number == self.window_start
            && self.sent_since_head(sent)
            && number == self.last_assigned()
            && self.entries.len() == 1
            && self.entries.front().is_some_and(|e| {
                e.number == number && !e.acked && !e.two_way() && !e.last() && e.retries > 0
            })
    }

    /// Whether a copy of the window head `sent` then left after every message before the head
    /// was known to be held (see `head_since`).
    fn sent_since_head(&self, sent: Instant) -> bool {
        self.head_since.is_none_or(|h| sent >= h)
    }

    /// Next retry deadline.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_deadline
    }

    fn arm(&mut self, now: Instant) {
        self.retry_deadline = if self.in_window > 0 {
            Some(now + self.rto())
        } else {
            None
        };
    }

    /// Builds the wire message for a transmission [`Source::poll_next`] chose, with `to` and
    /// the (piggy-backed) acknowledgement `ack` the session adds. Written in one piece: the
    /// message (~350 bytes) is not moved field by field through temporaries.
    pub fn build(
        &self,
        t: Transmission,
        to: Option<Arc<str>>,
        ack: Option<AckHeader>,
    ) -> Option<Message> {
        let e = self.entries.get(t.idx)?;
        let id = self.id.as_ref()?;
        Some(Message {
            version: self.version,
            action: e.action.clone(),
            message_id: e.message_id.clone(),
            relates_to: None,
            reply_to: e.reply_to.clone(),
            to,
            sequence: Some(SequenceHeader {
                identifier: id.clone(),
                number: e.number,
                last_message: e.last(),
            }),
            ack,
            ack_requested: t.ack_requested.then(|| id.clone()),
            body: match &e.payload {
                Some(b) => Body::Application(b.clone()),
                None => Body::Empty,
            },
        })
    }

    /// Next message to put on the wire (retransmissions first, then newly admitted messages),
    /// built without `to` or an acknowledgement.
    pub fn poll_send(&mut self, now: Instant) -> Result<Option<Message>, SourceFailure> {
        Ok(match self.poll_next(now)? {
            Some(t) => self.build(t, None, None),
            None => None,
        })
    }

    /// Chooses the next transmission (retransmissions first, then newly admitted messages) and
    /// records it as sent; [`Source::build`] makes the message.
    pub fn poll_next(&mut self, now: Instant) -> Result<Option<Transmission>, SourceFailure> {
        if self.id.is_none() {
            return Ok(None);
        }
        while let Some(n) = self.resend_queue.pop_front() {
            if n < self.window_start {
                continue;
            }
            let idx = (n - self.window_start) as usize;
            if idx >= self.in_window {
                continue;
            }
            let Some(e) = self.entries.get_mut(idx) else {
                continue;
            };
            e.resend = false;
            if e.done() {
                continue;
            }
            if e.retries > self.max_retry {
                return Err(SourceFailure::RetryExhausted(n));
            }
            e.last_sent = Some(now);
            self.counters.retransmitted += 1;
            return Ok(Some(Transmission {
                idx,
                ack_requested: self.request_acks,
            }));
        }
        if !self.can_admit() {
            return Ok(None);
        }
        let idx = self.in_window;
        let ack_req = self.request_acks
            && ((idx as u64) + 1 == u64::from(self.window_size)
                || (self.flow_control && self.quota == 1));
        if self.in_window == 0 {
            self.retry_deadline = Some(now + self.rto());
        }
        self.in_window += 1;
        if self.flow_control {
            self.quota -= 1;
        }
        let Some(e) = self.entries.get_mut(idx) else {
            return Ok(None);
        };
        e.last_sent = Some(now);
        self.highest_sent = self.highest_sent.max(e.number);
        self.counters.sent += 1;
        Ok(Some(Transmission {
            idx,
            ack_requested: ack_req,
        }))
    }

    /// Whether [`Source::handle_timeout`] would act at `now` (the retry timer is due with
    /// messages in the window).
    #[inline]
    pub fn retry_due(&self, now: Instant) -> bool {
        self.retry_deadline.is_some_and(|d| d <= now) && self.in_window > 0
    }

    /// Retry-timer expiry (§4.5 step 3). The check is inlined into the session's
    /// `handle_timeout` (called every turn; the timer is rarely due).
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_due(now) {
            self.retry_timer_expired(now);
        }
    }

    #[inline(never)]
    fn retry_timer_expired(&mut self, now: Instant) {
        let head = self.window_start;
        if let Some(e) = self.entries.front_mut() {
            e.retries = e.retries.saturating_add(1);
            if !e.resend {
                e.resend = true;
                self.resend_queue.push_back(head);
            }
        }
        self.ssthresh = (self.window_size / 2).max(1);
        self.loss_window = self.window_size;
        self.window_size = 1;
        self.timeout_us = (self.timeout_us.saturating_mul(2)).min(self.max_rto_us);
        self.startup = false;
        self.loss_time = Some(now);
        self.retry_deadline = Some(now + self.rto());
    }

    /// Validates and applies an acknowledgement (§4.5 step 5, §4.6). `on_done` is called with
    /// each number that became acknowledged (done) by this ack, ascending, before the window
    /// slides. `Err` carries the fault the session must send (InvalidAcknowledgement).
    pub fn handle_ack(
        &mut self,
        now: Instant,
        ack: &AckHeader,
        mut on_done: impl FnMut(u64),
    ) -> Result<(), Fault> {
        self.answered(now);
        #[cfg(test)]
        let fast = !self.general_only;
        #[cfg(not(test))]
        let fast = true;
        // Fast path: the in-order acknowledgement (one range `1..=u` reaching into the window,
        // nothing acknowledged selectively). It is valid (`u` was sent; a range from 1 leaves
        // out nothing acknowledged before) and acknowledges the window's entries up to `u`, none
        // of which is acknowledged yet (`acked` is empty). When they all become done (one-way
        // messages, replied requests) the window slides exactly over them and `acked` stays
        // empty: the general path's merge walk, its insertion into `acked`, the slide's count
        // and its removal from `acked` are skipped. Same effects as the general path.
        if let [(1, u)] = ack.ranges[..] {
            let ws = self.window_start;
            let end = ws + self.in_window as u64;
            if fast && self.acked.is_empty() && ws <= u && u < end && u <= self.highest_sent {
                let br = if self.flow_control {
                    ack.buffer_remaining.map(i64::from)
                } else {
                    None
                };
                // `u < end`: at most `in_window` entries, all present.
                let n = (u - ws + 1) as usize;
                let mut newly_done = 0u64;
                let mut all_done = true;
                for e in self.entries.iter_mut().take(n) {
                    if e.acknowledge(now) {
                        newly_done += 1;
                        on_done(e.number);
                    }
                    all_done &= e.done();
                }
                self.counters.acknowledged += newly_done;
                self.done_in_window += newly_done as usize;
                if all_done && !self.two_way_queued {
                    // Entry `n` (if any) is not acknowledged, hence not done: the slide is `n`.
                    self.slide_by(now, br, n);
                } else {
                    // (With two-way requests queued the quota is the general path's too.)
                    // Two-way requests acknowledged but not replied stay in the window.
                    self.acked.insert_range(ws, ws, u, |_| {});
                    self.slide(now, br);
                }
                return Ok(());
            }
        }
        // One pass over the ranges as received: each is sane and within what was sent
        // (nothing above the highest number sent), whether they are already in the form a
        // set keeps them (WCF and this engine write them so), and how many of them lie below
        // the window.
        let ws = self.window_start;
        let mut canonical = true;
        let mut below = 0usize;
        // A range must start above this (the previous range's upper end + 1; 0 at first).
        let mut start_above = 0u64;
        for &(l, u) in &ack.ranges {
            if l == 0 || l > u || u > self.highest_sent {
                tracing::warn!(
                    ranges = ?ack.ranges,
                    highest_sent = self.highest_sent,
                    "acknowledgement of a number never sent: InvalidAcknowledgement"
                );
                return Err(Fault::invalid_acknowledgement(ack.clone()));
            }
            canonical &= l > start_above;
            start_above = u.saturating_add(1);
            below += usize::from(u < ws);
        }
        debug_assert_eq!(canonical, is_canonical(&ack.ranges));
        // The ranges as a set: as received when they already are one, else normalized (a
        // peer may send them unsorted or overlapping).
        let normalized;
        let (ranges, first): (&[(u64, u64)], usize) = if canonical {
            (&ack.ranges, below)
        } else {
            normalized = RangeSet::from_ranges(&ack.ranges);
            let r = normalized.ranges();
            (r, r.partition_point(|&(_, u)| u < ws))
        };
        let cum = ws - 1;
        // One past the window's last number (numbers never exceed 2^63 − 1: no overflow).
        let end = ws + self.in_window as u64;
        // The ranges reaching into the window (ranges below it acknowledge nothing new), cut
        // to the window.
        let in_window = ranges.get(first..).unwrap_or(&[]);
        let clipped = in_window
            .iter()
            .take_while(|&&(l, _)| l < end)
            .map(|&(l, u)| (l.max(ws), u.min(end - 1)))
            .filter(|&(l, u)| l <= u);
        // The consistency check: an ack that acknowledges something new (a number of the window
        // not acknowledged yet) while leaving out something acknowledged before (below the
        // window, or in `acked`) is invalid. `acked` lies within the window, so it is within
        // the ack's ranges when they cover as many of its numbers as it has, and the ack
        // acknowledges something new when its ranges in the window hold more numbers than that.
        if self.check_consistency {
            let (mut covered, mut total) = (0u64, 0u64);
            for (l, u) in clipped.clone() {
                covered += self.acked.count_in(l, u);
                total += u - l + 1;
            }
            let missing =
                cum > 0 && !slice_contains_range(ranges, 1, cum) || covered != self.acked.count;
            let new = total != covered;
            if new && missing {
                tracing::warn!(
                    ranges = ?ack.ranges,
                    window_start = ws,
                    in_window = self.in_window,
                    acknowledged_in_window = ?self.acked.to_ranges(),
                    "acknowledgement leaves out numbers acknowledged before: InvalidAcknowledgement"
                );
                return Err(Fault::invalid_acknowledgement(ack.clone()));
            }
        }
        let br = if self.flow_control {
            ack.buffer_remaining.map(i64::from)
        } else {
            None
        };
        // Mark the window entries the ranges cover that were not acknowledged yet (entry i
        // holds number window_start + i), ascending, as they are added to `acked`.
        let mut newly_done = 0u64;
        let entries = &mut self.entries;
        let newly_acked = self.acked.insert_ranges(ws, end, in_window, |n| {
            // Within the window: every index is an entry.
            if let Some(e) = entries.get_mut((n - ws) as usize) {
                if e.acknowledge(now) {
                    newly_done += 1;
                    on_done(e.number);
                }
            }
        });
        self.done_in_window += newly_done as usize;
        if !newly_acked {
            // Old news; refresh quota when the ack ends at windowStart − 1.
            if let Some(br) = br {
                if ranges.last().map(|r| r.1) == Some(cum) && br > self.quota {
                    self.quota =
                        br - (u64::from(self.window_size).min(self.in_window as u64)) as i64;
                }
            }
            return Ok(());
        }
        self.counters.acknowledged += newly_done;
        self.slide(now, br);
        Ok(())
    }

    /// Marks a two-way request as replied; returns whether it thereby became done.
    pub fn mark_replied(&mut self, now: Instant, number: u64) -> bool {
        let Some(e) = self.sent_entry_mut(number) else {
            return false;
        };
        if e.replied || !e.two_way() {
            return false;
        }
        e.replied = true;
        // A reply carries the ack for its request (§4.11); it is validated separately.
        let newly_acked = !e.acked;
        e.acked = true;
        e.note_done(now);
        if newly_acked {
            self.acked
                .insert_range(self.window_start, number, number, |_| {});
        }
        self.counters.acknowledged += 1;
        // Not done before (a request without its reply), done now.
        self.done_in_window += 1;
        self.slide(now, None);
        true
    }

    fn slide(&mut self, now: Instant, br: Option<i64>) {
        if self.two_way_queued {
            self.slide_two_way(now, br);
            return;
        }
        // The leading done entries of the window. Without two-way requests an entry is done
        // when it is acknowledged, and the acknowledged entries are `acked`'s numbers: the run
        // of them from the window start is the count, without a walk over the entries.
        let slide = usize::try_from(self.acked.leading_run(self.window_start))
            .unwrap_or(usize::MAX)
            .min(self.in_window);
        if slide == 0 {
            return;
        }
        self.slide_by(now, br, slide);
    }

    /// [`Source::slide`] with two-way requests queued: an entry is done when acknowledged and
    /// replied, so the leading done entries are counted with a walk.
    ///
    /// The BufferRemaining quota (wire-protocol.md §4.5 step 5) is then the latest
    /// BufferRemaining less the requests in the window still without their reply, recomputed on
    /// every acknowledgement and every reply. WCF slides its request window on the
    /// acknowledgement alone and counts from there; this engine's used to set no quota at all
    /// (a request stays in the window until its reply, and the slide that a reply makes carried
    /// no BufferRemaining). Either way a client whose window is wider than the service's kept
    /// requests in flight beyond what the service takes: a service holds at most its window of
    /// unacknowledged replies (§4.11), and a reply is acknowledged only by a later request, so
    /// each request sent while the replies of a full window are on their way is dropped (HTTP
    /// 202) and waits for its retransmission (a client of window 8 against a service of window
    /// 1: ~10 requests a second, one retransmission per request in three). Counting every
    /// unreplied request keeps the client within the service's window.
    fn slide_two_way(&mut self, now: Instant, br: Option<i64>) {
        if br.is_some() {
            self.last_br = br;
        }
        let slide = self
            .entries
            .iter()
            .take(self.in_window)
            .take_while(|e| e.done())
            .count();
        if slide > 0 {
            self.slide_by(now, None, slide);
        }
        if let Some(br) = self.last_br {
            let open = self.in_window.saturating_sub(self.done_in_window);
            self.quota = br - open as i64;
        }
    }

    /// Slides the window over its first `slide` entries, which must be done while the next
    /// one in the window is not ([`Source::slide`] counts them; the in-order acknowledgement
    /// knows the count without the walk).
    fn slide_by(&mut self, now: Instant, br: Option<i64>, slide: usize) {
        let old_start = self.window_start;
        let old_ws = self.window_size;
        if let Some(br) = br {
            let inflight = u64::from(self.window_size).min(self.in_window as u64) as i64;
            self.quota = br - (inflight - slide as i64).max(0);
        }
        for _ in 0..slide {
            // The sample is read in place and the entry dropped where it lies: moving it out
            // first (`pop_front` into a binding) copied it twice.
            let Some(e) = self.entries.front() else { break };
            if let Some(m) = e.slide_sample(now) {
                let err = m - self.mean_rtt_us;
                self.serr_us += (err.abs() - self.serr_us) / 8;
                self.mean_rtt_us += err / 8;
                self.mean_rtt_us = self.mean_rtt_us.max(1);
            }
            self.entries.pop_front();
        }
        self.recompute_timeout();
        self.in_window -= slide;
        self.done_in_window = self.done_in_window.saturating_sub(slide);
        self.window_start += slide as u64;
        if slide > 0 {
            self.head_since = Some(now);
        }
        // Every entry slid over was done, hence acknowledged: out of `acked` (nothing to do
        // when it is empty, as in order).
        if !self.acked.is_empty() {
            self.acked.remove_through(self.window_start - 1);
        }
        // Window growth.
        if self.window_size <= self.ssthresh {
            self.window_size = self
                .max_window
                .min(self.ssthresh.saturating_add(1))
                .min(self.window_size.saturating_add(slide as u32));
        } else {
            self.ca_count += slide as u64;
            let segment = (u64::from(self.loss_window.saturating_sub(self.ssthresh)) / 8).max(1);
            let thresh =
                u64::from(self.window_size - self.ssthresh) * u64::from(self.window_size) / segment;
            if self.ca_count > thresh {
                self.ca_count = 0;
                self.window_size = self.max_window.min(self.window_size + 1);
            }
        }
        // Go-back-N after a loss (slow start), nothing in the loss-free case.
        let s = if !self.startup && self.window_size <= self.ssthresh {
            0
        } else {
            (old_start + u64::from(old_ws)).saturating_sub(self.window_start) as usize
        };
        // Only messages last sent before the loss was detected are presumed lost; a message
        // sent since is still in flight and is left to the timer.
        let end = (self.window_size as usize).min(self.in_window);
        let loss_time = self.loss_time;
        for idx in s..end {
            if let Some(e) = self.entries.get_mut(idx) {
                let stale = match (e.last_sent, loss_time) {
                    (Some(t), Some(l)) => t <= l,
                    _ => true,
                };
                let wanted = !e.done() && (!e.acked || e.two_way());
                if stale && wanted && !e.resend {
                    e.resend = true;
                    e.retries = e.retries.saturating_add(1);
                    self.resend_queue.push_back(e.number);
                }
            }
        }
        self.arm(now);
    }
}

// Durable sessions (issue 6): rebuilding a source from a stored snapshot.
impl Source {
    /// Restores numbering and the unacknowledged messages (ascending, all below
    /// `next_number`) after a restart: every number from the lowest unacknowledged one up to
    /// `next_number − 1` is in the window (numbers missing from `unacked` count as
    /// acknowledged), and the unacknowledged ones are queued for retransmission.
    pub(crate) fn restore(
        &mut self,
        now: Instant,
        next_number: u64,
        unacked: Vec<crate::snapshot::SnapshotMessage>,
    ) {
        let next_number = next_number.max(1);
        let start = unacked.first().map_or(next_number, |m| m.number);
        self.entries.clear();
        self.resend_queue.clear();
        self.window_start = start;
        self.probed_through = 0;
        self.probed_at = None;
        self.head_since = None;
        self.next_number = next_number;
        self.highest_sent = next_number - 1;
        let mut it = unacked.into_iter().peekable();
        for n in start..next_number {
            let m = it.next_if(|m| m.number == n);
            let acked = m.is_none();
            let (action, payload, message_id) = match m {
                Some(m) => (Action::Other(m.action), Some(m.payload), m.message_id),
                None => (Action::Other(Arc::from("")), None, None),
            };
            // Two-way requests are the ones with a MessageID (replies relate to it).
            let two_way = message_id.is_some();
            self.two_way_queued |= two_way;
            self.entries.push_back(Entry {
                number: n,
                action,
                payload,
                message_id,
                reply_to: None,
                kind: Entry::kind(false, two_way),
                retries: 0,
                last_sent: None,
                acked,
                replied: false,
                resend: !acked,
                rtt_sample_us: NO_SAMPLE,
            });
            if !acked {
                self.resend_queue.push_back(n);
            }
        }
        self.in_window = self.entries.len();
        self.done_in_window = self.entries.iter().filter(|e| e.done()).count();
        self.acked = AckedSet::default();
        for e in self.entries.iter().filter(|e| e.acked) {
            self.acked.insert_range(start, e.number, e.number, |_| {});
        }
        self.window_size = (self.in_window as u32).clamp(1, self.max_window);
        self.startup = false;
        self.ssthresh = self.window_size;
        // The restart is the loss: the restored messages are queued above; a message sent
        // after it is in flight, not presumed lost by the go-back-N of a later slide (without
        // this, every slide re-sent the messages just sent).
        self.loss_time = Some(now);
        self.arm(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Membership tests of ascending numbers against sorted, disjoint ranges, in one pass (the
    /// reference `handle_ack` walks the window's entries with it).
    struct Ascending<'a> {
        ranges: &'a [(u64, u64)],
        next: usize,
    }

    impl<'a> Ascending<'a> {
        fn new(ranges: &'a [(u64, u64)]) -> Self {
            Ascending { ranges, next: 0 }
        }

        /// Whether `n` is in a range; `n` must not be smaller than the previous call's.
        fn contains(&mut self, n: u64) -> bool {
            while let Some(&(_, upper)) = self.ranges.get(self.next) {
                if upper >= n {
                    break;
                }
                self.next += 1;
            }
            self.ranges
                .get(self.next)
                .is_some_and(|&(lower, _)| lower <= n)
        }
    }

    #[test]
    fn ascending_cursor_matches_a_search() {
        let ranges = [(2, 4), (7, 7), (10, 12)];
        let mut c = Ascending::new(&ranges);
        let got: Vec<u64> = (1..=14).filter(|&n| c.contains(n)).collect();
        assert_eq!(got, vec![2, 3, 4, 7, 10, 11, 12]);
        let mut empty = Ascending::new(&[]);
        assert!(!empty.contains(1));
    }

    fn src(window: u32) -> Source {
        let mut s = Source::new(RmVersion::Wsrm10, window, 8, true, true, true);
        s.id = Some(SequenceId::from("s"));
        s
    }

    fn push(s: &mut Source, n: usize) {
        push_kind(s, n, false);
    }

    /// Queues `n` messages, two-way requests when `two_way`.
    fn push_kind(s: &mut Source, n: usize, two_way: bool) {
        for _ in 0..n {
            s.enqueue(
                Action::Other("a".into()),
                Body::Application(Bytes::from_static(b"x")),
                None,
                None,
                false,
                two_way,
            );
        }
    }

    fn ack(r: &[(u64, u64)], br: Option<u32>) -> AckHeader {
        AckHeader {
            identifier: SequenceId::from("s"),
            ranges: r.to_vec(),
            buffer_remaining: br,
            ..AckHeader::default()
        }
    }

    fn sent_numbers(s: &mut Source, now: Instant) -> Vec<(u64, bool)> {
        let mut v = vec![];
        while let Ok(Some(m)) = s.poll_send(now) {
            let seq = m.sequence.unwrap();
            v.push((seq.number, m.ack_requested.is_some()));
        }
        v
    }

    #[test]
    fn after_a_restore_messages_sent_later_are_not_resent_by_the_next_slide() {
        let t = Instant::now();
        // A window at its maximum when restarted (the request-reply window of 8 in practice):
        // each slide then goes back N over the window.
        let mut s = src(3);
        // Restarted with 1..=3 unacknowledged and 4 the next number.
        let stored = (1..=3)
            .map(|n| crate::snapshot::SnapshotMessage {
                number: n,
                action: "a".into(),
                payload: Bytes::from_static(b"x"),
                message_id: None,
            })
            .collect();
        s.restore(t, 4, stored);
        assert_eq!(
            sent_numbers(&mut s, t)
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // The restored head is acknowledged (the window slides and has room); new messages
        // after the restart go out.
        let t1 = t + Duration::from_millis(1);
        s.handle_ack(t1, &ack(&[(1, 1)], None), |_| {}).unwrap();
        push(&mut s, 2);
        let new: Vec<u64> = sent_numbers(&mut s, t1).iter().map(|x| x.0).collect();
        assert!(new.contains(&4), "{new:?}");
        // The next slide: messages sent after the restart are in flight, not presumed lost.
        let t2 = t + Duration::from_millis(2);
        s.handle_ack(t2, &ack(&[(1, 2)], None), |_| {}).unwrap();
        let again: Vec<u64> = sent_numbers(&mut s, t2).iter().map(|x| x.0).collect();
        assert!(
            !again.iter().any(|n| new.contains(n)),
            "resent at once: {again:?} (sent after the restore: {new:?})"
        );
    }

    #[test]
    fn window_starts_at_one_and_first_message_requests_ack() {
        let t = Instant::now();
        let mut s = src(8);
        push(&mut s, 5);
        assert_eq!(sent_numbers(&mut s, t), vec![(1, true)]);
        s.handle_ack(t, &ack(&[(1, 1)], None), |_| {}).unwrap();
        // slow start: window 2, the window-filling message requests an ack.
        assert_eq!(sent_numbers(&mut s, t), vec![(2, false), (3, true)]);
        s.handle_ack(t, &ack(&[(1, 3)], None), |_| {}).unwrap();
        assert_eq!(s.window_size, 4);
    }

    #[test]
    fn rto_is_max_rtt_plus_400ms_or_3rtt_and_doubles() {
        let mut s = src(8);
        s.set_initial_rtt(Duration::from_millis(100));
        assert_eq!(s.rto(), Duration::from_millis(500));
        s.set_initial_rtt(Duration::from_millis(1000));
        assert_eq!(s.rto(), Duration::from_millis(3000));
        let t = Instant::now();
        push(&mut s, 1);
        sent_numbers(&mut s, t);
        s.handle_timeout(t + Duration::from_millis(3000));
        assert_eq!(s.rto(), Duration::from_millis(6000));
    }

    #[test]
    fn max_retry_count_allows_one_plus_max_transmissions() {
        let mut t = Instant::now();
        let mut s = src(8);
        push(&mut s, 1);
        let mut transmissions = 0;
        loop {
            match s.poll_send(t) {
                Ok(Some(_)) => transmissions += 1,
                Ok(None) => {
                    t = s.poll_timeout().unwrap();
                    s.handle_timeout(t);
                }
                Err(SourceFailure::RetryExhausted(n)) => {
                    assert_eq!(n, 1);
                    break;
                }
            }
        }
        assert_eq!(transmissions, 9);
    }

    #[test]
    fn selective_ack_is_never_resent_and_timeout_collapses_window() {
        let t = Instant::now();
        let mut s = src(8);
        push(&mut s, 4);
        sent_numbers(&mut s, t);
        s.handle_ack(t, &ack(&[(1, 1)], None), |_| {}).unwrap();
        assert_eq!(sent_numbers(&mut s, t), vec![(2, false), (3, true)]);
        // #2 lost, #3 selectively acknowledged.
        s.handle_ack(t, &ack(&[(1, 1), (3, 3)], None), |_| {})
            .unwrap();
        let d = s.poll_timeout().unwrap();
        s.handle_timeout(d);
        assert_eq!(s.window_size, 1);
        assert_eq!(sent_numbers(&mut s, d), vec![(2, true)]);
        s.handle_ack(d, &ack(&[(1, 3)], None), |_| {}).unwrap();
        // #3 was not resent; #4 goes out next.
        assert_eq!(sent_numbers(&mut s, d).first().map(|x| x.0), Some(4));
        assert_eq!(s.counters.retransmitted, 1);
    }

    #[test]
    fn rtt_sample_is_taken_at_acknowledgement_not_at_slide() {
        // A message selectively acknowledged behind a lost head must not report the head's
        // recovery time as its round trip (that drove the timeout up under loss).
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut s = src(8);
        s.set_initial_rtt(ms(10));
        push(&mut s, 3);
        sent_numbers(&mut s, t);
        s.handle_ack(t + ms(10), &ack(&[(1, 1)], None), |_| {})
            .unwrap();
        assert_eq!(
            sent_numbers(&mut s, t + ms(10)),
            vec![(2, false), (3, true)]
        );
        // #2 lost; #3 acknowledged 10 ms after it was sent.
        s.handle_ack(t + ms(20), &ack(&[(1, 1), (3, 3)], None), |_| {})
            .unwrap();
        let d = s.poll_timeout().unwrap();
        s.handle_timeout(d);
        assert_eq!(sent_numbers(&mut s, d), vec![(2, true)]);
        s.handle_ack(d + ms(10), &ack(&[(1, 3)], None), |_| {})
            .unwrap();
        // Every sample was 10 ms: the mean stays 10 ms, not the ~400 ms recovery of #2.
        assert_eq!(s.rtt(), ms(10));
    }

    #[test]
    fn invalid_acknowledgement_for_unsent_number() {
        let t = Instant::now();
        let mut s = src(8);
        push(&mut s, 3);
        sent_numbers(&mut s, t);
        let f = s.handle_ack(t, &ack(&[(1, 5)], None), |_| {}).unwrap_err();
        assert_eq!(f.kind, crate::msg::FaultKind::InvalidAcknowledgement);
    }

    #[test]
    fn invalid_acknowledgement_for_shrinking_ack_but_stale_ack_ignored() {
        let t = Instant::now();
        let mut s = src(8);
        push(&mut s, 4);
        for _ in 0..4 {
            sent_numbers(&mut s, t);
            let hs = s.highest_sent();
            if hs >= 3 {
                break;
            }
            s.handle_ack(t, &ack(&[(1, hs)], None), |_| {}).unwrap();
        }
        s.handle_ack(t, &ack(&[(1, 3)], None), |_| {}).unwrap();
        sent_numbers(&mut s, t);
        assert_eq!(s.highest_sent(), 4);
        // Stale: [2-3] acknowledges nothing new → ignored.
        assert!(s.handle_ack(t, &ack(&[(2, 3)], None), |_| {}).is_ok());
        // [2-4] acknowledges 4 but no longer 1 → InvalidAcknowledgement.
        let f = s.handle_ack(t, &ack(&[(2, 4)], None), |_| {}).unwrap_err();
        assert_eq!(f.kind, crate::msg::FaultKind::InvalidAcknowledgement);
    }

    #[test]
    fn buffer_remaining_quota_stops_sending() {
        let t = Instant::now();
        let mut s = src(8);
        push(&mut s, 10);
        sent_numbers(&mut s, t);
        // ack [1-1] B=1, nothing else in flight → quota 1.
        s.handle_ack(t, &ack(&[(1, 1)], Some(1)), |_| {}).unwrap();
        assert_eq!(s.quota(), 1);
        // The message using the last unit of quota requests an ack.
        assert_eq!(sent_numbers(&mut s, t), vec![(2, true)]);
        assert!(s.quota_exhausted());
        s.handle_ack(t, &ack(&[(1, 2)], Some(0)), |_| {}).unwrap();
        assert_eq!(sent_numbers(&mut s, t), vec![]);
        // An old-news ack with more room reopens the quota.
        s.handle_ack(t, &ack(&[(1, 2)], Some(3)), |_| {}).unwrap();
        assert_eq!(s.quota(), 3);
    }

    #[test]
    fn buffer_remaining_quota_counts_requests_until_their_replies() {
        let t = Instant::now();
        let mut s = src(8);
        let numbers =
            |s: &mut Source| -> Vec<u64> { sent_numbers(s, t).into_iter().map(|x| x.0).collect() };
        push_kind(&mut s, 10, true);
        // Slow start: request 1 alone. Its reply carries B=1: the ack leaves request 1 in
        // the window (quota 0), the reply takes it out (quota 1).
        assert_eq!(numbers(&mut s), vec![1]);
        s.handle_ack(t, &ack(&[(1, 1)], Some(1)), |_| {}).unwrap();
        assert_eq!(s.quota(), 0);
        assert!(s.mark_replied(t, 1));
        assert_eq!(s.quota(), 1);
        // One request at a time, as the service takes them, although the window has grown.
        assert_eq!(numbers(&mut s), vec![2]);
        assert_eq!(s.quota(), 0);
        assert_eq!(numbers(&mut s), Vec::<u64>::new());
        // No polling for the quota while a reply is due: it brings the next ack.
        assert!(!s.quota_exhausted());
        s.handle_ack(t, &ack(&[(1, 2)], Some(1)), |_| {}).unwrap();
        assert!(s.mark_replied(t, 2));
        assert_eq!(numbers(&mut s), vec![3]);
        // More room: B less the requests without their reply.
        s.handle_ack(t, &ack(&[(1, 3)], Some(4)), |_| {}).unwrap();
        assert_eq!(s.quota(), 3);
        assert!(s.mark_replied(t, 3));
        assert_eq!(s.quota(), 4);
        assert_eq!(numbers(&mut s), vec![4, 5, 6, 7]);
        assert_eq!(s.quota(), 0);
        // A reply overtaking earlier ones frees one slot, not the earlier ones'.
        s.handle_ack(t, &ack(&[(1, 7)], Some(4)), |_| {}).unwrap();
        assert!(s.mark_replied(t, 7));
        assert_eq!(s.quota(), 1);
    }

    #[test]
    fn a_failed_exchange_of_an_acknowledged_request_without_reply_retransmits_at_once() {
        let t = Instant::now();
        let mut s = src(8);
        push_kind(&mut s, 1, true);
        push_kind(&mut s, 1, false);
        assert_eq!(sent_numbers(&mut s, t).len(), 1);
        // Request 1 acknowledged, its reply lost with the answer: retransmitted at once, up to
        // FAST_RETRIES times in all.
        s.handle_ack(t, &ack(&[(1, 1)], None), |_| {}).unwrap();
        for _ in 0..FAST_RETRIES {
            assert!(s.transport_failed(1));
            assert!(!s.transport_failed(1), "already queued");
            assert_eq!(sent_numbers(&mut s, t).first().map(|x| x.0), Some(1));
        }
        assert!(!s.transport_failed(1), "then the timer's backoff");
        // Replied: done, nothing to resend; an acknowledged one-way message likewise.
        assert!(s.mark_replied(t, 1));
        assert!(!s.transport_failed(1));
        assert_eq!(sent_numbers(&mut s, t).first().map(|x| x.0), Some(2));
        s.handle_ack(t, &ack(&[(1, 2)], None), |_| {}).unwrap();
        assert!(!s.transport_failed(2));
    }

    /// A window head whose exchanges keep failing in the transport while the destination
    /// acknowledges the rest of the window (a lossy intermediary answering 502): each failure
    /// past FAST_RETRIES is retransmitted at once too, since the destination answered after
    /// the copy went out; MaxRetryCount still ends it. A destination that answers nothing gets
    /// FAST_RETRIES, then the timer.
    #[test]
    fn a_head_lost_while_the_destination_answers_is_retransmitted_at_once_to_max_retry_count() {
        let ms = Duration::from_millis(1);
        let mut t = Instant::now();
        let mut s = src(4);
        s.window_size = 4;
        push(&mut s, 4);
        assert_eq!(sent_numbers(&mut s, t).len(), 4);
        for retry in 1..=8 {
            t += ms;
            s.handle_ack(t, &ack(&[(2, 4)], None), |_| {}).unwrap();
            assert!(s.transport_failed(1), "failure {retry}");
            t += ms;
            let m = s.poll_send(t).unwrap().unwrap();
            assert_eq!(m.sequence.unwrap().number, 1);
        }
        t += ms;
        s.handle_ack(t, &ack(&[(2, 4)], None), |_| {}).unwrap();
        assert!(s.transport_failed(1));
        assert!(matches!(
            s.poll_send(t),
            Err(SourceFailure::RetryExhausted(1))
        ));

        let mut t = Instant::now();
        let mut s = src(4);
        s.window_size = 4;
        push(&mut s, 4);
        assert_eq!(sent_numbers(&mut s, t).len(), 4);
        for failure in 1..=FAST_RETRIES {
            t += ms;
            assert!(s.transport_failed(1), "failure {failure}");
            let sent: Vec<u64> = sent_numbers(&mut s, t).iter().map(|x| x.0).collect();
            assert_eq!(sent, vec![1]);
        }
        assert!(!s.transport_failed(1), "no answer since: not at once");
        assert!(!s.transport_failed(1), "remembered once");
        assert_eq!(s.lost.len(), 1);
        // The destination's next answer shows it alive: the lost copy goes again.
        t += ms;
        s.handle_ack(t, &ack(&[(2, 4)], None), |_| {}).unwrap();
        assert!(s.lost.is_empty());
        let sent: Vec<u64> = sent_numbers(&mut s, t).iter().map(|x| x.0).collect();
        assert_eq!(sent, vec![1]);
        // A copy the timer sent meanwhile is not doubled by a later answer.
        t += ms;
        assert!(!s.transport_failed(1));
        let fire = s.poll_timeout().unwrap();
        s.handle_timeout(fire);
        let sent: Vec<u64> = sent_numbers(&mut s, fire).iter().map(|x| x.0).collect();
        assert_eq!(sent, vec![1]);
        s.handle_ack(fire, &ack(&[(2, 4)], None), |_| {}).unwrap();
        assert!(sent_numbers(&mut s, fire).is_empty());
    }

    /// The acknowledgement handling as it was before the fast path (a set built per ack, two
    /// walks over the window), kept as the reference `handle_ack` must equal.
    fn handle_ack_reference(
        s: &mut Source,
        now: Instant,
        ack: &AckHeader,
    ) -> Result<Vec<u64>, Fault> {
        s.answered(now);
        let mut newly_done = Vec::new();
        for &(l, u) in &ack.ranges {
            if l == 0 || l > u || u > s.highest_sent {
                return Err(Fault::invalid_acknowledgement(ack.clone()));
            }
        }
        let set = RangeSet::from_ranges(&ack.ranges);
        let cum = s.window_start - 1;
        let mut missing = cum > 0 && !set.contains_range(1, cum);
        let mut new = false;
        let mut cursor = Ascending::new(set.ranges());
        for e in s.entries.iter().take(s.in_window) {
            let c = cursor.contains(e.number);
            if e.acked && !c {
                missing = true;
            }
            if !e.acked && c {
                new = true;
            }
        }
        if new && missing && s.check_consistency {
            return Err(Fault::invalid_acknowledgement(ack.clone()));
        }
        let br = if s.flow_control {
            ack.buffer_remaining.map(i64::from)
        } else {
            None
        };
        if !new {
            if let Some(br) = br {
                if set.max() == Some(cum) && br > s.quota {
                    s.quota = br - (u64::from(s.window_size).min(s.in_window as u64)) as i64;
                }
            }
            return Ok(newly_done);
        }
        let mut cursor = Ascending::new(set.ranges());
        for e in s.entries.iter_mut().take(s.in_window) {
            if !e.acked && cursor.contains(e.number) {
                e.acked = true;
                s.acked
                    .insert_range(s.window_start, e.number, e.number, |_| {});
                e.note_done(now);
                if e.done() {
                    newly_done.push(e.number);
                }
            }
        }
        s.counters.acknowledged += newly_done.len() as u64;
        s.done_in_window += newly_done.len();
        s.slide(now, br);
        Ok(newly_done)
    }

    /// `acked` holds exactly the numbers of the window entries marked acknowledged.
    fn check_acked_set(s: &Source) {
        let mut expect = RangeSet::new();
        for e in s.entries.iter().take(s.in_window).filter(|e| e.acked) {
            expect.insert(e.number);
        }
        assert_eq!(
            s.acked.to_ranges(),
            expect.ranges(),
            "acked out of step with the window"
        );
        assert_eq!(s.acked.count, expect.count(), "acked count out of step");
        assert_eq!(
            s.done_in_window,
            s.entries
                .iter()
                .take(s.in_window)
                .filter(|e| e.done())
                .count(),
            "done_in_window out of step"
        );
        assert!(s.entries.iter().skip(s.in_window).all(|e| !e.acked));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue {
            two_way: bool,
        },
        /// Up to `k` × the run's send scale transmissions.
        Send(u8),
        /// `mode` 0: the pairs as given (often invalid); 1: mapped into 1..=highest sent,
        /// unsorted; 2: mapped and canonical (the fast path); 3: cumulative `1..=x` plus an
        /// optional selective range; 4: a destination's ack (the mapped pairs added to what
        /// the destination received, the ack is all it received); 5: an earlier ack of the
        /// destination again (acks overtaking each other on concurrent HTTP exchanges).
        Ack {
            pairs: Vec<(u8, u8)>,
            mode: u8,
            br: Option<u8>,
        },
        Timeout,
        Advance(u8),
        TransportFailed(u8),
        Replied(u8),
        Probe(u8),
    }

    /// Operations; `model` weighs the destination's acks (modes 4 and 5) against the others
    /// (3), `timeouts` the retry timer's expiry.
    fn op(model: u32, timeouts: u32) -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<bool>().prop_map(|two_way| Op::Enqueue { two_way }),
            3 => (1u8..6).prop_map(Op::Send),
            6 => (
                proptest::collection::vec((any::<u8>(), any::<u8>()), 0..4),
                prop_oneof![3 => 0u8..4, model => 4u8..6],
                proptest::option::of(0u8..10),
            )
                .prop_map(|(pairs, mode, br)| Op::Ack { pairs, mode, br }),
            timeouts => Just(Op::Timeout),
            2 => (1u8..50).prop_map(Op::Advance),
            1 => any::<u8>().prop_map(Op::TransportFailed),
            1 => any::<u8>().prop_map(Op::Replied),
            1 => any::<u8>().prop_map(Op::Probe),
        ]
    }

    /// The destination side of the model: what it received and the acks it wrote.
    #[derive(Default)]
    struct Receiver {
        received: RangeSet,
        acks: Vec<Vec<(u64, u64)>>,
    }

    fn ack_ranges(
        hs: u64,
        cum: u64,
        pairs: &[(u8, u8)],
        mode: u8,
        acked: &[(u64, u64)],
        rx: &mut Receiver,
    ) -> Vec<(u64, u64)> {
        let hs1 = hs.max(1);
        // Spread over 1..=hs1 even when hs1 is far above 255.
        let map = |a: u8, b: u8| {
            let l = 1 + (u64::from(a) * hs1 / 256 + u64::from(a)) % hs1;
            let u = l + u64::from(b) % 8 % (hs1 - l + 1);
            (l, u)
        };
        match mode {
            0 => pairs
                .iter()
                .map(|&(a, b)| (u64::from(a % 24), u64::from(b % 24)))
                .collect(),
            1 => pairs.iter().map(|&(a, b)| map(a, b)).collect(),
            2 => {
                let v: Vec<(u64, u64)> = pairs.iter().map(|&(a, b)| map(a, b)).collect();
                RangeSet::from_ranges(&v).ranges().to_vec()
            }
            3 => {
                let mut v = Vec::new();
                if let Some(&(a, b)) = pairs.first() {
                    let x = (cum + u64::from(a % 4)).min(hs);
                    if x > 0 {
                        v.push((1, x));
                    }
                    if b % 2 == 0 && x + 2 <= hs {
                        let l = x + 2 + u64::from(b / 2) % (hs - x - 1);
                        v.push((l, hs));
                    }
                }
                v
            }
            4 => {
                // A destination has received at least what the source counts as acknowledged
                // (acknowledged by other acks of the run, or two-way requests replied).
                if cum > 0 {
                    rx.received.insert_range(1, cum);
                }
                for &(l, u) in acked {
                    rx.received.insert_range(l, u);
                }
                // Numbers in the window (from a little below its start up to the highest
                // sent) arrive in any order; a quarter of the pairs fill the window's head.
                let lo = cum.saturating_sub(3).max(1);
                if hs >= lo {
                    let span = hs - lo + 1;
                    for &(a, b) in pairs {
                        let l = if b >= 192 {
                            cum + 1
                        } else {
                            lo + u64::from(a) * span / 256
                        };
                        let u = (l + u64::from(b % 4)).min(hs);
                        rx.received.insert_range(l, u);
                    }
                }
                let v = rx.received.ranges().to_vec();
                rx.acks.push(v.clone());
                v
            }
            _ => match pairs.first() {
                Some(&(a, b)) if !rx.acks.is_empty() => {
                    let i = (usize::from(a) << 8 | usize::from(b)) % rx.acks.len();
                    rx.acks.get(i).cloned().unwrap_or_default()
                }
                _ => Vec::new(),
            },
        }
    }

    /// Runs `ops` on a source with the new `handle_ack` and on a clone with the reference and
    /// requires equal results and equal state after every step.
    fn run_against_reference(
        window: u32,
        flow: bool,
        consistency: bool,
        send_scale: u32,
        ops: Vec<Op>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut t = Instant::now();
        let mut a = Source::new(RmVersion::Wsrm10, window, 6, flow, true, consistency);
        a.id = Some(SequenceId::from("s"));
        a.set_initial_rtt(Duration::from_millis(5));
        if window >= 64 {
            // Large windows start grown (slow start to thousands would take most of a run).
            a.window_size = window;
        }
        let mut b = a.clone();
        let mut rx = Receiver::default();
        // A number near the window (or anywhere up to the highest sent) for the per-number
        // operations.
        let pick = |s: &Source, n: u8| {
            if n.is_multiple_of(4) {
                u64::from(n / 4) % (s.highest_sent + 2)
            } else {
                (s.window_start + u64::from(n / 4) % (s.in_window as u64 + 2)).saturating_sub(1)
            }
        };
        for op in ops {
            match op {
                Op::Enqueue { two_way } => {
                    for _ in 0..send_scale {
                        for s in [&mut a, &mut b] {
                            s.enqueue(
                                Action::Other("a".into()),
                                Body::Application(Bytes::from_static(b"x")),
                                None,
                                None,
                                false,
                                two_way,
                            );
                        }
                    }
                }
                Op::Send(k) => {
                    for _ in 0..u32::from(k) * send_scale {
                        let (x, y) = (a.poll_send(t), b.poll_send(t));
                        proptest::prop_assert_eq!(&x, &y);
                        if !matches!(x, Ok(Some(_))) {
                            break;
                        }
                    }
                }
                Op::Ack { pairs, mode, br } => {
                    let ranges = ack_ranges(
                        a.highest_sent,
                        a.window_start - 1,
                        &pairs,
                        mode,
                        &a.acked.to_ranges(),
                        &mut rx,
                    );
                    let h = AckHeader {
                        identifier: SequenceId::from("s"),
                        ranges,
                        buffer_remaining: br.map(u32::from),
                        ..AckHeader::default()
                    };
                    let mut done = Vec::new();
                    let x = a.handle_ack(t, &h, |n| done.push(n)).map(|_| done);
                    let y = handle_ack_reference(&mut b, t, &h);
                    proptest::prop_assert_eq!(x, y);
                }
                Op::Timeout => {
                    if let Some(d) = a.poll_timeout() {
                        t = t.max(d);
                    }
                    a.handle_timeout(t);
                    b.handle_timeout(t);
                }
                Op::Advance(ms) => t += Duration::from_millis(u64::from(ms)),
                Op::TransportFailed(n) => {
                    let n = pick(&a, n);
                    proptest::prop_assert_eq!(a.transport_failed(n), b.transport_failed(n));
                }
                Op::Replied(n) => {
                    let n = pick(&a, n);
                    proptest::prop_assert_eq!(a.mark_replied(t, n), b.mark_replied(t, n));
                }
                Op::Probe(n) => {
                    let n = pick(&a, n);
                    proptest::prop_assert_eq!(
                        a.probe_past_head(t, n, t),
                        b.probe_past_head(t, n, t)
                    );
                }
            }
            check_acked_set(&a);
            if a != b {
                proptest::prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// The bit set of acknowledged numbers against a `BTreeSet`: inserts at or above the
        /// window start (reporting exactly the new numbers, ascending), counts, and removals as
        /// the window slides, across word boundaries and restarts when it empties.
        #[test]
        fn prop_acked_set_matches_btreeset(
            ops in proptest::collection::vec((0u8..3, 0u64..150, 0u64..90), 1..120),
        ) {
            let mut set = AckedSet::default();
            let mut model = std::collections::BTreeSet::new();
            let mut ws = 1u64;
            for (op, a, b) in ops {
                match op {
                    0 => {
                        let (l, u) = (ws + a, ws + a + b);
                        let mut news = Vec::new();
                        let any = set.insert_range(ws, l, u, |n| news.push(n));
                        let expect: Vec<u64> = (l..=u).filter(|n| !model.contains(n)).collect();
                        model.extend(l..=u);
                        proptest::prop_assert_eq!(&news, &expect);
                        proptest::prop_assert_eq!(any, !expect.is_empty());
                    }
                    1 => {
                        ws += a % 70;
                        set.remove_through(ws - 1);
                        model.retain(|&n| n >= ws);
                    }
                    _ => {
                        let (l, u) = (ws.saturating_sub(3) + a, ws + a + b);
                        let expect = model.range(l..=u).count() as u64;
                        proptest::prop_assert_eq!(set.count_in(l, u), expect);
                    }
                }
                proptest::prop_assert_eq!(set.count, model.len() as u64);
                let mut expect = RangeSet::new();
                for &n in &model {
                    expect.insert(n);
                }
                proptest::prop_assert_eq!(set.to_ranges(), expect.ranges().to_vec());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_handle_ack_equals_the_reference(
            window in 1u32..12,
            flow in proptest::bool::ANY,
            consistency in proptest::bool::ANY,
            ops in proptest::collection::vec(op(3, 1), 1..80),
        ) {
            run_against_reference(window, flow, consistency, 1, ops)?;
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Large windows (WCF allows MaxTransferWindowSize up to 4096), many messages per
        /// operation, out-of-order destination acks.
        #[test]
        fn prop_handle_ack_equals_the_reference_large_windows(
            window in proptest::prop_oneof![
                proptest::strategy::Just(64u32),
                proptest::strategy::Just(200u32),
                proptest::strategy::Just(4096u32)
            ],
            flow in proptest::bool::ANY,
            consistency in proptest::bool::ANY,
            ops in proptest::collection::vec(op(12, 0), 1..200),
        ) {
            run_against_reference(window, flow, consistency, window / 16, ops)?;
        }
    }
}
