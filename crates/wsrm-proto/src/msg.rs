//! Typed WS-ReliableMessaging messages: the vocabulary shared by the protocol engine
//! (`wsrm-proto`) and the codec (`wsrm-wire`).
//!
//! A [`Message`] is one SOAP envelope seen at the RM layer: the RM headers it carries
//! (`Sequence`, `SequenceAcknowledgement`, `AckRequested`), the WS-Addressing values the RM
//! layer needs (`MessageID`, `RelatesTo`, `ReplyTo`, `To`, `Action`), and a [`Body`]. The
//! application body is an opaque [`Bytes`] range: neither the engine nor the codec interprets it.
//!
//! Nothing here knows about XML, SOAP versions or transports; the codec maps these values to
//! and from envelopes (see `wsrm_wire::map`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// The largest message number WS-RM allows (`xs:long` maximum, 2^63 − 1).
pub const MAX_MESSAGE_NUMBER: u64 = i64::MAX as u64;

/// WS-ReliableMessaging protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RmVersion {
    /// WS-RM February 2005 (`http://schemas.xmlsoap.org/ws/2005/02/rm`), WCF's default
    /// (`WSReliableMessagingFebruary2005`).
    #[default]
    Wsrm10,
    /// OASIS WS-RM 1.1 (`http://docs.oasis-open.org/ws-rx/wsrm/200702`), also used by 1.2.
    Wsrm11,
}

impl RmVersion {
    /// Short human name: `"1.0"` or `"1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RmVersion::Wsrm10 => "1.0",
            RmVersion::Wsrm11 => "1.1",
        }
    }
}

impl fmt::Display for RmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sequence identifier (`wsrm:Identifier`): an opaque, whitespace-trimmed, case-sensitive
/// string. WCF mints `urn:uuid:` + lowercase GUID; peers may send anything.
///
/// Cloning is cheap (reference counted).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(Arc<str>);

impl SequenceId {
    /// Wraps an identifier string as received or generated (the caller trims).
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        SequenceId(s.into())
    }

    /// The identifier text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceId({})", &self.0)
    }
}

impl fmt::Display for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SequenceId {
    fn from(s: &str) -> Self {
        SequenceId(Arc::from(s))
    }
}

impl From<String> for SequenceId {
    fn from(s: String) -> Self {
        SequenceId(Arc::from(s))
    }
}

/// The `wsrm:Sequence` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceHeader {
    /// Sequence the message belongs to.
    pub identifier: SequenceId,
    /// Message number, 1 ≤ n ≤ [`MAX_MESSAGE_NUMBER`].
    pub number: u64,
    /// WS-RM 1.0 `<wsrm:LastMessage/>` marker.
    pub last_message: bool,
}

/// The `wsrm:SequenceAcknowledgement` header.
///
/// `ranges` are inclusive `(lower, upper)` pairs, ascending and non-overlapping when produced by
/// the engine; the codec reports them as they appeared on the wire (the engine validates).
/// A 1.0 empty ack (`Lower="0" Upper="0"`) and a 1.1 `<wsrm:None/>` are both represented as
/// `ranges` empty with `none == true`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckHeader {
    /// Sequence being acknowledged.
    pub identifier: SequenceId,
    /// Acknowledged ranges, inclusive.
    pub ranges: Vec<(u64, u64)>,
    /// Nothing has been received (1.1 `None`, 1.0 `0-0` range).
    pub none: bool,
    /// 1.1 `Final`: the destination will accept no further messages.
    pub final_ack: bool,
    /// Negative acknowledgements (`Nack`); WCF never sends them and ignores them.
    pub nacks: Vec<u64>,
    /// Microsoft extension `netrm:BufferRemaining` (free buffer slots at the destination).
    pub buffer_remaining: Option<u32>,
}

impl Default for SequenceId {
    fn default() -> Self {
        SequenceId::from("")
    }
}

/// `IncompleteSequenceBehavior` (WS-RM 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncompleteSequenceBehavior {
    /// `DiscardEntireSequence`.
    DiscardEntireSequence,
    /// `DiscardFollowingFirstGap` (WCF writes this when `Ordered`).
    DiscardFollowingFirstGap,
    /// `NoDiscard` (WCF writes this when not `Ordered`).
    NoDiscard,
}

impl IncompleteSequenceBehavior {
    /// The XML text of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiscardEntireSequence => "DiscardEntireSequence",
            Self::DiscardFollowingFirstGap => "DiscardFollowingFirstGap",
            Self::NoDiscard => "NoDiscard",
        }
    }

    /// Parses the XML text of the value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DiscardEntireSequence" => Some(Self::DiscardEntireSequence),
            "DiscardFollowingFirstGap" => Some(Self::DiscardFollowingFirstGap),
            "NoDiscard" => Some(Self::NoDiscard),
            _ => None,
        }
    }
}

/// `wsrm:Offer` inside a CreateSequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The identifier the initiator offers for the reverse sequence.
    pub identifier: SequenceId,
    /// 1.1 `Endpoint/Address` (required in 1.1; gSOAP also sends it in 1.0).
    pub endpoint: Option<String>,
    /// `Expires` as the `xs:duration` text received (not interpreted by WCF).
    pub expires: Option<String>,
    /// 1.1 `IncompleteSequenceBehavior`.
    pub incomplete_sequence_behavior: Option<IncompleteSequenceBehavior>,
}

/// `wsrm:CreateSequence` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSequence {
    /// `AcksTo/Address`.
    pub acks_to: String,
    /// `Expires` as the `xs:duration` text.
    pub expires: Option<String>,
    /// Optional offer of a reverse sequence.
    pub offer: Option<Offer>,
}

/// `wsrm:CreateSequenceResponse` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSequenceResponse {
    /// The identifier of the new sequence (chosen by the destination).
    pub identifier: SequenceId,
    /// `Expires` echoed from the request.
    pub expires: Option<String>,
    /// 1.1 `IncompleteSequenceBehavior` of the new sequence.
    pub incomplete_sequence_behavior: Option<IncompleteSequenceBehavior>,
    /// `Accept/AcksTo/Address`, present iff an Offer was accepted.
    pub accept: Option<String>,
}

/// SOAP fault code class (SOAP 1.2 `Sender`/`Receiver`; SOAP 1.1 `Client`/`Server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// The message was at fault (SOAP 1.1 `Client`).
    Sender,
    /// The processing side failed (SOAP 1.1 `Server`).
    Receiver,
}

/// What a fault is, as far as the RM layer cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `wsrm:SequenceTerminated`.
    SequenceTerminated,
    /// `wsrm:UnknownSequence`.
    UnknownSequence,
    /// `wsrm:InvalidAcknowledgement`.
    InvalidAcknowledgement,
    /// `wsrm:MessageNumberRollover`.
    MessageNumberRollover,
    /// `wsrm:LastMessageNumberExceeded` (1.0 only).
    LastMessageNumberExceeded,
    /// `wsrm:SequenceClosed` (1.1 only).
    SequenceClosed,
    /// `wsrm:CreateSequenceRefused`.
    CreateSequenceRefused,
    /// `wsrm:CreateSequenceRefused` with the nested Microsoft subcode
    /// `netrm:ConnectionLimitReached` (server too busy; SOAP 1.2 only on the wire).
    ConnectionLimitReached,
    /// `wsrm:WSRMRequired` (1.1 only).
    WsrmRequired,
    /// SOAP `MustUnderstand`.
    MustUnderstand,
    /// WS-Addressing `EndpointUnavailable`.
    EndpointUnavailable,
    /// WS-Addressing `MessageAddressingHeaderRequired` (2004/08: `MessageInformationHeaderRequired`).
    MessageAddressingHeaderRequired,
    /// WS-Addressing `ActionNotSupported`.
    ActionNotSupported,
    /// Any other fault (e.g. an application fault or a SOAP fault we do not classify):
    /// the subcode QName as `{namespace}local`, if any.
    Other(Option<String>),
}

impl FaultKind {
    /// The local name of the fault's code in the WS-RM namespace, for the RM faults (a
    /// ConnectionLimitReached is a CreateSequenceRefused with a subcode of its own); `None` for
    /// SOAP, WS-Addressing and other faults.
    pub fn rm_local_name(&self) -> Option<&'static str> {
        Some(match self {
            FaultKind::SequenceTerminated => "SequenceTerminated",
            FaultKind::UnknownSequence => "UnknownSequence",
            FaultKind::InvalidAcknowledgement => "InvalidAcknowledgement",
            FaultKind::MessageNumberRollover => "MessageNumberRollover",
            FaultKind::LastMessageNumberExceeded => "LastMessageNumberExceeded",
            FaultKind::SequenceClosed => "SequenceClosed",
            FaultKind::CreateSequenceRefused | FaultKind::ConnectionLimitReached => {
                "CreateSequenceRefused"
            }
            FaultKind::WsrmRequired => "WSRMRequired",
            _ => return None,
        })
    }
}

/// The fault's name as a reader would look it up: the RM, SOAP or WS-Addressing fault code,
/// or the QName of any other (`{namespace}local`; "fault" when it has none).
impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            FaultKind::ConnectionLimitReached => "CreateSequenceRefused/ConnectionLimitReached",
            FaultKind::MustUnderstand => "MustUnderstand",
            FaultKind::EndpointUnavailable => "EndpointUnavailable",
            FaultKind::MessageAddressingHeaderRequired => "MessageAddressingHeaderRequired",
            FaultKind::ActionNotSupported => "ActionNotSupported",
            FaultKind::Other(Some(q)) => q,
            rm => rm.rm_local_name().unwrap_or("fault"),
        };
        f.write_str(name)
    }
}

/// What a fault's detail carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FaultDetail {
    /// No RM detail.
    #[default]
    None,
    /// `wsrm:Identifier` of the affected sequence.
    Identifier(SequenceId),
    /// InvalidAcknowledgement: the offending acknowledgement echoed.
    Ack(AckHeader),
    /// MessageNumberRollover: the identifier and (1.1) `MaxMessageNumber`.
    Rollover {
        /// Affected sequence.
        identifier: SequenceId,
        /// Maximum message number (1.1 only).
        max_message_number: Option<u64>,
    },
}

impl FaultDetail {
    /// The sequence identifier the detail names, if any.
    pub fn identifier(&self) -> Option<&SequenceId> {
        match self {
            FaultDetail::None => None,
            FaultDetail::Identifier(id) => Some(id),
            FaultDetail::Ack(a) => Some(&a.identifier),
            FaultDetail::Rollover { identifier, .. } => Some(identifier),
        }
    }
}

/// A SOAP fault as seen by the RM layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Sender or Receiver.
    pub code: FaultCode,
    /// Which fault.
    pub kind: FaultKind,
    /// Human-readable reason (never matched on).
    pub reason: String,
    /// RM detail.
    pub detail: FaultDetail,
}

impl Fault {
    /// Builds a fault.
    pub fn new(
        code: FaultCode,
        kind: FaultKind,
        reason: impl Into<String>,
        detail: FaultDetail,
    ) -> Self {
        Fault {
            code,
            kind,
            reason: reason.into(),
            detail,
        }
    }

    /// `UnknownSequence` (Sender) for `id`, with WCF's reason text.
    pub fn unknown_sequence(id: &SequenceId) -> Self {
        Fault::new(
            FaultCode::Sender,
            FaultKind::UnknownSequence,
            "The value of wsrm:Identifier is not a known Sequence identifier.",
            FaultDetail::Identifier(id.clone()),
        )
    }

    /// `SequenceTerminated` with the given code and reason.
    pub fn sequence_terminated(
        code: FaultCode,
        id: &SequenceId,
        reason: impl Into<String>,
    ) -> Self {
        Fault::new(
            code,
            FaultKind::SequenceTerminated,
            reason,
            FaultDetail::Identifier(id.clone()),
        )
    }

    /// `SequenceClosed` (Sender) for `id`.
    pub fn sequence_closed(id: &SequenceId) -> Self {
        Fault::new(
            FaultCode::Sender,
            FaultKind::SequenceClosed,
            "The Sequence is closed and cannot accept new messages.",
            FaultDetail::Identifier(id.clone()),
        )
    }

    /// `InvalidAcknowledgement` (Sender) echoing `ack`.
    pub fn invalid_acknowledgement(ack: AckHeader) -> Self {
        Fault::new(
            FaultCode::Sender,
            FaultKind::InvalidAcknowledgement,
            "The SequenceAcknowledgement violates the cumulative acknowledgement invariant.",
            FaultDetail::Ack(ack),
        )
    }

    /// `LastMessageNumberExceeded` (Sender) for `id`.
    pub fn last_message_number_exceeded(id: &SequenceId) -> Self {
        Fault::new(
            FaultCode::Sender,
            FaultKind::LastMessageNumberExceeded,
            "The value for wsrm:MessageNumber exceeds the value of the MessageNumber accompanying a LastMessage element in this Sequence.",
            FaultDetail::Identifier(id.clone()),
        )
    }

    /// `CreateSequenceRefused` with the given code and reason.
    pub fn create_sequence_refused(code: FaultCode, reason: impl Into<String>) -> Self {
        Fault::new(
            code,
            FaultKind::CreateSequenceRefused,
            reason,
            FaultDetail::None,
        )
    }

    /// Whether this fault is carried as a SOAP 1.1 `wsrm:SequenceFault` header (an RM
    /// "header fault") rather than as a plain body fault.
    pub fn is_header_fault(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::SequenceTerminated
                | FaultKind::UnknownSequence
                | FaultKind::InvalidAcknowledgement
                | FaultKind::MessageNumberRollover
                | FaultKind::LastMessageNumberExceeded
                | FaultKind::SequenceClosed
        )
    }
}

/// The body of a message as the RM layer sees it.
///
/// The handshake and fault bodies are boxed: they are rare, and unboxed they made every
/// [`Message`] (moved several times per message on the hot path) 96 bytes larger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Empty `s:Body` (standalone ack, AckRequested, 1.0 LastMessage).
    Empty,
    /// `CreateSequence`.
    CreateSequence(Box<CreateSequence>),
    /// `CreateSequenceResponse`.
    CreateSequenceResponse(Box<CreateSequenceResponse>),
    /// `CloseSequence` (1.1).
    CloseSequence {
        /// Sequence to close.
        identifier: SequenceId,
        /// Highest message number sent, if any.
        last_msg_number: Option<u64>,
    },
    /// `CloseSequenceResponse` (1.1).
    CloseSequenceResponse {
        /// Sequence closed.
        identifier: SequenceId,
    },
    /// `TerminateSequence`.
    TerminateSequence {
        /// Sequence to terminate.
        identifier: SequenceId,
        /// 1.1 `LastMsgNumber`.
        last_msg_number: Option<u64>,
    },
    /// `TerminateSequenceResponse` (1.1).
    TerminateSequenceResponse {
        /// Sequence terminated.
        identifier: SequenceId,
    },
    /// A SOAP fault.
    Fault(Box<Fault>),
    /// Application content: the raw bytes of the `s:Body` element's content, never interpreted.
    Application(Bytes),
}

/// Standalone RM actions and the application action of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `…/CreateSequence`.
    CreateSequence,
    /// `…/CreateSequenceResponse`.
    CreateSequenceResponse,
    /// `…/CloseSequence` (1.1).
    CloseSequence,
    /// `…/CloseSequenceResponse` (1.1).
    CloseSequenceResponse,
    /// `…/TerminateSequence`.
    TerminateSequence,
    /// `…/TerminateSequenceResponse` (1.1).
    TerminateSequenceResponse,
    /// Standalone `…/SequenceAcknowledgement`.
    SequenceAcknowledgement,
    /// Standalone `…/AckRequested`.
    AckRequested,
    /// 1.0 `…/LastMessage`.
    LastMessage,
    /// The fault action of the version in use (1.0: WS-Addressing default fault action;
    /// 1.1: `…/200702/fault`).
    Fault,
    /// Any other action URI (application operations, WS-Addressing faults of the other kind…).
    Other(Arc<str>),
}

/// One SOAP message at the RM layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The RM version the message is written in (from its namespaces).
    pub version: RmVersion,
    /// `wsa:Action`.
    pub action: Action,
    /// `wsa:MessageID`, if any.
    pub message_id: Option<Arc<str>>,
    /// `wsa:RelatesTo` (reply relationship), if any.
    pub relates_to: Option<Arc<str>>,
    /// `wsa:ReplyTo/Address`, if any (absent means anonymous in WS-Addressing 1.0).
    pub reply_to: Option<Arc<str>>,
    /// `wsa:To`, if any.
    pub to: Option<Arc<str>>,
    /// `wsrm:Sequence` header.
    pub sequence: Option<SequenceHeader>,
    /// `wsrm:SequenceAcknowledgement` header (at most one; WCF faults on two).
    pub ack: Option<AckHeader>,
    /// `wsrm:AckRequested` header: the identifier it names.
    pub ack_requested: Option<SequenceId>,
    /// The body.
    pub body: Body,
}

impl Message {
    /// A message with the given action and body and no headers.
    pub fn new(version: RmVersion, action: Action, body: Body) -> Self {
        Message {
            version,
            action,
            message_id: None,
            relates_to: None,
            reply_to: None,
            to: None,
            sequence: None,
            ack: None,
            ack_requested: None,
            body,
        }
    }
}
