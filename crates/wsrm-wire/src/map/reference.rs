//! The writer as of commit 8e15a24, kept unchanged as a test-only reference: the encoder must
//! produce exactly its bytes (and errors) for every message (`tests` below, a proptest over
//! the message space). Not used outside tests.
#![allow(dead_code, clippy::all)]

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use wsrm_proto::msg::{
    AckHeader, Action, Body, Fault, FaultCode, FaultDetail, FaultKind, Message, RmVersion,
    SequenceId,
};

use super::Framing;
use crate::error::{split_clark, EncodeError};
use crate::ns::{
    act, rm_namespace, AddressingVersion, SoapVersion, RM11_FAULT_ACTION, SOAP11, SOAP12, WSA10,
    WSA200408,
};

/// The old `crate::encode`.
pub(crate) fn encode(msg: &Message, framing: &Framing) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    write(msg, framing, &mut buf)?;
    Ok(buf.freeze())
}

/// The old `crate::writer`.
mod w {

    use bytes::{BufMut, BytesMut};

    /// Appends raw bytes.
    #[inline]
    pub(crate) fn raw(b: &mut BytesMut, s: &str) {
        b.extend_from_slice(s.as_bytes());
    }

    /// Appends escaped character data (`&`, `<`, `>`).
    #[inline]
    pub(crate) fn text(b: &mut BytesMut, s: &str) {
        escape::<false>(b, s)
    }

    /// Appends an escaped attribute value (`&`, `<`, `>`, `"`).
    #[inline]
    pub(crate) fn attr(b: &mut BytesMut, s: &str) {
        escape::<true>(b, s)
    }

    /// Whether `c` is escaped in attribute values (`QUOTE`) or character data: `&`, `<`, `>`,
    /// carriage return, and in attribute values also `"`, tab and line feed. Branch-free (`|` of
    /// comparisons), so that a loop over it is vectorised.
    #[inline(always)]
    fn special<const QUOTE: bool>(c: u8) -> bool {
        let text = (c == b'&') | (c == b'<') | (c == b'>') | (c == b'\r');
        if QUOTE {
            text | (c == b'"') | (c == b'\t') | (c == b'\n')
        } else {
            text
        }
    }

    /// Whether any byte of `bytes` is [`special`]: whole 16-byte blocks into 16 lanes without
    /// early exit (vectorised: a few instructions per block). The tail is the last 16 bytes
    /// (overlapping, which does not matter for the test), or a zero-padded copy of a shorter value.
    #[inline(always)]
    fn any_special<const QUOTE: bool>(bytes: &[u8]) -> bool {
        #[inline(always)]
        fn lanes<const QUOTE: bool>(acc: &mut [u8; 16], block: &[u8; 16]) {
            for (l, &c) in acc.iter_mut().zip(block) {
                *l |= u8::from(special::<QUOTE>(c));
            }
        }
        let mut acc = [0u8; 16];
        let mut blocks = bytes.chunks_exact(16);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; 16]>::try_from(block) {
                lanes::<QUOTE>(&mut acc, block);
            }
        }
        if !blocks.remainder().is_empty() {
            let mut last = [0u8; 16];
            match bytes.len().checked_sub(16).and_then(|k| bytes.get(k..)) {
                Some(tail) => last.copy_from_slice(tail),
                None => {
                    if let Some(head) = last.get_mut(..bytes.len()) {
                        head.copy_from_slice(bytes);
                    }
                }
            }
            lanes::<QUOTE>(&mut acc, &last);
        }
        acc.iter().fold(0u8, |a, &l| a | l) != 0
    }

    fn escape<const QUOTE: bool>(b: &mut BytesMut, s: &str) {
        let bytes = s.as_bytes();
        // the usual value (identifiers, URIs) needs no escaping: one vectorised test, one copy
        if !any_special::<QUOTE>(bytes) {
            b.extend_from_slice(bytes);
            return;
        }
        let mut last = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let rep: &[u8] = match c {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                b'>' => b"&gt;",
                b'"' if QUOTE => b"&quot;",
                b'\r' => b"&#xD;",
                b'\t' if QUOTE => b"&#x9;",
                b'\n' if QUOTE => b"&#xA;",
                _ => continue,
            };
            if let Some(chunk) = bytes.get(last..i) {
                b.extend_from_slice(chunk);
            }
            b.extend_from_slice(rep);
            last = i + 1;
        }
        if let Some(chunk) = bytes.get(last..) {
            b.extend_from_slice(chunk);
        }
    }

    /// Appends a decimal number.
    #[inline]
    pub(crate) fn num(b: &mut BytesMut, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            if let Some(d) = buf.get_mut(i) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        if let Some(s) = buf.get(i..) {
            b.put_slice(s);
        }
    }

    /// `<p:name>` + escaped text + `</p:name>`.
    #[inline]
    pub(crate) fn elem_text(b: &mut BytesMut, open: &str, value: &str, close: &str) {
        raw(b, open);
        text(b, value);
        raw(b, close);
    }
}

fn rm_fault_local(kind: &FaultKind) -> Option<&'static str> {
    Some(match kind {
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

/// The `wsa:Action` URI of `msg` under `addressing` (also the SOAP 1.1 `SOAPAction` value).
pub fn action_uri(
    msg: &Message,
    addressing: AddressingVersion,
) -> Result<Cow<'_, str>, EncodeError> {
    let v = msg.version;
    let ns = rm_namespace(v);
    let not_in = |what| EncodeError::NotInVersion { what, version: v };
    let suffix = match &msg.action {
        Action::Other(s) => return Ok(Cow::Borrowed(s)),
        Action::Fault => {
            let rm_kind = matches!(&msg.body, Body::Fault(f) if rm_fault_local(&f.kind).is_some());
            return Ok(Cow::Borrowed(if v == RmVersion::Wsrm11 && rm_kind {
                RM11_FAULT_ACTION
            } else {
                addressing.fault_action()
            }));
        }
        Action::CreateSequence => act::CREATE_SEQUENCE,
        Action::CreateSequenceResponse => act::CREATE_SEQUENCE_RESPONSE,
        Action::TerminateSequence => act::TERMINATE_SEQUENCE,
        Action::SequenceAcknowledgement => act::SEQUENCE_ACKNOWLEDGEMENT,
        Action::AckRequested => act::ACK_REQUESTED,
        Action::CloseSequence if v == RmVersion::Wsrm11 => act::CLOSE_SEQUENCE,
        Action::CloseSequenceResponse if v == RmVersion::Wsrm11 => act::CLOSE_SEQUENCE_RESPONSE,
        Action::TerminateSequenceResponse if v == RmVersion::Wsrm11 => {
            act::TERMINATE_SEQUENCE_RESPONSE
        }
        Action::LastMessage if v == RmVersion::Wsrm10 => act::LAST_MESSAGE,
        Action::CloseSequence => return Err(not_in("CloseSequence")),
        Action::CloseSequenceResponse => return Err(not_in("CloseSequenceResponse")),
        Action::TerminateSequenceResponse => return Err(not_in("TerminateSequenceResponse")),
        Action::LastMessage => return Err(not_in("LastMessage")),
    };
    Ok(match crate::reader::rm_action_uri(v, suffix) {
        Some(uri) => Cow::Borrowed(uri),
        None => Cow::Owned(format!("{ns}/{suffix}")),
    })
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

/// The start of every envelope the writer writes, up to and including `<s:Header>`.
fn prolog(soap: SoapVersion, addressing: AddressingVersion) -> &'static str {
    match (soap, addressing) {
        (SoapVersion::Soap12, AddressingVersion::Wsa10) => "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>",
        (SoapVersion::Soap12, AddressingVersion::Wsa200408) => "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>",
        (SoapVersion::Soap11, AddressingVersion::Wsa10) => "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>",
        (SoapVersion::Soap11, AddressingVersion::Wsa200408) => "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>",
    }
}

/// Writes `msg` framed by `framing` into `buf`.
pub(crate) fn write(
    msg: &Message,
    framing: &Framing,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v = msg.version;
    let action = action_uri(msg, framing.addressing)?;
    let fx = Fx { r_decl: r_decl(v) };
    match &msg.body {
        Body::CloseSequence { .. }
        | Body::CloseSequenceResponse { .. }
        | Body::TerminateSequenceResponse { .. }
            if v == RmVersion::Wsrm10 =>
        {
            return Err(EncodeError::NotInVersion {
                what: "CloseSequence/CloseSequenceResponse/TerminateSequenceResponse body",
                version: v,
            })
        }
        _ => {}
    }

    w::raw(buf, prolog(framing.soap, framing.addressing));

    // RM headers: WCF inserts each at position 0 → ack, AckRequested, Sequence.
    if let Some(ack) = &msg.ack {
        write_ack(buf, ack, v, true);
    }
    if let Some(id) = &msg.ack_requested {
        w::raw(buf, "<r:AckRequested");
        w::raw(buf, fx.r_decl);
        w::raw(buf, "><r:Identifier>");
        w::text(buf, id.as_str());
        w::raw(buf, "</r:Identifier></r:AckRequested>");
    }
    if let Some(seq) = &msg.sequence {
        w::raw(
            buf,
            match v {
                RmVersion::Wsrm10 => "<r:Sequence s:mustUnderstand=\"1\" xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
                RmVersion::Wsrm11 => "<r:Sequence s:mustUnderstand=\"1\" xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
            },
        );
        w::text(buf, seq.identifier.as_str());
        w::raw(buf, "</r:Identifier><r:MessageNumber>");
        w::num(buf, seq.number);
        w::raw(
            buf,
            if seq.last_message && v == RmVersion::Wsrm10 {
                "</r:MessageNumber><r:LastMessage/></r:Sequence>"
            } else {
                "</r:MessageNumber></r:Sequence>"
            },
        );
    }

    // Addressing headers: Action, MessageID, ReplyTo, RelatesTo, To, reference parameters.
    w::raw(buf, "<a:Action s:mustUnderstand=\"1\">");
    match &msg.action {
        Action::Other(_) => w::text(buf, &action),
        // an RM, WS-Addressing or SOAP action URI: a constant without characters to escape
        _ => w::raw(buf, &action),
    }
    w::raw(buf, "</a:Action>");
    if let Some(id) = &msg.message_id {
        w::elem_text(buf, "<a:MessageID>", id, "</a:MessageID>");
    }
    let reply_to: Option<&str> = match &msg.reply_to {
        Some(r) => Some(r),
        // WSA 2004/08 requests always carry ReplyTo (anonymous when not addressable).
        None if framing.addressing == AddressingVersion::Wsa200408
            && (msg.action == Action::CreateSequence
                || (msg.message_id.is_some() && msg.relates_to.is_none())) =>
        {
            Some(framing.addressing.anonymous())
        }
        None => None,
    };
    if let Some(r) = reply_to {
        w::elem_text(buf, "<a:ReplyTo><a:Address>", r, "</a:Address></a:ReplyTo>");
    }
    if let Some(r) = &msg.relates_to {
        w::elem_text(buf, "<a:RelatesTo>", r, "</a:RelatesTo>");
    }
    let to = msg.to.as_ref().or(framing.to.as_ref());
    if let Some(to) = to {
        let omit = framing.addressing == AddressingVersion::Wsa10
            && &**to == framing.addressing.anonymous();
        if !omit {
            w::elem_text(buf, "<a:To s:mustUnderstand=\"1\">", to, "</a:To>");
        }
    }
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
            w::raw(buf, "</s:Header><s:Body/></s:Envelope>");
            return Ok(());
        }
        Body::Application(b) if framing.body_namespaces.is_empty() => {
            w::raw(buf, "</s:Header><s:Body>");
            buf.extend_from_slice(b);
            w::raw(buf, "</s:Body></s:Envelope>");
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
    w::raw(
        buf,
        match (decl, v) {
            (true, RmVersion::Wsrm10) => "<r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>",
            (true, RmVersion::Wsrm11) => "<r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>",
            (false, _) => "<r:SequenceAcknowledgement><r:Identifier>",
        },
    );
    w::text(buf, ack.identifier.as_str());
    w::raw(buf, "</r:Identifier>");
    if !ack.ranges.is_empty() {
        for (lo, up) in &ack.ranges {
            w::raw(buf, "<r:AcknowledgementRange Lower=\"");
            w::num(buf, *lo);
            w::raw(buf, "\" Upper=\"");
            w::num(buf, *up);
            w::raw(buf, "\"/>");
        }
    } else if !ack.nacks.is_empty() && !ack.none {
        for n in &ack.nacks {
            w::raw(buf, "<r:Nack>");
            w::num(buf, *n);
            w::raw(buf, "</r:Nack>");
        }
    } else {
        match v {
            RmVersion::Wsrm10 => w::raw(buf, "<r:AcknowledgementRange Lower=\"0\" Upper=\"0\"/>"),
            RmVersion::Wsrm11 => w::raw(buf, "<r:None/>"),
        }
    }
    if ack.final_ack && v == RmVersion::Wsrm11 {
        w::raw(buf, "<r:Final/>");
    }
    match ack.buffer_remaining {
        Some(k) => {
            w::raw(
                buf,
                "<netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">",
            );
            w::num(buf, u64::from(k));
            w::raw(buf, "</netrm:BufferRemaining></r:SequenceAcknowledgement>");
        }
        None => w::raw(buf, "</r:SequenceAcknowledgement>"),
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

/// The encoder writes exactly the reference's bytes (and errors) for any message and framing:
/// values with and without characters to escape (at every length around the 16-byte blocks
/// of the escape test), every action, header and body kind, every version combination,
/// numbers of every width, reference parameters, body namespaces and NotUnderstood headers.
#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use wsrm_proto::msg::{
        AckHeader, Action, Body, CreateSequence, CreateSequenceResponse, Fault, FaultCode,
        FaultDetail, FaultKind, IncompleteSequenceBehavior, Message, Offer, RmVersion,
        SequenceHeader, SequenceId,
    };

    use crate::ns::{AddressingVersion, SoapVersion};
    use crate::Framing;

    /// Text values: the engine's usual ones, the anonymous URIs, and arbitrary text with and
    /// without characters to escape.
    fn value() -> BoxedStrategy<String> {
        prop_oneof![
            3 => Just("urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b".to_owned()),
            1 => Just(crate::ns::WSA10_ANONYMOUS.to_owned()),
            1 => Just(crate::ns::WSA200408_ANONYMOUS.to_owned()),
            1 => Just("http://127.0.0.1:45237/svc".to_owned()),
            1 => Just(String::new()),
            3 => "[a-zA-Z0-9:/._-]{0,70}",
            3 => "[a-z&<>\"'\r\n\t ]{0,40}",
            2 => "\\PC{0,24}",
            1 => "[ -~\t\r\n\u{e9}\u{2028}]{0,20}",
        ]
        .boxed()
    }

    fn arc() -> impl Strategy<Value = Option<Arc<str>>> {
        proptest::option::of(value().prop_map(|s| Arc::from(s.as_str())))
    }

    fn id() -> impl Strategy<Value = SequenceId> {
        value().prop_map(|s| SequenceId::from(s.as_str()))
    }

    fn num() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..12u64,
            any::<u64>(),
            Just(u64::MAX),
            Just(9_223_372_036_854_775_807),
            (0..20u32).prop_map(|k| 10u64.pow(k)),
            (1..20u32).prop_map(|k| 10u64.pow(k) - 1),
        ]
    }

    fn ack() -> impl Strategy<Value = AckHeader> {
        (
            id(),
            proptest::collection::vec((num(), num()), 0..5),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(num(), 0..4),
            proptest::option::of(prop_oneof![0..100u32, any::<u32>()]),
        )
            .prop_map(
                |(identifier, ranges, none, final_ack, nacks, buffer_remaining)| AckHeader {
                    identifier,
                    ranges,
                    none,
                    final_ack,
                    nacks,
                    buffer_remaining,
                },
            )
    }

    fn version() -> impl Strategy<Value = RmVersion> {
        prop_oneof![Just(RmVersion::Wsrm10), Just(RmVersion::Wsrm11)]
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            1 => Just(Action::CreateSequence),
            1 => Just(Action::CreateSequenceResponse),
            1 => Just(Action::CloseSequence),
            1 => Just(Action::CloseSequenceResponse),
            1 => Just(Action::TerminateSequence),
            1 => Just(Action::TerminateSequenceResponse),
            1 => Just(Action::SequenceAcknowledgement),
            1 => Just(Action::AckRequested),
            1 => Just(Action::LastMessage),
            1 => Just(Action::Fault),
            4 => value().prop_map(|s| Action::Other(Arc::from(s.as_str()))),
            1 => Just(Action::Other(Arc::from("urn:bench/OneWay"))),
        ]
    }

    fn isb() -> impl Strategy<Value = Option<IncompleteSequenceBehavior>> {
        proptest::option::of(prop_oneof![
            Just(IncompleteSequenceBehavior::DiscardEntireSequence),
            Just(IncompleteSequenceBehavior::DiscardFollowingFirstGap),
            Just(IncompleteSequenceBehavior::NoDiscard),
        ])
    }

    fn clark() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just(crate::ns::SOAP11),
                Just(crate::ns::SOAP12),
                Just(crate::ns::WSA10),
                Just(crate::ns::WSA200408),
                Just(crate::ns::RM10),
                Just(crate::ns::RM11),
                Just(""),
                Just("urn:biz"),
                Just("urn:a&b\"c"),
            ],
            "[a-zA-Z<&]{1,12}",
        )
            .prop_map(|(ns, local)| {
                if ns.is_empty() {
                    local
                } else {
                    format!("{{{ns}}}{local}")
                }
            })
    }

    fn fault() -> impl Strategy<Value = Fault> {
        let kind = prop_oneof![
            Just(FaultKind::SequenceTerminated),
            Just(FaultKind::UnknownSequence),
            Just(FaultKind::InvalidAcknowledgement),
            Just(FaultKind::MessageNumberRollover),
            Just(FaultKind::LastMessageNumberExceeded),
            Just(FaultKind::SequenceClosed),
            Just(FaultKind::CreateSequenceRefused),
            Just(FaultKind::ConnectionLimitReached),
            Just(FaultKind::WsrmRequired),
            Just(FaultKind::MustUnderstand),
            Just(FaultKind::EndpointUnavailable),
            Just(FaultKind::MessageAddressingHeaderRequired),
            Just(FaultKind::ActionNotSupported),
            Just(FaultKind::Other(None)),
            clark().prop_map(|q| FaultKind::Other(Some(q))),
        ];
        let detail = prop_oneof![
            Just(FaultDetail::None),
            id().prop_map(FaultDetail::Identifier),
            ack().prop_map(FaultDetail::Ack),
            (id(), proptest::option::of(num())).prop_map(|(identifier, max_message_number)| {
                FaultDetail::Rollover {
                    identifier,
                    max_message_number,
                }
            }),
        ];
        (any::<bool>(), kind, value(), detail).prop_map(|(receiver, kind, reason, detail)| {
            let code = if receiver {
                FaultCode::Receiver
            } else {
                FaultCode::Sender
            };
            Fault::new(code, kind, reason, detail)
        })
    }

    fn body() -> impl Strategy<Value = Body> {
        let offer = (
            id(),
            proptest::option::of(value()),
            proptest::option::of(value()),
            isb(),
        )
            .prop_map(
                |(identifier, endpoint, expires, incomplete_sequence_behavior)| Offer {
                    identifier,
                    endpoint,
                    expires,
                    incomplete_sequence_behavior,
                },
            );
        prop_oneof![
            3 => Just(Body::Empty),
            3 => prop_oneof![
                Just(Bytes::from(format!(
                    "<p xmlns=\"urn:wsrm:payload\">{}</p>",
                    "x".repeat(984)
                ))),
                value().prop_map(Bytes::from),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
            ]
            .prop_map(Body::Application),
            1 => (value(), proptest::option::of(value()), proptest::option::of(offer)).prop_map(
                |(acks_to, expires, offer)| Body::CreateSequence(Box::new(CreateSequence {
                    acks_to,
                    expires,
                    offer,
                }))
            ),
            1 => (id(), proptest::option::of(value()), isb(), proptest::option::of(value()))
                .prop_map(|(identifier, expires, incomplete_sequence_behavior, accept)| {
                    Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                        identifier,
                        expires,
                        incomplete_sequence_behavior,
                        accept,
                    }))
                }),
            1 => (id(), proptest::option::of(num())).prop_map(|(identifier, last_msg_number)| {
                Body::CloseSequence {
                    identifier,
                    last_msg_number,
                }
            }),
            1 => id().prop_map(|identifier| Body::CloseSequenceResponse { identifier }),
            1 => (id(), proptest::option::of(num())).prop_map(|(identifier, last_msg_number)| {
                Body::TerminateSequence {
                    identifier,
                    last_msg_number,
                }
            }),
            1 => id().prop_map(|identifier| Body::TerminateSequenceResponse { identifier }),
            2 => fault().prop_map(|f| Body::Fault(Box::new(f))),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            (version(), action(), body(), arc(), arc(), arc(), arc()),
            (
                proptest::option::of((id(), num(), any::<bool>())),
                proptest::option::of(ack()),
                proptest::option::of(id()),
            ),
        )
            .prop_map(
                |(
                    (version, action, body, message_id, relates_to, reply_to, to),
                    (sequence, ack, ack_requested),
                )| {
                    let mut m = Message::new(version, action, body);
                    m.message_id = message_id;
                    m.relates_to = relates_to;
                    m.reply_to = reply_to;
                    m.to = to;
                    m.sequence =
                        sequence.map(|(identifier, number, last_message)| SequenceHeader {
                            identifier,
                            number,
                            last_message,
                        });
                    m.ack = ack;
                    m.ack_requested = ack_requested;
                    m
                },
            )
    }

    fn framing() -> impl Strategy<Value = Framing> {
        let soap = prop_oneof![Just(SoapVersion::Soap11), Just(SoapVersion::Soap12)];
        let wsa = prop_oneof![
            Just(AddressingVersion::Wsa10),
            Just(AddressingVersion::Wsa200408)
        ];
        let param = prop_oneof![
            Just(Bytes::from_static(b"<x:P xmlns:x=\"urn:p\">1</x:P>")),
            Just(Bytes::from_static(b"<q a='>' b=\"/>\"/>")),
            Just(Bytes::from_static(b"<e/>")),
            Just(Bytes::from_static(b"no tag")),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
        ];
        let prefix = prop_oneof![
            Just(String::new()),
            Just("s".to_owned()),
            Just("a".to_owned()),
            Just("p".to_owned()),
            Just("q1".to_owned()),
        ];
        let local = prop_oneof![Just("Hdr".to_owned()), "[a-z:1 ]{0,6}"];
        (
            soap,
            wsa,
            proptest::option::of(value().prop_map(|s| Arc::from(s.as_str()))),
            proptest::collection::vec(param, 0..3),
            prop_oneof![3 => Just(Cow::Borrowed("en-US")), 1 => value().prop_map(Cow::Owned)],
            prop_oneof![
                3 => Just(Vec::new()),
                1 => proptest::collection::vec((prefix, value()), 0..3),
            ],
            prop_oneof![
                3 => Just(Vec::new()),
                1 => proptest::collection::vec((value(), local), 0..3),
            ],
        )
            .prop_map(
                |(
                    soap,
                    addressing,
                    to,
                    reference_parameters,
                    xml_lang,
                    body_namespaces,
                    not_understood,
                )| {
                    let mut f = Framing::new(soap, addressing);
                    f.to = to;
                    f.reference_parameters = reference_parameters;
                    f.xml_lang = xml_lang;
                    f.body_namespaces = body_namespaces;
                    f.not_understood = not_understood;
                    f
                },
            )
    }

    /// The encoder against the reference for one message: `encode`, and `encode_into` after
    /// bytes already in the buffer.
    fn check(m: &Message, f: &Framing) -> Result<(), TestCaseError> {
        let want = super::encode(m, f);
        let got = crate::encode(m, f);
        prop_assert_eq!(&got, &want);
        // the size the plain path allocates is the size written
        if let (Ok(want), Some((_, n))) = (&want, crate::map::standalone_ack(m, f)) {
            prop_assert_eq!(n, want.len());
        }
        if let (Ok(want), Ok(action)) = (&want, crate::map::action_of(m, f.addressing)) {
            if let Some(n) = crate::map::plain_len(m, f, &action) {
                prop_assert_eq!(n, want.len());
            }
        }
        let mut buf = BytesMut::from(&b"prefix"[..]);
        let into = crate::encode_into(m, f, &mut buf);
        prop_assert_eq!(into.is_ok(), want.is_ok());
        if let Ok(want) = &want {
            prop_assert_eq!(buf.get(..6), Some(&b"prefix"[..]));
            prop_assert_eq!(buf.get(6..), Some(&want[..]));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn encode_equals_reference(m in message(), f in framing()) {
            check(&m, &f)?;
        }

        /// Standalone acknowledgements (the writer's own path for them) in every version
        /// combination, with and without what takes them off that path.
        #[test]
        fn standalone_acks_equal_reference(
            v in version(),
            f in framing(),
            ack in ack(),
            to in prop_oneof![
                3 => Just(None),
                1 => Just(Some(Arc::from(crate::ns::WSA10_ANONYMOUS))),
                1 => arc(),
            ],
            other in prop_oneof![
                6 => Just(0u8),
                1 => 1u8..8,
            ],
        ) {
            let mut f = f;
            if other != 1 {
                f.reference_parameters.clear();
            }
            let mut m = Message::new(
                v,
                if other == 2 { Action::AckRequested } else { Action::SequenceAcknowledgement },
                if other == 3 { Body::Application(Bytes::from_static(b"<b/>")) } else { Body::Empty },
            );
            m.ack = Some(ack);
            m.to = to;
            match other {
                4 => m.message_id = Some(Arc::from("urn:uuid:m")),
                5 => m.relates_to = Some(Arc::from("urn:uuid:r")),
                6 => m.reply_to = Some(Arc::from("urn:r")),
                7 => m.ack_requested = Some(SequenceId::from("urn:uuid:q")),
                _ => {}
            }
            check(&m, &f)?;
        }

        /// The runtime's per-message shapes (sequence message, standalone acknowledgement) in
        /// every version combination, with plain and escaped values.
        #[test]
        fn hot_shapes_equal_reference(
            v in version(),
            f in framing(),
            seq in proptest::option::of((id(), num(), any::<bool>())),
            ack in proptest::option::of(ack()),
            body in prop_oneof![Just(Body::Empty), value().prop_map(|s| Body::Application(Bytes::from(s)))],
            message_id in arc(),
            reply_to in arc(),
            to in arc(),
            action in action(),
        ) {
            let mut f = f;
            f.reference_parameters.clear();
            f.body_namespaces.clear();
            let mut m = Message::new(v, action, body);
            m.sequence = seq.map(|(identifier, number, last_message)| SequenceHeader {
                identifier,
                number,
                last_message,
            });
            m.ack = ack;
            m.message_id = message_id;
            m.reply_to = reply_to;
            m.to = to;
            check(&m, &f)?;
        }
    }
}
