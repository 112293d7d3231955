//! [`SequenceTemplate`]: a client's one-way sequence messages of one session, written from
//! their fixed parts.

use std::sync::Arc;

use bytes::Bytes;
use wsrm_proto::msg::{Action, Body, Message, RmVersion, SequenceId};

use super::{
    action_of, plain_len, reply_to_of, start, write_headers, First, Framing, BODY_CLOSE, BODY_OPEN,
};
use crate::writer as w;

/// The envelope of a one-way application message of one sequence, as [`encode`](crate::encode)
/// writes it under one [`Framing`], cut into the bytes before the message number and the bytes
/// from after it to the start of the body: every message of a session with the same action
/// differs only in its number and body, so encoding one is three copies and a number.
///
/// [`SequenceTemplate::encode`] gives exactly the bytes [`encode`](crate::encode) gives for the
/// same message and framing, or `None` for any message of another shape (another sequence,
/// action, `To` or RM version, a `LastMessage`, an acknowledgement or `AckRequested` header, a
/// `MessageID`, `RelatesTo` or `ReplyTo`, a non-application body); the caller then encodes it
/// the general way. A template is for the framing it was made with.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use wsrm_proto::msg::{Action, Body, Message, RmVersion, SequenceHeader, SequenceId};
/// use wsrm_wire::{encode, Framing, SequenceTemplate};
///
/// let framing = Framing::soap12_wsa10();
/// let mut m = Message::new(
///     RmVersion::Wsrm11,
///     Action::Other(Arc::from("urn:example/Notify")),
///     Body::Application(Bytes::from_static(b"<p xmlns=\"urn:x\">1</p>")),
/// );
/// m.sequence = Some(SequenceHeader {
///     identifier: SequenceId::new("urn:uuid:0b9a5c3e-1a2b-4c3d-8e9f-0123456789ab"),
///     number: 1,
///     last_message: false,
/// });
/// m.to = Some(Arc::from("http://example.com/svc"));
/// let t = SequenceTemplate::new(&m, &framing).expect("a one-way sequence message");
///
/// if let Some(s) = m.sequence.as_mut() {
///     s.number = 42;
/// }
/// m.body = Body::Application(Bytes::from_static(b"<p xmlns=\"urn:x\">42</p>"));
/// assert_eq!(t.encode(&m), Some(encode(&m, &framing)?));
/// # Ok::<(), wsrm_wire::EncodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SequenceTemplate {
    version: RmVersion,
    identifier: SequenceId,
    action: Arc<str>,
    to: Option<Arc<str>>,
    /// From the envelope's start to `<r:MessageNumber>` inclusive (shared by the
    /// [`SequencePieces`] it gives).
    head: Bytes,
    /// From `</r:MessageNumber>` to `<s:Body>` inclusive.
    tail: Bytes,
}

/// One message of a [`SequenceTemplate`] as the pieces of its envelope, in order: `head`, the
/// decimal digits of `number` ([`SequencePieces::digits`]), `tail`, `body` and
/// [`SequencePieces::CLOSE`]. Their
/// concatenation is exactly what [`SequenceTemplate::encode`] gives for the message; a
/// caller that can write pieces (a vectored write) sends them without copying the envelope
/// together. `head` and `tail` are the template's own bytes (reference-counted), `body` the
/// message's.
#[derive(Debug, Clone)]
pub struct SequencePieces {
    /// The envelope up to `<r:MessageNumber>` inclusive.
    pub head: Bytes,
    /// The message number, written as decimal digits without sign or leading zeros.
    pub number: u64,
    /// From `</r:MessageNumber>` to `<s:Body>` inclusive.
    pub tail: Bytes,
    /// The SOAP Body's content.
    pub body: Bytes,
}

/// The decimal digits of a number as this crate's writer writes it (no sign, no leading
/// zeros; `0` is `"0"`), kept inline: at most 20 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Digits {
    buf: [u8; 20],
    len: u8,
}

impl Digits {
    /// The digits of `n`.
    pub fn of(n: u64) -> Self {
        let mut d = Digits {
            buf: [0; 20],
            len: 0,
        };
        w::num(&mut d, n);
        d
    }

    /// The digits as text bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// The writer's number formatting into the fixed buffer: it writes at most 20 bytes before
/// cutting back to the digits (a `u64` has at most 20).
impl w::Out for Digits {
    #[inline(always)]
    fn put(&mut self, s: &[u8]) {
        let at = usize::from(self.len);
        if let Some(out) = self.buf.get_mut(at..at + s.len()) {
            out.copy_from_slice(s);
            // at most 20: fits
            self.len += s.len() as u8;
        }
    }
    #[inline(always)]
    fn written(&self) -> usize {
        usize::from(self.len)
    }
    #[inline(always)]
    fn cut(&mut self, len: usize) {
        // only ever cut back
        self.len = self.len.min(len as u8);
    }
}

impl SequencePieces {
    /// The envelope's end, after the body.
    pub const CLOSE: &'static [u8] = BODY_CLOSE.as_bytes();

    /// The message number as the envelope writes it.
    pub fn digits(&self) -> Digits {
        Digits::of(self.number)
    }

    /// The envelope's length in bytes.
    pub fn len(&self) -> usize {
        self.head.len()
            + w::digits(self.number)
            + self.tail.len()
            + self.body.len()
            + Self::CLOSE.len()
    }

    /// Always false: an envelope has markup. (For the `len` convention.)
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SequenceTemplate {
    /// A template for the messages of `m`'s shape (see [`SequenceTemplate`]) under `framing`:
    /// `None` when `m` is not a one-way application sequence message, or when its values or
    /// the framing need what only the general writer writes (escaping, reference parameters,
    /// body namespace declarations).
    pub fn new(m: &Message, framing: &Framing) -> Option<Self> {
        let (seq, action) = shape(m)?;
        if reply_to_of(m, framing).is_some() {
            return None;
        }
        let text = action_of(m, framing.addressing).ok()?;
        // every value written without escaping, no reference parameters or body namespaces
        let size = plain_len(m, framing, &text)?;
        let mut full = Vec::with_capacity(size);
        write_headers::<true>(m, framing, &text, &mut full);
        full.extend_from_slice(BODY_OPEN.as_bytes());
        let head_len = start(framing.soap, framing.addressing, m.version, First::Sequence).len()
            + seq.identifier.as_str().len()
            + "</r:Identifier><r:MessageNumber>".len();
        let tail_start = head_len + w::digits(seq.number);
        let head = full.get(..head_len)?;
        let tail = full.get(tail_start..)?;
        // the writer's layout, checked rather than assumed
        if !head.ends_with(b"<r:MessageNumber>") || !tail.starts_with(b"</r:MessageNumber>") {
            return None;
        }
        Some(SequenceTemplate {
            version: m.version,
            identifier: seq.identifier.clone(),
            action: action.clone(),
            to: m.to.clone(),
            head: Bytes::copy_from_slice(head),
            tail: Bytes::copy_from_slice(tail),
        })
    }

    /// `m` encoded from the template when it has the template's shape (the same sequence,
    /// action, `To` and RM version, only the number and the body differing), else `None`.
    pub fn encode(&self, m: &Message) -> Option<Bytes> {
        let p = self.pieces(m)?;
        let mut buf = Vec::with_capacity(p.len());
        buf.extend_from_slice(&p.head);
        w::num(&mut buf, p.number);
        buf.extend_from_slice(&p.tail);
        buf.extend_from_slice(&p.body);
        buf.extend_from_slice(SequencePieces::CLOSE);
        Some(Bytes::from(buf))
    }

    /// [`SequenceTemplate::encode`] without writing the envelope: its pieces, when `m` has
    /// the template's shape, else `None`.
    pub fn pieces(&self, m: &Message) -> Option<SequencePieces> {
        let (seq, action) = shape(m)?;
        let Body::Application(body) = &m.body else {
            return None;
        };
        // the same values are usually the same allocations (the engine clones them per
        // message): compared by pointer first
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        let same_to = match (&m.to, &self.to) {
            (None, None) => true,
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        if m.version != self.version
            || !same_to
            || !same(action, &self.action)
            || seq.identifier != self.identifier
        {
            return None;
        }
        Some(SequencePieces {
            head: self.head.clone(),
            number: seq.number,
            tail: self.tail.clone(),
            body: body.clone(),
        })
    }
}

/// The sequence header and action of a one-way application sequence message with no other
/// RM or addressing header than `Sequence`, `Action` and `To`.
fn shape(m: &Message) -> Option<(&wsrm_proto::msg::SequenceHeader, &Arc<str>)> {
    let seq = m.sequence.as_ref()?;
    let Action::Other(action) = &m.action else {
        return None;
    };
    if seq.last_message
        || m.ack.is_some()
        || m.ack_requested.is_some()
        || m.message_id.is_some()
        || m.relates_to.is_some()
        || m.reply_to.is_some()
        || !matches!(m.body, Body::Application(_))
    {
        return None;
    }
    Some((seq, action))
}
