//! The JSON view of a decoded envelope printed by `wsrm decode` (format: docs/decode.md).

use serde_json::{json, Map, Value};
use wsrm_proto::msg::{AckHeader, Body, FaultCode, FaultDetail};

use crate::error::fault_kind_name;
use crate::{DecodeError, Decoded};

fn ack_json(a: &AckHeader) -> Value {
    json!({
        "identifier": a.identifier.as_str(),
        "ranges": a.ranges.iter().map(|(l, u)| json!([l, u])).collect::<Vec<_>>(),
        "none": a.none,
        "final": a.final_ack,
        "nack": a.nacks,
        "buffer_remaining": a.buffer_remaining,
    })
}

/// The decode JSON object of `d`.
pub fn to_json(d: &Decoded) -> Value {
    let m = &d.message;
    let mut o = Map::new();
    o.insert("soap".into(), json!(d.soap.as_str()));
    o.insert("addressing".into(), json!(d.addressing.as_str()));
    o.insert("rm".into(), json!(d.rm.map(|v| v.as_str())));
    o.insert("action".into(), json!(&*d.action));
    o.insert("message_id".into(), json!(m.message_id.as_deref()));
    o.insert("relates_to".into(), json!(m.relates_to.as_deref()));
    o.insert("to".into(), json!(m.to.as_deref()));
    o.insert("reply_to".into(), json!(m.reply_to.as_deref()));
    // optional key: only when the message names a fault endpoint
    if let Some(ft) = &d.fault_to {
        o.insert("fault_to".into(), json!(&*ft.address));
    }
    o.insert(
        "sequence".into(),
        match &m.sequence {
            Some(s) => json!({
                "identifier": s.identifier.as_str(),
                "number": s.number,
                "last_message": s.last_message,
            }),
            None => Value::Null,
        },
    );
    o.insert(
        "acks".into(),
        Value::Array(m.ack.iter().map(ack_json).collect()),
    );
    o.insert(
        "ack_requested".into(),
        Value::Array(m.ack_requested.iter().map(|i| json!(i.as_str())).collect()),
    );
    let body = match &m.body {
        Body::Empty => json!({"kind": "Empty"}),
        Body::Application(_) => json!({"kind": "Application"}),
        Body::CreateSequence(cs) => json!({
            "kind": "CreateSequence",
            "acks_to": cs.acks_to,
            "expires": cs.expires,
            "offer": cs.offer.as_ref().map(|o| json!({
                "identifier": o.identifier.as_str(),
                "endpoint": o.endpoint,
                "expires": o.expires,
                "incomplete_sequence_behavior": o.incomplete_sequence_behavior.map(|b| b.as_str()),
            })),
        }),
        Body::CreateSequenceResponse(r) => json!({
            "kind": "CreateSequenceResponse",
            "identifier": r.identifier.as_str(),
            "expires": r.expires,
            "incomplete_sequence_behavior": r.incomplete_sequence_behavior.map(|b| b.as_str()),
            "accept": r.accept,
        }),
        Body::CloseSequence {
            identifier,
            last_msg_number,
        } => json!({
            "kind": "CloseSequence",
            "identifier": identifier.as_str(),
            "last_msg_number": last_msg_number,
        }),
        Body::CloseSequenceResponse { identifier } => json!({
            "kind": "CloseSequenceResponse",
            "identifier": identifier.as_str(),
        }),
        Body::TerminateSequence {
            identifier,
            last_msg_number,
        } => json!({
            "kind": "TerminateSequence",
            "identifier": identifier.as_str(),
            "last_msg_number": last_msg_number,
        }),
        Body::TerminateSequenceResponse { identifier } => json!({
            "kind": "TerminateSequenceResponse",
            "identifier": identifier.as_str(),
        }),
        Body::Fault(f) => {
            let detail = match &f.detail {
                FaultDetail::None => Value::Null,
                FaultDetail::Identifier(id) => json!({"identifier": id.as_str()}),
                FaultDetail::Ack(a) => json!({"ack": ack_json(a)}),
                FaultDetail::Rollover {
                    identifier,
                    max_message_number,
                } => json!({
                    "identifier": identifier.as_str(),
                    "max_message_number": max_message_number,
                }),
            };
            let mut fj = json!({
                "kind": "Fault",
                "code": match f.code { FaultCode::Sender => "Sender", FaultCode::Receiver => "Receiver" },
                "subcode": d.fault_subcode,
                "fault": fault_kind_name(&f.kind),
                "reason": f.reason,
                "detail": detail,
            });
            // optional key: the SOAP 1.2 NotUnderstood headers of a MustUnderstand fault
            if !d.not_understood.is_empty() {
                if let Value::Object(fo) = &mut fj {
                    fo.insert(
                        "not_understood".into(),
                        d.not_understood
                            .iter()
                            .map(|(ns, l)| json!(format!("{{{ns}}}{l}")))
                            .collect(),
                    );
                }
            }
            fj
        }
    };
    o.insert("body".into(), body);
    o.insert("body_bytes".into(), json!(d.body_bytes.len()));
    Value::Object(o)
}

/// The one-line description of a refused message printed by `wsrm decode`:
/// `error: <what is wrong>; fault: <fault> (HTTP <status>)`.
pub fn error_line(e: &DecodeError) -> String {
    match e.fault() {
        Some(_) => format!(
            "error: {} [{}]; fault: {} (HTTP {})",
            e,
            e.code(),
            e.fault_name(),
            e.http_status()
        ),
        None => format!("error: {} [{}]; fault: {}", e, e.code(), e.fault_name()),
    }
}
