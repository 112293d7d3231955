//! # wsrm — WCF-compatible reliable sessions for Rust
//!
//! Owns: bindings (WCF-style presets and custom), HTTP and HTTPS transports, the client and
//! service APIs, the fault-injecting SOAP intermediary, and message stores.
//!
//! Does not own: protocol rules (`wsrm-proto`) or XML (`wsrm-wire`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod http;
pub mod proxy;
pub mod tls;

pub use proxy::{DropMode, ExchangePlan, Proxy, ProxyConfig, ProxyError, ProxyHandle, ProxyStats};
pub use tls::{ClientAuth, ClientIdentity, ClientTls, ServerTls, TlsError};
