//! # wsrm — WCF-compatible reliable sessions for Rust
//!
//! Owns: bindings (WCF-style presets and custom), HTTP and HTTPS transports, the client and
//! service APIs, the fault-injecting SOAP intermediary.
//!
//! Does not own: protocol rules (`wsrm-proto`) or XML (`wsrm-wire`). Data flows
//! bytes → [`wsrm_wire`] → [`wsrm_proto`] engine → delivery, and back.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binding;
pub mod client;
pub(crate) mod codec;
pub(crate) mod durable;
pub mod error;
pub(crate) mod http;
pub mod proxy;
pub mod service;
pub mod store;
pub mod tls;

pub use binding::{Binding, BindingError, HttpTransport, MessageVersion, Scheme};
pub use client::{Client, ClientOptions, Pending, RecoveredReply, Reply, ReplyCommit};
pub use error::{ClientError, ServiceError};
pub use proxy::{DropMode, ExchangePlan, Proxy, ProxyConfig, ProxyError, ProxyHandle, ProxyStats};
pub use service::{
    Delivery, HandlerFuture, Outcome, RmVersions, Service, ServiceBuilder, ServiceStats,
    SessionEnd, SessionHandler, SessionInfo, ShutdownReport,
};
pub use tls::{ClientAuth, ClientIdentity, ClientTls, ServerTls, TlsError};
pub use wsrm_proto::msg::RmVersion;
pub use wsrm_proto::{SessionError, SessionStats};
pub use wsrm_wire::{AddressingVersion, SoapVersion};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
