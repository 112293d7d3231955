//! The one place where wire facts meet the engine's vocabulary (`wsrm_proto::msg`):
//! the reader's envelope facts → [`Decoded`] (with its [`Message`]), and
//! [`Message`] + [`Framing`] → envelope bytes.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use wsrm_proto::msg::{
    AckHeader, Action, Body, Fault, FaultCode, FaultDetail, FaultKind, Message, RmVersion,
    SequenceId,
};

use crate::error::{split_clark, DecodeError, DecodeErrorKind, EncodeError};
use crate::ns::{
    act, rm_namespace, AddressingVersion, SoapVersion, NETRM, RM11_FAULT_ACTION, SOAP11, SOAP12,
    WSA10, WSA10_FAULT_ACTION, WSA200408, WSA200408_FAULT_ACTION,
};
use crate::reader::{EndpointReference, Envelope, WBody, WDetail, WFault, WSeqFault};
use crate::writer::{self as w, Out};

#[cfg(test)]
mod reference;
mod seq_template;

pub use seq_template::{Digits, SequencePieces, SequenceTemplate};

/// A decoded envelope: the facts of the envelope and the engine-level [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// SOAP version (from the envelope namespace).
    pub soap: SoapVersion,
    /// WS-Addressing version (from the addressing headers).
    pub addressing: AddressingVersion,
    /// WS-RM version, `None` when nothing in the message is in an RM namespace (then
    /// `message.version` is the default, 1.0, and means nothing).
    pub rm: Option<RmVersion>,
    /// The `wsa:Action` value as received.
    pub action: Arc<str>,
    /// `RelationshipType` of the `RelatesTo` header, if one was written explicitly.
    pub relationship_type: Option<Arc<str>>,
    /// Full `wsa:ReplyTo` (address and reference parameters).
    pub reply_to: Option<EndpointReference>,
    /// `wsa:FaultTo`.
    pub fault_to: Option<EndpointReference>,
    /// `wsa:From`.
    pub from: Option<EndpointReference>,
    /// Full `AcksTo` of a CreateSequence (address and reference parameters).
    pub acks_to: Option<EndpointReference>,
    /// For a fault: the most specific RM/WSA code as `{namespace}local` (SOAP 1.2 first
    /// subcode, SOAP 1.1 `SequenceFault/FaultCode` or a non-SOAP `faultcode`), if any.
    pub fault_subcode: Option<String>,
    /// Number of SOAP header blocks.
    pub header_count: usize,
    /// The raw content of `s:Body` (zero-copy slice of the input; empty for `<s:Body/>`).
    pub body_bytes: Bytes,
    /// Namespace declarations of the `Envelope` and `Body` elements that the raw body may rely
    /// on, as (prefix, URI) with `""` for the default namespace; `s`/`a` bound exactly as the
    /// writer binds them are left out. Empty for WCF-shaped messages; gSOAP declares every
    /// namespace on the envelope. Pass them as [`Framing::body_namespaces`] to re-frame the body.
    pub body_namespaces: Vec<(String, String)>,
    /// The headers a SOAP 1.2 MustUnderstand fault names in `env:NotUnderstood` header blocks,
    /// as (namespace, local name); empty otherwise.
    pub not_understood: Vec<(String, String)>,
    /// The message as the protocol engine sees it.
    pub message: Message,
}

/// How to frame a [`Message`] on the wire: the parts of the envelope that are not in
/// `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// SOAP version.
    pub soap: SoapVersion,
    /// WS-Addressing version.
    pub addressing: AddressingVersion,
    /// `a:To` to write when `Message::to` is `None` (e.g. the peer's ReplyTo address). With
    /// WS-Addressing 1.0 an anonymous `To` is not written (WCF omits it).
    pub to: Option<Arc<str>>,
    /// Reference parameters of the destination EPR, echoed as header blocks after `a:To`
    /// (WS-Addressing 1.0 adds `a:IsReferenceParameter="true"`). Each is one raw element, e.g.
    /// [`EndpointReference::reference_parameters`] as received.
    pub reference_parameters: Vec<Bytes>,
    /// `xml:lang` of fault reasons (WCF writes the server culture, typically `en-US`).
    pub xml_lang: Cow<'static, str>,
    /// Namespace declarations written on `s:Body` for an application body that relies on
    /// declarations outside it (see [`Decoded::body_namespaces`]); prefixes `s` and `a` are
    /// skipped (they cannot be rebound there).
    pub body_namespaces: Vec<(String, String)>,
    /// Header blocks a SOAP `MustUnderstand` fault names as not understood, as (namespace,
    /// local name): written as `<s:NotUnderstood qname="h:Local" xmlns:h="namespace"/>` header
    /// blocks (SOAP 1.2 only; SOAP 1.1 has no such header) when the message is a
    /// MustUnderstand fault. See [`Framing::for_error`].
    pub not_understood: Vec<(String, String)>,
}

impl Framing {
    /// Framing with the given versions, no default `To`, no reference parameters.
    pub fn new(soap: SoapVersion, addressing: AddressingVersion) -> Self {
        Framing {
            soap,
            addressing,
            to: None,
            reference_parameters: Vec::new(),
            xml_lang: Cow::Borrowed("en-US"),
            body_namespaces: Vec::new(),
            not_understood: Vec::new(),
        }
    }

    /// WCF's default for RM bindings: SOAP 1.2 + WS-Addressing 1.0.
    pub fn soap12_wsa10() -> Self {
        Framing::new(SoapVersion::Soap12, AddressingVersion::Wsa10)
    }

    /// Framing for a reply to `request` (wire-protocol.md §2.10): same SOAP and WS-Addressing
    /// versions; `To` = the request's `ReplyTo` address with its reference parameters, or, when
    /// the request had no `ReplyTo`, the anonymous address (written only under WS-Addressing
    /// 2004/08: WCF omits an anonymous `To` under 1.0).
    pub fn for_reply(request: &Decoded) -> Self {
        let f = Framing::new(request.soap, request.addressing);
        match &request.reply_to {
            Some(epr) => f.to_endpoint(epr),
            None => {
                let mut f = f;
                f.to = Some(Arc::from(request.addressing.anonymous()));
                f
            }
        }
    }

    /// Framing for a fault answering `request` (WS-Addressing §3.4: faults go to `FaultTo`,
    /// else to `ReplyTo`, else to the anonymous endpoint): same SOAP and WS-Addressing versions,
    /// `To` and reference parameters of that endpoint.
    pub fn for_fault(request: &Decoded) -> Self {
        match &request.fault_to {
            Some(epr) => Framing::new(request.soap, request.addressing).to_endpoint(epr),
            None => Framing::for_reply(request),
        }
    }

    /// Framing for the fault answering a refused message ([`DecodeError::fault`]): the
    /// refused message's SOAP and WS-Addressing versions where known (else `fallback`'s), `To`
    /// = its `FaultTo`/`ReplyTo` if read ([`DecodeError::fault_endpoint`]), and for a
    /// MustUnderstand refusal the header to name in `env:NotUnderstood`
    /// ([`DecodeError::not_understood`]). `fallback`'s other settings are kept.
    pub fn for_error(e: &DecodeError, fallback: &Framing) -> Self {
        let mut f = fallback.clone();
        f.soap = e.soap().unwrap_or(fallback.soap);
        f.addressing = e.addressing().unwrap_or(fallback.addressing);
        if let Some(epr) = e.fault_endpoint() {
            f = f.to_endpoint(epr);
        }
        f.not_understood = e
            .not_understood()
            .map(|(ns, local)| vec![(ns.to_owned(), local.to_owned())])
            .unwrap_or_default();
        f
    }

    /// Framing for sending to `epr`: its address as default `To` and its reference parameters.
    pub fn to_endpoint(mut self, epr: &EndpointReference) -> Self {
        self.to = Some(epr.address.clone());
        self.reference_parameters = epr.reference_parameters.clone();
        self
    }
}

impl Default for Framing {
    fn default() -> Self {
        Framing::soap12_wsa10()
    }
}

// ------------------------------------------------------------------------------------------
// decode side
// ------------------------------------------------------------------------------------------

fn with_ctx(env: &Envelope, kind: DecodeErrorKind) -> DecodeError {
    let mut e = DecodeError::new(kind);
    e.soap = Some(env.soap);
    e.addressing = env.wsa;
    e.rm = env.rm;
    e.message_id = env.message_id.clone();
    e
}

/// Maps a read envelope to a [`Decoded`], taking its parts (by reference: the envelope is
/// large, and moving it whole costs a copy per message).
pub(crate) fn to_decoded(env: &mut Envelope) -> Result<Decoded, DecodeError> {
    let (Some(action), Some(addressing)) = (env.action.clone(), env.wsa) else {
        return Err(with_ctx(
            env,
            DecodeErrorKind::MissingAddressingHeader { header: "Action" },
        ));
    };
    let version = env.rm.unwrap_or_default();
    let require = |cond: bool, header: &'static str| -> Result<(), DecodeError> {
        if cond {
            Ok(())
        } else {
            Err(with_ctx(
                env,
                DecodeErrorKind::MissingAddressingHeader { header },
            ))
        }
    };
    match env.rm_action {
        Some(act::CREATE_SEQUENCE) => {
            require(env.message_id.is_some(), "MessageID")?;
            if addressing == AddressingVersion::Wsa200408 {
                require(env.reply_to.is_some(), "ReplyTo")?;
            }
            if env.uses_sequence_ssl || env.uses_sequence_str {
                let h = if env.uses_sequence_ssl {
                    "UsesSequenceSSL"
                } else {
                    "UsesSequenceSTR"
                };
                return Err(with_ctx(
                    env,
                    DecodeErrorKind::CreateSequenceRefused {
                        reason: format!(
                            "wsrm:{h} is not supported (no TLS- or WS-SecureConversation-bound sequences)"
                        ),
                    },
                ));
            }
        }
        Some(act::CLOSE_SEQUENCE) => require(env.message_id.is_some(), "MessageID")?,
        Some(act::TERMINATE_SEQUENCE) if version == RmVersion::Wsrm11 => {
            require(env.message_id.is_some(), "MessageID")?
        }
        Some(
            act::CREATE_SEQUENCE_RESPONSE
            | act::CLOSE_SEQUENCE_RESPONSE
            | act::TERMINATE_SEQUENCE_RESPONSE,
        ) => require(env.relates_to.is_some(), "RelatesTo")?,
        _ => {}
    }

    let msg_action = match env.rm_action {
        Some(act::CREATE_SEQUENCE) => Action::CreateSequence,
        Some(act::CREATE_SEQUENCE_RESPONSE) => Action::CreateSequenceResponse,
        Some(act::CLOSE_SEQUENCE) => Action::CloseSequence,
        Some(act::CLOSE_SEQUENCE_RESPONSE) => Action::CloseSequenceResponse,
        Some(act::TERMINATE_SEQUENCE) => Action::TerminateSequence,
        Some(act::TERMINATE_SEQUENCE_RESPONSE) => Action::TerminateSequenceResponse,
        Some(act::SEQUENCE_ACKNOWLEDGEMENT) => Action::SequenceAcknowledgement,
        Some(act::ACK_REQUESTED) => Action::AckRequested,
        Some(act::LAST_MESSAGE) => Action::LastMessage,
        Some(act::FAULT) => Action::Fault,
        _ if &*action == WSA10_FAULT_ACTION || &*action == WSA200408_FAULT_ACTION => Action::Fault,
        _ => Action::Other(action.clone()),
    };

    let mut acks_to = None;
    let mut fault_subcode = None;
    // the per-message bodies (empty, application) without moving the (large) body out
    let body = match &env.body {
        WBody::Empty => Some(Body::Empty),
        WBody::Application => Some(Body::Application(env.body_bytes.clone())),
        _ => None,
    };
    let body = match body {
        Some(b) => b,
        None => match std::mem::replace(&mut env.body, WBody::Empty) {
            WBody::Empty => Body::Empty,
            WBody::Application => Body::Application(env.body_bytes.clone()),
            WBody::CreateSequence { cs, acks_to: epr } => {
                acks_to = Some(epr);
                Body::CreateSequence(Box::new(cs))
            }
            WBody::CreateSequenceResponse(csr) => Body::CreateSequenceResponse(Box::new(csr)),
            WBody::CloseSequence {
                identifier,
                last_msg_number,
            } => Body::CloseSequence {
                identifier,
                last_msg_number,
            },
            WBody::CloseSequenceResponse(identifier) => Body::CloseSequenceResponse { identifier },
            WBody::TerminateSequence {
                identifier,
                last_msg_number,
            } => Body::TerminateSequence {
                identifier,
                last_msg_number,
            },
            WBody::TerminateSequenceResponse(identifier) => {
                Body::TerminateSequenceResponse { identifier }
            }
            WBody::Fault(ref f) => {
                let (fault, sub) =
                    classify_fault(env.soap, version, f, env.sequence_fault.as_ref());
                fault_subcode = sub;
                Body::Fault(Box::new(fault))
            }
        },
    };
    let message = Message {
        version,
        action: msg_action,
        message_id: env.message_id.take(),
        relates_to: env.relates_to.take(),
        reply_to: env.reply_to.as_ref().map(|e| e.address.clone()),
        to: env.to.take(),
        sequence: env.sequence.take(),
        ack: env.ack.take(),
        ack_requested: env.ack_requested.take(),
        body,
    };
    Ok(Decoded {
        soap: env.soap,
        addressing,
        rm: env.rm,
        action,
        relationship_type: env.relationship_type.take(),
        reply_to: env.reply_to.take(),
        fault_to: env.fault_to.take(),
        from: env.from.take(),
        acks_to,
        fault_subcode,
        header_count: env.headers,
        body_bytes: std::mem::take(&mut env.body_bytes),
        body_namespaces: std::mem::take(&mut env.body_namespaces),
        not_understood: std::mem::take(&mut env.not_understood),
        message,
    })
}

fn clark(q: &(String, String)) -> String {
    format!("{{{}}}{}", q.0, q.1)
}

fn is_rm(ns: &str) -> bool {
    ns == crate::ns::RM10 || ns == crate::ns::RM11
}

/// Classifies a received SOAP fault (SOAP 1.1 header faults carry the RM code in the
/// `SequenceFault` header).
fn classify_fault(
    soap: SoapVersion,
    version: RmVersion,
    f: &WFault,
    seq_fault: Option<&WSeqFault>,
) -> (Fault, Option<String>) {
    let env_ns = soap.namespace();
    let mut code = FaultCode::Sender;
    let mut kind: Option<FaultKind> = None;
    // the most specific non-SOAP code
    let specific: Option<&(String, String)>;
    if f.code.0 == env_ns {
        match f.code.1.as_str() {
            "Sender" | "Client" => code = FaultCode::Sender,
            "Receiver" | "Server" => code = FaultCode::Receiver,
            "MustUnderstand" => kind = Some(FaultKind::MustUnderstand),
            _ => kind = Some(FaultKind::Other(Some(clark(&f.code)))),
        }
        // no subcode: the RM code of a `SequenceFault` header (SOAP 1.1 form; some stacks
        // also send it with SOAP 1.2)
        specific = match f.subcodes.first() {
            None => seq_fault.map(|s| &s.code),
            s => s,
        };
    } else {
        specific = Some(&f.code);
    }
    let sub = specific.map(clark);
    if kind.is_none() {
        kind = Some(match specific {
            None => FaultKind::Other(None),
            Some((ns, local)) if is_rm(ns) => match local.as_str() {
                "SequenceTerminated" => FaultKind::SequenceTerminated,
                "UnknownSequence" => FaultKind::UnknownSequence,
                "InvalidAcknowledgement" => FaultKind::InvalidAcknowledgement,
                "MessageNumberRollover" => FaultKind::MessageNumberRollover,
                // version-specific codes are only themselves in their version
                "LastMessageNumberExceeded" if version == RmVersion::Wsrm10 => {
                    FaultKind::LastMessageNumberExceeded
                }
                "SequenceClosed" if version == RmVersion::Wsrm11 => FaultKind::SequenceClosed,
                "CreateSequenceRefused" => {
                    let busy = f
                        .subcodes
                        .get(1)
                        .is_some_and(|(n, l)| n == NETRM && l == "ConnectionLimitReached");
                    if busy {
                        FaultKind::ConnectionLimitReached
                    } else {
                        FaultKind::CreateSequenceRefused
                    }
                }
                "WSRMRequired" if version == RmVersion::Wsrm11 => FaultKind::WsrmRequired,
                _ => FaultKind::Other(sub.clone()),
            },
            Some((ns, local)) if ns == WSA10 || ns == WSA200408 => match local.as_str() {
                "EndpointUnavailable" => FaultKind::EndpointUnavailable,
                "MessageAddressingHeaderRequired" | "MessageInformationHeaderRequired" => {
                    FaultKind::MessageAddressingHeaderRequired
                }
                "ActionNotSupported" => FaultKind::ActionNotSupported,
                _ => FaultKind::Other(sub.clone()),
            },
            Some(_) => FaultKind::Other(sub.clone()),
        });
    }
    let kind = kind.unwrap_or(FaultKind::Other(None));
    let mut d: WDetail = f.detail.clone();
    if let Some(sf) = seq_fault {
        if d.identifier.is_none() {
            d.identifier = sf.detail.identifier.clone();
        }
        if d.ack.is_none() {
            d.ack = sf.detail.ack.clone();
        }
        if d.max_message_number.is_none() {
            d.max_message_number = sf.detail.max_message_number;
        }
    }
    let detail = match (&kind, d.ack, d.identifier) {
        (FaultKind::InvalidAcknowledgement, Some(ack), _) => FaultDetail::Ack(ack),
        (FaultKind::MessageNumberRollover, _, Some(identifier)) => FaultDetail::Rollover {
            identifier,
            max_message_number: d.max_message_number,
        },
        (_, _, Some(id)) => FaultDetail::Identifier(id),
        (_, Some(ack), None) => FaultDetail::Ack(ack),
        _ => FaultDetail::None,
    };
    (
        Fault {
            code,
            kind,
            reason: f.reason.clone(),
            detail,
        },
        sub,
    )
}

// ------------------------------------------------------------------------------------------
// encode side
// ------------------------------------------------------------------------------------------

fn rm_fault_local(kind: &FaultKind) -> Option<&'static str> {
    kind.rm_local_name()
}

/// The `wsa:Action` URI of `msg` under `addressing` (also the SOAP 1.1 `SOAPAction` value).
pub fn action_uri(
    msg: &Message,
    addressing: AddressingVersion,
) -> Result<Cow<'_, str>, EncodeError> {
    Ok(Cow::Borrowed(match action_of(msg, addressing)? {
        ActionText::Other(s) => s,
        ActionText::Known { uri, .. } => uri,
    }))
}

/// The namespace of an RM version as a literal, for `concat!`.
macro_rules! rm_ns {
    (10) => {
        "http://schemas.xmlsoap.org/ws/2005/02/rm"
    };
    (11) => {
        "http://docs.oasis-open.org/ws-rx/wsrm/200702"
    };
}

/// A function giving the URI and the whole `<a:Action>` element of each RM action of one
/// version, as literals.
macro_rules! rm_actions {
    ($name:ident, $v:tt, $($variant:ident),* $(,)?) => {
        fn $name(a: &Action) -> Option<(&'static str, &'static str)> {
            match a {
                $(Action::$variant => Some((
                    concat!(rm_ns!($v), "/", stringify!($variant)),
                    concat!(
                        "<a:Action s:mustUnderstand=\"1\">",
                        rm_ns!($v),
                        "/",
                        stringify!($variant),
                        "</a:Action>"
                    ),
                )),)*
                _ => None,
            }
        }
    };
}

rm_actions!(
    rm10_action,
    10,
    CreateSequence,
    CreateSequenceResponse,
    TerminateSequence,
    SequenceAcknowledgement,
    AckRequested,
    LastMessage,
);
rm_actions!(
    rm11_action,
    11,
    CreateSequence,
    CreateSequenceResponse,
    CloseSequence,
    CloseSequenceResponse,
    TerminateSequence,
    TerminateSequenceResponse,
    SequenceAcknowledgement,
    AckRequested,
);

/// The action of a message as the writer writes it.
enum ActionText<'a> {
    /// An application (or other) action URI: escaped when written.
    Other(&'a str),
    /// An RM, WS-Addressing or SOAP action URI: a constant without characters to escape, and
    /// for an RM action the whole `<a:Action>` element as one literal.
    Known {
        uri: &'static str,
        element: Option<&'static str>,
    },
}

impl ActionText<'_> {
    /// The length of the `<a:Action>` element.
    fn element_len(&self) -> usize {
        match self {
            ActionText::Known {
                element: Some(e), ..
            } => e.len(),
            ActionText::Known { uri, .. } => ACTION_OPEN.len() + uri.len() + ACTION_CLOSE.len(),
            ActionText::Other(s) => ACTION_OPEN.len() + s.len() + ACTION_CLOSE.len(),
        }
    }
}

const ACTION_OPEN: &str = "<a:Action s:mustUnderstand=\"1\">";
const ACTION_CLOSE: &str = "</a:Action>";

fn action_of(msg: &Message, addressing: AddressingVersion) -> Result<ActionText<'_>, EncodeError> {
    let v = msg.version;
    let not_in = |what| EncodeError::NotInVersion { what, version: v };
    match &msg.action {
        Action::Other(s) => Ok(ActionText::Other(s)),
        Action::Fault => {
            let rm_kind = matches!(&msg.body, Body::Fault(f) if rm_fault_local(&f.kind).is_some());
            Ok(ActionText::Known {
                uri: if v == RmVersion::Wsrm11 && rm_kind {
                    RM11_FAULT_ACTION
                } else {
                    addressing.fault_action()
                },
                element: None,
            })
        }
        a => {
            let known = match v {
                RmVersion::Wsrm10 => rm10_action(a),
                RmVersion::Wsrm11 => rm11_action(a),
            };
            match known {
                Some((uri, element)) => Ok(ActionText::Known {
                    uri,
                    element: Some(element),
                }),
                None => Err(not_in(match a {
                    Action::CloseSequence => "CloseSequence",
                    Action::CloseSequenceResponse => "CloseSequenceResponse",
                    Action::TerminateSequenceResponse => "TerminateSequenceResponse",
                    _ => "LastMessage",
                })),
            }
        }
    }
}

struct Fx {
    /// `xmlns:r="…"` attribute text (with leading space).
    r_decl: &'static str,
}

fn r_decl(v: RmVersion) -> &'static str {
    match v {
        RmVersion::Wsrm10 => " xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"",
        RmVersion::Wsrm11 => " xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"",
    }
}

/// `<s:NotUnderstood qname="h:Local" xmlns:h="ns"/>` (SOAP 1.2 §5.4.8); an empty namespace
/// gives `qname="Local"` (no default namespace is in scope there).
fn write_not_understood(buf: &mut BytesMut, ns: &str, local: &str) -> Result<(), EncodeError> {
    if !crate::xml::is_ncname(local.as_bytes()) {
        return Err(EncodeError::InvalidFault {
            what: format!("MustUnderstand (NotUnderstood '{local}')"),
            reason: "the header name is not an XML NCName",
        });
    }
    if ns.is_empty() {
        w::raw(buf, "<s:NotUnderstood qname=\"");
        w::raw(buf, local);
        w::raw(buf, "\"/>");
    } else {
        w::raw(buf, "<s:NotUnderstood qname=\"h:");
        w::raw(buf, local);
        w::raw(buf, "\" xmlns:h=\"");
        w::attr(buf, ns);
        w::raw(buf, "\"/>");
    }
    Ok(())
}

/// The start tag of the acknowledgement header with its declaration, up to its identifier.
macro_rules! ack_start {
    ($v:tt) => {
        concat!(
            "<r:SequenceAcknowledgement xmlns:r=\"",
            rm_ns!($v),
            "\"><r:Identifier>"
        )
    };
}

/// The start tag of the `Sequence` header with its declaration, up to its identifier.
macro_rules! seq_start {
    ($v:tt) => {
        concat!(
            "<r:Sequence s:mustUnderstand=\"1\" xmlns:r=\"",
            rm_ns!($v),
            "\"><r:Identifier>"
        )
    };
}

/// The header block an envelope starts with, written with the envelope's start as one literal.
#[derive(Clone, Copy)]
enum First {
    Ack,
    Sequence,
    Other,
}

/// The start of every envelope the writer writes, up to and including `<s:Header>`, and when
/// the first header block is an acknowledgement or `Sequence`, its start up to the identifier.
fn start(soap: SoapVersion, wsa: AddressingVersion, v: RmVersion, first: First) -> &'static str {
    use AddressingVersion::{Wsa10, Wsa200408};
    use SoapVersion::{Soap11, Soap12};
    // `$tail` after the envelope's start up to and including `<s:Header>`
    macro_rules! envelope {
        ($tail:expr) => {
            match (soap, wsa) {
                (Soap11, Wsa200408) => concat!("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>", $tail),
                (Soap11, Wsa10) => concat!("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>", $tail),
                (Soap12, Wsa200408) => concat!("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>", $tail),
                (Soap12, Wsa10) => concat!("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>", $tail),
            }
        };
    }
    match (first, v) {
        (First::Ack, RmVersion::Wsrm10) => envelope!(ack_start!(10)),
        (First::Ack, RmVersion::Wsrm11) => envelope!(ack_start!(11)),
        (First::Sequence, RmVersion::Wsrm10) => envelope!(seq_start!(10)),
        (First::Sequence, RmVersion::Wsrm11) => envelope!(seq_start!(11)),
        (First::Other, _) => envelope!(""),
    }
}

/// The start of every envelope the writer writes, up to and including `<s:Header>`.
#[cfg(test)]
fn prolog(soap: SoapVersion, addressing: AddressingVersion) -> &'static str {
    start(soap, addressing, RmVersion::Wsrm10, First::Other)
}

fn seq_start(v: RmVersion) -> &'static str {
    match v {
        RmVersion::Wsrm10 => seq_start!(10),
        RmVersion::Wsrm11 => seq_start!(11),
    }
}

const SEQ_END: &str = "</r:MessageNumber></r:Sequence>";
const SEQ_END_LAST: &str = "</r:MessageNumber><r:LastMessage/></r:Sequence>";
const BODY_EMPTY: &str = "</s:Header><s:Body/></s:Envelope>";
const BODY_OPEN: &str = "</s:Header><s:Body>";
const BODY_CLOSE: &str = "</s:Body></s:Envelope>";

/// The `ReplyTo` address the writer writes: the message's, else under WS-Addressing 2004/08
/// the anonymous one for requests (CreateSequence, or a MessageID without RelatesTo).
fn reply_to_of<'a>(msg: &'a Message, framing: &Framing) -> Option<&'a str> {
    match &msg.reply_to {
        Some(r) => Some(r),
        None if framing.addressing == AddressingVersion::Wsa200408
            && (msg.action == Action::CreateSequence
                || (msg.message_id.is_some() && msg.relates_to.is_none())) =>
        {
            Some(framing.addressing.anonymous())
        }
        None => None,
    }
}

/// The `To` the writer writes: the message's, else the framing's; an anonymous `To` is omitted
/// under WS-Addressing 1.0.
#[inline]
fn to_of<'a>(msg: &'a Message, framing: &'a Framing) -> Option<&'a str> {
    let to: &str = msg.to.as_ref().or(framing.to.as_ref())?;
    let omit =
        framing.addressing == AddressingVersion::Wsa10 && to == framing.addressing.anonymous();
    (!omit).then_some(to)
}

/// An upper bound of the encoded size for the usual messages (the buffer is allocated once):
/// the fixed parts, the values written, and room for an RM or fault body.
fn size_hint(msg: &Message, action: &ActionText<'_>) -> usize {
    let action_len = match action {
        ActionText::Other(a) => a.len(),
        ActionText::Known { .. } => 96,
    };
    let arc = |a: &Option<Arc<str>>| a.as_ref().map_or(0, |s| s.len());
    let mut n = 640
        + action_len
        + arc(&msg.message_id)
        + arc(&msg.relates_to)
        + arc(&msg.reply_to)
        + arc(&msg.to);
    if let Some(s) = &msg.sequence {
        n += s.identifier.as_str().len();
    }
    if let Some(a) = &msg.ack {
        n += 192 + a.identifier.as_str().len() + 64 * (a.ranges.len() + a.nacks.len());
    }
    if let Some(id) = &msg.ack_requested {
        n += 96 + id.as_str().len();
    }
    n + match &msg.body {
        Body::Application(b) => b.len(),
        _ => 256,
    }
}

/// For the per-message shapes (header blocks of the usual kinds, an empty or application
/// body without namespaces to declare, no reference parameters) whose values all need no
/// escaping: the exact encoded size (the same pieces as [`write_headers`] and [`write_plain`]
/// write). `None` for anything else, which [`write_checked`] writes.
///
/// Checking every value here lets the writer copy them without a test, and the exact size
/// lets `encode` allocate its buffer once at the size it needs and freeze it without a second
/// allocation (`Bytes` from a `Vec` whose length is its capacity).
fn plain_len(msg: &Message, framing: &Framing, action: &ActionText<'_>) -> Option<usize> {
    if !framing.reference_parameters.is_empty() {
        return None;
    }
    let v = msg.version;
    let mut n = match &msg.body {
        Body::Empty => BODY_EMPTY.len(),
        Body::Application(b) if framing.body_namespaces.is_empty() => {
            BODY_OPEN.len() + b.len() + BODY_CLOSE.len()
        }
        _ => return None,
    };
    n += start(framing.soap, framing.addressing, v, First::Other).len();
    if let Some(ack) = &msg.ack {
        n += ack_start(v, true).len() + plain(ack.identifier.as_str())? + ack_rest_len(ack, v);
    }
    if let Some(id) = &msg.ack_requested {
        n += "<r:AckRequested".len()
            + r_decl(v).len()
            + "><r:Identifier>".len()
            + plain(id.as_str())?
            + "</r:Identifier></r:AckRequested>".len();
    }
    if let Some(seq) = &msg.sequence {
        n += seq_start(v).len()
            + plain(seq.identifier.as_str())?
            + "</r:Identifier><r:MessageNumber>".len()
            + w::digits(seq.number)
            + if seq.last_message && v == RmVersion::Wsrm10 {
                SEQ_END_LAST.len()
            } else {
                SEQ_END.len()
            };
    }
    if let ActionText::Other(a) = action {
        plain(a)?;
    }
    n += action.element_len();
    if let Some(id) = &msg.message_id {
        n += "<a:MessageID>".len() + plain(id)? + "</a:MessageID>".len();
    }
    if let Some(r) = reply_to_of(msg, framing) {
        n += "<a:ReplyTo><a:Address>".len() + plain(r)? + "</a:Address></a:ReplyTo>".len();
    }
    if let Some(r) = &msg.relates_to {
        n += "<a:RelatesTo>".len() + plain(r)? + "</a:RelatesTo>".len();
    }
    if let Some(to) = to_of(msg, framing) {
        n += "<a:To s:mustUnderstand=\"1\">".len() + plain(to)? + "</a:To>".len();
    }
    Some(n)
}

/// The length of `s` if it needs no escaping as character data.
#[inline]
fn plain(s: &str) -> Option<usize> {
    w::needs_no_escaping(s).then_some(s.len())
}

/// Encodes `msg` into a new buffer allocated once.
pub(crate) fn encode(msg: &Message, framing: &Framing) -> Result<Bytes, EncodeError> {
    if let Some((ack, n)) = standalone_ack(msg, framing) {
        let mut buf = Vec::with_capacity(n);
        write_standalone_ack(msg, framing, ack, &mut buf);
        return Ok(Bytes::from(buf));
    }
    let action = action_of(msg, framing.addressing)?;
    check_body_version(msg)?;
    if let Some(n) = plain_len(msg, framing, &action) {
        let mut buf = Vec::with_capacity(n);
        write_plain(msg, framing, &action, &mut buf);
        return Ok(Bytes::from(buf));
    }
    let mut buf = BytesMut::with_capacity(size_hint(msg, &action));
    write_checked(msg, framing, &action, &mut buf)?;
    Ok(buf.freeze())
}

/// Writes `msg` framed by `framing` into `buf`.
pub(crate) fn write(
    msg: &Message,
    framing: &Framing,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if let Some((ack, n)) = standalone_ack(msg, framing) {
        buf.reserve(n);
        write_standalone_ack(msg, framing, ack, buf);
        return Ok(());
    }
    let action = action_of(msg, framing.addressing)?;
    check_body_version(msg)?;
    match plain_len(msg, framing, &action) {
        Some(n) => {
            buf.reserve(n);
            write_plain(msg, framing, &action, buf);
            Ok(())
        }
        None => {
            buf.reserve(size_hint(msg, &action));
            write_checked(msg, framing, &action, buf)
        }
    }
}

/// The standalone acknowledgement as a service answers every one-way request: an ack with
/// ranges and no other header, the `SequenceAcknowledgement` action, an empty body (no `To`
/// written, no reference parameters), its identifier needing no escaping. Returns the ack and
/// the exact encoded size; [`write_standalone_ack`] writes it in fewer pieces than the general
/// writer (the markup between the numbers, and from the last number to the envelope's end, as
/// single literals).
fn standalone_ack<'a>(msg: &'a Message, framing: &Framing) -> Option<(&'a AckHeader, usize)> {
    let ack = msg.ack.as_ref()?;
    if !matches!(msg.action, Action::SequenceAcknowledgement)
        || !matches!(msg.body, Body::Empty)
        || ack.ranges.is_empty()
        || msg.ack_requested.is_some()
        || msg.sequence.is_some()
        || msg.message_id.is_some()
        || msg.relates_to.is_some()
        || msg.reply_to.is_some()
        || !framing.reference_parameters.is_empty()
        || ((msg.to.is_some() || framing.to.is_some()) && to_of(msg, framing).is_some())
    {
        return None;
    }
    let v = msg.version;
    let final_ack = ack.final_ack && v == RmVersion::Wsrm11;
    let mut n = start(framing.soap, framing.addressing, v, First::Ack).len()
        + plain(ack.identifier.as_str())?
        + ack_tail(v, final_ack, ack.buffer_remaining.is_some()).len();
    // the first range opens with ID_CLOSE_RANGE_OPEN, the others with RANGE_NEXT
    n += ID_CLOSE_RANGE_OPEN.len() - RANGE_NEXT.len();
    for (lo, up) in &ack.ranges {
        n += RANGE_NEXT.len() + w::digits(*lo) + RANGE_MID.len() + w::digits(*up);
    }
    if let Some(k) = ack.buffer_remaining {
        n += w::digits(u64::from(k)) + ack_end(v).len();
    }
    Some((ack, n))
}

/// `</r:Identifier>` and the first range's start.
const ID_CLOSE_RANGE_OPEN: &str = "</r:Identifier><r:AcknowledgementRange Lower=\"";
/// The end of one range and the start of the next.
const RANGE_NEXT: &str = "\"/><r:AcknowledgementRange Lower=\"";

/// A standalone acknowledgement from its last range's `Upper` value to the end of the envelope:
/// with `BufferRemaining`, the end of the range, (1.1) `Final` and the start of
/// `BufferRemaining` (its number and [`ack_end`] follow); without, everything to the end.
fn ack_tail(v: RmVersion, final_ack: bool, buffer_remaining: bool) -> &'static str {
    macro_rules! br_start {
        ($final:expr) => {
            concat!(
                "\"/>",
                $final,
                "<netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">"
            )
        };
    }
    macro_rules! to_end {
        ($final:expr, $v:tt) => {
            concat!(
                "\"/>",
                $final,
                "</r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">",
                rm_ns!($v),
                "/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>"
            )
        };
    }
    match (buffer_remaining, final_ack, v) {
        (true, false, _) => br_start!(""),
        (true, true, _) => br_start!("<r:Final/>"),
        (false, false, RmVersion::Wsrm10) => to_end!("", 10),
        (false, false, RmVersion::Wsrm11) => to_end!("", 11),
        (false, true, RmVersion::Wsrm10) => to_end!("<r:Final/>", 10),
        (false, true, RmVersion::Wsrm11) => to_end!("<r:Final/>", 11),
    }
}

/// A standalone acknowledgement with `BufferRemaining` from that number to the envelope's end.
fn ack_end(v: RmVersion) -> &'static str {
    macro_rules! end {
        ($v:tt) => {
            concat!(
                "</netrm:BufferRemaining></r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">",
                rm_ns!($v),
                "/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>"
            )
        };
    }
    match v {
        RmVersion::Wsrm10 => end!(10),
        RmVersion::Wsrm11 => end!(11),
    }
}

/// Writes a [`standalone_ack`].
fn write_standalone_ack(msg: &Message, framing: &Framing, ack: &AckHeader, buf: &mut impl Out) {
    let v = msg.version;
    w::raw(buf, start(framing.soap, framing.addressing, v, First::Ack));
    w::raw(buf, ack.identifier.as_str());
    // the first range apart: each opening a literal of constant length, copied inline (one
    // piece of varying length would be a call of `memcpy` per range)
    let mut ranges = ack.ranges.iter();
    if let Some((lo, up)) = ranges.next() {
        w::raw(buf, ID_CLOSE_RANGE_OPEN);
        w::num(buf, *lo);
        w::raw(buf, RANGE_MID);
        w::num(buf, *up);
    }
    for (lo, up) in ranges {
        w::raw(buf, RANGE_NEXT);
        w::num(buf, *lo);
        w::raw(buf, RANGE_MID);
        w::num(buf, *up);
    }
    let final_ack = ack.final_ack && v == RmVersion::Wsrm11;
    match ack.buffer_remaining {
        Some(k) => {
            // each branch a literal of constant length: copied inline
            if final_ack {
                w::raw(buf, ack_tail(v, true, true));
            } else {
                w::raw(buf, ack_tail(v, false, true));
            }
            w::num(buf, u64::from(k));
            w::raw(buf, ack_end(v));
        }
        None => w::raw(buf, ack_tail(v, final_ack, false)),
    }
}

/// Writes a message [`plain_len`] accepted: its values without the escaping test.
#[inline(never)]
fn write_plain(msg: &Message, framing: &Framing, action: &ActionText<'_>, buf: &mut impl Out) {
    write_headers::<true>(msg, framing, action, buf);
    match &msg.body {
        Body::Application(b) => {
            w::raw(buf, BODY_OPEN);
            buf.put(b);
            w::raw(buf, BODY_CLOSE);
        }
        _ => w::raw(buf, BODY_EMPTY),
    }
}

fn check_body_version(msg: &Message) -> Result<(), EncodeError> {
    let v = msg.version;
    match &msg.body {
        Body::CloseSequence { .. }
        | Body::CloseSequenceResponse { .. }
        | Body::TerminateSequenceResponse { .. }
            if v == RmVersion::Wsrm10 =>
        {
            Err(EncodeError::NotInVersion {
                what: "CloseSequence/CloseSequenceResponse/TerminateSequenceResponse body",
                version: v,
            })
        }
        _ => Ok(()),
    }
}

/// The envelope's start, the RM headers (ack, AckRequested, Sequence) and the addressing
/// headers up to `To`. `PLAIN`: the values are known to need no escaping (see [`plain_len`])
/// and are copied as they are.
fn write_headers<const PLAIN: bool>(
    msg: &Message,
    framing: &Framing,
    action: &ActionText<'_>,
    buf: &mut impl Out,
) {
    let v = msg.version;
    let fx = Fx { r_decl: r_decl(v) };
    // the envelope's start and the first header block's start as one literal
    let first = if msg.ack.is_some() {
        First::Ack
    } else if msg.ack_requested.is_none() && msg.sequence.is_some() {
        First::Sequence
    } else {
        First::Other
    };
    w::raw(buf, start(framing.soap, framing.addressing, v, first));

    // RM headers: WCF inserts each at position 0 → ack, AckRequested, Sequence.
    if let Some(ack) = &msg.ack {
        write_ack_rest::<PLAIN>(buf, ack, v);
    }
    if let Some(id) = &msg.ack_requested {
        w::raw(buf, "<r:AckRequested");
        w::raw(buf, fx.r_decl);
        w::raw(buf, "><r:Identifier>");
        w::value::<PLAIN>(buf, id.as_str());
        w::raw(buf, "</r:Identifier></r:AckRequested>");
    }
    // An application action after a Sequence: the Sequence's end and the action's start as
    // one literal.
    let mut action_opened = false;
    if let Some(seq) = &msg.sequence {
        if !matches!(first, First::Sequence) {
            w::raw(buf, seq_start(v));
        }
        w::value::<PLAIN>(buf, seq.identifier.as_str());
        w::raw(buf, "</r:Identifier><r:MessageNumber>");
        w::num(buf, seq.number);
        let last = seq.last_message && v == RmVersion::Wsrm10;
        action_opened = matches!(action, ActionText::Other(_));
        match (last, action_opened) {
            (false, false) => w::raw(buf, SEQ_END),
            (true, false) => w::raw(buf, SEQ_END_LAST),
            (false, true) => w::raw(
                buf,
                concat!(
                    "</r:MessageNumber></r:Sequence>",
                    "<a:Action s:mustUnderstand=\"1\">"
                ),
            ),
            (true, true) => w::raw(
                buf,
                concat!(
                    "</r:MessageNumber><r:LastMessage/></r:Sequence>",
                    "<a:Action s:mustUnderstand=\"1\">"
                ),
            ),
        }
    }

    // Addressing headers: Action, MessageID, ReplyTo, RelatesTo, To. Each element's end tag is
    // written with the next one's start tag as one literal.
    let mut pending = Close::Nothing;
    match action {
        ActionText::Known {
            element: Some(e), ..
        } => w::raw(buf, e),
        ActionText::Known { uri, element: None } => {
            w::raw(buf, ACTION_OPEN);
            w::raw(buf, uri);
            w::raw(buf, ACTION_CLOSE);
        }
        ActionText::Other(a) => {
            if !action_opened {
                w::raw(buf, ACTION_OPEN);
            }
            w::value::<PLAIN>(buf, a);
            pending = Close::Action;
        }
    }
    if let Some(id) = &msg.message_id {
        open_after(buf, pending, Open::MessageId);
        w::value::<PLAIN>(buf, id);
        pending = Close::MessageId;
    }
    if let Some(r) = reply_to_of(msg, framing) {
        open_after(buf, pending, Open::ReplyTo);
        w::value::<PLAIN>(buf, r);
        pending = Close::ReplyTo;
    }
    if let Some(r) = &msg.relates_to {
        open_after(buf, pending, Open::RelatesTo);
        w::value::<PLAIN>(buf, r);
        pending = Close::RelatesTo;
    }
    if let Some(to) = to_of(msg, framing) {
        open_after(buf, pending, Open::To);
        w::value::<PLAIN>(buf, to);
        pending = Close::To;
    }
    open_after(buf, pending, Open::Nothing);
}

/// The addressing element whose end tag is still to be written.
#[derive(Clone, Copy)]
enum Close {
    Nothing,
    Action,
    MessageId,
    ReplyTo,
    RelatesTo,
    To,
}

/// The addressing element whose start tag follows.
#[derive(Clone, Copy)]
enum Open {
    Nothing,
    MessageId,
    ReplyTo,
    RelatesTo,
    To,
}

/// Writes the pending end tag and the next start tag as one literal (every pair spelled out,
/// so that each is a copy of constant length).
#[inline(always)]
fn open_after(buf: &mut impl Out, close: Close, open: Open) {
    macro_rules! with_open {
        ($close:expr) => {
            match open {
                Open::Nothing => w::raw(buf, $close),
                Open::MessageId => w::raw(buf, concat!($close, "<a:MessageID>")),
                Open::ReplyTo => w::raw(buf, concat!($close, "<a:ReplyTo><a:Address>")),
                Open::RelatesTo => w::raw(buf, concat!($close, "<a:RelatesTo>")),
                Open::To => w::raw(buf, concat!($close, "<a:To s:mustUnderstand=\"1\">")),
            }
        };
    }
    match close {
        Close::Nothing => with_open!(""),
        Close::Action => with_open!("</a:Action>"),
        Close::MessageId => with_open!("</a:MessageID>"),
        Close::ReplyTo => with_open!("</a:Address></a:ReplyTo>"),
        Close::RelatesTo => with_open!("</a:RelatesTo>"),
        Close::To => with_open!("</a:To>"),
    }
}

/// [`write`] after the checks, for any message.
fn write_checked(
    msg: &Message,
    framing: &Framing,
    action: &ActionText<'_>,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v = msg.version;
    let fx = Fx { r_decl: r_decl(v) };
    write_headers::<false>(msg, framing, action, buf);
    for p in &framing.reference_parameters {
        write_ref_param(buf, p, framing.addressing);
    }
    if framing.soap == SoapVersion::Soap12 {
        if let Body::Fault(f) = &msg.body {
            if f.kind == FaultKind::MustUnderstand {
                for (ns, local) in &framing.not_understood {
                    write_not_understood(buf, ns, local)?;
                }
            }
        }
    }
    if framing.soap == SoapVersion::Soap11 {
        if let Body::Fault(f) = &msg.body {
            if f.is_header_fault() {
                write_sequence_fault_header(buf, f, v)?;
            }
        }
    }

    // Body
    match &msg.body {
        Body::Empty => {
            w::raw(buf, BODY_EMPTY);
            return Ok(());
        }
        Body::Application(b) if framing.body_namespaces.is_empty() => {
            w::raw(buf, BODY_OPEN);
            buf.extend_from_slice(b);
            w::raw(buf, BODY_CLOSE);
            return Ok(());
        }
        _ => w::raw(buf, "</s:Header>"),
    }
    match &msg.body {
        Body::Empty => w::raw(buf, "<s:Body/>"),
        Body::Application(b) => {
            w::raw(buf, "<s:Body");
            for (prefix, uri) in &framing.body_namespaces {
                match prefix.as_str() {
                    "s" | "a" => continue,
                    "" => w::raw(buf, " xmlns=\""),
                    p => {
                        w::raw(buf, " xmlns:");
                        w::raw(buf, p);
                        w::raw(buf, "=\"");
                    }
                }
                w::attr(buf, uri);
                w::raw(buf, "\"");
            }
            w::raw(buf, ">");
            buf.extend_from_slice(b);
            w::raw(buf, "</s:Body>");
        }
        Body::CreateSequence(cs) => {
            w::raw(buf, "<s:Body><r:CreateSequence");
            w::raw(buf, fx.r_decl);
            w::raw(buf, "><r:AcksTo><a:Address>");
            let acks_to: &str = if cs.acks_to.is_empty() {
                framing.addressing.anonymous()
            } else {
                &cs.acks_to
            };
            w::text(buf, acks_to);
            w::raw(buf, "</a:Address></r:AcksTo>");
            if let Some(e) = &cs.expires {
                w::elem_text(buf, "<r:Expires>", e, "</r:Expires>");
            }
            if let Some(o) = &cs.offer {
                w::elem_text(
                    buf,
                    "<r:Offer><r:Identifier>",
                    o.identifier.as_str(),
                    "</r:Identifier>",
                );
                let endpoint = match (&o.endpoint, v) {
                    (Some(e), _) if !e.is_empty() || v == RmVersion::Wsrm10 => Some(e.as_str()),
                    (_, RmVersion::Wsrm11) => Some(acks_to),
                    _ => None,
                };
                if let Some(e) = endpoint {
                    w::elem_text(
                        buf,
                        "<r:Endpoint><a:Address>",
                        e,
                        "</a:Address></r:Endpoint>",
                    );
                }
                if let Some(e) = &o.expires {
                    w::elem_text(buf, "<r:Expires>", e, "</r:Expires>");
                }
                if let (Some(isb), RmVersion::Wsrm11) = (o.incomplete_sequence_behavior, v) {
                    w::elem_text(
                        buf,
                        "<r:IncompleteSequenceBehavior>",
                        isb.as_str(),
                        "</r:IncompleteSequenceBehavior>",
                    );
                }
                w::raw(buf, "</r:Offer>");
            }
            w::raw(buf, "</r:CreateSequence></s:Body>");
        }
        Body::CreateSequenceResponse(csr) => {
            w::raw(buf, "<s:Body><r:CreateSequenceResponse");
            w::raw(buf, fx.r_decl);
            w::elem_text(
                buf,
                "><r:Identifier>",
                csr.identifier.as_str(),
                "</r:Identifier>",
            );
            if let Some(e) = &csr.expires {
                w::elem_text(buf, "<r:Expires>", e, "</r:Expires>");
            }
            if let (Some(isb), RmVersion::Wsrm11) = (csr.incomplete_sequence_behavior, v) {
                w::elem_text(
                    buf,
                    "<r:IncompleteSequenceBehavior>",
                    isb.as_str(),
                    "</r:IncompleteSequenceBehavior>",
                );
            }
            if let Some(a) = &csr.accept {
                w::elem_text(
                    buf,
                    "<r:Accept><r:AcksTo><a:Address>",
                    a,
                    "</a:Address></r:AcksTo></r:Accept>",
                );
            }
            w::raw(buf, "</r:CreateSequenceResponse></s:Body>");
        }
        Body::CloseSequence {
            identifier,
            last_msg_number,
        } => id_body(buf, &fx, "CloseSequence", identifier, *last_msg_number),
        Body::CloseSequenceResponse { identifier } => {
            id_body(buf, &fx, "CloseSequenceResponse", identifier, None)
        }
        Body::TerminateSequence {
            identifier,
            last_msg_number,
        } => {
            let last = if v == RmVersion::Wsrm11 {
                *last_msg_number
            } else {
                None
            };
            id_body(buf, &fx, "TerminateSequence", identifier, last)
        }
        Body::TerminateSequenceResponse { identifier } => {
            id_body(buf, &fx, "TerminateSequenceResponse", identifier, None)
        }
        Body::Fault(f) => {
            w::raw(buf, "<s:Body>");
            match framing.soap {
                SoapVersion::Soap12 => write_fault12(buf, f, v, framing)?,
                SoapVersion::Soap11 => write_fault11(buf, f, v, framing)?,
            }
            w::raw(buf, "</s:Body>");
        }
    }
    w::raw(buf, "</s:Envelope>");
    Ok(())
}

fn id_body(buf: &mut BytesMut, fx: &Fx, name: &str, id: &SequenceId, last: Option<u64>) {
    w::raw(buf, "<s:Body><r:");
    w::raw(buf, name);
    w::raw(buf, fx.r_decl);
    w::elem_text(buf, "><r:Identifier>", id.as_str(), "</r:Identifier>");
    if let Some(n) = last {
        w::raw(buf, "<r:LastMsgNumber>");
        w::num(buf, n);
        w::raw(buf, "</r:LastMsgNumber>");
    }
    w::raw(buf, "</r:");
    w::raw(buf, name);
    w::raw(buf, "></s:Body>");
}

/// `<r:SequenceAcknowledgement>`; `decl` adds `xmlns:r` on the element.
fn write_ack(buf: &mut BytesMut, ack: &AckHeader, v: RmVersion, decl: bool) {
    w::raw(buf, ack_start(v, decl));
    write_ack_rest::<false>(buf, ack, v);
}

/// The start of `<r:SequenceAcknowledgement>` up to the identifier.
fn ack_start(v: RmVersion, decl: bool) -> &'static str {
    match (decl, v) {
        (true, RmVersion::Wsrm10) => ack_start!(10),
        (true, RmVersion::Wsrm11) => ack_start!(11),
        (false, _) => "<r:SequenceAcknowledgement><r:Identifier>",
    }
}

const RANGE_OPEN: &str = "<r:AcknowledgementRange Lower=\"";
const RANGE_MID: &str = "\" Upper=\"";
const RANGE_CLOSE: &str = "\"/>";
const RANGE_EMPTY_10: &str = "<r:AcknowledgementRange Lower=\"0\" Upper=\"0\"/>";
const NONE_11: &str = "<r:None/>";
const FINAL_11: &str = "<r:Final/>";
const BUFFER_REMAINING_OPEN: &str =
    "<netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">";
const BUFFER_REMAINING_CLOSE: &str = "</netrm:BufferRemaining></r:SequenceAcknowledgement>";
const ACK_CLOSE: &str = "</r:SequenceAcknowledgement>";

/// The acknowledgement from its identifier on.
fn write_ack_rest<const PLAIN: bool>(buf: &mut impl Out, ack: &AckHeader, v: RmVersion) {
    w::value::<PLAIN>(buf, ack.identifier.as_str());
    w::raw(buf, "</r:Identifier>");
    if !ack.ranges.is_empty() {
        for (lo, up) in &ack.ranges {
            w::raw(buf, RANGE_OPEN);
            w::num(buf, *lo);
            w::raw(buf, RANGE_MID);
            w::num(buf, *up);
            w::raw(buf, RANGE_CLOSE);
        }
    } else if !ack.nacks.is_empty() && !ack.none {
        for n in &ack.nacks {
            w::raw(buf, "<r:Nack>");
            w::num(buf, *n);
            w::raw(buf, "</r:Nack>");
        }
    } else {
        match v {
            RmVersion::Wsrm10 => w::raw(buf, RANGE_EMPTY_10),
            RmVersion::Wsrm11 => w::raw(buf, NONE_11),
        }
    }
    if ack.final_ack && v == RmVersion::Wsrm11 {
        w::raw(buf, FINAL_11);
    }
    match ack.buffer_remaining {
        Some(k) => {
            w::raw(buf, BUFFER_REMAINING_OPEN);
            w::num(buf, u64::from(k));
            w::raw(buf, BUFFER_REMAINING_CLOSE);
        }
        None => w::raw(buf, ACK_CLOSE),
    }
}

/// The length of what [`write_ack_rest`] writes after the identifier.
fn ack_rest_len(ack: &AckHeader, v: RmVersion) -> usize {
    let mut n = "</r:Identifier>".len();
    if !ack.ranges.is_empty() {
        for (lo, up) in &ack.ranges {
            n += RANGE_OPEN.len()
                + w::digits(*lo)
                + RANGE_MID.len()
                + w::digits(*up)
                + RANGE_CLOSE.len();
        }
    } else if !ack.nacks.is_empty() && !ack.none {
        for k in &ack.nacks {
            n += "<r:Nack>".len() + w::digits(*k) + "</r:Nack>".len();
        }
    } else {
        n += match v {
            RmVersion::Wsrm10 => RANGE_EMPTY_10.len(),
            RmVersion::Wsrm11 => NONE_11.len(),
        };
    }
    if ack.final_ack && v == RmVersion::Wsrm11 {
        n += FINAL_11.len();
    }
    n + match ack.buffer_remaining {
        Some(k) => {
            BUFFER_REMAINING_OPEN.len() + w::digits(u64::from(k)) + BUFFER_REMAINING_CLOSE.len()
        }
        None => ACK_CLOSE.len(),
    }
}

/// Echoes one reference parameter as a header (WSA 1.0: marked `IsReferenceParameter`).
fn write_ref_param(buf: &mut BytesMut, p: &Bytes, addressing: AddressingVersion) {
    if addressing == AddressingVersion::Wsa200408 {
        buf.extend_from_slice(p);
        return;
    }
    // insertion point: end of the start tag (before `>` or `/>`), quotes respected
    let mut quote: Option<u8> = None;
    let mut at = None;
    for (i, &c) in p.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => {
                let slash = i > 0 && p.get(i - 1) == Some(&b'/');
                at = Some(if slash { i - 1 } else { i });
                break;
            }
            None => {}
        }
    }
    match at.and_then(|i| Some((p.get(..i)?, p.get(i..)?))) {
        Some((head, tail)) => {
            buf.extend_from_slice(head);
            w::raw(buf, " a:IsReferenceParameter=\"true\"");
            buf.extend_from_slice(tail);
        }
        None => buf.extend_from_slice(p),
    }
}

/// RM detail elements (inside `s:Detail` with `decl`, or inside `r:SequenceFault` without).
fn write_detail(buf: &mut BytesMut, f: &Fault, v: RmVersion, decl: bool) {
    let d = if decl { r_decl(v) } else { "" };
    match &f.detail {
        FaultDetail::None => {}
        FaultDetail::Identifier(id) => {
            w::raw(buf, "<r:Identifier");
            w::raw(buf, d);
            w::elem_text(buf, ">", id.as_str(), "</r:Identifier>");
        }
        FaultDetail::Ack(ack) => write_ack(buf, ack, v, decl),
        FaultDetail::Rollover {
            identifier,
            max_message_number,
        } => {
            w::raw(buf, "<r:Identifier");
            w::raw(buf, d);
            w::elem_text(buf, ">", identifier.as_str(), "</r:Identifier>");
            if let (Some(m), RmVersion::Wsrm11) = (max_message_number, v) {
                w::raw(buf, "<r:MaxMessageNumber");
                w::raw(buf, d);
                w::raw(buf, ">");
                w::num(buf, *m);
                w::raw(buf, "</r:MaxMessageNumber>");
            }
        }
    }
}

fn check_version(f: &Fault, v: RmVersion) -> Result<(), EncodeError> {
    let bad = match f.kind {
        FaultKind::LastMessageNumberExceeded => v != RmVersion::Wsrm10,
        FaultKind::SequenceClosed | FaultKind::WsrmRequired => v != RmVersion::Wsrm11,
        _ => false,
    };
    if bad {
        return Err(EncodeError::NotInVersion {
            what: "this fault",
            version: v,
        });
    }
    Ok(())
}

/// Writes the rest of `open` and a QName value for a `{ns}local` name, declaring the prefix
/// when it is not in scope (`s` and `a` are declared on the envelope).
fn qname_value(buf: &mut BytesMut, clark_name: &str, open: &str, close: &str) {
    let (ns, local) = split_clark(clark_name);
    w::raw(buf, open);
    match ns {
        SOAP11 | SOAP12 => {
            w::raw(buf, ">s:");
        }
        WSA10 | WSA200408 => {
            w::raw(buf, ">a:");
        }
        "" => {
            w::raw(buf, ">");
        }
        crate::ns::RM10 | crate::ns::RM11 => {
            w::raw(buf, " xmlns:r=\"");
            w::raw(buf, ns);
            w::raw(buf, "\">r:");
        }
        _ => {
            w::raw(buf, " xmlns:q=\"");
            w::attr(buf, ns);
            w::raw(buf, "\">q:");
        }
    }
    w::text(buf, local);
    w::raw(buf, close);
}

fn write_fault12(
    buf: &mut BytesMut,
    f: &Fault,
    v: RmVersion,
    framing: &Framing,
) -> Result<(), EncodeError> {
    check_version(f, v)?;
    let code = match f.code {
        FaultCode::Sender => "s:Sender",
        FaultCode::Receiver => "s:Receiver",
    };
    w::raw(buf, "<s:Fault><s:Code>");
    match &f.kind {
        FaultKind::MustUnderstand => w::raw(buf, "<s:Value>s:MustUnderstand</s:Value>"),
        FaultKind::Other(Some(q)) if matches!(split_clark(q).0, SOAP11 | SOAP12) => {
            qname_value(buf, q, "<s:Value", "</s:Value>")
        }
        kind => {
            w::raw(buf, "<s:Value>");
            w::raw(buf, code);
            w::raw(buf, "</s:Value>");
            if let Some(local) = rm_fault_local(kind) {
                w::raw(buf, "<s:Subcode><s:Value");
                w::raw(buf, r_decl(v));
                w::raw(buf, ">r:");
                w::raw(buf, local);
                w::raw(buf, "</s:Value>");
                if *kind == FaultKind::ConnectionLimitReached {
                    w::raw(buf, "<s:Subcode><s:Value xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">netrm:ConnectionLimitReached</s:Value></s:Subcode>");
                }
                w::raw(buf, "</s:Subcode>");
            } else {
                let wsa = match kind {
                    FaultKind::EndpointUnavailable => Some("EndpointUnavailable"),
                    FaultKind::MessageAddressingHeaderRequired => {
                        Some(framing.addressing.header_required_local())
                    }
                    FaultKind::ActionNotSupported => Some("ActionNotSupported"),
                    _ => None,
                };
                if let Some(local) = wsa {
                    w::raw(buf, "<s:Subcode><s:Value>a:");
                    w::raw(buf, local);
                    w::raw(buf, "</s:Value></s:Subcode>");
                } else if let FaultKind::Other(Some(q)) = kind {
                    w::raw(buf, "<s:Subcode>");
                    qname_value(buf, q, "<s:Value", "</s:Value>");
                    w::raw(buf, "</s:Subcode>");
                }
            }
        }
    }
    w::raw(buf, "</s:Code><s:Reason><s:Text xml:lang=\"");
    w::attr(buf, &framing.xml_lang);
    w::raw(buf, "\">");
    w::text(buf, &f.reason);
    w::raw(buf, "</s:Text></s:Reason>");
    if f.detail != FaultDetail::None {
        w::raw(buf, "<s:Detail>");
        write_detail(buf, f, v, true);
        w::raw(buf, "</s:Detail>");
    }
    w::raw(buf, "</s:Fault>");
    Ok(())
}

fn write_fault11(
    buf: &mut BytesMut,
    f: &Fault,
    v: RmVersion,
    framing: &Framing,
) -> Result<(), EncodeError> {
    check_version(f, v)?;
    w::raw(buf, "<s:Fault>");
    let generic = match f.code {
        FaultCode::Sender => "{http://schemas.xmlsoap.org/soap/envelope/}Client",
        FaultCode::Receiver => "{http://schemas.xmlsoap.org/soap/envelope/}Server",
    };
    let code: Cow<'_, str> = if f.is_header_fault() {
        Cow::Borrowed(generic)
    } else {
        match &f.kind {
            FaultKind::MustUnderstand => {
                Cow::Borrowed("{http://schemas.xmlsoap.org/soap/envelope/}MustUnderstand")
            }
            FaultKind::EndpointUnavailable => Cow::Owned(format!(
                "{{{}}}EndpointUnavailable",
                framing.addressing.namespace()
            )),
            FaultKind::MessageAddressingHeaderRequired => Cow::Owned(format!(
                "{{{}}}{}",
                framing.addressing.namespace(),
                framing.addressing.header_required_local()
            )),
            FaultKind::ActionNotSupported => Cow::Owned(format!(
                "{{{}}}ActionNotSupported",
                framing.addressing.namespace()
            )),
            FaultKind::Other(Some(q)) => {
                let (ns, local) = split_clark(q);
                if ns == SOAP12 {
                    Cow::Owned(format!("{{{SOAP11}}}{local}"))
                } else {
                    Cow::Borrowed(q.as_str())
                }
            }
            FaultKind::Other(None) => Cow::Borrowed(generic),
            kind => match rm_fault_local(kind) {
                Some(local) => Cow::Owned(format!("{{{}}}{local}", rm_namespace(v))),
                None => Cow::Borrowed(generic),
            },
        }
    };
    qname_value(buf, &code, "<faultcode", "</faultcode>");
    w::raw(buf, "<faultstring xml:lang=\"");
    w::attr(buf, &framing.xml_lang);
    w::raw(buf, "\">");
    w::text(buf, &f.reason);
    w::raw(buf, "</faultstring></s:Fault>");
    Ok(())
}

fn write_sequence_fault_header(
    buf: &mut BytesMut,
    f: &Fault,
    v: RmVersion,
) -> Result<(), EncodeError> {
    check_version(f, v)?;
    let Some(local) = rm_fault_local(&f.kind) else {
        return Ok(());
    };
    w::raw(buf, "<r:SequenceFault");
    w::raw(buf, r_decl(v));
    w::raw(buf, "><r:FaultCode>r:");
    w::raw(buf, local);
    w::raw(buf, "</r:FaultCode>");
    match v {
        RmVersion::Wsrm10 => write_detail(buf, f, v, false),
        RmVersion::Wsrm11 => {
            if f.detail != FaultDetail::None {
                w::raw(buf, "<r:Detail>");
                write_detail(buf, f, v, false);
                w::raw(buf, "</r:Detail>");
            }
        }
    }
    w::raw(buf, "</r:SequenceFault>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast writers (sequence message, standalone acknowledgement) escape any value that
    /// needs it, also right after writing plain ones (nothing from an earlier message is taken
    /// for granted).
    #[test]
    fn fast_writers_escape_each_value() {
        let seq = |id: &SequenceId, action: &Arc<str>, to: &Arc<str>| {
            let mut m = Message::new(
                RmVersion::Wsrm10,
                Action::Other(action.clone()),
                Body::Application(Bytes::from_static(b"<p/>")),
            );
            m.sequence = Some(wsrm_proto::msg::SequenceHeader {
                identifier: id.clone(),
                number: 7,
                last_message: false,
            });
            m.to = Some(to.clone());
            let out = encode(&m, &Framing::default()).unwrap_or_default();
            String::from_utf8_lossy(&out).into_owned()
        };
        let (id, action, to) = (
            SequenceId::from("urn:uuid:a"),
            Arc::from("urn:op"),
            Arc::from("http://h/s"),
        );
        for _ in 0..2 {
            let out = seq(&id, &action, &to);
            assert!(
                out.contains(">urn:uuid:a<") && out.contains(">urn:op<"),
                "{out}"
            );
        }
        let out = seq(&SequenceId::from("urn:a&b"), &action, &to);
        assert!(out.contains(">urn:a&amp;b<"), "{out}");
        let out = seq(&id, &Arc::from("urn:op<"), &to);
        assert!(out.contains(">urn:op&lt;<"), "{out}");
        let out = seq(&id, &action, &Arc::from("http://h/s?a&b"));
        assert!(out.contains(">http://h/s?a&amp;b<"), "{out}");
        let out = seq(&id, &action, &to);
        assert!(
            out.contains(">urn:uuid:a<") && out.contains(">http://h/s<"),
            "{out}"
        );
        let mut ack = Message::new(
            RmVersion::Wsrm10,
            Action::SequenceAcknowledgement,
            Body::Empty,
        );
        for (text, want) in [
            ("urn:x", ">urn:x<"),
            ("urn:x&", ">urn:x&amp;<"),
            ("urn:x", ">urn:x<"),
        ] {
            ack.ack = Some(AckHeader {
                identifier: SequenceId::from(text),
                ranges: vec![(1, 2)],
                ..AckHeader::default()
            });
            let out = encode(&ack, &Framing::default()).unwrap_or_default();
            let out = String::from_utf8_lossy(&out);
            assert!(out.contains(want), "{out}");
        }
    }

    /// The literal constants are the namespaces they spell out.
    #[test]
    fn literal_prologs_and_rm_starts_spell_the_namespaces() {
        for soap in [SoapVersion::Soap11, SoapVersion::Soap12] {
            for wsa in [AddressingVersion::Wsa10, AddressingVersion::Wsa200408] {
                assert_eq!(
                    prolog(soap, wsa),
                    format!(
                        "<s:Envelope xmlns:s=\"{}\" xmlns:a=\"{}\"><s:Header>",
                        soap.namespace(),
                        wsa.namespace()
                    )
                );
            }
        }
        for v in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
            let ack = AckHeader {
                identifier: SequenceId::from("i"),
                ..AckHeader::default()
            };
            let mut b = BytesMut::new();
            write_ack(&mut b, &ack, v, true);
            let want = format!(
                "<r:SequenceAcknowledgement xmlns:r=\"{}\"><r:Identifier>i</r:Identifier>",
                rm_namespace(v)
            );
            assert!(b.starts_with(want.as_bytes()), "{b:?}");
            let mut m = Message::new(v, Action::AckRequested, Body::Empty);
            m.sequence = Some(wsrm_proto::msg::SequenceHeader {
                identifier: SequenceId::from("i"),
                number: 1,
                last_message: false,
            });
            let mut b = BytesMut::new();
            write(&m, &Framing::default(), &mut b).unwrap_or_default();
            let want = format!("<r:Sequence s:mustUnderstand=\"1\" xmlns:r=\"{}\"><r:Identifier>i</r:Identifier><r:MessageNumber>1</r:MessageNumber></r:Sequence>", rm_namespace(v));
            let b = String::from_utf8_lossy(&b);
            assert!(b.contains(&want), "{b}");
        }
    }
}
