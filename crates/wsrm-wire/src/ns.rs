//! Namespace URIs, action URIs and the SOAP/WS-Addressing version enums (wire-protocol.md §1).

use wsrm_proto::msg::RmVersion;

/// SOAP 1.1 envelope namespace.
pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing 2004/08 (member submission) namespace.
pub const WSA200408: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Addressing 1.0 (W3C) namespace.
pub const WSA10: &str = "http://www.w3.org/2005/08/addressing";
/// WS-RM 1.0 (February 2005) namespace.
pub const RM10: &str = "http://schemas.xmlsoap.org/ws/2005/02/rm";
/// WS-RM 1.1/1.2 namespace.
pub const RM11: &str = "http://docs.oasis-open.org/ws-rx/wsrm/200702";
/// Microsoft RM extension namespace (`netrm`: BufferRemaining, ConnectionLimitReached).
pub const NETRM: &str = "http://schemas.microsoft.com/ws/2006/05/rm";
/// The `xml:` namespace.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// WS-Addressing 1.0 anonymous address.
pub const WSA10_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
/// WS-Addressing 2004/08 anonymous address.
pub const WSA200408_ANONYMOUS: &str =
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// WS-Addressing 1.0 default fault action.
pub const WSA10_FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/soap/fault";
/// WS-Addressing 2004/08 default fault action.
pub const WSA200408_FAULT_ACTION: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";
/// WS-RM 1.1 fault action.
pub const RM11_FAULT_ACTION: &str = "http://docs.oasis-open.org/ws-rx/wsrm/200702/fault";
/// WS-Addressing 1.0 reply relationship.
pub const WSA10_REPLY: &str = "http://www.w3.org/2005/08/addressing/reply";

/// SOAP envelope version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoapVersion {
    /// SOAP 1.1 (`http://schemas.xmlsoap.org/soap/envelope/`).
    Soap11,
    /// SOAP 1.2 (`http://www.w3.org/2003/05/soap-envelope`), WCF's default for RM bindings.
    Soap12,
}

impl SoapVersion {
    /// `"1.1"` or `"1.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SoapVersion::Soap11 => "1.1",
            SoapVersion::Soap12 => "1.2",
        }
    }

    /// The envelope namespace URI.
    pub fn namespace(self) -> &'static str {
        match self {
            SoapVersion::Soap11 => SOAP11,
            SoapVersion::Soap12 => SOAP12,
        }
    }

    /// The HTTP `Content-Type` WCF sends for this version (wire-protocol.md §1.4). SOAP 1.1
    /// also needs a quoted `SOAPAction` header (see [`crate::action_uri`]).
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::Soap11 => "text/xml; charset=utf-8",
            SoapVersion::Soap12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// WS-Addressing version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressingVersion {
    /// Member submission August 2004 (`http://schemas.xmlsoap.org/ws/2004/08/addressing`).
    Wsa200408,
    /// W3C WS-Addressing 1.0 (`http://www.w3.org/2005/08/addressing`), WCF's default.
    Wsa10,
}

impl AddressingVersion {
    /// `"2004/08"` or `"1.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingVersion::Wsa200408 => "2004/08",
            AddressingVersion::Wsa10 => "1.0",
        }
    }

    /// The namespace URI.
    pub fn namespace(self) -> &'static str {
        match self {
            AddressingVersion::Wsa200408 => WSA200408,
            AddressingVersion::Wsa10 => WSA10,
        }
    }

    /// The anonymous address URI of this version.
    pub fn anonymous(self) -> &'static str {
        match self {
            AddressingVersion::Wsa200408 => WSA200408_ANONYMOUS,
            AddressingVersion::Wsa10 => WSA10_ANONYMOUS,
        }
    }

    /// The default fault action (used by WS-RM 1.0 faults and WS-Addressing faults).
    pub fn fault_action(self) -> &'static str {
        match self {
            AddressingVersion::Wsa200408 => WSA200408_FAULT_ACTION,
            AddressingVersion::Wsa10 => WSA10_FAULT_ACTION,
        }
    }

    /// Local name of the "header required" fault subcode of this version.
    pub fn header_required_local(self) -> &'static str {
        match self {
            AddressingVersion::Wsa200408 => "MessageInformationHeaderRequired",
            AddressingVersion::Wsa10 => "MessageAddressingHeaderRequired",
        }
    }
}

/// The WS-RM namespace URI of a version.
pub fn rm_namespace(v: RmVersion) -> &'static str {
    match v {
        RmVersion::Wsrm10 => RM10,
        RmVersion::Wsrm11 => RM11,
    }
}

/// The writer's (and WCF's) start of an envelope up to `<s:Header>` (`map::prolog`), per SOAP
/// and WS-Addressing version, at `2 · SOAP 1.1 + WSA 2004/08`: the readers' fast paths tell them
/// apart by the first byte after `http://` of each URI (`<s:Envelope xmlns:s="http://`), then
/// compare the whole start.
pub(crate) const ENVELOPE_STARTS: [(&[u8], SoapVersion, AddressingVersion); 4] = [
    (
        b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>",
        SoapVersion::Soap12,
        AddressingVersion::Wsa10,
    ),
    (
        b"<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>",
        SoapVersion::Soap12,
        AddressingVersion::Wsa200408,
    ),
    (
        b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>",
        SoapVersion::Soap11,
        AddressingVersion::Wsa10,
    ),
    (
        b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><s:Header>",
        SoapVersion::Soap11,
        AddressingVersion::Wsa200408,
    ),
];

/// Where the SOAP URI's distinguishing byte is in an envelope start: `<s:Envelope xmlns:s="http://`.
const ENVELOPE_SOAP_AT: usize = 28;
/// From there, past the SOAP URI, to the WS-Addressing URI's (`" xmlns:a="http://`).
const ENVELOPE_WSA_AFTER_SOAP: usize = 11;

/// The one entry of [`ENVELOPE_STARTS`] that `b` may start with, told apart by the byte after
/// `http://` of each URI (the caller compares the whole start); `None` when `b` is too short to
/// tell.
#[inline(always)]
pub(crate) fn envelope_start_candidate(
    b: &[u8],
) -> Option<(&'static [u8], SoapVersion, AddressingVersion)> {
    let s11 = usize::from(*b.get(ENVELOPE_SOAP_AT)? == b's');
    let soap_len = if s11 == 1 { SOAP11.len() } else { SOAP12.len() };
    let w04 = usize::from(*b.get(ENVELOPE_SOAP_AT + soap_len + ENVELOPE_WSA_AFTER_SOAP)? == b's');
    ENVELOPE_STARTS.get(2 * s11 + w04).copied()
}

/// Classified namespace of an element or attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Ns {
    /// No namespace.
    #[default]
    None,
    Soap11,
    Soap12,
    Wsa04,
    Wsa10,
    Rm10,
    Rm11,
    NetRm,
    Xml,
    Other,
}

impl Ns {
    pub(crate) fn classify(uri: &[u8]) -> Ns {
        // dispatch on the length first: at most two comparisons
        let (ns, uri_of): (Ns, &str) = match uri.len() {
            0 => return Ns::None,
            36 if uri.get(18) == Some(&b'2') => (Ns::Wsa10, WSA10),
            36 => (Ns::Xml, XML),
            39 => (Ns::Soap12, SOAP12),
            40 => (Ns::Rm10, RM10),
            41 => (Ns::Soap11, SOAP11),
            42 => (Ns::NetRm, NETRM),
            44 => (Ns::Rm11, RM11),
            48 => (Ns::Wsa04, WSA200408),
            _ => return Ns::Other,
        };
        if uri == uri_of.as_bytes() {
            ns
        } else {
            Ns::Other
        }
    }

    /// The namespace of a SOAP version's envelope.
    #[inline]
    pub(crate) fn of_soap(v: SoapVersion) -> Ns {
        match v {
            SoapVersion::Soap11 => Ns::Soap11,
            SoapVersion::Soap12 => Ns::Soap12,
        }
    }

    /// The namespace of a WS-Addressing version.
    #[inline]
    pub(crate) fn of_wsa(v: AddressingVersion) -> Ns {
        match v {
            AddressingVersion::Wsa200408 => Ns::Wsa04,
            AddressingVersion::Wsa10 => Ns::Wsa10,
        }
    }

    pub(crate) fn soap(self) -> Option<SoapVersion> {
        match self {
            Ns::Soap11 => Some(SoapVersion::Soap11),
            Ns::Soap12 => Some(SoapVersion::Soap12),
            _ => None,
        }
    }

    pub(crate) fn wsa(self) -> Option<AddressingVersion> {
        match self {
            Ns::Wsa04 => Some(AddressingVersion::Wsa200408),
            Ns::Wsa10 => Some(AddressingVersion::Wsa10),
            _ => None,
        }
    }

    pub(crate) fn rm(self) -> Option<RmVersion> {
        match self {
            Ns::Rm10 => Some(RmVersion::Wsrm10),
            Ns::Rm11 => Some(RmVersion::Wsrm11),
            _ => None,
        }
    }
}

/// RM action suffixes (appended to the RM namespace + `/`).
pub(crate) mod act {
    pub const CREATE_SEQUENCE: &str = "CreateSequence";
    pub const CREATE_SEQUENCE_RESPONSE: &str = "CreateSequenceResponse";
    pub const CLOSE_SEQUENCE: &str = "CloseSequence";
    pub const CLOSE_SEQUENCE_RESPONSE: &str = "CloseSequenceResponse";
    pub const TERMINATE_SEQUENCE: &str = "TerminateSequence";
    pub const TERMINATE_SEQUENCE_RESPONSE: &str = "TerminateSequenceResponse";
    pub const SEQUENCE_ACKNOWLEDGEMENT: &str = "SequenceAcknowledgement";
    pub const ACK_REQUESTED: &str = "AckRequested";
    pub const LAST_MESSAGE: &str = "LastMessage";
    pub const FAULT: &str = "fault";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_known_and_near_miss_uris() {
        for (uri, ns) in [
            (SOAP11, Ns::Soap11),
            (SOAP12, Ns::Soap12),
            (WSA200408, Ns::Wsa04),
            (WSA10, Ns::Wsa10),
            (RM10, Ns::Rm10),
            (RM11, Ns::Rm11),
            (NETRM, Ns::NetRm),
            (XML, Ns::Xml),
            ("", Ns::None),
        ] {
            assert_eq!(Ns::classify(uri.as_bytes()), ns, "{uri}");
            if !uri.is_empty() {
                // same length, one byte different
                let mut b = uri.as_bytes().to_vec();
                let last = b.len() - 1;
                b[last] ^= 1;
                assert_eq!(Ns::classify(&b), Ns::Other, "{uri}");
            }
        }
        assert_eq!(Ns::classify(b"urn:x"), Ns::Other);
    }
}
