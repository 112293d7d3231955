//! Typed errors of the client and service.

use wsrm_proto::msg::Fault;
use wsrm_proto::{SendError, SessionError};

use crate::binding::BindingError;
use crate::tls::TlsError;

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The binding or URL is invalid.
    #[error("invalid binding: {0}")]
    Binding(#[from] BindingError),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The operation did not complete within its timeout (open: OpenTimeout; send/request:
    /// SendTimeout; close: CloseTimeout).
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// `open`, `send`, `request` or `close`.
        operation: &'static str,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The session failed; carries the engine's reason (with the peer's fault, if any).
    #[error("session faulted: {0}")]
    Faulted(SessionError),
    /// The call was refused locally (session closing, wrong pattern, rollover).
    #[error("refused: {0}")]
    Refused(#[from] SendError),
    /// The session's driver stopped (the session was aborted or closed).
    #[error("the session is no longer running")]
    Closed,
    /// The client's store failed or holds something unusable (durable sessions).
    #[error("store: {0}")]
    Store(String),
}

impl ClientError {
    /// The peer's (or our) fault when the session failed with one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            ClientError::Faulted(e) => e.fault(),
            _ => None,
        }
    }
}

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Tls(e.to_string())
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binding is invalid.
    #[error("invalid binding: {0}")]
    Binding(#[from] BindingError),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The binding says https but no certificate was given (or the reverse).
    #[error("{0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The session store failed (e.g. at startup, restoring stored sessions).
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}
