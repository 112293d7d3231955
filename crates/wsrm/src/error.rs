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
    /// TLS failed: the client's TLS configuration, or the handshake while opening the session
    /// (the service's certificate not trusted, ours refused or missing). A security failure
    /// ends the open at once, as in WCF: trying again would not mend it.
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
    /// The session could not be opened: until OpenTimeout (`after`) every CreateSequence
    /// exchange failed in the transport (connection refused, a broken connection, an HTTP
    /// error status without a SOAP answer). Carries the last one's failure, as WCF's open
    /// throws its last attempt's exception. (A TLS failure ends the open at once instead, as
    /// [`ClientError::Tls`]; an open whose last attempt got no answer at all fails as
    /// [`ClientError::Faulted`] with [`SessionError::OpenTimeout`].)
    #[error("no session opened within {after:?}; the last attempt failed: {cause}")]
    Unreachable {
        /// The binding's OpenTimeout.
        after: std::time::Duration,
        /// The last CreateSequence exchange's failure.
        cause: String,
    },
    /// The session failed; carries the engine's reason (with the peer's fault, if any).
    #[error("session faulted: {0}")]
    Faulted(SessionError),
    /// The session failed because message `number` was not acknowledged within MaxRetryCount
    /// transmissions, and its last transmission failed in the transport: `cause` says how
    /// (e.g. "the service answered HTTP 400 Bad Request without a SOAP message": the service
    /// cannot read the message; a refused connection: the service is gone). This is
    /// [`SessionError::RetryExhausted`] with its cause; when the last transmission got no
    /// answer at all the session fails as [`ClientError::Faulted`] with that error.
    #[error("session faulted: maximum retry count exceeded for message {number}; its last transmission failed: {cause}")]
    Undeliverable {
        /// The message that could not be delivered.
        number: u64,
        /// Its last transmission's failure.
        cause: String,
    },
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
