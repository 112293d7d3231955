//! A fast path for the header blocks of the two envelopes every reliable message costs: a
//! sequence message (`Sequence`, `Action`, `To`, …) and the acknowledgement answering it
//! (`SequenceAcknowledgement` with `AcknowledgementRange`s and `netrm:BufferRemaining`), when
//! they are written exactly as this crate's writer writes them (WCF's shape: prefixes `s`, `a`
//! bound on the envelope, `r`/`netrm` declared on each RM header, no whitespace, no
//! references, plain numbers).
//!
//! The header content is matched against those templates byte by byte; the values are sliced
//! from the input (already checked once for UTF-8 and XML characters). Anything else —
//! another header, another attribute order or prefix, whitespace, a reference in a value, a
//! number the general path would refuse or convert (leading zeros, rollover, zero), a
//! duplicate header, a limit that might be hit — makes the fast path give up before it
//! changed anything, and the general reader reads the headers from the start. So whatever the
//! fast path accepts, the general path reads to the same result (a property test in
//! `tests/fast_path.rs` compares both on generated and mutated envelopes).

use std::sync::Arc;

use wsrm_proto::msg::{AckHeader, RmVersion, SequenceHeader, SequenceId};

use super::Envelope;
use super::{interned_address, interned_rm_action, EndpointReference, P};
use super::{RM10_ACTIONS, RM11_ACTIONS};
use crate::ns::{AddressingVersion, Ns};

#[cfg(test)]
thread_local! {
    /// How often the fast path read a `Header` on this thread (tests check it is taken).
    static TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A cursor over the unread input.
struct Cur<'a> {
    s: &'a str,
    k: usize,
}

impl<'a> Cur<'a> {
    #[inline(always)]
    fn rest(&self) -> &'a [u8] {
        self.s.as_bytes().get(self.k..).unwrap_or_default()
    }

    /// Consumes `l` if the input continues with it: a literal of constant length, compared
    /// inline (a few wide loads), not by a call of `memcmp` (which costs more than the
    /// comparison for these short runs).
    #[inline(always)]
    fn lit<const N: usize>(&mut self, l: &[u8; N]) -> bool {
        let ok = self.rest().first_chunk::<N>() == Some(l);
        if ok {
            self.k += N;
        }
        ok
    }

    /// Character data (no markup, no reference, at most `max` bytes) directly followed by the
    /// end tag `end`; both consumed. The text is untrimmed.
    #[inline(always)]
    fn text<const N: usize>(&mut self, end: &[u8; N], max: usize) -> Option<&'a str> {
        let rest = self.rest();
        let n = lt_or_amp(rest, max)?;
        if rest.get(n..)?.first_chunk::<N>() != Some(end) {
            return None;
        }
        // `n` lies before a `<` and `k` after a `>`: both are character boundaries
        let t = self.s.get(self.k..self.k + n)?;
        self.k += n + N;
        Some(t)
    }

    /// A plain number ending at the byte `stop` (consumed too), see [`plain_number_at`].
    #[inline(always)]
    fn plain(&mut self, stop: u8) -> Option<u64> {
        let (v, len) = plain_number_at(self.rest(), stop)?;
        self.k += len;
        Some(v)
    }

    /// `xmlns:r="` already matched: the RM namespace URI and the closing `"`.
    #[inline(always)]
    fn rm_decl(&mut self) -> Option<RmVersion> {
        if self.lit(RM10_Q) {
            Some(RmVersion::Wsrm10)
        } else if self.lit(RM11_Q) {
            Some(RmVersion::Wsrm11)
        } else {
            None
        }
    }
}

/// The RM namespaces with the attribute value's closing quote.
const RM10_Q: &[u8; 41] = b"http://schemas.xmlsoap.org/ws/2005/02/rm\"";
const RM11_Q: &[u8; 45] = b"http://docs.oasis-open.org/ws-rx/wsrm/200702\"";

/// The bytes of `w` equal to `<` or `&`, as the high bit of each: zero bytes of `w ^ <<<…`
/// and `w ^ &&&…` found by subtracting 1 from every byte (a borrow can only set the high bit
/// of a byte above a zero byte, so the lowest bit set is exact).
#[inline(always)]
fn lt_or_amp_bits(w: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let lt = w ^ u64::from_ne_bytes([b'<'; 8]);
    let amp = w ^ u64::from_ne_bytes([b'&'; 8]);
    ((lt.wrapping_sub(ONES) & !lt) | (amp.wrapping_sub(ONES) & !amp)) & HIGH
}

/// The offset of the first `<` or `&` in `b` if it is at most `max` (else `None`, as when
/// there is none): 8 bytes at a time ([`lt_or_amp_bits`]), inline; the values the fast path
/// reads are short (identifiers, URIs), where a call of `memchr2` costs more in its set-up
/// than in the search.
#[inline(always)]
fn lt_or_amp(b: &[u8], max: usize) -> Option<usize> {
    let mut i = 0;
    while let Some(w) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let m = lt_or_amp_bits(u64::from_le_bytes(*w));
        if m != 0 {
            let n = i + (m.trailing_zeros() / 8) as usize;
            return (n <= max).then_some(n);
        }
        i += 8;
        if i > max {
            return None;
        }
    }
    let n = i + b.get(i..)?.iter().position(|&c| c == b'<' || c == b'&')?;
    (n <= max).then_some(n)
}

/// A plain number at the start of `rest` ending at the byte `stop`: 1 to 18 ASCII digits
/// without a leading zero, the form the general path converts directly (`plain_number`); its
/// value and the length with `stop`. Anything else (zero, leading zeros, longer, other
/// characters): `None`. Shared by both fast paths.
///
/// A number of at most 7 digits with 8 bytes to read (the usual case: every number the
/// writer writes is followed by its end tag or attribute's end) is read 8 bytes at once
/// ([`short_number_at`]), without a loop over the digits.
#[inline(always)]
pub(super) fn plain_number_at(rest: &[u8], stop: u8) -> Option<(u64, usize)> {
    // (`stop` is a constant of the caller: the test is folded away)
    if let (Some(w), false) = (rest.first_chunk::<8>(), stop.is_ascii_digit()) {
        if let Some(r) = short_number_at(u64::from_le_bytes(*w), stop) {
            return r;
        }
    }
    plain_number_loop(rest, stop)
}

/// Bytes of `0x…` repeated in a `u64`.
const fn bytes(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// [`plain_number_at`] on the first 8 bytes `w` of the input (little-endian), for a `stop`
/// that is not a digit: `None` when all 8 are digits (the loop reads a longer number), else
/// the answer. The digits are the
/// bytes before the first non-digit: a byte is a digit when its high nibble is 3 and adding
/// 6 leaves it 3 (a carry out of a byte comes only from a non-digit, so the bytes up to the
/// first non-digit are tested exactly); the value is formed pairwise from the digits
/// right-aligned in the word (three multiplications).
#[inline(always)]
fn short_number_at(w: u64, stop: u8) -> Option<Option<(u64, usize)>> {
    // one digit (`Lower="1"`, `BufferRemaining` 8): without the word arithmetic
    let first = (w as u8).wrapping_sub(b'1');
    if (w >> 8) as u8 == stop && first < 9 {
        return Some(Some((u64::from(first) + 1, 2)));
    }
    let hi = bytes(0xF0);
    let t = (w & hi) | ((w.wrapping_add(bytes(0x06)) & hi) >> 4);
    // per byte: zero for a digit
    let x = t ^ bytes(0x33);
    // per byte: the high bit for a non-digit
    let non_digit = (((x & bytes(0x7F)).wrapping_add(bytes(0x7F))) | x) & bytes(0x80);
    if non_digit == 0 {
        return None;
    }
    let len = (non_digit.trailing_zeros() / 8) as usize;
    // 1 to 7 digits, the first not 0, then `stop`
    if len == 0 || (w as u8) == b'0' || (w >> (8 * len)) as u8 != stop {
        return Some(None);
    }
    let d = (w & bytes(0x0F)) << (8 * (8 - len));
    let d = (d.wrapping_mul(10 * 256 + 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    let d = (d.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    let v = d.wrapping_mul(10_000 * (1 << 32) + 1) >> 32;
    Some(Some((v, len + 1)))
}

/// [`plain_number_at`] digit by digit.
#[inline(always)]
fn plain_number_loop(rest: &[u8], stop: u8) -> Option<(u64, usize)> {
    let first = rest.first()?.wrapping_sub(b'0');
    if !(1..=9).contains(&first) {
        return None;
    }
    let mut v = u64::from(first);
    for (i, &c) in rest.iter().enumerate().skip(1).take(18) {
        if c == stop {
            return Some((v, i + 1));
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    None
}

/// The general path's `set_rm` on the envelope the fast path fills: `None` on a second,
/// different version (the general path refuses that with its own error).
#[inline(always)]
fn set_rm(env: &mut Envelope, v: RmVersion) -> Option<()> {
    match env.rm {
        Some(w) if w != v => None,
        _ => {
            env.rm = Some(v);
            Some(())
        }
    }
}

/// The rest of an RM header's start tag and its `<r:Identifier>` element:
/// `><r:Identifier>…</r:Identifier>`.
fn identifier_element(c: &mut Cur<'_>, max_text: usize) -> Option<SequenceId> {
    if !c.lit(b"><r:Identifier>") {
        return None;
    }
    identifier(c.text(b"</r:Identifier>", max_text)?)
}

/// A trimmed, non-empty identifier (the general path refuses an empty one), shared with the
/// last one of the same text read on this thread ([`RECENT_IDS`]).
fn identifier(t: &str) -> Option<SequenceId> {
    let t = crate::xml::trim_xml(t);
    if t.is_empty() {
        return None;
    }
    let slot = id_slot(t.as_bytes());
    if let Some(id) = recent_id(t.as_bytes(), slot) {
        return Some(id);
    }
    let id = SequenceId::new(t);
    remember_id(&id, slot);
    Some(id)
}

/// Slots of [`RECENT_IDS`].
const ID_SLOTS: usize = 256;

thread_local! {
    /// The sequence identifiers the fast paths read on this thread, one per slot
    /// ([`id_slot`]): a client receives the acknowledgements of its own sequences and a service
    /// the messages of its sessions, one per message, so the next one with the same bytes
    /// shares the identifier (a reference count instead of a check, an allocation, a copy and a
    /// later free). The bytes are compared with the text of an identifier that was checked and
    /// trimmed, so equal bytes need neither again. At most [`ID_SLOTS`] identifiers are kept
    /// alive per thread; a session whose identifier lost its slot only costs the allocation.
    static RECENT_IDS: std::cell::RefCell<[Option<SequenceId>; ID_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; ID_SLOTS]) };
}

/// The slot of an identifier's bytes: a multiplicative hash of its last 8 bytes (where
/// generated identifiers differ) and its length.
pub(super) fn id_slot(raw: &[u8]) -> usize {
    // the last 8 bytes in one load; a shorter identifier zero-padded
    let tail = match raw.last_chunk::<8>() {
        Some(t) => *t,
        None => {
            let mut tail = [0u8; 8];
            for (t, &b) in tail.iter_mut().zip(raw) {
                *t = b;
            }
            tail
        }
    };
    let h = (u64::from_le_bytes(tail) ^ raw.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - ID_SLOTS.trailing_zeros())) as usize
}

/// The identifier of [`RECENT_IDS`] whose text is `raw`, if there is one.
pub(super) fn recent_id(raw: &[u8], slot: usize) -> Option<SequenceId> {
    RECENT_IDS
        .try_with(|r| {
            let r = r.try_borrow().ok()?;
            let id = r.get(slot)?.as_ref()?;
            (id.as_str().as_bytes() == raw).then(|| id.clone())
        })
        .ok()
        .flatten()
}

/// Keeps `id` in its slot of [`RECENT_IDS`].
pub(super) fn remember_id(id: &SequenceId, slot: usize) {
    let _ = RECENT_IDS.try_with(|r| {
        if let Some(s) = r
            .try_borrow_mut()
            .ok()
            .as_deref_mut()
            .and_then(|r| r.get_mut(slot))
        {
            *s = Some(id.clone());
        }
    });
}

thread_local! {
    /// The last `To` address and the last application action read on this thread: a service's
    /// messages repeat them (same endpoint, same operations), so the next message with the
    /// same text shares the `Arc` (a reference count instead of an allocation, a copy and a
    /// later free). Identifiers are not kept: they differ per session.
    static RECENT: std::cell::RefCell<[Option<Arc<str>>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}

/// Slots of [`RECENT`].
const RECENT_TO: usize = 0;
const RECENT_ACTION: usize = 1;

/// `t` as an `Arc<str>`: the one of `RECENT[slot]` if it has this text, else a new one, which
/// then takes the slot.
fn recent(slot: usize, t: &str) -> Arc<str> {
    let shared = RECENT.try_with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        let s = r.get_mut(slot)?;
        match s {
            Some(a) if **a == *t => Some(a.clone()),
            _ => {
                let a: Arc<str> = Arc::from(t);
                *s = Some(a.clone());
                Some(a)
            }
        }
    });
    shared.ok().flatten().unwrap_or_else(|| Arc::from(t))
}

/// An address: the shared anonymous one, the last `To` read on this thread if the same
/// (`to`), or a new `Arc`.
pub(super) fn address(t: &str, to: bool) -> Arc<str> {
    let t = crate::xml::trim_xml(t);
    match interned_address(t) {
        Some(a) => a,
        None if to => recent(RECENT_TO, t),
        None => Arc::from(t),
    }
}

impl<'a> P<'a> {
    /// Reads the header blocks (the `Header` start tag was just read) if they all have the
    /// writer's shape, closing the `Header` element. `false`: nothing was consumed or
    /// changed; the general path reads them.
    pub(super) fn fast_headers(&mut self) -> bool {
        let env = &self.env;
        // a fresh envelope: nothing read into it yet (so that giving up can restore it)
        if env.wsa.is_some()
            || env.rm.is_some()
            || env.headers != 0
            || env.action.is_some()
            || env.rm_action.is_some()
            || env.message_id.is_some()
            || env.relates_to.is_some()
            || env.to.is_some()
            || env.reply_to.is_some()
            || env.sequence.is_some()
            || env.ack.is_some()
            || env.ack_requested.is_some()
        {
            return false;
        }
        // the facts are written into the envelope as they are read (not collected and moved
        // there): giving up restores the fresh envelope
        if fast_match(&self.rd, &mut self.env).is_some_and(|n| self.rd.close_after(n)) {
            #[cfg(test)]
            TAKEN.with(|t| t.set(t.get() + 1));
            return true;
        }
        let env = &mut self.env;
        env.wsa = None;
        env.rm = None;
        env.action = None;
        env.rm_action = None;
        env.message_id = None;
        env.relates_to = None;
        env.to = None;
        env.reply_to = None;
        env.sequence = None;
        env.ack = None;
        env.ack_requested = None;
        env.headers = 0;
        false
    }
}

/// The longest number text the header template reads as element text (`MessageNumber`,
/// `BufferRemaining`; `u64::MAX` has 20 digits): the template is taken only under text limits
/// at least this large, since the general path checks every element's text against the limit.
const MAX_NUMBER_TEXT: usize = 20;

/// Matches the header blocks, writing their facts into the fresh envelope `f`; on success the
/// number of bytes up to the `Header` end tag.
fn fast_match(rd: &crate::xml::Rd<'_>, f: &mut Envelope) -> Option<usize> {
    let limits = rd.limits();
    // the templates' depth (header block + child), names (≤ 25 bytes), attributes (≤ 2 per
    // tag, ≤ 76 bytes), numbers as element text (≤ 20 digits, not checked against the text
    // limit one by one): within any limits at least this large
    if rd.depth + 2 > limits.max_depth
        || limits.max_name_len < 32
        || limits.max_attributes < 2
        || limits.max_attributes_len < 128
        || limits.max_text_len < MAX_NUMBER_TEXT
    {
        return None;
    }
    let max_text = limits.max_text_len;
    // `s:mustUnderstand` must be the envelope's namespace
    let env_ns = match f.soap {
        crate::ns::SoapVersion::Soap11 => Ns::Soap11,
        crate::ns::SoapVersion::Soap12 => Ns::Soap12,
    };
    if rd.prefix_ns(b"s") != Some(env_ns) {
        return None;
    }
    let mut c = Cur {
        s: rd.unread()?,
        k: 0,
    };
    // the binding of `a`, looked up at the first WS-Addressing header
    let mut a_ns: Option<AddressingVersion> = None;
    loop {
        if c.rest().starts_with(b"</") {
            return Some(c.k);
        }
        f.headers += 1;
        if f.headers > limits.max_headers {
            return None;
        }
        if c.lit(b"<r:") {
            if c.lit(b"SequenceAcknowledgement xmlns:r=\"") {
                if f.ack.is_some() {
                    return None;
                }
                let v = c.rm_decl()?;
                set_rm(f, v)?;
                f.ack = Some(ack(&mut c, max_text, limits.max_ack_ranges)?);
            } else if c.lit(b"Sequence s:mustUnderstand=\"1\" xmlns:r=\"") {
                if f.sequence.is_some() {
                    return None;
                }
                let v = c.rm_decl()?;
                set_rm(f, v)?;
                let id = identifier_element(&mut c, max_text)?;
                if !c.lit(b"<r:MessageNumber>") {
                    return None;
                }
                // the general path's plain numbers: 1 to 18 digits, no leading zero
                let number = c.plain(b'<')?;
                if !c.lit(b"/r:MessageNumber>") {
                    return None;
                }
                let last_message = v == RmVersion::Wsrm10 && c.lit(b"<r:LastMessage/>");
                if !c.lit(b"</r:Sequence>") {
                    return None;
                }
                f.sequence = Some(SequenceHeader {
                    identifier: id,
                    number,
                    last_message,
                });
            } else if c.lit(b"AckRequested xmlns:r=\"") {
                if f.ack_requested.is_some() {
                    return None;
                }
                let v = c.rm_decl()?;
                set_rm(f, v)?;
                let id = identifier_element(&mut c, max_text)?;
                if !c.lit(b"</r:AckRequested>") {
                    return None;
                }
                f.ack_requested = Some(id);
            } else {
                return None;
            }
        } else if c.lit(b"<a:") {
            let wsa = match a_ns {
                Some(w) => w,
                None => {
                    let w = rd.prefix_ns(b"a")?.wsa()?;
                    a_ns = Some(w);
                    w
                }
            };
            f.wsa = Some(wsa);
            if c.lit(b"Action s:mustUnderstand=\"1\">") {
                if f.action.is_some() {
                    return None;
                }
                let t = crate::xml::trim_xml(c.text(b"</a:Action>", max_text)?);
                match rm_action(t)? {
                    Some((v, i, suffix)) => {
                        set_rm(f, v)?;
                        f.rm_action = Some(suffix);
                        f.action = Some(interned_rm_action(v, i)?);
                    }
                    None => f.action = Some(recent(RECENT_ACTION, t)),
                }
            } else if c.lit(b"MessageID>") {
                if f.message_id.is_some() {
                    return None;
                }
                let t = crate::xml::trim_xml(c.text(b"</a:MessageID>", max_text)?);
                f.message_id = Some(Arc::from(t));
            } else if c.lit(b"To s:mustUnderstand=\"1\">") {
                if f.to.is_some() {
                    return None;
                }
                f.to = Some(address(c.text(b"</a:To>", max_text)?, true));
            } else if c.lit(b"ReplyTo><a:Address>") {
                if f.reply_to.is_some() {
                    return None;
                }
                let a = address(c.text(b"</a:Address>", max_text)?, false);
                if !c.lit(b"</a:ReplyTo>") {
                    return None;
                }
                f.reply_to = Some(EndpointReference::new(a));
            } else if c.lit(b"RelatesTo>") {
                if f.relates_to.is_some() {
                    return None;
                }
                let t = crate::xml::trim_xml(c.text(b"</a:RelatesTo>", max_text)?);
                f.relates_to = Some(Arc::from(t));
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
}

/// The general path's action classification: `Ok(None)` for a non-RM action, the version,
/// index and suffix of a known RM action, `None` (give up) for an unknown one in an RM
/// namespace (refused by the general path).
#[allow(clippy::type_complexity)]
fn rm_action(action: &str) -> Option<Option<(RmVersion, usize, &'static str)>> {
    let (v, suffix, known): (_, _, &[&'static str]) = if let Some(s) =
        action.strip_prefix("http://schemas.xmlsoap.org/ws/2005/02/rm/")
    {
        (RmVersion::Wsrm10, s, &RM10_ACTIONS)
    } else if let Some(s) = action.strip_prefix("http://docs.oasis-open.org/ws-rx/wsrm/200702/") {
        (RmVersion::Wsrm11, s, &RM11_ACTIONS)
    } else {
        return Some(None);
    };
    let i = known.iter().position(|k| *k == suffix)?;
    Some(Some((v, i, known.get(i)?)))
}

/// The rest of `<r:SequenceAcknowledgement xmlns:r="…"` (the namespace matched): the
/// identifier, ascending non-overlapping ranges with plain bounds ≥ 1, an optional
/// `BufferRemaining`, the end tag.
fn ack(c: &mut Cur<'_>, max_text: usize, max_ranges: usize) -> Option<AckHeader> {
    let identifier = identifier_element(c, max_text)?;
    let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(4);
    let mut prev_upper = 0u64;
    while c.lit(b"<r:AcknowledgementRange Lower=\"") {
        if ranges.len() >= max_ranges {
            return None;
        }
        let lo = c.plain(b'"')?;
        if !c.lit(b" Upper=\"") {
            return None;
        }
        let up = c.plain(b'"')?;
        if !c.lit(b"/>") || lo > up || (!ranges.is_empty() && lo <= prev_upper) {
            return None;
        }
        prev_upper = up;
        ranges.push((lo, up));
    }
    if ranges.is_empty() {
        return None;
    }
    let mut buffer_remaining = None;
    if c.lit(b"<netrm:BufferRemaining xmlns:netrm=\"") {
        if !c.lit(b"http://schemas.microsoft.com/ws/2006/05/rm\">") {
            return None;
        }
        // `0`, or a plain number (the general path reads both so; leading zeros give up)
        let n = if c.lit(b"0<") { 0 } else { c.plain(b'<')? };
        if n > i32::MAX as u64 || !c.lit(b"/netrm:BufferRemaining>") {
            return None;
        }
        buffer_remaining = Some(n as u32);
    }
    if !c.lit(b"</r:SequenceAcknowledgement>") {
        return None;
    }
    Some(AckHeader {
        identifier,
        ranges,
        none: false,
        final_ack: false,
        nacks: Vec::new(),
        buffer_remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::TAKEN;
    use bytes::Bytes;
    use wsrm_proto::msg::{Action, Body, Message};

    use crate::{decode, decode_without_fast_path, encode, AddressingVersion, Framing, Limits};
    use crate::{EndpointReference, SoapVersion};

    /// The word-at-once number reading gives what the digit loop gives, for numbers of every
    /// width followed by every kind of byte, leading zeros, and inputs of every length.
    #[test]
    fn numbers_read_at_once_as_digit_by_digit() {
        use super::{plain_number_at, plain_number_loop};
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        let mut values: Vec<u64> = vec![0, 1, 7, 9, 10, 99, 100, u64::MAX];
        for k in 1..20u32 {
            let p = 10u64.pow(k);
            values.extend([p - 1, p, p + 1, p / 3 + 7]);
        }
        let tails: [&[u8]; 10] = [
            b"\"/>xxxxxxxxxxxxxxxxxxxxxxxx",
            b"<xxxxxxxxxxxxxxxxxx",
            b"\"",
            b"",
            b"/\"",
            b":\"xxxxxxxxxxxxxxx",
            b"\xff\xfa\"xxxxxxxx",
            b"0\"xxxxxxxxxxxxxx",
            b"\x00\"xxxxxxxxx",
            b"\xc3\xa9\"xxxxxxxxxxxxxxxx",
        ];
        for v in values {
            for pre in ["", "0", "00", "-", " ", "\u{e9}"] {
                for tail in tails {
                    let mut b = format!("{pre}{v}").into_bytes();
                    b.extend_from_slice(tail);
                    for cut in 0..=b.len() {
                        inputs.push(b[..cut].to_vec());
                    }
                }
            }
        }
        // every byte value around a digit, at every position of the word
        for at in 0..9 {
            for c in 0..=255u8 {
                let mut b = b"123456789\"xxxxxxxx".to_vec();
                b[at] = c;
                inputs.push(b);
            }
        }
        for b in &inputs {
            for stop in [b'"', b'<', b'0', 0xFA] {
                assert_eq!(
                    plain_number_at(b, stop),
                    plain_number_loop(b, stop),
                    "{:?} {stop}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    /// The word-at-once search for `<`/`&` finds what a byte-by-byte search finds, for the
    /// markup at every offset around the 8-byte words, every other byte before it, and every
    /// bound.
    #[test]
    fn lt_or_amp_finds_the_first_markup_byte() {
        use super::lt_or_amp;
        let naive = |b: &[u8], max: usize| {
            b.iter()
                .position(|&c| c == b'<' || c == b'&')
                .filter(|&n| n <= max)
        };
        for len in 0..40 {
            for at in 0..=len {
                for fill in [
                    b'a',
                    b'%',
                    b'\'',
                    b'=',
                    0x80,
                    0xFF,
                    0x01,
                    b'<' + 1,
                    b'&' - 1,
                ] {
                    for mark in [b'<', b'&'] {
                        let mut b = vec![fill; len];
                        if at < len {
                            b[at] = mark;
                            // a second one later must not matter
                            if at + 3 < len {
                                b[at + 3] = b'<';
                            }
                        }
                        for max in [
                            0,
                            1,
                            7,
                            8,
                            9,
                            15,
                            16,
                            17,
                            at,
                            at + 1,
                            at.saturating_sub(1),
                            100,
                        ] {
                            assert_eq!(lt_or_amp(&b, max), naive(&b, max), "{b:?} {max}");
                        }
                    }
                }
            }
        }
        // every byte value next to the markup
        for c in 0..=255u8 {
            for at in 0..16 {
                let mut b = vec![c; 20];
                b[at] = b'<';
                assert_eq!(lt_or_amp(&b, 64), naive(&b, 64), "{c} {at}");
                let b = vec![c; 20];
                assert_eq!(lt_or_amp(&b, 64), naive(&b, 64), "{c}");
            }
        }
    }

    /// How often either fast path (header blocks, whole acknowledgement) was taken.
    fn count() -> usize {
        TAKEN.with(|t| t.get()) + super::super::fast_ack::TAKEN.with(|t| t.get())
    }

    fn taken(xml: &Bytes) -> bool {
        let before = count();
        let fast = decode(xml.clone(), &Limits::default());
        assert_eq!(
            fast,
            decode_without_fast_path(xml.clone(), &Limits::default())
        );
        assert!(fast.is_ok(), "{fast:?}");
        count() == before + 1
    }

    /// A session's sequence messages read on one thread share their identifier (one
    /// allocation per session and thread, not one per message); another session's is its own,
    /// and an identifier the fast path trims is shared in its trimmed form.
    #[test]
    fn sequence_identifiers_are_shared_per_thread() {
        let envelope = |id: &str, number: u64| {
            let mut m = Message::new(
                wsrm_proto::msg::RmVersion::Wsrm11,
                Action::Other("urn:x/OneWay".into()),
                Body::Application(Bytes::from_static(b"<p xmlns=\"urn:x\"/>")),
            );
            m.sequence = Some(wsrm_proto::msg::SequenceHeader {
                identifier: wsrm_proto::msg::SequenceId::from(id),
                number,
                last_message: false,
            });
            encode(&m, &Framing::soap12_wsa10()).unwrap()
        };
        let id_of = |xml: Bytes| {
            assert!(taken(&xml));
            decode(xml, &Limits::default())
                .unwrap()
                .message
                .sequence
                .unwrap()
                .identifier
        };
        let a = "urn:uuid:0b1e9f4e-7c57-4a8e-9d1a-5c0d3f2a0001";
        let b = "urn:uuid:0b1e9f4e-7c57-4a8e-9d1a-5c0d3f2a0002";
        let (a1, a2, b1) = (
            id_of(envelope(a, 1)),
            id_of(envelope(a, 2)),
            id_of(envelope(b, 1)),
        );
        assert_eq!((a1.as_str(), b1.as_str()), (a, b));
        assert_eq!(a1.as_str().as_ptr(), a2.as_str().as_ptr());
        assert_ne!(a1.as_str().as_ptr(), b1.as_str().as_ptr());
        let padded = String::from_utf8(envelope(a, 3).to_vec())
            .unwrap()
            .replace(a, &format!(" {a}\t"));
        let a3 = id_of(Bytes::from(padded));
        assert_eq!(a3.as_str(), a);
    }

    /// The envelopes of the HTTP benchmark, byte for byte.
    #[test]
    fn benchmark_envelopes_take_the_fast_path() {
        let seq = Bytes::from_static(b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:Sequence s:mustUnderstand=\"1\" xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b</r:Identifier><r:MessageNumber>2027</r:MessageNumber></r:Sequence><a:Action s:mustUnderstand=\"1\">urn:bench/OneWay</a:Action><a:To s:mustUnderstand=\"1\">http://127.0.0.1:45237/svc</a:To></s:Header><s:Body><p xmlns=\"urn:wsrm:payload\">xx</p></s:Body></s:Envelope>");
        let ack = Bytes::from_static(b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b</r:Identifier><r:AcknowledgementRange Lower=\"1\" Upper=\"3462\"/><r:AcknowledgementRange Lower=\"3464\" Upper=\"3479\"/><r:AcknowledgementRange Lower=\"3487\" Upper=\"3487\"/><r:AcknowledgementRange Lower=\"3496\" Upper=\"3496\"/><netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">46</netrm:BufferRemaining></r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>");
        assert!(taken(&seq));
        assert!(taken(&ack));
        let d = decode(ack, &Limits::default()).ok();
        let a = d.and_then(|d| d.message.ack);
        assert_eq!(
            a.map(|a| (a.ranges, a.buffer_remaining)),
            Some((
                vec![(1, 3462), (3464, 3479), (3487, 3487), (3496, 3496)],
                Some(46)
            ))
        );
    }

    /// Whatever the writer writes for these headers, in every version, takes it.
    #[test]
    fn writer_output_takes_the_fast_path() {
        use wsrm_proto::msg::{AckHeader, RmVersion, SequenceHeader, SequenceId};
        for v in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
            for soap in [SoapVersion::Soap11, SoapVersion::Soap12] {
                for wsa in [AddressingVersion::Wsa10, AddressingVersion::Wsa200408] {
                    let mut m = Message::new(
                        v,
                        Action::Other("urn:op".into()),
                        Body::Application(Bytes::from_static(b"<p/>")),
                    );
                    m.sequence = Some(SequenceHeader {
                        identifier: SequenceId::from("urn:uuid:s"),
                        number: 1,
                        last_message: v == RmVersion::Wsrm10,
                    });
                    m.ack = Some(AckHeader {
                        identifier: SequenceId::from("urn:uuid:o"),
                        ranges: vec![(1, 2), (4, 4)],
                        none: false,
                        final_ack: false,
                        nacks: Vec::new(),
                        buffer_remaining: Some(0),
                    });
                    m.ack_requested = Some(SequenceId::from("urn:uuid:o"));
                    m.message_id = Some("urn:uuid:m".into());
                    m.reply_to = Some(wsa.anonymous().into());
                    m.relates_to = Some("urn:uuid:r".into());
                    m.to = Some("http://h/svc".into());
                    let xml = encode(&m, &Framing::new(soap, wsa)).unwrap_or_default();
                    assert!(taken(&xml), "{}", String::from_utf8_lossy(&xml));
                    let d = decode(xml, &Limits::default()).ok();
                    assert_eq!(
                        d.as_ref().and_then(|d| d.reply_to.clone()),
                        Some(EndpointReference::new(wsa.anonymous()))
                    );
                    assert_eq!(d.map(|d| d.message), Some(m.clone()));

                    let mut a = Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
                    a.ack = m.ack.clone();
                    let xml = encode(&a, &Framing::new(soap, wsa)).unwrap_or_default();
                    assert!(taken(&xml), "{}", String::from_utf8_lossy(&xml));
                }
            }
        }
    }
}
