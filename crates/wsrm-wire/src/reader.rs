//! The streaming envelope reader: bytes → [`Envelope`] (wire facts, no engine semantics).
//!
//! One pass over the input with quick-xml's namespace-aware slice reader; strings that end up
//! in the result are copied once, the application body is kept as a range of the input.

use std::sync::Arc;

use bytes::Bytes;
use wsrm_proto::msg::{
    AckHeader, CreateSequence, CreateSequenceResponse, IncompleteSequenceBehavior, Offer,
    RmVersion, SequenceHeader, SequenceId, MAX_MESSAGE_NUMBER,
};

use crate::error::{DecodeError, DecodeErrorKind, LimitKind};
use crate::map::Decoded;
use crate::ns::{act, AddressingVersion, Ns, SoapVersion};
use crate::xml::{bad, El, PErr, PResult, Raw, Rd};
use crate::Limits;

mod fast;
mod fast_ack;
pub use fast_ack::AckTemplate;

/// A WS-Addressing endpoint reference as received: the address and the reference parameters
/// (each kept as the raw bytes of one element, to be echoed as a header on messages sent to
/// that endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointReference {
    /// `Address` (trimmed).
    pub address: Arc<str>,
    /// The child elements of `ReferenceParameters` (2004/08: also `ReferenceProperties`), each
    /// the raw XML of one element exactly as received (zero-copy slices of the input). Prefixes
    /// declared outside the element (e.g. on the envelope) are not carried along.
    pub reference_parameters: Vec<Bytes>,
}

impl EndpointReference {
    /// An EPR with just an address.
    pub fn new(address: impl Into<Arc<str>>) -> Self {
        EndpointReference {
            address: address.into(),
            reference_parameters: Vec::new(),
        }
    }
}

/// RM detail elements found in a fault (SOAP 1.2 `Detail` or SOAP 1.1 `SequenceFault`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WDetail {
    pub identifier: Option<SequenceId>,
    pub ack: Option<AckHeader>,
    pub max_message_number: Option<u64>,
}

/// A `{ns}local` pair.
pub(crate) type QN = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WFault {
    /// SOAP 1.2 `Code/Value`, SOAP 1.1 `faultcode`.
    pub code: QN,
    /// SOAP 1.2 nested `Subcode/Value`s, outermost first.
    pub subcodes: Vec<QN>,
    pub reason: String,
    pub detail: WDetail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WSeqFault {
    pub code: QN,
    pub detail: WDetail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WBody {
    Empty,
    Application,
    CreateSequence {
        cs: CreateSequence,
        acks_to: EndpointReference,
    },
    CreateSequenceResponse(CreateSequenceResponse),
    CloseSequence {
        identifier: SequenceId,
        last_msg_number: Option<u64>,
    },
    CloseSequenceResponse(SequenceId),
    TerminateSequence {
        identifier: SequenceId,
        last_msg_number: Option<u64>,
    },
    TerminateSequenceResponse(SequenceId),
    Fault(WFault),
}

/// Everything read from one envelope.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub soap: SoapVersion,
    pub wsa: Option<AddressingVersion>,
    pub rm: Option<RmVersion>,
    pub action: Option<Arc<str>>,
    /// The action's suffix when it is in the RM namespace (validated for the version).
    pub rm_action: Option<&'static str>,
    pub message_id: Option<Arc<str>>,
    pub relates_to: Option<Arc<str>>,
    pub relationship_type: Option<Arc<str>>,
    pub to: Option<Arc<str>>,
    pub reply_to: Option<EndpointReference>,
    pub fault_to: Option<EndpointReference>,
    pub from: Option<EndpointReference>,
    pub sequence: Option<SequenceHeader>,
    pub ack: Option<AckHeader>,
    pub ack_requested: Option<SequenceId>,
    pub sequence_fault: Option<WSeqFault>,
    pub uses_sequence_str: bool,
    pub uses_sequence_ssl: bool,
    pub headers: usize,
    pub body: WBody,
    pub body_bytes: Bytes,
    pub body_namespaces: Vec<(String, String)>,
    /// SOAP 1.2 `NotUnderstood` header blocks (of a MustUnderstand fault), as (namespace, local).
    pub not_understood: Vec<(String, String)>,
}

struct P<'a> {
    rd: Rd<'a>,
    bytes: &'a Bytes,
    env: Envelope,
    /// Pending mustUnderstand for UsesSequenceSTR/SSL (understood only on CreateSequence).
    uses_mu: Option<String>,
    /// Whether header blocks of the writer's shape are matched directly (see `fast`).
    fast: bool,
}

/// Reads and maps one envelope. `fast`: the writer's shapes (prolog, header blocks) are
/// matched directly (the same result; `false` only to compare both paths).
pub(crate) fn read(bytes: &Bytes, limits: &Limits, fast: bool) -> Result<Decoded, DecodeError> {
    if bytes.len() > limits.max_message_size {
        return Err(DecodeErrorKind::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_size,
        }
        .into());
    }
    // the standalone acknowledgement as the writer writes it: read at once from the bytes
    if fast {
        if let Some(a) = fast_ack::scan(bytes, limits) {
            return fast_ack::build(a);
        }
    }
    let all: &[u8] = bytes;
    let base = if all.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else if all.starts_with(&[0xFE, 0xFF]) || all.starts_with(&[0xFF, 0xFE]) {
        return Err(DecodeErrorKind::Xml {
            offset: 0,
            reason: "UTF-16 input; only UTF-8 is accepted".into(),
        }
        .into());
    } else {
        0
    };
    let src = all.get(base..).unwrap_or_default();
    // validated once: every value is later sliced from this text
    // SIMD-validated; on an error std's check says where
    let src = match simdutf8::basic::from_utf8(src).or_else(|_| std::str::from_utf8(src)) {
        Ok(s) => s,
        Err(e) => {
            return Err(DecodeErrorKind::Xml {
                offset: base + e.valid_up_to(),
                reason: "invalid UTF-8".into(),
            }
            .into())
        }
    };
    if let Some(at) = crate::xml::check_chars(src.as_bytes()) {
        return Err(DecodeErrorKind::Xml {
            offset: base + at,
            reason: "control character (not an XML character)".into(),
        }
        .into());
    }
    let mut p = P {
        rd: Rd::new(src, base, limits),
        bytes,
        env: Envelope {
            soap: SoapVersion::Soap12,
            wsa: None,
            rm: None,
            action: None,
            rm_action: None,
            message_id: None,
            relates_to: None,
            relationship_type: None,
            to: None,
            reply_to: None,
            fault_to: None,
            from: None,
            sequence: None,
            ack: None,
            ack_requested: None,
            sequence_fault: None,
            uses_sequence_str: false,
            uses_sequence_ssl: false,
            headers: 0,
            body: WBody::Empty,
            body_bytes: Bytes::new(),
            body_namespaces: Vec::new(),
            not_understood: Vec::new(),
        },
        uses_mu: None,
        fast,
    };
    p.rd.fast = fast;
    let mut soap_known = false;
    match p.envelope(&mut soap_known) {
        // mapped in place: the envelope is not moved (a copy of ~800 bytes)
        Ok(()) => crate::map::to_decoded(&mut p.env),
        Err(kind) => {
            let mut e = DecodeError::new(kind);
            if soap_known {
                e.soap = Some(p.env.soap);
            }
            e.addressing = p.env.wsa;
            e.rm = p.env.rm;
            e.message_id = p.env.message_id.clone();
            e.fault_endpoint = p.env.fault_to.take().or_else(|| p.env.reply_to.take());
            Err(e)
        }
    }
}

fn not_env(reason: impl Into<String>) -> DecodeErrorKind {
    DecodeErrorKind::NotEnvelope {
        reason: reason.into(),
    }
}

/// Turns a structural failure into a typed error.
fn or_kind<T>(
    r: PResult<T>,
    f: impl FnOnce(String) -> DecodeErrorKind,
) -> Result<T, DecodeErrorKind> {
    match r {
        Ok(v) => Ok(v),
        Err(PErr::Fatal(k)) => Err(k),
        Err(PErr::Bad(reason)) => Err(f(reason)),
    }
}

/// 1 to 18 plain ASCII digits without a leading zero (cannot overflow 2^63 − 1): the value;
/// anything else (sign, whitespace, references, zero, longer) `None`, for the general path.
fn plain_number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || b.first() == Some(&b'0') {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

enum Num {
    Ok(u64),
    Rollover,
}

/// Parses an `xs:long`/`xs:unsignedLong` value that must be ≥ `min` and ≤ 2^63 − 1.
fn parse_num(s: &str, min: u64) -> PResult<Num> {
    // fast path: 1 to 18 plain digits (no sign, no whitespace) cannot overflow 2^63 - 1
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 18 && b.first() != Some(&b'0') {
        let mut v = 0u64;
        let mut digits = true;
        for &c in b {
            digits &= c.is_ascii_digit();
            v = v
                .wrapping_mul(10)
                .wrapping_add(u64::from(c.wrapping_sub(b'0')));
        }
        if digits {
            if v < min {
                return bad(format!("'{s}' is below the minimum {min}"));
            }
            return Ok(Num::Ok(v));
        }
    }
    let t = crate::xml::trim_xml(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return bad(format!("'{t}' is not a number"));
    }
    let nz = digits.trim_start_matches('0');
    if neg {
        if nz.is_empty() && min == 0 {
            return Ok(Num::Ok(0));
        }
        return bad(format!("'{t}' is negative"));
    }
    if nz.len() > 19 {
        return Ok(Num::Rollover);
    }
    let v: u64 = match nz.parse::<u64>() {
        Ok(v) => v,
        Err(_) if nz.is_empty() => 0,
        Err(_) => return Ok(Num::Rollover),
    };
    if v > MAX_MESSAGE_NUMBER {
        return Ok(Num::Rollover);
    }
    if v < min {
        return bad(format!("'{t}' is below the minimum {min}"));
    }
    Ok(Num::Ok(v))
}

fn num(s: &str, min: u64) -> PResult<u64> {
    match parse_num(s, min)? {
        Num::Ok(v) => Ok(v),
        Num::Rollover => bad(format!(
            "'{}' exceeds 9223372036854775807",
            crate::xml::trim_xml(s)
        )),
    }
}

/// Light `xs:duration` syntax check: `-?P(nY)?(nM)?(nD)?(T(nH)?(nM)?(n(.n)?S)?)?`.
pub(crate) fn is_duration(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    if b.get(i) != Some(&b'P') {
        return false;
    }
    i += 1;
    let mut any = false;
    let mut in_time = false;
    let mut time_any = false;
    let mut order = 0u8; // Y M D T H M S
    while i < b.len() {
        if b.get(i) == Some(&b'T') {
            if in_time {
                return false;
            }
            in_time = true;
            order = 3;
            i += 1;
            continue;
        }
        let st = i;
        while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        let mut frac = false;
        if b.get(i) == Some(&b'.') {
            frac = true;
            i += 1;
            let fs = i;
            while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            if i == fs {
                return false;
            }
        }
        if i == st {
            return false;
        }
        let rank = match (b.get(i), in_time) {
            (Some(b'Y'), false) => 1,
            (Some(b'M'), false) => 2,
            (Some(b'D'), false) => 3,
            (Some(b'H'), true) => 4,
            (Some(b'M'), true) => 5,
            (Some(b'S'), true) => 6,
            _ => return false,
        };
        if rank <= order || (frac && rank != 6) {
            return false;
        }
        order = rank;
        any = true;
        if in_time {
            time_any = true;
        }
        i += 1;
    }
    any && (!in_time || time_any)
}

/// The RM 1.0 action suffixes (appended to the namespace + `/`).
const RM10_ACTIONS: [&str; 6] = [
    act::CREATE_SEQUENCE,
    act::CREATE_SEQUENCE_RESPONSE,
    act::TERMINATE_SEQUENCE,
    act::SEQUENCE_ACKNOWLEDGEMENT,
    act::ACK_REQUESTED,
    act::LAST_MESSAGE,
];

/// The RM 1.1 action suffixes.
const RM11_ACTIONS: [&str; 9] = [
    act::CREATE_SEQUENCE,
    act::CREATE_SEQUENCE_RESPONSE,
    act::CLOSE_SEQUENCE,
    act::CLOSE_SEQUENCE_RESPONSE,
    act::TERMINATE_SEQUENCE,
    act::TERMINATE_SEQUENCE_RESPONSE,
    act::SEQUENCE_ACKNOWLEDGEMENT,
    act::ACK_REQUESTED,
    act::FAULT,
];

/// Strings that recur in nearly every message, allocated once per process: handing out a clone
/// costs a reference-count increment instead of an allocation, a copy and a later free.
struct Interned {
    rm10: Vec<Arc<str>>,
    rm11: Vec<Arc<str>>,
    anon10: Arc<str>,
    anon04: Arc<str>,
}

fn interned() -> &'static Interned {
    static INTERNED: std::sync::OnceLock<Interned> = std::sync::OnceLock::new();
    INTERNED.get_or_init(|| {
        let full = |ns: &str, s: &str| Arc::from(format!("{ns}/{s}"));
        Interned {
            rm10: RM10_ACTIONS
                .iter()
                .map(|s| full(crate::ns::RM10, s))
                .collect(),
            rm11: RM11_ACTIONS
                .iter()
                .map(|s| full(crate::ns::RM11, s))
                .collect(),
            anon10: Arc::from(crate::ns::WSA10_ANONYMOUS),
            anon04: Arc::from(crate::ns::WSA200408_ANONYMOUS),
        }
    })
}

/// The shared `Arc` of the RM action `i` of `RM10_ACTIONS`/`RM11_ACTIONS`.
fn interned_rm_action(v: RmVersion, i: usize) -> Option<Arc<str>> {
    let t = interned();
    match v {
        RmVersion::Wsrm10 => t.rm10.get(i).cloned(),
        RmVersion::Wsrm11 => t.rm11.get(i).cloned(),
    }
}

/// The full URI of the RM action `suffix` of version `v` (from the shared strings: no
/// formatting), `None` when it is not an action of that version. (The writer has its own
/// literals; this remains for the reference writer of the tests.)
#[cfg(test)]
pub(crate) fn rm_action_uri(v: RmVersion, suffix: &str) -> Option<&'static str> {
    let t = interned();
    let (known, uris): (&[&str], &'static [Arc<str>]) = match v {
        RmVersion::Wsrm10 => (&RM10_ACTIONS, &t.rm10),
        RmVersion::Wsrm11 => (&RM11_ACTIONS, &t.rm11),
    };
    let i = known.iter().position(|k| *k == suffix)?;
    uris.get(i).map(|a| &**a)
}

/// The shared `Arc` of an anonymous address, `None` for any other value.
fn interned_address(s: &str) -> Option<Arc<str>> {
    // the length first: other addresses rarely have either length
    if s.len() == crate::ns::WSA10_ANONYMOUS.len() && s == crate::ns::WSA10_ANONYMOUS {
        Some(interned().anon10.clone())
    } else if s.len() == crate::ns::WSA200408_ANONYMOUS.len() && s == crate::ns::WSA200408_ANONYMOUS
    {
        Some(interned().anon04.clone())
    } else {
        None
    }
}

impl<'a> P<'a> {
    fn envelope(&mut self, soap_known: &mut bool) -> Result<(), DecodeErrorKind> {
        // the writer's (and WCF's) start of an envelope is read at once
        let prolog = if self.fast {
            self.rd.fast_prolog()
        } else {
            None
        };
        let (env_ns, mut child) = match prolog {
            Some((env_ns, header)) => (env_ns, Some(header)),
            None => self.root(soap_known)?,
        };
        let soap = env_ns.soap().ok_or_else(|| not_env("envelope namespace"))?;
        self.env.soap = soap;
        *soap_known = true;
        if let Some(h) = &child {
            if h.ns == env_ns && h.local == b"Header" {
                let h = child.take().ok_or_else(|| not_env("Header"))?;
                self.headers(&h)?;
                // the writer's end of an envelope without body content (an acknowledgement)
                if self.fast && self.rm_body_expected().is_none() && self.rd.fast_empty_body_end() {
                    self.post_headers()?;
                    // what `body` records for `<s:Body/>`
                    self.body_namespaces();
                    self.env.body_bytes = Bytes::new();
                    self.env.body = WBody::Empty;
                    return Ok(());
                }
                // the writer's (and WCF's) `<s:Body>` read at once
                child = match self.fast.then(|| self.rd.fast_body_start()).flatten() {
                    Some(b) => Some(b),
                    None => or_kind(self.rd.next_child(), not_env)?,
                };
            }
        }
        let body = match child {
            Some(b) if b.ns == env_ns && b.local == b"Body" => b,
            Some(other) => {
                return Err(not_env(format!(
                    "expected Body, found {}",
                    other.clark(&self.rd)
                )))
            }
            None => return Err(not_env("missing Body")),
        };
        self.post_headers()?;
        self.body(&body)?;
        // the usual end: `</s:Envelope>` and nothing else
        if self.fast && self.rd.fast_document_end() {
            return Ok(());
        }
        if let Some(extra) = or_kind(self.rd.next_child(), not_env)? {
            return Err(not_env(format!(
                "unexpected {} after Body",
                extra.clark(&self.rd)
            )));
        }
        loop {
            match self.rd.next_raw()? {
                Raw::Eof => return Ok(()),
                Raw::Text(t) if t.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')) => {}
                _ => return Err(not_env("content after the Envelope")),
            }
        }
    }

    /// The document element (a SOAP Envelope) and its first child, read by the general path.
    fn root(&mut self, soap_known: &mut bool) -> Result<(Ns, Option<El<'a>>), DecodeErrorKind> {
        // document element
        let root = loop {
            match self.rd.next_raw()? {
                Raw::Start(el) => break el,
                Raw::Text(t) if t.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')) => {}
                Raw::Eof => return Err(not_env("empty document")),
                _ => return Err(not_env("text before the document element")),
            }
        };
        if root.local != b"Envelope" {
            return Err(not_env(format!(
                "document element is <{}>, not Envelope",
                String::from_utf8_lossy(root.local)
            )));
        }
        let soap = match root.ns.soap() {
            Some(v) => v,
            None => {
                let ns = root.clark(&self.rd);
                let ns = crate::error::split_clark(&ns).0.to_owned();
                return Err(DecodeErrorKind::VersionMismatch { namespace: ns });
            }
        };
        // known from here on, also when reading the first child fails
        self.env.soap = soap;
        *soap_known = true;
        let child = or_kind(self.rd.next_child(), not_env)?;
        Ok((root.ns, child))
    }

    fn set_wsa(&mut self, v: AddressingVersion) -> Result<(), DecodeErrorKind> {
        match self.env.wsa {
            None => {
                self.env.wsa = Some(v);
                Ok(())
            }
            Some(w) if w == v => Ok(()),
            Some(w) => Err(DecodeErrorKind::MixedVersions {
                reason: format!(
                    "WS-Addressing {} element in a WS-Addressing {} message",
                    v.as_str(),
                    w.as_str()
                ),
            }),
        }
    }

    fn set_rm(&mut self, v: RmVersion) -> Result<(), DecodeErrorKind> {
        match self.env.rm {
            None => {
                self.env.rm = Some(v);
                Ok(())
            }
            Some(w) if w == v => Ok(()),
            Some(w) => Err(DecodeErrorKind::MixedVersions {
                reason: format!("WS-RM {v} element in a WS-RM {w} message"),
            }),
        }
    }

    /// mustUnderstand and targeting of a header block.
    fn header_attrs(&self, h: &El<'a>) -> Result<(bool, bool), DecodeErrorKind> {
        let soap = self.env.soap;
        let env_ns = match soap {
            SoapVersion::Soap11 => Ns::Soap11,
            SoapVersion::Soap12 => Ns::Soap12,
        };
        let mut mu = false;
        let mut targeted = true;
        if !h.soap_attrs {
            return Ok((mu, targeted));
        }
        // the tag's attributes were validated when it was read
        for (key, value) in self.rd.attrs(h).flatten() {
            let local: &[u8] = match key.iter().position(|&c| c == b':') {
                Some(i) => key.get(i + 1..).unwrap_or_default(),
                None => key,
            };
            // only the three SOAP attributes matter: resolve nothing else
            if !matches!(local, b"mustUnderstand" | b"actor" | b"role")
                || key.starts_with(b"xmlns")
                || self.rd.attr_ns(quick_xml::name::QName(key)) != env_ns
            {
                continue;
            }
            // the value WCF writes: no text conversion
            if value == b"1" && local == b"mustUnderstand" {
                mu = true;
                continue;
            }
            let v = self
                .rd
                .attr_value(value)
                .unwrap_or(std::borrow::Cow::Borrowed("?"));
            let v = crate::xml::trim_xml(&v);
            match local {
                b"mustUnderstand" => {
                    mu = match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(DecodeErrorKind::NotEnvelope {
                                reason: format!("invalid mustUnderstand value '{v}'"),
                            })
                        }
                    }
                }
                b"actor" if soap == SoapVersion::Soap11 => {
                    targeted = v.is_empty() || v == "http://schemas.xmlsoap.org/soap/actor/next";
                }
                b"role" if soap == SoapVersion::Soap12 => {
                    targeted = v.is_empty()
                        || v == "http://www.w3.org/2003/05/soap-envelope/role/next"
                        || v == "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver";
                }
                _ => {}
            }
        }
        Ok((mu, targeted))
    }

    fn headers(&mut self, _hdr: &El<'a>) -> Result<(), DecodeErrorKind> {
        if _hdr.empty {
            self.rd.skip(_hdr).map_err(|_| not_env("Header"))?;
            return Ok(());
        }
        // the writer's (and WCF's) shape of the per-message headers: matched directly
        if self.fast && self.fast_headers() {
            return Ok(());
        }
        let limits = self.rd.limits();
        while let Some(h) = or_kind(self.rd.next_child(), |r| not_env(format!("in Header: {r}")))? {
            self.env.headers += 1;
            if self.env.headers > limits.max_headers {
                return Err(DecodeErrorKind::LimitExceeded {
                    what: LimitKind::Headers,
                    limit: limits.max_headers,
                    offset: self.rd.base + h.pos,
                });
            }
            let (mu, targeted) = self.header_attrs(&h)?;
            if !targeted {
                or_kind(self.rd.skip(&h), not_env)?;
                continue;
            }
            if let Some(v) = h.ns.wsa() {
                self.set_wsa(v)?;
                self.wsa_header(&h, mu)?;
            } else if let Some(v) = h.ns.rm() {
                self.set_rm(v)?;
                self.rm_header(&h, v, mu)?;
            } else if h.ns == Ns::Soap12 && h.local == b"NotUnderstood" {
                let q = or_kind(self.not_understood(&h), |reason| {
                    not_env(format!("in NotUnderstood: {reason}"))
                })?;
                self.env.not_understood.push(q);
            } else {
                if mu {
                    return Err(DecodeErrorKind::MustUnderstand {
                        header: h.clark(&self.rd),
                        reason: "mustUnderstand header not understood".into(),
                    });
                }
                or_kind(self.rd.skip(&h), not_env)?;
            }
        }
        Ok(())
    }

    /// `<env:NotUnderstood qname="p:Local"/>`: the qname resolved.
    fn not_understood(&mut self, h: &El<'a>) -> PResult<(String, String)> {
        let mut q = None;
        for (key, value) in self.rd.attrs(h).flatten() {
            if key == b"qname" {
                let v = self.rd.attr_value(value).map_err(PErr::Bad)?;
                q = Some(self.rd.resolve_qname(crate::xml::trim_xml(&v))?);
            }
        }
        self.rd.skip(h)?;
        match q {
            Some(q) => Ok(q),
            None => bad("missing qname attribute"),
        }
    }

    fn text_arc(&mut self, el: &El<'a>) -> PResult<Arc<str>> {
        let t = self.rd.trimmed(el)?;
        Ok(Arc::from(t.as_ref()))
    }

    /// Like [`Self::text_arc`], but an anonymous address is the shared one (no allocation).
    fn address_arc(&mut self, el: &El<'a>) -> PResult<Arc<str>> {
        let t = self.rd.trimmed(el)?;
        Ok(interned_address(&t).unwrap_or_else(|| Arc::from(t.as_ref())))
    }

    fn wsa_header(&mut self, h: &El<'a>, mu: bool) -> Result<(), DecodeErrorKind> {
        fn dup(header: &'static str) -> DecodeErrorKind {
            DecodeErrorKind::InvalidAddressingHeader {
                header,
                reason: "appears more than once".into(),
            }
        }
        macro_rules! simple {
            ($field:ident, $name:literal) => {{
                if self.env.$field.is_some() {
                    return Err(dup($name));
                }
                let v = or_kind(self.text_arc(h), |reason| {
                    DecodeErrorKind::InvalidAddressingHeader {
                        header: $name,
                        reason,
                    }
                })?;
                self.env.$field = Some(v);
            }};
        }
        match h.local {
            b"Action" => {
                if self.env.action.is_some() {
                    return Err(dup("Action"));
                }
                let t = or_kind(self.rd.trimmed(h), |reason| {
                    DecodeErrorKind::InvalidAddressingHeader {
                        header: "Action",
                        reason,
                    }
                })?;
                // an RM action is shared, not allocated
                let shared = self.classify_action(&t)?;
                self.env.action = Some(shared.unwrap_or_else(|| Arc::from(t.as_ref())));
            }
            b"To" => {
                if self.env.to.is_some() {
                    return Err(dup("To"));
                }
                let v = or_kind(self.address_arc(h), |reason| {
                    DecodeErrorKind::InvalidAddressingHeader {
                        header: "To",
                        reason,
                    }
                })?;
                self.env.to = Some(v);
            }
            b"MessageID" => simple!(message_id, "MessageID"),
            b"RelatesTo" => {
                let mut rel: Option<String> = None;
                for (key, value) in self.rd.attrs(h).flatten() {
                    if key == b"RelationshipType" {
                        let v = self.rd.attr_value(value).map_err(|reason| {
                            DecodeErrorKind::InvalidAddressingHeader {
                                header: "RelatesTo",
                                reason,
                            }
                        })?;
                        rel = Some(crate::xml::trim_xml(&v).to_owned());
                    }
                }
                let v = or_kind(self.text_arc(h), |reason| {
                    DecodeErrorKind::InvalidAddressingHeader {
                        header: "RelatesTo",
                        reason,
                    }
                })?;
                let is_reply = match rel.as_deref() {
                    None => true,
                    Some(r) => {
                        r == crate::ns::WSA10_REPLY
                            || r.ends_with(":Reply")
                            || r == "Reply"
                            || r == "http://schemas.xmlsoap.org/ws/2004/08/addressing/reply"
                    }
                };
                if is_reply {
                    if self.env.relates_to.is_some() {
                        return Err(dup("RelatesTo"));
                    }
                    self.env.relates_to = Some(v);
                    if let Some(r) = rel {
                        self.env.relationship_type = Some(Arc::from(r));
                    }
                } else if self.env.relationship_type.is_none() && self.env.relates_to.is_none() {
                    self.env.relationship_type = rel.map(Arc::from);
                }
            }
            b"ReplyTo" | b"FaultTo" | b"From" => {
                let name: &'static str = match h.local {
                    b"ReplyTo" => "ReplyTo",
                    b"FaultTo" => "FaultTo",
                    _ => "From",
                };
                let epr = or_kind(self.epr(h), |reason| {
                    DecodeErrorKind::InvalidAddressingHeader {
                        header: name,
                        reason,
                    }
                })?;
                let slot = match name {
                    "ReplyTo" => &mut self.env.reply_to,
                    "FaultTo" => &mut self.env.fault_to,
                    _ => &mut self.env.from,
                };
                if slot.is_some() {
                    return Err(dup(name));
                }
                *slot = Some(epr);
            }
            _ => {
                if mu {
                    return Err(DecodeErrorKind::MustUnderstand {
                        header: h.clark(&self.rd),
                        reason: "mustUnderstand header not understood".into(),
                    });
                }
                or_kind(self.rd.skip(h), not_env)?;
            }
        }
        Ok(())
    }

    /// Detects the RM version from the action and validates RM actions. Returns the shared
    /// `Arc` of a known RM action.
    fn classify_action(&mut self, action: &str) -> Result<Option<Arc<str>>, DecodeErrorKind> {
        let (v, suffix) = if let Some(s) =
            action.strip_prefix("http://schemas.xmlsoap.org/ws/2005/02/rm/")
        {
            (RmVersion::Wsrm10, s)
        } else if let Some(s) = action.strip_prefix("http://docs.oasis-open.org/ws-rx/wsrm/200702/")
        {
            (RmVersion::Wsrm11, s)
        } else {
            return Ok(None);
        };
        self.set_rm(v)?;
        let known: &[&'static str] = match v {
            RmVersion::Wsrm10 => &RM10_ACTIONS,
            RmVersion::Wsrm11 => &RM11_ACTIONS,
        };
        match known.iter().position(|k| *k == suffix) {
            Some(i) => {
                self.env.rm_action = known.get(i).copied();
                Ok(interned_rm_action(v, i))
            }
            None => Err(DecodeErrorKind::ActionNotSupported {
                action: action.to_string(),
            }),
        }
    }

    /// An endpoint reference (`ReplyTo`, `AcksTo`, `Endpoint`, …).
    fn epr(&mut self, el: &El<'a>) -> PResult<EndpointReference> {
        let mut address: Option<Arc<str>> = None;
        let mut params = Vec::new();
        while let Some(c) = self.rd.next_child()? {
            let Some(v) = c.ns.wsa() else {
                self.rd.skip(&c)?;
                continue;
            };
            self.set_wsa(v)?;
            match c.local {
                b"Address" => {
                    if address.is_some() {
                        return bad("two Address elements");
                    }
                    address = Some(self.address_arc(&c)?);
                }
                b"ReferenceParameters" | b"ReferenceProperties" => {
                    if c.empty {
                        self.rd.skip(&c)?;
                        continue;
                    }
                    while let Some(p) = self.rd.next_child()? {
                        self.rd.walk_to_end(&p)?;
                        let end = self.rd.pos();
                        let (s, e) = (self.rd.base + p.pos, self.rd.base + end);
                        if s <= e && e <= self.bytes.len() {
                            params.push(self.bytes.slice(s..e));
                        }
                    }
                }
                _ => self.rd.skip(&c)?,
            }
        }
        let _ = el;
        match address {
            Some(address) => Ok(EndpointReference {
                address,
                reference_parameters: params,
            }),
            None => bad("missing Address"),
        }
    }

    fn identifier(&mut self, el: &El<'a>) -> PResult<SequenceId> {
        let t = self.rd.trimmed(el)?;
        if t.is_empty() {
            return bad("empty Identifier");
        }
        Ok(SequenceId::new(t.as_ref()))
    }

    /// Reads the required first child `Identifier`.
    fn first_identifier(&mut self, rm: Ns) -> PResult<SequenceId> {
        match self.rd.next_child()? {
            Some(c) if c.ns == rm && c.local == b"Identifier" => self.identifier(&c),
            Some(_) => bad("the first child must be Identifier"),
            None => bad("missing Identifier"),
        }
    }

    fn rm_header(&mut self, h: &El<'a>, v: RmVersion, mu: bool) -> Result<(), DecodeErrorKind> {
        let rm = rm_ns(v);
        let too_many = |this: &Self| DecodeErrorKind::MustUnderstand {
            header: h.clark(&this.rd),
            reason: "the header appears more than once".into(),
        };
        match h.local {
            b"Sequence" => {
                if self.env.sequence.is_some() {
                    return Err(too_many(self));
                }
                let mut id = None;
                let r = self.sequence(rm, v, &mut id);
                let s = or_kind(r, |reason| DecodeErrorKind::InvalidRmHeader {
                    header: "Sequence",
                    identifier: id.clone(),
                    reason,
                })?;
                self.env.sequence = Some(s);
            }
            b"SequenceAcknowledgement" => {
                if self.env.ack.is_some() {
                    return Err(too_many(self));
                }
                let mut id = None;
                let r = self.ack(rm, v, &mut id, true);
                let a = or_kind(r, |reason| DecodeErrorKind::InvalidRmHeader {
                    header: "SequenceAcknowledgement",
                    identifier: id.clone(),
                    reason,
                })?;
                self.env.ack = Some(a);
            }
            b"AckRequested" => {
                if self.env.ack_requested.is_some() {
                    return Err(too_many(self));
                }
                let r = self.first_identifier(rm).and_then(|id| {
                    while let Some(c) = self.rd.next_child()? {
                        self.rd.skip(&c)?;
                    }
                    Ok(id)
                });
                let id = or_kind(r, |reason| DecodeErrorKind::InvalidRmHeader {
                    header: "AckRequested",
                    identifier: None,
                    reason,
                })?;
                self.env.ack_requested = Some(id);
            }
            b"SequenceFault" => {
                if self.env.sequence_fault.is_some() {
                    return Err(too_many(self));
                }
                let r = self.sequence_fault(rm, v);
                let f = or_kind(r, |reason| DecodeErrorKind::InvalidRmHeader {
                    header: "SequenceFault",
                    identifier: None,
                    reason,
                })?;
                self.env.sequence_fault = Some(f);
            }
            b"UsesSequenceSTR" | b"UsesSequenceSSL" if v == RmVersion::Wsrm11 => {
                let ssl = h.local == b"UsesSequenceSSL";
                let flag = if ssl {
                    &mut self.env.uses_sequence_ssl
                } else {
                    &mut self.env.uses_sequence_str
                };
                if *flag {
                    return Err(too_many(self));
                }
                *flag = true;
                if mu && self.uses_mu.is_none() {
                    self.uses_mu = Some(h.clark(&self.rd));
                }
                or_kind(self.rd.skip(h), not_env)?;
            }
            _ => {
                if mu {
                    return Err(DecodeErrorKind::MustUnderstand {
                        header: h.clark(&self.rd),
                        reason: "mustUnderstand header not understood".into(),
                    });
                }
                or_kind(self.rd.skip(h), not_env)?;
            }
        }
        Ok(())
    }

    fn sequence(
        &mut self,
        rm: Ns,
        v: RmVersion,
        id_out: &mut Option<SequenceId>,
    ) -> PResult<SequenceHeader> {
        let id = self.first_identifier(rm)?;
        *id_out = Some(id.clone());
        let c = match self.rd.next_child()? {
            Some(c) if c.ns == rm && c.local == b"MessageNumber" => c,
            Some(_) => return bad("the second child must be MessageNumber"),
            None => return bad("missing MessageNumber"),
        };
        let t = self.rd.text(&c)?;
        let number = match parse_num(&t, 1)? {
            Num::Ok(n) => n,
            Num::Rollover => {
                return Err(PErr::Fatal(DecodeErrorKind::MessageNumberRollover {
                    identifier: id,
                    number: crate::xml::trim_xml(&t).to_owned(),
                }))
            }
        };
        let mut last = false;
        while let Some(c) = self.rd.next_child()? {
            if v == RmVersion::Wsrm10 && c.ns == rm && c.local == b"LastMessage" {
                last = true;
            }
            self.rd.skip(&c)?;
        }
        Ok(SequenceHeader {
            identifier: id,
            number,
            last_message: last,
        })
    }

    /// An acknowledgement. `strict` = false for the echo inside an InvalidAcknowledgement fault
    /// (which is invalid by definition): range rules are not enforced there.
    fn ack(
        &mut self,
        rm: Ns,
        v: RmVersion,
        id_out: &mut Option<SequenceId>,
        strict: bool,
    ) -> PResult<AckHeader> {
        let id = self.first_identifier(rm)?;
        *id_out = Some(id.clone());
        let max_ranges = self.rd.limits().max_ack_ranges;
        let mut ack = AckHeader {
            identifier: id,
            // spelled out: `..Default::default()` would allocate an identifier to drop
            ranges: Vec::new(),
            none: false,
            final_ack: false,
            nacks: Vec::new(),
            buffer_remaining: None,
        };
        let mut ext = false;
        // 1.0 empty form `Lower="0" Upper="0"`; 1.1 `<None/>`
        let mut zero = false;
        let mut saw_none = false;
        let invalid = |ack: &AckHeader, reason: String| {
            PErr::Fatal(DecodeErrorKind::InvalidAcknowledgement {
                ack: ack.clone(),
                reason,
            })
        };
        while let Some(c) = self.rd.next_child()? {
            if c.ns == rm {
                match c.local {
                    b"AcknowledgementRange" => {
                        if ext {
                            return bad("AcknowledgementRange after an extension element");
                        }
                        if !ack.nacks.is_empty() {
                            return bad("AcknowledgementRange mixed with Nack");
                        }
                        if ack.ranges.len() >= max_ranges {
                            return bad(format!(
                                "more than {max_ranges} AcknowledgementRange elements"
                            ));
                        }
                        let (mut lo, mut up) = (None, None);
                        for (key, value) in self.rd.attrs(&c).flatten() {
                            let which = match key {
                                b"Lower" => &mut lo,
                                b"Upper" => &mut up,
                                _ => continue,
                            };
                            *which = Some(match plain_number(value) {
                                Some(n) => n,
                                None => {
                                    let v = self.rd.attr_value(value).map_err(PErr::Bad)?;
                                    num(&v, 0)?
                                }
                            });
                        }
                        self.rd.skip(&c)?;
                        let (Some(lo), Some(up)) = (lo, up) else {
                            return bad("AcknowledgementRange needs Lower and Upper");
                        };
                        if !strict {
                            if lo == 0 && up == 0 && v == RmVersion::Wsrm10 && ack.ranges.is_empty()
                            {
                                zero = true;
                            } else {
                                ack.ranges.push((lo, up));
                            }
                            continue;
                        }
                        if zero {
                            ack.ranges.push((0, 0));
                            return Err(invalid(&ack, "a 0-0 range must be the only range".into()));
                        }
                        if lo == 0 {
                            if v == RmVersion::Wsrm10 && up == 0 && ack.ranges.is_empty() {
                                zero = true;
                                continue;
                            }
                            ack.ranges.push((lo, up));
                            return Err(invalid(
                                &ack,
                                format!("Lower=\"0\" is not allowed (range {lo}-{up})"),
                            ));
                        }
                        ack.ranges.push((lo, up));
                        if lo > up {
                            return Err(invalid(&ack, format!("Lower {lo} > Upper {up}")));
                        }
                    }
                    // CXF writes `<None/>` after the ranges (a schema violation): tolerated,
                    // the ranges win
                    b"None" if v == RmVersion::Wsrm11 => {
                        if ext || saw_none || !ack.nacks.is_empty() {
                            return bad("misplaced or repeated None");
                        }
                        saw_none = true;
                        self.rd.skip(&c)?;
                    }
                    b"Final" if v == RmVersion::Wsrm11 => {
                        if ext || ack.final_ack {
                            return bad("misplaced or repeated Final");
                        }
                        ack.final_ack = true;
                        self.rd.skip(&c)?;
                    }
                    b"Nack" => {
                        if ext || zero || saw_none || !ack.ranges.is_empty() {
                            return bad("Nack mixed with AcknowledgementRange or None");
                        }
                        if ack.nacks.len() >= max_ranges {
                            return bad(format!("more than {max_ranges} Nack elements"));
                        }
                        let t = self.rd.text(&c)?;
                        ack.nacks.push(num(&t, 0)?);
                    }
                    b"Identifier" => return bad("second Identifier"),
                    _ => {
                        ext = true;
                        self.rd.skip(&c)?;
                    }
                }
            } else if c.is(Ns::NetRm, "BufferRemaining") {
                if ack.buffer_remaining.is_some() {
                    return bad("two BufferRemaining elements");
                }
                ext = true;
                let t = self.rd.text(&c)?;
                let n = num(&t, 0)?;
                if n > i32::MAX as u64 {
                    return bad("BufferRemaining exceeds xs:int");
                }
                ack.buffer_remaining = Some(n as u32);
            } else {
                ext = true;
                self.rd.skip(&c)?;
            }
        }
        ack.none = zero || (saw_none && ack.ranges.is_empty());
        if ack.ranges.is_empty() && !ack.none && ack.nacks.is_empty() {
            return bad("no AcknowledgementRange, None or Nack");
        }
        if ack.final_ack && ack.ranges.is_empty() && !ack.none {
            return bad("Final without AcknowledgementRange or None");
        }
        // overlap check (ranges as received; not necessarily ascending)
        let ascending = ack.ranges.windows(2).all(|w| match w {
            [a, b] => a.1 < b.0,
            _ => true,
        });
        if strict && !ascending {
            let mut sorted = ack.ranges.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| match w {
                [a, b] => a.1 >= b.0,
                _ => false,
            }) {
                return Err(invalid(
                    &ack,
                    "overlapping AcknowledgementRange elements".into(),
                ));
            }
        }
        Ok(ack)
    }

    fn detail_element(&mut self, c: &El<'a>, d: &mut WDetail) -> PResult<bool> {
        let Some(v) = c.ns.rm() else {
            return Ok(false);
        };
        self.set_rm(v)?;
        match c.local {
            b"Identifier" => d.identifier = Some(self.identifier(c)?),
            b"SequenceAcknowledgement" => {
                let mut id = None;
                d.ack = Some(self.ack(c.ns, v, &mut id, false)?);
            }
            b"MaxMessageNumber" => {
                let t = self.rd.text(c)?;
                d.max_message_number = Some(num(&t, 0)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn sequence_fault(&mut self, rm: Ns, _v: RmVersion) -> PResult<WSeqFault> {
        let c = match self.rd.next_child()? {
            Some(c) if c.ns == rm && c.local == b"FaultCode" => c,
            _ => return bad("the first child must be FaultCode"),
        };
        let t = self.rd.trimmed(&c)?;
        let code = self.rd.resolve_qname(&t)?;
        let mut detail = WDetail::default();
        while let Some(c) = self.rd.next_child()? {
            if c.ns == rm && c.local == b"Detail" {
                if c.empty {
                    self.rd.skip(&c)?;
                    continue;
                }
                while let Some(d) = self.rd.next_child()? {
                    if !self.detail_element(&d, &mut detail)? {
                        self.rd.skip(&d)?;
                    }
                }
            } else if !self.detail_element(&c, &mut detail)? {
                self.rd.skip(&c)?;
            }
        }
        Ok(WSeqFault { code, detail })
    }

    fn post_headers(&mut self) -> Result<(), DecodeErrorKind> {
        let is_cs = self.env.rm_action == Some(act::CREATE_SEQUENCE);
        if !is_cs {
            if let Some(h) = self.uses_mu.take() {
                return Err(DecodeErrorKind::MustUnderstand {
                    header: h,
                    reason: "only understood on CreateSequence".into(),
                });
            }
        }
        Ok(())
    }

    /// The RM body element the action requires (CreateSequence, …), if any.
    fn rm_body_expected(&self) -> Option<&'static str> {
        match self.env.rm_action {
            Some(
                a @ (act::CREATE_SEQUENCE
                | act::CREATE_SEQUENCE_RESPONSE
                | act::CLOSE_SEQUENCE
                | act::CLOSE_SEQUENCE_RESPONSE
                | act::TERMINATE_SEQUENCE
                | act::TERMINATE_SEQUENCE_RESPONSE),
            ) => Some(a),
            _ => None,
        }
    }

    /// Declarations on Envelope/Body the opaque body content may rely on (gSOAP declares
    /// every namespace on the Envelope); `s`/`a` bound as the writer binds them are implied.
    fn body_namespaces(&mut self) {
        // the usual case (the writer's and WCF's envelopes): only `s` and `a`, bound as the
        // writer binds them; told by the namespace classes, which are exact for known URIs
        let soap_class = match self.env.soap {
            SoapVersion::Soap11 => Ns::Soap11,
            SoapVersion::Soap12 => Ns::Soap12,
        };
        let wsa_class = match self.env.wsa {
            Some(AddressingVersion::Wsa10) => Ns::Wsa10,
            Some(AddressingVersion::Wsa200408) => Ns::Wsa04,
            None => Ns::None,
        };
        if self.rd.all_in_scope(|prefix, ns| {
            (prefix == b"s" && ns == soap_class)
                || (prefix == b"a" && ns == wsa_class && wsa_class != Ns::None)
        }) {
            return;
        }
        let soap_ns = self.env.soap.namespace().as_bytes();
        let wsa_ns = self.env.wsa.map(|w| w.namespace().as_bytes());
        for (i, (prefix, uri)) in self.rd.in_scope().enumerate() {
            // shadowed by a later (inner) declaration of the same prefix
            if self.rd.in_scope().skip(i + 1).any(|(p, _)| p == prefix) {
                continue;
            }
            let implied =
                (prefix == b"s" && uri == soap_ns) || (prefix == b"a" && Some(uri) == wsa_ns);
            if !implied {
                self.env.body_namespaces.push((
                    String::from_utf8_lossy(prefix).into_owned(),
                    String::from_utf8_lossy(uri).into_owned(),
                ));
            }
        }
    }

    fn body(&mut self, body: &El<'a>) -> Result<(), DecodeErrorKind> {
        let start = body.content_start;
        self.body_namespaces();
        let env_ns = body.ns;
        let expected = self.rm_body_expected();
        let body_err = |el: &'static str, id: Option<SequenceId>, reason: String| {
            if el == act::CREATE_SEQUENCE {
                DecodeErrorKind::CreateSequenceRefused { reason }
            } else {
                DecodeErrorKind::InvalidBody {
                    element: el,
                    identifier: id,
                    reason,
                }
            }
        };
        if body.empty {
            or_kind(self.rd.skip(body), not_env)?;
            self.env.body_bytes = Bytes::new();
            if let Some(e) = expected {
                return Err(body_err(e, None, "empty body".into()));
            }
            self.env.body = WBody::Empty;
            return Ok(());
        }
        // first child element; the usual start of application content read at once
        let fast_first = if self.fast {
            self.rd.fast_default_ns_start()
        } else {
            None
        };
        let first = if let Some(el) = fast_first {
            Some(el)
        } else {
            loop {
                match self.rd.next_raw()? {
                    Raw::Start(el) => break Some(el),
                    Raw::End { .. } => break None,
                    Raw::Text(t) if t.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')) => {
                    }
                    Raw::Eof => return Err(self.rd.eof()),
                    _ => return Err(not_env("text content in Body")),
                }
            }
        };
        let end_of_body = |this: &Self, end_pos: usize| -> Bytes {
            let (s, e) = (this.rd.base + start, this.rd.base + end_pos);
            if s <= e && e <= this.bytes.len() {
                this.bytes.slice(s..e)
            } else {
                Bytes::new()
            }
        };
        let Some(first) = first else {
            let end = self.rd.pos();
            // `</s:Body>` was consumed: the content ends where that tag starts
            let tag_start = self.src_rfind_lt(end);
            self.env.body_bytes = end_of_body(self, tag_start);
            if let Some(e) = expected {
                return Err(body_err(e, None, "empty body".into()));
            }
            self.env.body = WBody::Empty;
            return Ok(());
        };
        // depth once the Body's end tag has been read
        let body_depth = self.rd.depth.saturating_sub(2);
        if first.ns == env_ns && first.local == b"Fault" {
            let f = or_kind(self.fault(&first), |reason| DecodeErrorKind::InvalidFault {
                reason,
            })?;
            self.env.body = WBody::Fault(f);
        } else if let Some(exp) = expected {
            let v = self.env.rm.unwrap_or_default();
            let rm = rm_ns(v);
            if !(first.ns == rm && first.local == exp.as_bytes()) {
                return Err(body_err(
                    exp,
                    None,
                    format!("expected wsrm:{exp}, found {}", first.clark(&self.rd)),
                ));
            }
            let mut id = None;
            let r = self.rm_body(&first, exp, rm, v, &mut id);
            self.env.body = or_kind(r, |reason| body_err(exp, id.clone(), reason))?;
        } else {
            // opaque application content: its structure is checked up to `</s:Body>`, nothing
            // in it is interpreted
            if first.empty {
                or_kind(self.rd.skip(&first), not_env)?;
            }
            let end_pos = or_kind(self.rd.skip_opaque(body_depth), not_env)?;
            self.env.body = WBody::Application;
            self.env.body_bytes = end_of_body(self, end_pos);
            return Ok(());
        }
        // rest of the body
        let end_pos = loop {
            match self.rd.next_raw()? {
                Raw::End { pos } if self.rd.depth == body_depth => break pos,
                Raw::Start(el) => {
                    if let Some(exp) = expected {
                        return Err(body_err(
                            exp,
                            None,
                            format!("unexpected {} after wsrm:{exp}", el.clark(&self.rd)),
                        ));
                    }
                    if matches!(self.env.body, WBody::Fault(_)) {
                        return Err(DecodeErrorKind::InvalidFault {
                            reason: "Fault must be the only child of Body".into(),
                        });
                    }
                    or_kind(self.rd.walk_to_end(&el), not_env)?;
                }
                Raw::Eof => return Err(self.rd.eof()),
                _ => {}
            }
        };
        self.env.body_bytes = end_of_body(self, end_pos);
        Ok(())
    }

    /// Offset of the `<` of the end tag that ends at `end`.
    fn src_rfind_lt(&self, end: usize) -> usize {
        self.rd
            .src
            .get(..end)
            .and_then(|s| s.iter().rposition(|&c| c == b'<'))
            .unwrap_or(end)
    }

    fn rm_body(
        &mut self,
        el: &El<'a>,
        which: &'static str,
        rm: Ns,
        v: RmVersion,
        id_out: &mut Option<SequenceId>,
    ) -> PResult<WBody> {
        if el.empty {
            return bad("empty element");
        }
        match which {
            act::CREATE_SEQUENCE => self.create_sequence(rm, v),
            act::CREATE_SEQUENCE_RESPONSE => {
                let id = self.first_identifier(rm)?;
                *id_out = Some(id.clone());
                let mut csr = CreateSequenceResponse {
                    identifier: id,
                    expires: None,
                    incomplete_sequence_behavior: None,
                    accept: None,
                };
                while let Some(c) = self.rd.next_child()? {
                    if c.ns != rm {
                        self.rd.skip(&c)?;
                        continue;
                    }
                    match c.local {
                        b"Expires" => csr.expires = Some(self.expires(&c)?),
                        b"IncompleteSequenceBehavior" if v == RmVersion::Wsrm11 => {
                            csr.incomplete_sequence_behavior = Some(self.isb(&c)?)
                        }
                        b"Accept" => {
                            let mut acks_to = None;
                            while let Some(a) = self.rd.next_child()? {
                                if a.ns == rm && a.local == b"AcksTo" {
                                    acks_to = Some(self.epr(&a)?);
                                } else {
                                    self.rd.skip(&a)?;
                                }
                            }
                            match acks_to {
                                Some(e) => csr.accept = Some(e.address.to_string()),
                                None => return bad("Accept without AcksTo"),
                            }
                        }
                        _ => self.rd.skip(&c)?,
                    }
                }
                Ok(WBody::CreateSequenceResponse(csr))
            }
            act::CLOSE_SEQUENCE | act::TERMINATE_SEQUENCE => {
                // gSOAP answers an RM 1.0 TerminateSequence with a TerminateSequence whose
                // Identifier is empty: read as the empty identifier (it names no sequence)
                let id = if which == act::TERMINATE_SEQUENCE {
                    match self.rd.next_child()? {
                        Some(c) if c.ns == rm && c.local == b"Identifier" => {
                            SequenceId::new(self.rd.trimmed(&c)?.as_ref())
                        }
                        Some(_) => return bad("the first child must be Identifier"),
                        None => return bad("missing Identifier"),
                    }
                } else {
                    self.first_identifier(rm)?
                };
                *id_out = Some(id.clone());
                let mut last = None;
                while let Some(c) = self.rd.next_child()? {
                    if c.ns == rm && c.local == b"LastMsgNumber" && v == RmVersion::Wsrm11 {
                        let t = self.rd.text(&c)?;
                        last = Some(num(&t, 1)?);
                    } else {
                        self.rd.skip(&c)?;
                    }
                }
                Ok(if which == act::CLOSE_SEQUENCE {
                    WBody::CloseSequence {
                        identifier: id,
                        last_msg_number: last,
                    }
                } else {
                    WBody::TerminateSequence {
                        identifier: id,
                        last_msg_number: last,
                    }
                })
            }
            _ => {
                // CloseSequenceResponse, TerminateSequenceResponse
                let id = self.first_identifier(rm)?;
                *id_out = Some(id.clone());
                while let Some(c) = self.rd.next_child()? {
                    self.rd.skip(&c)?;
                }
                Ok(if which == act::CLOSE_SEQUENCE_RESPONSE {
                    WBody::CloseSequenceResponse(id)
                } else {
                    WBody::TerminateSequenceResponse(id)
                })
            }
        }
    }

    fn expires(&mut self, c: &El<'a>) -> PResult<String> {
        let t = self.rd.trimmed(c)?;
        if !is_duration(&t) {
            return bad(format!("Expires '{t}' is not an xs:duration"));
        }
        Ok(t.into_owned())
    }

    fn isb(&mut self, c: &El<'a>) -> PResult<IncompleteSequenceBehavior> {
        let t = self.rd.trimmed(c)?;
        IncompleteSequenceBehavior::parse(&t).map_or_else(
            || bad(format!("invalid IncompleteSequenceBehavior '{t}'")),
            Ok,
        )
    }

    fn create_sequence(&mut self, rm: Ns, v: RmVersion) -> PResult<WBody> {
        let acks_to = match self.rd.next_child()? {
            Some(c) if c.ns == rm && c.local == b"AcksTo" => self.epr(&c)?,
            _ => return bad("the first child must be AcksTo"),
        };
        let mut cs = CreateSequence {
            acks_to: acks_to.address.to_string(),
            expires: None,
            offer: None,
        };
        while let Some(c) = self.rd.next_child()? {
            if c.ns != rm {
                self.rd.skip(&c)?;
                continue;
            }
            match c.local {
                b"Expires" => {
                    if cs.expires.is_some() {
                        return bad("two Expires");
                    }
                    cs.expires = Some(self.expires(&c)?)
                }
                b"Offer" => {
                    if cs.offer.is_some() {
                        return bad("two Offer elements");
                    }
                    if c.empty {
                        return bad("Offer without Identifier");
                    }
                    let id = self.first_identifier(rm)?;
                    let mut offer = Offer {
                        identifier: id,
                        endpoint: None,
                        expires: None,
                        incomplete_sequence_behavior: None,
                    };
                    while let Some(o) = self.rd.next_child()? {
                        if o.ns != rm {
                            self.rd.skip(&o)?;
                            continue;
                        }
                        match o.local {
                            // 1.1 element; gSOAP also sends it in 1.0 (with an empty Address)
                            b"Endpoint" => {
                                let e = self.epr(&o)?;
                                offer.endpoint = Some(e.address.to_string());
                            }
                            b"Expires" => offer.expires = Some(self.expires(&o)?),
                            b"IncompleteSequenceBehavior" if v == RmVersion::Wsrm11 => {
                                offer.incomplete_sequence_behavior = Some(self.isb(&o)?)
                            }
                            _ => self.rd.skip(&o)?,
                        }
                    }
                    if v == RmVersion::Wsrm11 && offer.endpoint.is_none() {
                        return bad("WS-RM 1.1 Offer without Endpoint");
                    }
                    cs.offer = Some(offer);
                }
                _ => self.rd.skip(&c)?,
            }
        }
        Ok(WBody::CreateSequence { cs, acks_to })
    }

    fn fault(&mut self, f: &El<'a>) -> PResult<WFault> {
        if f.empty {
            return bad("empty Fault");
        }
        let soap = self.env.soap;
        let env_ns = f.ns;
        let mut code: Option<QN> = None;
        let mut subcodes = Vec::new();
        let mut reason: Option<String> = None;
        let mut detail = WDetail::default();
        while let Some(c) = self.rd.next_child()? {
            match soap {
                SoapVersion::Soap12 if c.ns == env_ns => match c.local {
                    b"Code" => {
                        let mut cur = c;
                        let mut level = 0usize;
                        loop {
                            let mut next = None;
                            let mut val = None;
                            while let Some(x) = self.rd.next_child()? {
                                if x.ns == env_ns && x.local == b"Value" && val.is_none() {
                                    let t = self.rd.trimmed(&x)?;
                                    val = Some(self.rd.resolve_qname(&t)?);
                                } else if x.ns == env_ns && x.local == b"Subcode" && next.is_none()
                                {
                                    next = Some(x);
                                    break;
                                } else {
                                    return bad("unexpected element in Code");
                                }
                            }
                            let Some(val) = val else {
                                return bad("Code/Subcode without Value");
                            };
                            if level == 0 {
                                code = Some(val);
                            } else {
                                subcodes.push(val);
                            }
                            match next {
                                Some(n) => {
                                    if n.empty {
                                        return bad("empty Subcode");
                                    }
                                    cur = n;
                                    level += 1;
                                }
                                None => break,
                            }
                        }
                        // close the enclosing Subcode/Code elements
                        let _ = &cur;
                        for _ in 0..level {
                            if self.rd.next_child()?.is_some() {
                                return bad("unexpected element after Subcode");
                            }
                        }
                    }
                    b"Reason" => {
                        while let Some(t) = self.rd.next_child()? {
                            if t.ns == env_ns && t.local == b"Text" {
                                let s = self.rd.text(&t)?;
                                if reason.is_none() {
                                    reason = Some(s.into_owned());
                                }
                            } else {
                                self.rd.skip(&t)?;
                            }
                        }
                    }
                    b"Detail" => {
                        if c.empty {
                            self.rd.skip(&c)?;
                            continue;
                        }
                        while let Some(d) = self.rd.next_child()? {
                            if !self.detail_element(&d, &mut detail)? {
                                self.rd.skip(&d)?;
                            }
                        }
                    }
                    _ => self.rd.skip(&c)?,
                },
                SoapVersion::Soap11 if c.ns == Ns::None => match c.local {
                    b"faultcode" => {
                        let t = self.rd.trimmed(&c)?;
                        code = Some(self.rd.resolve_qname(&t)?);
                    }
                    b"faultstring" => reason = Some(self.rd.text(&c)?.into_owned()),
                    b"detail" => {
                        if c.empty {
                            self.rd.skip(&c)?;
                            continue;
                        }
                        while let Some(d) = self.rd.next_child()? {
                            if !self.detail_element(&d, &mut detail)? {
                                self.rd.skip(&d)?;
                            }
                        }
                    }
                    _ => self.rd.skip(&c)?,
                },
                _ => self.rd.skip(&c)?,
            }
        }
        let Some(code) = code else {
            return bad("missing fault code");
        };
        for (ns, _) in std::iter::once(&code).chain(subcodes.iter()) {
            if let Some(v) = Ns::classify(ns.as_bytes()).rm() {
                self.set_rm(v)?;
            }
        }
        Ok(WFault {
            code,
            subcodes,
            reason: reason.unwrap_or_default(),
            detail,
        })
    }
}

fn rm_ns(v: RmVersion) -> Ns {
    match v {
        RmVersion::Wsrm10 => Ns::Rm10,
        RmVersion::Wsrm11 => Ns::Rm11,
    }
}
