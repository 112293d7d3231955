//! The runtime's use of `wsrm-wire`: envelopes to and from HTTP bodies, with the HTTP headers
//! each SOAP version needs (wire-protocol.md §1.4).

use bytes::Bytes;
use http::HeaderValue;
use wsrm_proto::msg::{Action, Body, Fault, FaultCode, FaultDetail, FaultKind, Message, RmVersion};
use wsrm_wire::{DecodeError, EncodeError, Framing, Limits, SoapVersion};

use crate::binding::MessageVersion;

/// One encoded message and its HTTP headers (the envelope as one buffer, or as the client's
/// request body in pieces).
pub(crate) struct Encoded<B = Bytes> {
    /// The envelope.
    pub body: B,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// SOAP 1.1 `SOAPAction` (quoted), if any.
    pub soap_action: Option<String>,
}

/// The `Content-Type` header value for `content_type` (one of
/// [`SoapVersion::content_type`]'s values): a constant for those, so that no request or
/// response validates the same 35 bytes again (`HeaderValue::from_static` checks every byte
/// at run time, ~400 instructions).
pub(crate) fn content_type_header(content_type: &'static str) -> HeaderValue {
    const SOAP12: HeaderValue = HeaderValue::from_static("application/soap+xml; charset=utf-8");
    const SOAP11: HeaderValue = HeaderValue::from_static("text/xml; charset=utf-8");
    if content_type == SoapVersion::Soap12.content_type() {
        SOAP12
    } else if content_type == SoapVersion::Soap11.content_type() {
        SOAP11
    } else {
        HeaderValue::from_static(content_type)
    }
}

/// The media type (no parameters) of a SOAP version.
pub(crate) fn media_type(v: SoapVersion) -> &'static str {
    match v {
        SoapVersion::Soap11 => "text/xml",
        SoapVersion::Soap12 => "application/soap+xml",
    }
}

pub(crate) fn encode(m: &Message, v: MessageVersion) -> Result<Encoded, EncodeError> {
    encode_framed(m, v, &Framing::new(v.soap, v.addressing))
}

/// Encodes with an explicit framing (e.g. a MustUnderstand fault's `NotUnderstood` headers).
pub(crate) fn encode_framed(
    m: &Message,
    v: MessageVersion,
    framing: &Framing,
) -> Result<Encoded, EncodeError> {
    let body = wsrm_wire::encode(m, framing)?;
    encoded(m, v, body)
}

/// `m` already encoded as `body` (e.g. by a [`wsrm_wire::SequenceTemplate`]), with its HTTP
/// headers.
pub(crate) fn encoded<B>(
    m: &Message,
    v: MessageVersion,
    body: B,
) -> Result<Encoded<B>, EncodeError> {
    let soap_action = match v.soap {
        SoapVersion::Soap11 => Some(format!("\"{}\"", wsrm_wire::action_uri(m, v.addressing)?)),
        SoapVersion::Soap12 => None,
    };
    Ok(Encoded {
        body,
        content_type: v.soap.content_type(),
        soap_action,
    })
}

pub(crate) fn limits(max: usize) -> Limits {
    Limits {
        max_message_size: max,
        ..Limits::default()
    }
}

pub(crate) fn decode(b: &Bytes, max: usize) -> Result<(Message, MessageVersion), DecodeError> {
    let mut d = wsrm_wire::decode(b.clone(), &limits(max))?;
    // gSOAP declares the payload namespace on the Envelope: deliver (and echo) a body that
    // carries the declarations it relies on (docs/interop.md, gSOAP quirk 13)
    if let Body::Application(body) = &mut d.message.body {
        if !d.body_namespaces.is_empty() {
            *body = wsrm_wire::self_contained_body(body, &d.body_namespaces);
        }
    }
    Ok((
        d.message,
        MessageVersion {
            soap: d.soap,
            addressing: d.addressing,
        },
    ))
}

/// The message version to frame a decode error's fault in.
pub(crate) fn error_version(e: &DecodeError, fallback: MessageVersion) -> MessageVersion {
    MessageVersion {
        soap: e.soap().unwrap_or(fallback.soap),
        addressing: e.addressing().unwrap_or(fallback.addressing),
    }
}

/// The framing of the fault answering a decode error: the request's SOAP/WS-Addressing
/// versions where they were read, its FaultTo/ReplyTo, and for a MustUnderstand fault the
/// SOAP 1.2 `NotUnderstood` header naming the header that was not understood.
pub(crate) fn error_framing(e: &DecodeError, fallback: MessageVersion) -> Framing {
    Framing::for_error(e, &Framing::new(fallback.soap, fallback.addressing))
}

/// The fault message answering a decode error, if WCF answers with one.
pub(crate) fn error_fault(e: &DecodeError) -> Option<Message> {
    let f = e.fault()?;
    let mut m = Message::new(
        e.rm().unwrap_or_default(),
        Action::Fault,
        Body::Fault(Box::new(f)),
    );
    m.relates_to = e.message_id().cloned();
    Some(m)
}

/// A SOAP `VersionMismatch`-style refusal for an envelope whose SOAP/WS-Addressing versions
/// differ from the binding's (the binding has one message version, like WCF's encoder).
pub(crate) fn version_mismatch(binding: MessageVersion, rm: RmVersion) -> Message {
    let f = Fault::new(
        FaultCode::Sender,
        FaultKind::Other(Some(format!(
            "{{{}}}VersionMismatch",
            binding.soap.namespace()
        ))),
        format!(
            "The message version of the request does not match the binding's message version {}.",
            binding.wcf_name()
        ),
        FaultDetail::None,
    );
    Message::new(rm, Action::Fault, Body::Fault(Box::new(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsrm_proto::msg::CreateSequence;

    #[test]
    fn content_type_constants_are_the_versions_values() {
        for v in [SoapVersion::Soap11, SoapVersion::Soap12] {
            let h = content_type_header(v.content_type());
            assert_eq!(h.to_str().ok(), Some(v.content_type()));
        }
        assert_eq!(
            content_type_header("text/plain").to_str().ok(),
            Some("text/plain")
        );
    }

    #[test]
    fn create_sequence_round_trips() {
        let mut m = Message::new(
            RmVersion::Wsrm10,
            Action::CreateSequence,
            Body::CreateSequence(Box::new(CreateSequence {
                acks_to: String::new(),
                expires: None,
                offer: None,
            })),
        );
        m.message_id = Some("urn:uuid:1".into());
        m.to = Some("http://127.0.0.1:1/svc".into());
        let e = encode(&m, MessageVersion::SOAP12_WSA10).unwrap();
        let (d, v) = decode(&e.body, 65536)
            .map_err(|x| format!("{x}: {}", String::from_utf8_lossy(&e.body)))
            .unwrap();
        assert_eq!(v, MessageVersion::SOAP12_WSA10);
        assert_eq!(d.action, Action::CreateSequence);
    }

    #[test]
    fn gsoap_body_is_made_self_contained() {
        let capture = include_str!("../../../interop/captures/gsoap-rm11-client-Echo.xml");
        let xml = capture
            .find("<SOAP-ENV:Envelope")
            .and_then(|i| capture.get(i..))
            .unwrap();
        let (d, _) = decode(&Bytes::copy_from_slice(xml.as_bytes()), 65536).unwrap();
        match d.body {
            Body::Application(b) => assert_eq!(
                &b[..],
                &b"<p:p xmlns:p=\"urn:wsrm:payload\">message-1</p:p>"[..]
            ),
            other => panic!("not an application body: {other:?}"),
        }
    }
}
