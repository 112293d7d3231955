//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wsrm_proto::msg::Message;
use wsrm_wire::{decode, encode, AddressingVersion, Decoded, Framing, Limits};

/// Encodes `d.message` with the framing `d` was received in and decodes it again; returns
/// the re-decoded result.
pub fn reencode(d: &Decoded) -> Decoded {
    let mut framing = Framing::new(d.soap, d.addressing);
    framing.xml_lang = "en-US".into();
    framing.body_namespaces = d.body_namespaces.clone();
    let bytes = encode(&d.message, &framing).expect("encode");
    match decode(bytes.clone(), &Limits::default()) {
        Ok(x) => x,
        Err(e) => panic!("re-decode failed: {e}\n{}", String::from_utf8_lossy(&bytes)),
    }
}

/// `m` with the normalisations the writer applies (WCF omits an anonymous To under WSA 1.0).
pub fn normalized(m: &Message, addressing: AddressingVersion) -> Message {
    let mut m = m.clone();
    if addressing == AddressingVersion::Wsa10
        && m.to.as_deref() == Some(AddressingVersion::Wsa10.anonymous())
    {
        m.to = None;
    }
    m
}
