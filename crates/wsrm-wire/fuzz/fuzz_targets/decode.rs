//! Fuzz target: the reader never panics, every refusal is classified (a fault to answer with,
//! or a bare HTTP 400/413), and every accepted message can be written back.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsrm_wire::{decode, encode, Framing, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match decode(Bytes::copy_from_slice(data), &limits) {
        Ok(d) => {
            let framing = Framing::new(d.soap, d.addressing);
            // the writer accepts whatever the reader produced (versions are consistent)
            let out = encode(&d.message, &framing);
            assert!(out.is_ok(), "re-encode failed: {:?}", out.err());
            let _ = wsrm_wire::json::to_json(&d);
        }
        Err(e) => {
            let status = e.http_status();
            assert!(
                status == 400 || status == 413 || (status == 500 && e.fault().is_some()),
                "unclassified error {e:?}"
            );
            let _ = wsrm_wire::json::error_line(&e);
        }
    }
});
