//! # wsrm-wire — SOAP + WS-Addressing + WS-RM codec
//!
//! Owns: reading and writing SOAP 1.1/1.2 envelopes with WS-Addressing (2004/08 and 1.0) and
//! WS-ReliableMessaging (1.0 and 1.1) headers and bodies, shaped as WCF writes them, with strict
//! limits on hostile input. The application body stays an opaque byte range.
//!
//! Does not own: protocol decisions (that is `wsrm-proto`) or transports (that is `wsrm`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
