//! Decode and encode errors, and the fault each decode error answers with.

use std::fmt;
use std::sync::Arc;

use wsrm_proto::msg::{
    AckHeader, Fault, FaultCode, FaultDetail, FaultKind, RmVersion, SequenceId, MAX_MESSAGE_NUMBER,
};

use crate::ns::{AddressingVersion, SoapVersion, SOAP11, SOAP12};
use crate::reader::EndpointReference;

/// Which configured limit was exceeded (see [`crate::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Element nesting depth.
    Depth,
    /// Number of SOAP header blocks.
    Headers,
    /// Number of attributes (namespace declarations included) on one element.
    Attributes,
    /// Total bytes of the attributes of one start tag.
    AttributesLength,
    /// Length of an element name.
    NameLength,
    /// Length of a text value read by the codec (identifiers, addresses, numbers, reasons).
    TextLength,
    /// Number of `AcknowledgementRange` elements in one acknowledgement.
    AckRanges,
}

impl LimitKind {
    /// Short name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Depth => "nesting depth",
            LimitKind::Headers => "header count",
            LimitKind::Attributes => "attribute count",
            LimitKind::AttributesLength => "attribute bytes",
            LimitKind::NameLength => "name length",
            LimitKind::TextLength => "text length",
            LimitKind::AckRanges => "acknowledgement ranges",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a message that [`crate::decode`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The message is larger than `Limits::max_message_size` (WCF: QuotaExceeded, HTTP 413).
    #[error("message of {size} bytes exceeds the maximum message size of {limit} bytes")]
    TooLarge {
        /// Size received.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not well-formed XML (truncated input, bad syntax, undeclared prefix, unknown entity,
    /// processing instruction, non-UTF-8 encoding, …).
    #[error("malformed XML at byte {offset}: {reason}")]
    Xml {
        /// Byte offset in the input where the problem was detected.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A `<!DOCTYPE …>`: DTDs are never processed and entities never expanded.
    #[error("DOCTYPE at byte {offset} is not allowed (no DTD processing)")]
    Doctype {
        /// Byte offset of the DOCTYPE.
        offset: usize,
    },
    /// A configured limit was exceeded.
    #[error("{what} limit exceeded at byte {offset} (limit {limit})")]
    LimitExceeded {
        /// Which limit.
        what: LimitKind,
        /// The configured limit.
        limit: usize,
        /// Byte offset where it was exceeded.
        offset: usize,
    },
    /// The document element is not a SOAP `Envelope`, or the envelope is not shaped
    /// `Envelope(Header?, Body)`.
    #[error("not a SOAP envelope: {reason}")]
    NotEnvelope {
        /// What is wrong.
        reason: String,
    },
    /// An `Envelope` element in a namespace that is neither SOAP 1.1 nor SOAP 1.2.
    #[error("envelope namespace '{namespace}' is neither SOAP 1.1 nor SOAP 1.2")]
    VersionMismatch {
        /// The namespace found.
        namespace: String,
    },
    /// WS-Addressing or WS-RM elements of two different versions in one message.
    #[error("mixed versions: {reason}")]
    MixedVersions {
        /// What was mixed.
        reason: String,
    },
    /// A header marked mustUnderstand that the codec does not understand, or a duplicated RM
    /// header (WCF answers both with a SOAP MustUnderstand fault).
    #[error("header {header} not understood: {reason}")]
    MustUnderstand {
        /// The header, as `{namespace}local`.
        header: String,
        /// Why.
        reason: String,
    },
    /// A WS-Addressing header that is malformed or duplicated.
    #[error("invalid WS-Addressing header {header}: {reason}")]
    InvalidAddressingHeader {
        /// Local name of the header.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A required WS-Addressing header is missing.
    #[error("required WS-Addressing header {header} is missing")]
    MissingAddressingHeader {
        /// Local name of the missing header.
        header: &'static str,
    },
    /// An action in the WS-RM namespace that this RM version does not define.
    #[error("action '{action}' is not supported")]
    ActionNotSupported {
        /// The action.
        action: String,
    },
    /// A malformed WS-RM header (`Sequence`, `SequenceAcknowledgement`, `AckRequested`,
    /// `SequenceFault`).
    #[error("invalid wsrm:{header} header: {reason}")]
    InvalidRmHeader {
        /// Local name of the header.
        header: &'static str,
        /// The sequence identifier, if it could be read.
        identifier: Option<SequenceId>,
        /// What is wrong.
        reason: String,
    },
    /// A `MessageNumber` above 2^63 − 1.
    #[error("message number {number} exceeds the maximum 9223372036854775807")]
    MessageNumberRollover {
        /// The sequence.
        identifier: SequenceId,
        /// The number as written.
        number: String,
    },
    /// An acknowledgement violating the range rules (Lower > Upper, overlapping ranges,
    /// `Lower="0"` where not allowed).
    #[error("invalid acknowledgement: {reason}")]
    InvalidAcknowledgement {
        /// The acknowledgement as read (echoed in the fault detail).
        ack: AckHeader,
        /// What is wrong.
        reason: String,
    },
    /// A malformed `CreateSequence` request (or one this implementation refuses, e.g.
    /// `UsesSequenceSSL`).
    #[error("CreateSequence refused: {reason}")]
    CreateSequenceRefused {
        /// Why.
        reason: String,
    },
    /// A malformed RM body other than CreateSequence.
    #[error("invalid wsrm:{element} body: {reason}")]
    InvalidBody {
        /// Local name of the expected body element.
        element: &'static str,
        /// The sequence identifier, if it could be read.
        identifier: Option<SequenceId>,
        /// What is wrong.
        reason: String,
    },
    /// A malformed SOAP fault.
    #[error("invalid SOAP fault: {reason}")]
    InvalidFault {
        /// What is wrong.
        reason: String,
    },
}

/// A refused message: what is wrong ([`DecodeError::kind`]), what was known about the
/// message when it was refused (versions, `MessageID` — to address the fault), and the fault
/// and HTTP status to answer with ([`DecodeError::fault`], [`DecodeError::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    kind: Box<DecodeErrorKind>,
    pub(crate) soap: Option<SoapVersion>,
    pub(crate) addressing: Option<AddressingVersion>,
    pub(crate) rm: Option<RmVersion>,
    pub(crate) message_id: Option<Arc<str>>,
    /// `wsa:FaultTo` of the refused message if it had been read, else its `wsa:ReplyTo`.
    pub(crate) fault_endpoint: Option<EndpointReference>,
}

impl From<DecodeErrorKind> for DecodeError {
    fn from(kind: DecodeErrorKind) -> Self {
        DecodeError::new(kind)
    }
}

impl DecodeError {
    /// An error with no context.
    pub fn new(kind: DecodeErrorKind) -> Self {
        DecodeError {
            kind: Box::new(kind),
            soap: None,
            addressing: None,
            rm: None,
            message_id: None,
            fault_endpoint: None,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// The SOAP version of the envelope, if it was recognised (write the fault in it; default
    /// to SOAP 1.2 otherwise).
    pub fn soap(&self) -> Option<SoapVersion> {
        self.soap
    }

    /// The WS-Addressing version, if any WS-Addressing header had been read.
    pub fn addressing(&self) -> Option<AddressingVersion> {
        self.addressing
    }

    /// The WS-RM version, if any RM element or action had been read.
    pub fn rm(&self) -> Option<RmVersion> {
        self.rm
    }

    /// The offending message's `wsa:MessageID`, if it had been read (the fault's `RelatesTo`).
    pub fn message_id(&self) -> Option<&Arc<str>> {
        self.message_id.as_ref()
    }

    /// Where the fault goes (WS-Addressing): the refused message's `wsa:FaultTo` if it had been
    /// read, else its `wsa:ReplyTo`; `None` = the anonymous endpoint (the HTTP response). See
    /// [`Framing::for_error`](crate::Framing::for_error).
    pub fn fault_endpoint(&self) -> Option<&EndpointReference> {
        self.fault_endpoint.as_ref()
    }

    /// For a MustUnderstand refusal naming a header: that header as (namespace, local name).
    /// A SOAP 1.2 fault names it in an `env:NotUnderstood` header block
    /// ([`Framing::not_understood`](crate::Framing::not_understood)).
    pub fn not_understood(&self) -> Option<(&str, &str)> {
        match &*self.kind {
            DecodeErrorKind::MustUnderstand { header, .. } if header.starts_with('{') => {
                Some(split_clark(header))
            }
            _ => None,
        }
    }

    /// A stable name of the error kind (`"TooLarge"`, `"Xml"`, `"Doctype"`, `"LimitExceeded"`,
    /// `"NotEnvelope"`, `"VersionMismatch"`, `"MixedVersions"`, `"MustUnderstand"`,
    /// `"InvalidAddressingHeader"`, `"MissingAddressingHeader"`, `"ActionNotSupported"`,
    /// `"InvalidRmHeader"`, `"MessageNumberRollover"`, `"InvalidAcknowledgement"`,
    /// `"CreateSequenceRefused"`, `"InvalidBody"`, `"InvalidFault"`).
    pub fn code(&self) -> &'static str {
        match &*self.kind {
            DecodeErrorKind::TooLarge { .. } => "TooLarge",
            DecodeErrorKind::Xml { .. } => "Xml",
            DecodeErrorKind::Doctype { .. } => "Doctype",
            DecodeErrorKind::LimitExceeded { .. } => "LimitExceeded",
            DecodeErrorKind::NotEnvelope { .. } => "NotEnvelope",
            DecodeErrorKind::VersionMismatch { .. } => "VersionMismatch",
            DecodeErrorKind::MixedVersions { .. } => "MixedVersions",
            DecodeErrorKind::MustUnderstand { .. } => "MustUnderstand",
            DecodeErrorKind::InvalidAddressingHeader { .. } => "InvalidAddressingHeader",
            DecodeErrorKind::MissingAddressingHeader { .. } => "MissingAddressingHeader",
            DecodeErrorKind::ActionNotSupported { .. } => "ActionNotSupported",
            DecodeErrorKind::InvalidRmHeader { .. } => "InvalidRmHeader",
            DecodeErrorKind::MessageNumberRollover { .. } => "MessageNumberRollover",
            DecodeErrorKind::InvalidAcknowledgement { .. } => "InvalidAcknowledgement",
            DecodeErrorKind::CreateSequenceRefused { .. } => "CreateSequenceRefused",
            DecodeErrorKind::InvalidBody { .. } => "InvalidBody",
            DecodeErrorKind::InvalidFault { .. } => "InvalidFault",
        }
    }

    /// The HTTP status to answer with on a request/reply transport: 413 for an oversized
    /// message, 400 for input that is not a well-formed SOAP envelope within the limits (WCF's
    /// encoder rejects those before any SOAP processing: no fault), 500 with the
    /// [`fault`](Self::fault) otherwise.
    pub fn http_status(&self) -> u16 {
        match &*self.kind {
            DecodeErrorKind::TooLarge { .. } => 413,
            DecodeErrorKind::Xml { .. }
            | DecodeErrorKind::Doctype { .. }
            | DecodeErrorKind::LimitExceeded { .. }
            | DecodeErrorKind::NotEnvelope { .. } => 400,
            _ => 500,
        }
    }

    /// The fault to answer with, or `None` when WCF answers with a bare HTTP status
    /// ([`http_status`](Self::http_status) 400/413). The runtime encodes it with
    /// [`crate::encode`] (SOAP version from [`soap`](Self::soap), RM version from
    /// [`rm`](Self::rm)).
    ///
    /// | error | fault |
    /// |---|---|
    /// | VersionMismatch | SOAP `VersionMismatch` (as `FaultKind::Other("{env-ns}VersionMismatch")`) |
    /// | MustUnderstand, MixedVersions | SOAP `MustUnderstand` |
    /// | InvalidAddressingHeader | `wsa:InvalidAddressingHeader` (as `FaultKind::Other`) |
    /// | MissingAddressingHeader | `wsa:MessageAddressingHeaderRequired` |
    /// | ActionNotSupported | `wsa:ActionNotSupported` |
    /// | InvalidRmHeader / InvalidBody with identifier | `wsrm:SequenceTerminated` (Sender) |
    /// | InvalidRmHeader / InvalidBody without identifier, InvalidFault | plain Sender fault |
    /// | MessageNumberRollover | `wsrm:MessageNumberRollover` |
    /// | InvalidAcknowledgement | `wsrm:InvalidAcknowledgement` echoing the ack |
    /// | CreateSequenceRefused | `wsrm:CreateSequenceRefused` (Sender) |
    pub fn fault(&self) -> Option<Fault> {
        let soap_ns = match self.soap {
            Some(SoapVersion::Soap11) => SOAP11,
            _ => SOAP12,
        };
        let wsa = self.addressing.unwrap_or(AddressingVersion::Wsa10);
        let reason = self.kind.to_string();
        let f = match &*self.kind {
            DecodeErrorKind::TooLarge { .. }
            | DecodeErrorKind::Xml { .. }
            | DecodeErrorKind::Doctype { .. }
            | DecodeErrorKind::LimitExceeded { .. }
            | DecodeErrorKind::NotEnvelope { .. } => return None,
            DecodeErrorKind::VersionMismatch { .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::Other(Some(format!("{{{soap_ns}}}VersionMismatch"))),
                reason,
                FaultDetail::None,
            ),
            DecodeErrorKind::MustUnderstand { header, .. } if header.starts_with('{') => {
                // WCF's reason text (MustUnderstandSoapException)
                let (ns, local) = split_clark(header);
                Fault::new(
                    FaultCode::Sender,
                    FaultKind::MustUnderstand,
                    format!(
                        "The header '{local}' from the namespace '{ns}' was not understood by the \
                         recipient of this message, causing the message to not be processed.  \
                         This error typically indicates that the sender of this message has \
                         enabled a communication protocol that the receiver cannot process.  \
                         Please ensure that the configuration of the client's binding is \
                         consistent with the service's binding. "
                    ),
                    FaultDetail::None,
                )
            }
            DecodeErrorKind::MustUnderstand { .. } | DecodeErrorKind::MixedVersions { .. } => {
                Fault::new(
                    FaultCode::Sender,
                    FaultKind::MustUnderstand,
                    reason,
                    FaultDetail::None,
                )
            }
            DecodeErrorKind::InvalidAddressingHeader { .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::Other(Some(format!(
                    "{{{}}}InvalidAddressingHeader",
                    wsa.namespace()
                ))),
                reason,
                FaultDetail::None,
            ),
            DecodeErrorKind::MissingAddressingHeader { .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::MessageAddressingHeaderRequired,
                reason,
                FaultDetail::None,
            ),
            DecodeErrorKind::ActionNotSupported { .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::ActionNotSupported,
                reason,
                FaultDetail::None,
            ),
            DecodeErrorKind::InvalidRmHeader { identifier, .. }
            | DecodeErrorKind::InvalidBody { identifier, .. } => match identifier {
                Some(id) => Fault::sequence_terminated(FaultCode::Sender, id, reason),
                None => Fault::new(
                    FaultCode::Sender,
                    FaultKind::Other(None),
                    reason,
                    FaultDetail::None,
                ),
            },
            DecodeErrorKind::InvalidFault { .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::Other(None),
                reason,
                FaultDetail::None,
            ),
            DecodeErrorKind::MessageNumberRollover { identifier, .. } => Fault::new(
                FaultCode::Sender,
                FaultKind::MessageNumberRollover,
                reason,
                FaultDetail::Rollover {
                    identifier: identifier.clone(),
                    max_message_number: match self.rm {
                        Some(RmVersion::Wsrm11) => Some(MAX_MESSAGE_NUMBER),
                        _ => None,
                    },
                },
            ),
            DecodeErrorKind::InvalidAcknowledgement { ack, .. } => {
                Fault::invalid_acknowledgement(ack.clone())
            }
            DecodeErrorKind::CreateSequenceRefused { .. } => {
                Fault::create_sequence_refused(FaultCode::Sender, reason)
            }
        };
        Some(f)
    }

    /// The fault as a short QName for humans, e.g. `wsrm:SequenceTerminated`, `soap:MustUnderstand`,
    /// or `none (HTTP 400)`.
    pub fn fault_name(&self) -> String {
        match self.fault() {
            None => format!("none (HTTP {})", self.http_status()),
            Some(f) => fault_kind_name(&f.kind),
        }
    }
}

/// A short prefixed name of a fault kind (`wsrm:…`, `wsa:…`, `soap:…`), for humans.
pub fn fault_kind_name(kind: &FaultKind) -> String {
    match kind {
        FaultKind::SequenceTerminated => "wsrm:SequenceTerminated".into(),
        FaultKind::UnknownSequence => "wsrm:UnknownSequence".into(),
        FaultKind::InvalidAcknowledgement => "wsrm:InvalidAcknowledgement".into(),
        FaultKind::MessageNumberRollover => "wsrm:MessageNumberRollover".into(),
        FaultKind::LastMessageNumberExceeded => "wsrm:LastMessageNumberExceeded".into(),
        FaultKind::SequenceClosed => "wsrm:SequenceClosed".into(),
        FaultKind::CreateSequenceRefused => "wsrm:CreateSequenceRefused".into(),
        FaultKind::ConnectionLimitReached => {
            "wsrm:CreateSequenceRefused/netrm:ConnectionLimitReached".into()
        }
        FaultKind::WsrmRequired => "wsrm:WSRMRequired".into(),
        FaultKind::MustUnderstand => "soap:MustUnderstand".into(),
        FaultKind::EndpointUnavailable => "wsa:EndpointUnavailable".into(),
        FaultKind::MessageAddressingHeaderRequired => "wsa:MessageAddressingHeaderRequired".into(),
        FaultKind::ActionNotSupported => "wsa:ActionNotSupported".into(),
        FaultKind::Other(None) => "soap:Sender".into(),
        FaultKind::Other(Some(q)) => {
            let (ns, local) = split_clark(q);
            let p = match ns {
                SOAP11 | SOAP12 => "soap",
                crate::ns::WSA10 | crate::ns::WSA200408 => "wsa",
                crate::ns::RM10 | crate::ns::RM11 => "wsrm",
                crate::ns::NETRM => "netrm",
                _ => return q.clone(),
            };
            format!("{p}:{local}")
        }
    }
}

/// Splits a `{namespace}local` name; a name without braces has an empty namespace.
pub fn split_clark(q: &str) -> (&str, &str) {
    if let Some(rest) = q.strip_prefix('{') {
        if let Some(i) = rest.find('}') {
            return (&rest[..i], &rest[i + 1..]);
        }
    }
    ("", q)
}

/// Why [`crate::encode`] could not write a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The action or body does not exist in the message's RM version (e.g. CloseSequence in 1.0,
    /// LastMessage in 1.1).
    #[error("{what} does not exist in WS-RM {version}")]
    NotInVersion {
        /// What.
        what: &'static str,
        /// The message's RM version.
        version: RmVersion,
    },
    /// The fault kind cannot be written in this SOAP/RM version combination.
    #[error("fault {what} cannot be written: {reason}")]
    InvalidFault {
        /// Which fault.
        what: String,
        /// Why.
        reason: &'static str,
    },
}
