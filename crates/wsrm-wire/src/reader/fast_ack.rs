//! A fast path for the whole envelope of a standalone acknowledgement — the answer to every
//! one-way request over HTTP, decoded once per message by the client — when it is written
//! exactly as this crate's writer writes it (`map::write` of a `SequenceAcknowledgement`
//! message with an empty body, in any SOAP / WS-Addressing / WS-RM version):
//!
//! ```text
//! <s:Envelope xmlns:s="SOAP" xmlns:a="WSA"><s:Header>
//! <r:SequenceAcknowledgement xmlns:r="RM"><r:Identifier>…</r:Identifier>
//!   ranges | 1.0 <r:AcknowledgementRange Lower="0" Upper="0"/> | 1.1 <r:None/>
//!   [1.1 <r:Final/>] [<netrm:BufferRemaining xmlns:netrm="…">n</netrm:BufferRemaining>]
//! </r:SequenceAcknowledgement>
//! <a:Action s:mustUnderstand="1">RM/SequenceAcknowledgement</a:Action>
//! [<a:RelatesTo>…</a:RelatesTo>] [<a:To s:mustUnderstand="1">…</a:To>]
//! </s:Header><s:Body/></s:Envelope>   (the end of the input)
//! ```
//!
//! It runs on the raw bytes, before the input is checked as a whole: the markup is matched as
//! literal byte runs (so it is ASCII), numbers are plain digits, and the few text values
//! (identifier, RelatesTo, To) must be printable ASCII without `&`, which makes them
//! valid UTF-8 and XML characters without references or line ends to normalise. Anything else
//! — another byte anywhere, a limit the envelope might reach, a number the general path would
//! convert or refuse, ranges not ascending — gives `None` before anything is allocated, and
//! the general reader (with its own fast path for the header blocks) reads the envelope. What
//! this path accepts, the general path reads to the same `Decoded` (`tests/fast_path.rs`
//! compares both on generated, substituted and mutated envelopes).
//!
//! [`AckTemplate`] enters the same path after `</r:Identifier>` ([`scan_rest`]) when the
//! envelope starts with the bytes the writer writes up to there for one sequence (compared at
//! once), with that sequence's identifier: what it accepts is what [`scan`] accepts from the
//! same bytes, with the same versions and identifier text (`tests/ack_template.rs`).

use bytes::Bytes;
use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceId};

use super::fast::{address, id_slot, recent_id, remember_id};
use super::interned_rm_action;
use crate::error::DecodeError;
use crate::map::Decoded;
use crate::ns::{AddressingVersion, SoapVersion};
use crate::Limits;

#[cfg(test)]
thread_local! {
    /// How often this path decoded an envelope on this thread (tests check it is taken).
    pub(super) static TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A cursor over the raw input.
struct B<'a> {
    b: &'a [u8],
    k: usize,
}

impl<'a> B<'a> {
    #[inline(always)]
    fn rest(&self) -> &'a [u8] {
        self.b.get(self.k..).unwrap_or_default()
    }

    /// The byte `i` positions ahead.
    #[inline(always)]
    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(self.k + i).copied()
    }

    /// Consumes `l` if the input continues with it.
    #[inline(always)]
    fn lit(&mut self, l: &[u8]) -> bool {
        if self.rest().starts_with(l) {
            self.k += l.len();
            true
        } else {
            false
        }
    }

    /// [`Self::lit`] for a literal of constant length: compared inline (a few wide loads),
    /// not by a call of `memcmp` (which costs more than the comparison for these short runs).
    #[inline(always)]
    fn lit_n<const N: usize>(&mut self, l: &[u8; N]) -> bool {
        let ok = self.rest().first_chunk::<N>() == Some(l);
        if ok {
            self.k += N;
        }
        ok
    }

    /// A plain number ending at the byte `stop` (consumed too), see
    /// [`super::fast::plain_number_at`].
    #[inline(always)]
    fn plain(&mut self, stop: u8) -> Option<u64> {
        let (v, len) = super::fast::plain_number_at(self.rest(), stop)?;
        self.k += len;
        Some(v)
    }

    /// The bytes up to the next `<`, directly followed by the end tag `end` (both consumed),
    /// at most `max` of them; not checked (see [`ascii`]).
    #[inline(always)]
    fn raw_text<const N: usize>(&mut self, end: &[u8; N], max: usize) -> Option<&'a [u8]> {
        let rest = self.rest();
        let n = memchr::memchr(b'<', rest)?;
        let t = rest.get(..n)?;
        if n > max || rest.get(n..)?.first_chunk::<N>() != Some(end) {
            return None;
        }
        self.k += n + N;
        Some(t)
    }

    /// [`Self::raw_text`] checked with [`ascii`]; untrimmed.
    fn text<const N: usize>(&mut self, end: &[u8; N], max: usize) -> Option<&'a str> {
        ascii(self.raw_text(end, max)?)
    }
}

/// `t` as text if it is all printable ASCII but `&` (no reference, no line end to normalise,
/// no character the general path refuses, valid UTF-8); else `None`.
fn ascii(t: &[u8]) -> Option<&str> {
    // without early exit, so that it is vectorised
    let odd = t
        .iter()
        .fold(false, |a, &c| a | !(0x20..0x7f).contains(&c) | (c == b'&'));
    if odd {
        return None;
    }
    std::str::from_utf8(t).ok()
}

/// The acknowledged sequence's identifier as [`scan`] found it.
enum Id<'a> {
    /// One of the identifiers recently read on this thread ([`recent_id`]).
    Shared(SequenceId),
    /// Another one (checked and trimmed), to allocate and keep in the slot.
    New(&'a str, usize),
}

/// The acknowledgement's start up to the identifier, per version (told apart by the byte
/// after `http://` of the RM URI).
#[cfg(test)]
const ACK_START: [&[u8]; 2] = [
    b"<r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
    b"<r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
];
/// [`ENVELOPE_STARTS`] and [`ACK_START`] in one, at `4 · SOAP + 2 · WS-Addressing + RM`.
const STARTS: [&[u8]; 8] = [
    b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
    b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
];

/// `<r:SequenceAcknowledgement xmlns:r="http://`.
const RM_AT: usize = 43;

/// The acknowledgement's end and the Action header, per version.
const ACK_END_ACTION: [&[u8]; 2] = [
    b"</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action>",
    b"</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://docs.oasis-open.org/ws-rx/wsrm/200702/SequenceAcknowledgement</a:Action>",
];
/// [`ACK_END_ACTION`] and [`END`] in one (no RelatesTo, no To: the usual answer).
const ACK_END_ACTION_END: [&[u8]; 2] = [
    b"</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>",
    b"</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://docs.oasis-open.org/ws-rx/wsrm/200702/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>",
];
/// The length of the action URI in each of [`ACK_END_ACTION`] (1.1's is the longer).
const ACTION_LEN: [usize; 2] = [
    crate::ns::RM10.len() + 1 + crate::ns::act::SEQUENCE_ACKNOWLEDGEMENT.len(),
    crate::ns::RM11.len() + 1 + crate::ns::act::SEQUENCE_ACKNOWLEDGEMENT.len(),
];
/// The index of `SequenceAcknowledgement` in `RM10_ACTIONS` / `RM11_ACTIONS`.
const ACTION_INDEX: [usize; 2] = [3, 6];

const RANGE: &[u8; 31] = b"<r:AcknowledgementRange Lower=\"";
#[cfg(test)]
const BUFFER_REMAINING: &[u8] =
    b"<netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">";
/// [`BUFFER_REMAINING`] in two pieces of at most 64 bytes: each compared inline.
const BUFFER_REMAINING_1: &[u8; 47] = b"<netrm:BufferRemaining xmlns:netrm=\"http://sche";
const BUFFER_REMAINING_2: &[u8; 33] = b"mas.microsoft.com/ws/2006/05/rm\">";
const END: &[u8; 33] = b"</s:Header><s:Body/></s:Envelope>";

/// The capacity the ranges' list starts with: an acknowledgement under load has several (with
/// 64 messages in flight on as many connections, about 5 on average), and growing the list
/// from 4 would reallocate it.
const RANGES_CAPACITY: usize = 8;

/// Ascending, non-overlapping ranges with plain bounds ≥ 1 (at most `max`), each appended to
/// `list` (allocated at the first one with [`RANGES_CAPACITY`], not grown from empty); their
/// number. (Not a closure to push them: with two callers of [`scan_rest`] it was no longer
/// inlined.)
#[inline(always)]
fn ranges(c: &mut B<'_>, max: usize, list: &mut Vec<(u64, u64)>) -> Option<usize> {
    let mut n = 0usize;
    let mut prev_upper = 0u64;
    // `<r:A`: an AcknowledgementRange may follow (`<r:N`one, `<r:F`inal, `<ne`trm, `</r`);
    // `Lower="0"` is left for the 1.0 empty form
    while c.at(3) == Some(b'A') && c.at(RANGE.len()) != Some(b'0') && c.lit_n(RANGE) {
        if n >= max {
            return None;
        }
        let lo = c.plain(b'"')?;
        if !c.lit_n(b" Upper=\"") {
            return None;
        }
        let up = c.plain(b'"')?;
        if !c.lit_n(b"/>") || lo > up || lo <= prev_upper {
            return None;
        }
        prev_upper = up;
        if list.capacity() == 0 {
            *list = Vec::with_capacity(RANGES_CAPACITY);
        }
        list.push((lo, up));
        n += 1;
    }
    Some(n)
}

/// What [`scan`] found: everything the result needs (the ranges' list is the only allocation,
/// made while reading them: read once, not again when the result is built).
pub(super) struct Ack<'a> {
    soap: SoapVersion,
    wsa: AddressingVersion,
    /// Index of the RM version (0: 1.0, 1: 1.1).
    vi: usize,
    id: Id<'a>,
    ranges: Vec<(u64, u64)>,
    final_ack: bool,
    buffer_remaining: Option<u32>,
    relates_to: Option<&'a str>,
    to: Option<&'a str>,
    headers: usize,
}

/// The envelope's start read from the bytes: the versions, the identifier, the cursor after
/// `</r:Identifier>`.
#[inline(always)]
fn read_start<'a>(
    c: &mut B<'a>,
    max_text: usize,
) -> Option<(SoapVersion, AddressingVersion, usize, Id<'a>)> {
    let (prolog, soap, wsa) = crate::ns::envelope_start_candidate(c.b)?;
    let (s11, w04) = (
        usize::from(soap == SoapVersion::Soap11),
        usize::from(wsa == AddressingVersion::Wsa200408),
    );
    // `<r:SequenceA` after the prolog (a sequence message has `<r:Sequence ` there)
    if c.b.get(prolog.len() + 11) != Some(&b'A') {
        return None;
    }
    let vi = usize::from(c.b.get(prolog.len() + RM_AT)? != &b's');
    if !c.lit(STARTS.get(4 * s11 + 2 * w04 + vi)?) {
        return None;
    }
    let raw = c.raw_text(b"</r:Identifier>", max_text)?;
    let slot = id_slot(raw);
    let id = match recent_id(raw, slot) {
        Some(id) => Id::Shared(id),
        None => {
            let id = crate::xml::trim_xml(ascii(raw)?);
            if id.is_empty() {
                return None;
            }
            Id::New(id, slot)
        }
    };
    Some((soap, wsa, vi, id))
}

/// Whether `src` may be a standalone acknowledgement of the writer's shape at all under
/// `limits` (what [`scan`] checks before reading the envelope's start).
#[inline(always)]
fn may_match(src: &[u8], limits: &Limits) -> bool {
    // what the template needs: depth 4 (Envelope, Header, ack, Identifier), names of at most
    // 25 bytes, at most 2 attributes of at most 111 bytes per tag, the action as text (64 or
    // 68 bytes; the numbers in text, at most 10 digits, are shorter)
    if limits.max_depth < 4
        || limits.max_name_len < 32
        || limits.max_attributes < 2
        || limits.max_attributes_len < 128
        || limits.max_text_len < ACTION_LEN[1]
    {
        return false;
    }
    // the end first: a message with a body (a sequence message, perhaps with an
    // acknowledgement header at the start) is left at once
    src.last_chunk::<33>() == Some(END)
}

/// Matches `src` against the standalone acknowledgement of the writer's shape (see the module
/// documentation); `None` for anything else, for the general reader.
pub(super) fn scan<'a>(src: &'a [u8], limits: &Limits) -> Option<Ack<'a>> {
    if !may_match(src, limits) {
        return None;
    }
    let mut c = B { b: src, k: 0 };
    let (soap, wsa, vi, id) = read_start(&mut c, limits.max_text_len)?;
    scan_rest(c, soap, wsa, vi, id, limits)
}

/// [`scan`] after `</r:Identifier>` (at `c`): the ranges and the rest of the envelope.
#[inline(always)]
fn scan_rest<'a>(
    mut c: B<'a>,
    soap: SoapVersion,
    wsa: AddressingVersion,
    vi: usize,
    id: Id<'a>,
    limits: &Limits,
) -> Option<Ack<'a>> {
    let max_text = limits.max_text_len;
    let v = match vi {
        0 => RmVersion::Wsrm10,
        _ => RmVersion::Wsrm11,
    };

    let max_ranges = limits.max_ack_ranges;
    let mut list = Vec::new();
    let n = ranges(&mut c, max_ranges, &mut list)?;
    if n == 0 {
        let empty = match v {
            RmVersion::Wsrm10 => {
                max_ranges >= 1 && c.lit_n(b"<r:AcknowledgementRange Lower=\"0\" Upper=\"0\"/>")
            }
            RmVersion::Wsrm11 => c.lit_n(b"<r:None/>"),
        };
        if !empty {
            return None;
        }
    }
    let final_ack = v == RmVersion::Wsrm11 && c.lit_n(b"<r:Final/>");
    let mut buffer_remaining = None;
    if c.at(1) == Some(b'n') && c.lit_n(BUFFER_REMAINING_1) && c.lit_n(BUFFER_REMAINING_2) {
        let k = if c.lit_n(b"0<") { 0 } else { c.plain(b'<')? };
        if k > i32::MAX as u64 || !c.lit_n(b"/netrm:BufferRemaining>") {
            return None;
        }
        buffer_remaining = Some(k as u32);
    }
    let mut headers = 2;
    let mut relates_to = None;
    let mut to = None;
    if !c.lit(ACK_END_ACTION_END.get(vi)?) {
        if !c.lit(ACK_END_ACTION.get(vi)?) {
            return None;
        }
        if c.lit_n(b"<a:RelatesTo>") {
            headers += 1;
            relates_to = Some(crate::xml::trim_xml(c.text(b"</a:RelatesTo>", max_text)?));
        }
        if c.lit_n(b"<a:To s:mustUnderstand=\"1\">") {
            headers += 1;
            to = Some(c.text(b"</a:To>", max_text)?);
        }
        if !c.lit_n(END) {
            return None;
        }
    }
    // `END` is where the input ends
    if headers > limits.max_headers || !c.rest().is_empty() {
        return None;
    }
    Some(Ack {
        soap,
        wsa,
        vi,
        id,
        ranges: list,
        final_ack,
        buffer_remaining,
        relates_to,
        to,
        headers,
    })
}

/// The result for a matched envelope: what the general reader reads from it. (Returned as
/// [`read`](super::read) returns it, so that it is written in place, not copied.)
#[inline(never)]
pub(super) fn build(mut a: Ack<'_>) -> Result<Decoded, DecodeError> {
    let v = match a.vi {
        0 => RmVersion::Wsrm10,
        _ => RmVersion::Wsrm11,
    };
    let ranges = std::mem::take(&mut a.ranges);
    let action = match interned_rm_action(v, ACTION_INDEX.get(a.vi).copied().unwrap_or(0)) {
        Some(action) => action,
        None => std::sync::Arc::from(""),
    };
    let identifier = match &a.id {
        Id::Shared(id) => id.clone(),
        Id::New(t, slot) => {
            let id = SequenceId::new(*t);
            remember_id(&id, *slot);
            id
        }
    };
    #[cfg(test)]
    TAKEN.with(|t| t.set(t.get() + 1));
    Ok(Decoded {
        soap: a.soap,
        addressing: a.wsa,
        rm: Some(v),
        action,
        relationship_type: None,
        reply_to: None,
        fault_to: None,
        from: None,
        acks_to: None,
        fault_subcode: None,
        header_count: a.headers,
        body_bytes: Bytes::new(),
        body_namespaces: Vec::new(),
        not_understood: Vec::new(),
        message: Message {
            version: v,
            action: Action::SequenceAcknowledgement,
            message_id: None,
            relates_to: a.relates_to.map(std::sync::Arc::from),
            reply_to: None,
            to: a.to.map(|t| address(t, true)),
            sequence: None,
            ack: Some(AckHeader {
                identifier,
                none: ranges.is_empty(),
                ranges,
                final_ack: a.final_ack,
                nacks: Vec::new(),
                buffer_remaining: a.buffer_remaining,
            }),
            ack_requested: None,
            body: Body::Empty,
        },
    })
}

/// The standalone acknowledgements of one sequence, as this crate's writer writes them
/// ([`encode`](crate::encode) of a `SequenceAcknowledgement` message with an empty body): the
/// client of a reliable session over HTTP decodes one per message it sends, and all of them
/// start with the same bytes, up to the first range (the envelope's start with its namespace
/// declarations, `<s:Header>`, `<r:SequenceAcknowledgement xmlns:r="…">` and
/// `<r:Identifier>…</r:Identifier>` with this sequence's identifier).
///
/// [`AckTemplate::decode`] compares that start at once and reads only the rest; for anything
/// else it gives `None`, and [`decode`](crate::decode) reads the envelope. What it decodes, it
/// decodes to exactly what [`decode`](crate::decode) gives for the same bytes and limits, the
/// identifier being this template's (shared, not allocated).
///
/// ```
/// use std::sync::Arc;
/// use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceId};
/// use wsrm_wire::{decode, encode, AckTemplate, Framing, Limits};
///
/// let id = SequenceId::from("urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b");
/// let framing = Framing::soap12_wsa10();
/// let template = AckTemplate::new(framing.soap, framing.addressing, RmVersion::Wsrm11, &id);
///
/// let mut m = Message::new(RmVersion::Wsrm11, Action::SequenceAcknowledgement, Body::Empty);
/// m.ack = Some(AckHeader {
///     identifier: id.clone(),
///     ranges: vec![(1, 4), (6, 9)],
///     ..AckHeader::default()
/// });
/// let xml = encode(&m, &framing).unwrap();
/// let limits = Limits::default();
/// let d = template.decode(&xml, &limits).unwrap_or_else(|| decode(xml.clone(), &limits));
/// assert_eq!(d, decode(xml, &limits));
/// assert_eq!(d.unwrap().message.ack.map(|a| a.ranges), Some(vec![(1, 4), (6, 9)]));
/// ```
#[derive(Debug, Clone)]
pub struct AckTemplate {
    /// The fixed start, through `</r:Identifier>`; empty if the identifier is not one the
    /// fast path reads as it is (then nothing matches).
    start: Box<[u8]>,
    soap: SoapVersion,
    wsa: AddressingVersion,
    /// Index of the RM version (0: 1.0, 1: 1.1).
    vi: usize,
    identifier: SequenceId,
}

impl AckTemplate {
    /// The template for the acknowledgements of the sequence `identifier`, framed in `soap` and
    /// `addressing`, in the WS-RM version `rm`.
    ///
    /// An identifier that is empty, has characters other than printable ASCII, has `&`, `<` or
    /// `>` (which the writer writes as references) or begins or ends with a space gives a
    /// template that matches nothing.
    pub fn new(
        soap: SoapVersion,
        addressing: AddressingVersion,
        rm: RmVersion,
        identifier: &SequenceId,
    ) -> Self {
        let s11 = usize::from(soap == SoapVersion::Soap11);
        let w04 = usize::from(addressing == AddressingVersion::Wsa200408);
        let vi = usize::from(rm != RmVersion::Wsrm10);
        let id = identifier.as_str();
        // what `read_start` reads as the identifier's text unchanged (checked, untrimmed)
        let plain = !id.is_empty()
            && ascii(id.as_bytes()).is_some()
            && !id.contains(['<', '>'])
            && crate::xml::trim_xml(id).len() == id.len();
        let start = match STARTS.get(4 * s11 + 2 * w04 + vi) {
            Some(s) if plain => [s, id.as_bytes(), b"</r:Identifier>"].concat(),
            _ => Vec::new(),
        };
        AckTemplate {
            start: start.into_boxed_slice(),
            soap,
            wsa: addressing,
            vi,
            identifier: identifier.clone(),
        }
    }

    /// Decodes `bytes` if it is a standalone acknowledgement of this template's sequence and
    /// versions as the writer writes it: `Some` of exactly what [`decode`](crate::decode)
    /// returns for the same bytes and limits (an error only if `bytes` exceed
    /// [`Limits::max_message_size`]). `None` for anything else: then call
    /// [`decode`](crate::decode).
    pub fn decode(&self, bytes: &[u8], limits: &Limits) -> Option<Result<Decoded, DecodeError>> {
        Some(match self.scan(bytes, limits)? {
            Ok(a) => build(a),
            Err(e) => Err(e),
        })
    }

    /// [`AckTemplate::decode`] giving only the acknowledgement header: `Some(Ok(ack))`
    /// exactly when `decode` gives `Some(Ok(d))`, `ack` being `d.message.ack` (the rest of
    /// such a message is fixed: the `SequenceAcknowledgement` action, an empty body, perhaps a
    /// `RelatesTo` and a `To`, read and checked but not returned). For a client that hands
    /// the header straight to its engine (`ClientSession::handle_ack`).
    pub fn decode_ack(
        &self,
        bytes: &[u8],
        limits: &Limits,
    ) -> Option<Result<AckHeader, DecodeError>> {
        Some(match self.scan(bytes, limits)? {
            Ok(a) => Ok(AckHeader {
                // the template's own (shared) identifier
                identifier: match a.id {
                    Id::Shared(id) => id,
                    Id::New(text, _) => SequenceId::new(text),
                },
                none: a.ranges.is_empty(),
                ranges: a.ranges,
                final_ack: a.final_ack,
                nacks: Vec::new(),
                buffer_remaining: a.buffer_remaining,
            }),
            Err(e) => Err(e),
        })
    }

    /// The envelope read after the template's start, as [`scan`] reads it.
    #[inline(always)]
    fn scan<'a>(&self, bytes: &'a [u8], limits: &Limits) -> Option<Result<Ack<'a>, DecodeError>> {
        if self.start.is_empty() || !bytes.starts_with(&self.start) {
            return None;
        }
        if bytes.len() > limits.max_message_size {
            return Some(Err(crate::error::DecodeErrorKind::TooLarge {
                size: bytes.len(),
                limit: limits.max_message_size,
            }
            .into()));
        }
        // what `scan` checks before and while reading the start: the limits, the end, the
        // identifier's length (the rest of the start is the writer's, checked by `new`)
        let id_len = self.identifier.as_str().len();
        if !may_match(bytes, limits) || id_len > limits.max_text_len {
            return None;
        }
        let c = B {
            b: bytes,
            k: self.start.len(),
        };
        let id = Id::Shared(self.identifier.clone());
        Some(Ok(scan_rest(c, self.soap, self.wsa, self.vi, id, limits)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every standalone acknowledgement the writer writes (any version, ranges or none,
    /// Final, BufferRemaining, RelatesTo, To) takes this path and reads back as written.
    #[test]
    fn writer_acknowledgements_take_this_path() {
        use crate::{decode, decode_without_fast_path, encode, Framing};
        use std::sync::Arc;
        let mut n = 0;
        for v in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
            for soap in [SoapVersion::Soap11, SoapVersion::Soap12] {
                for wsa in [AddressingVersion::Wsa10, AddressingVersion::Wsa200408] {
                    for ranges in [
                        vec![],
                        vec![(1, 1)],
                        (1..=9).map(|k| (3 * k, 3 * k + 1)).collect(),
                    ] {
                        for (br, fin, rel, to) in [
                            (None, false, None, None),
                            (Some(0), true, Some("urn:uuid:r"), None),
                            (Some(2147483647), true, None, Some("http://h:1/svc")),
                            (Some(9), false, Some(" r "), Some(wsa.anonymous())),
                        ] {
                            let mut m =
                                Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
                            m.ack = Some(AckHeader {
                                identifier: SequenceId::from(
                                    "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b",
                                ),
                                none: ranges.is_empty(),
                                ranges: ranges.clone(),
                                final_ack: fin && v == RmVersion::Wsrm11,
                                nacks: Vec::new(),
                                buffer_remaining: br,
                            });
                            m.relates_to = rel.map(Arc::from);
                            m.to = to.map(Arc::from);
                            let xml = encode(&m, &Framing::new(soap, wsa)).unwrap_or_default();
                            let before = TAKEN.with(|t| t.get());
                            let d = decode(xml.clone(), &Limits::default());
                            assert_eq!(
                                TAKEN.with(|t| t.get()),
                                before + 1,
                                "{}",
                                String::from_utf8_lossy(&xml)
                            );
                            assert_eq!(
                                d,
                                decode_without_fast_path(xml.clone(), &Limits::default())
                            );
                            let d = d.unwrap_or_else(|e| panic!("{e}"));
                            // the writer omits an anonymous To under WS-Addressing 1.0
                            if to == Some(wsa.anonymous()) && wsa == AddressingVersion::Wsa10 {
                                m.to = None;
                            }
                            m.relates_to = rel.map(|r| Arc::from(r.trim()));
                            assert_eq!(d.message, m);
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 96);
    }

    /// The identifier of the previous acknowledgement with the same bytes is shared; other
    /// bytes (also those that trim to the same text) are read as they are.
    #[test]
    fn recurring_identifiers_are_shared() {
        use crate::{decode, Framing};
        let ack = |id: &str| {
            Bytes::from(format!(
                "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>{id}</r:Identifier><r:AcknowledgementRange Lower=\"1\" Upper=\"2\"/></r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>"
            ))
        };
        let id = |xml: Bytes| {
            let d = decode(xml, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.soap, Framing::soap12_wsa10().soap);
            d.message.ack.map(|a| a.identifier).unwrap_or_default()
        };
        let a = id(ack("urn:uuid:recurring"));
        let b = id(ack("urn:uuid:recurring"));
        assert_eq!(a, b);
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        let c = id(ack(" urn:uuid:recurring "));
        assert_eq!(c.as_str(), "urn:uuid:recurring");
        assert_ne!(a.as_str().as_ptr(), c.as_str().as_ptr());
        // the slot now holds the untrimmed one's text; the trimmed bytes still read the same
        let d = id(ack("urn:uuid:recurring"));
        assert_eq!(d.as_str(), "urn:uuid:recurring");
        assert_eq!(id(ack("urn:uuid:other")).as_str(), "urn:uuid:other");
        let slots: std::collections::HashSet<usize> = (0..64u32)
            .map(|k| id_slot(format!("urn:uuid:8cf9383c-d191-47fc-a018-{k:012x}").as_bytes()))
            .collect();
        assert!(slots.len() > 48, "{}", slots.len());
    }

    #[test]
    fn constants_spell_the_writer_s_shapes() {
        use crate::ns::{act, rm_namespace, ENVELOPE_STARTS, NETRM, RM10, RM11};
        for (prolog, soap, wsa) in ENVELOPE_STARTS {
            let want = format!(
                "<s:Envelope xmlns:s=\"{}\" xmlns:a=\"{}\"><s:Header>",
                soap.namespace(),
                wsa.namespace()
            );
            assert_eq!(prolog, want.as_bytes());
            assert_eq!(
                crate::ns::envelope_start_candidate(prolog),
                Some((prolog, soap, wsa))
            );
        }
        for (vi, v) in [RmVersion::Wsrm10, RmVersion::Wsrm11]
            .into_iter()
            .enumerate()
        {
            let ns = rm_namespace(v);
            let start = format!("<r:SequenceAcknowledgement xmlns:r=\"{ns}\"><r:Identifier>");
            assert_eq!(ACK_START[vi], start.as_bytes());
            assert_eq!(ACK_START[vi][RM_AT] == b's', v == RmVersion::Wsrm10);
            for (pi, (prolog, _, _)) in ENVELOPE_STARTS.into_iter().enumerate() {
                assert_eq!(STARTS[2 * pi + vi], [prolog, ACK_START[vi]].concat());
            }
            let action = format!("{ns}/{}", act::SEQUENCE_ACKNOWLEDGEMENT);
            let end = format!(
                "</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">{action}</a:Action>"
            );
            assert_eq!(ACK_END_ACTION[vi], end.as_bytes());
            assert_eq!(
                ACK_END_ACTION_END[vi],
                format!("{end}</s:Header><s:Body/></s:Envelope>").as_bytes()
            );
            assert_eq!(ACTION_LEN[vi], action.len());
            assert_eq!(
                interned_rm_action(v, ACTION_INDEX[vi]).as_deref(),
                Some(action.as_str())
            );
        }
        assert_eq!(
            RM10.len() + 1,
            b"http://schemas.xmlsoap.org/ws/2005/02/rm\"".len()
        );
        assert_eq!(
            RM11.len(),
            "http://docs.oasis-open.org/ws-rx/wsrm/200702".len()
        );
        let br = format!("<netrm:BufferRemaining xmlns:netrm=\"{NETRM}\">");
        assert_eq!(BUFFER_REMAINING, br.as_bytes());
        assert_eq!(
            BUFFER_REMAINING,
            [&BUFFER_REMAINING_1[..], &BUFFER_REMAINING_2[..]].concat()
        );
    }
}
