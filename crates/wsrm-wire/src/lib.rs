//! # wsrm-wire — SOAP + WS-Addressing + WS-RM codec
//!
//! Owns: reading and writing SOAP 1.1/1.2 envelopes with WS-Addressing (2004/08 and 1.0) and
//! WS-ReliableMessaging (1.0 and 1.1) headers and bodies, shaped as WCF writes them, with strict
//! limits on hostile input. The application body stays an opaque byte range.
//!
//! Does not own: protocol decisions (that is `wsrm-proto`) or transports (that is `wsrm`).
//!
//! ## API
//!
//! ```
//! use bytes::Bytes;
//! use wsrm_wire::{decode, encode, Framing, Limits};
//!
//! let xml = Bytes::from_static(br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
//!   xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header>
//!   <a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/02/rm/AckRequested</a:Action>
//!   <r:AckRequested xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/rm"><r:Identifier>urn:uuid:1</r:Identifier></r:AckRequested>
//!   </s:Header><s:Body/></s:Envelope>"#);
//! let d = decode(xml, &Limits::default()).unwrap();
//! assert_eq!(d.message.ack_requested.as_ref().map(|i| i.as_str()), Some("urn:uuid:1"));
//! // write it back the way WCF would
//! let framing = Framing::new(d.soap, d.addressing);
//! let out = encode(&d.message, &framing).unwrap();
//! assert!(out.starts_with(b"<s:Envelope"));
//! ```
//!
//! * [`decode`]`(Bytes, &Limits) -> Result<`[`Decoded`]`, `[`DecodeError`]`>` — one envelope.
//!   [`Decoded`] carries the envelope facts ([`SoapVersion`], [`AddressingVersion`], RM version
//!   or `None`, raw action, full `ReplyTo`/`FaultTo`/`From`/`AcksTo` endpoint references with
//!   their reference parameters, the raw body bytes) and the engine-level
//!   [`wsrm_proto::msg::Message`]. An application body is `Body::Application(Bytes)`: a
//!   zero-copy slice of the input, never interpreted.
//! * [`AckTemplate`]`::new(SoapVersion, AddressingVersion, RmVersion, &SequenceId)` and
//!   [`AckTemplate::decode`]`(&[u8], &Limits) -> Option<Result<Decoded, DecodeError>>` — the
//!   standalone acknowledgements of one sequence as this crate writes them (the client's HTTP
//!   response to each one-way message), their fixed start compared at once: `Some` of exactly
//!   what [`decode`] gives, or `None` (then call [`decode`]).
//! * [`DecodeError`] says what is wrong ([`DecodeError::kind`]), which fault to answer with
//!   ([`DecodeError::fault`], a `wsrm_proto::msg::Fault`, or `None` for a bare HTTP 400/413)
//!   and the HTTP status ([`DecodeError::http_status`]); [`DecodeError::soap`]/[`rm`](DecodeError::rm)/
//!   [`message_id`](DecodeError::message_id) give what is needed to frame that fault.
//! * [`encode`]`(&Message, &Framing) -> Result<Bytes, EncodeError>` (or [`encode_into`] a
//!   `BytesMut`) — WCF-shaped output: prefixes `s`/`a`/`r`/`netrm`, RM headers first
//!   (ack, AckRequested, Sequence), then `Action`, `MessageID`, `ReplyTo`, `RelatesTo`, `To`,
//!   echoed reference parameters; `s:mustUnderstand="1"` on Sequence, Action and To only; the
//!   empty ack per version; fault actions and SOAP 1.1/1.2 fault encodings per version.
//!   [`Framing`] = SOAP version, WS-Addressing version, default `To`, reference parameters to
//!   echo, `xml:lang`; [`Framing::for_reply`] frames the answer to a decoded request. Conventions: an empty `CreateSequence::acks_to` is written as the
//!   anonymous URI of the framing's WS-Addressing version; a WS-Addressing 2004/08 request
//!   (CreateSequence, or MessageID without RelatesTo) without `reply_to` gets an anonymous `ReplyTo`; an anonymous
//!   `To` is omitted under WS-Addressing 1.0.
//! * [`SequenceTemplate`]`::new(&Message, &Framing)` and
//!   [`SequenceTemplate::encode`]`(&Message) -> Option<Bytes>` — a client's one-way messages
//!   of one sequence (same action and `To`), written as the bytes before and after the
//!   message number plus the body: exactly what [`encode`] writes, or `None` for a message of
//!   another shape (then call [`encode`]); [`SequenceTemplate::pieces`] gives the same
//!   envelope as [`SequencePieces`] (shared head and tail, the number, the body) for a
//!   vectored write that does not copy it together.
//! * [`action_uri`] gives the `wsa:Action` (= SOAP 1.1 `SOAPAction`) of a message;
//!   [`SoapVersion::content_type`] the HTTP content type.
//!
//! The mapping between the wire and `wsrm_proto::msg` lives in [`map`]; the streaming reader
//! (a borrowing tokenizer over the input slice with its own namespace stack, no DOM, no copies;
//! the application body is skipped as opaque content) and the writer know nothing of the
//! engine's types beyond plain data.
//!
//! A MustUnderstand refusal is answered with [`Framing::for_error`], which names the header in a
//! SOAP 1.2 `env:NotUnderstood` header block; [`Framing::for_fault`] addresses a fault to the
//! request's `FaultTo`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use bytes::{Bytes, BytesMut};
use wsrm_proto::msg::Message;

mod body;
pub mod error;
pub mod json;
pub mod map;
pub mod ns;
mod reader;
mod writer;
mod xml;

pub use body::self_contained_body;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, LimitKind};
pub use map::{action_uri, Decoded, Digits, Framing, SequencePieces, SequenceTemplate};
pub use ns::{AddressingVersion, SoapVersion};
pub use reader::{AckTemplate, EndpointReference};

/// Bounds on what [`decode`] accepts. Exceeding one gives a typed error after bounded work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum message size in bytes (WCF `maxReceivedMessageSize`, default 65,536).
    pub max_message_size: usize,
    /// Maximum element nesting depth, envelope included (WCF `readerQuotas.maxDepth`, 32).
    pub max_depth: usize,
    /// Maximum number of SOAP header blocks (64).
    pub max_headers: usize,
    /// Maximum attributes on one element, namespace declarations included (32).
    pub max_attributes: usize,
    /// Maximum total bytes of the attributes of one start tag (8,192).
    pub max_attributes_len: usize,
    /// Maximum length of an element's qualified name in bytes (256).
    pub max_name_len: usize,
    /// Maximum length of a text value the codec reads (WCF `maxStringContentLength`, 8,192).
    pub max_text_len: usize,
    /// Maximum `AcknowledgementRange` (and `Nack`) elements in one acknowledgement (WCF keeps at
    /// most 128 ranges, `MaxSequenceRanges`).
    pub max_ack_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65_536,
            max_depth: 32,
            max_headers: 64,
            max_attributes: 32,
            max_attributes_len: 8_192,
            max_name_len: 256,
            max_text_len: 8_192,
            max_ack_ranges: 128,
        }
    }
}

/// Decodes one SOAP envelope.
pub fn decode(bytes: Bytes, limits: &Limits) -> Result<Decoded, DecodeError> {
    reader::read(&bytes, limits, true)
}

/// [`decode`] without its fast path for the header blocks of the per-message envelopes
/// (sequence messages and acknowledgements shaped as this crate writes them): every header is
/// read by the general reader. The result is the same as [`decode`]'s for every input; this
/// exists so that tests can check exactly that.
pub fn decode_without_fast_path(bytes: Bytes, limits: &Limits) -> Result<Decoded, DecodeError> {
    reader::read(&bytes, limits, false)
}

/// Encodes `msg` framed by `framing`.
pub fn encode(msg: &Message, framing: &Framing) -> Result<Bytes, EncodeError> {
    // allocated once, at the size the message needs (no growth while writing)
    map::encode(msg, framing)
}

/// Encodes `msg` framed by `framing`, appending to `buf`. On error nothing useful is in the
/// appended part (truncate `buf` to its previous length).
pub fn encode_into(
    msg: &Message,
    framing: &Framing,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    map::write(msg, framing, buf)
}
