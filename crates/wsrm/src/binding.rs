//! Bindings: what WCF composes from binding elements — the reliable-session settings, the
//! message version (SOAP × WS-Addressing) and the HTTP(S) transport with its quotas and
//! timeouts.
//!
//! | Preset | SOAP | WS-Addressing | WS-RM | Transport |
//! |---|---|---|---|---|
//! | [`Binding::ws_http`] (`WSHttpBinding`, reliable session on, security None) | 1.2 | 1.0 | 1.0 (Feb 2005) | http |
//! | [`Binding::ws2007_http`] (`WS2007HttpBinding`) | 1.2 | 1.0 | 1.1 | http |
//! | [`Binding::custom`] (`<customBinding>` with `<reliableSession/>`, `<textMessageEncoding/>`, `<httpTransport/>`) | 1.2 | 1.0 | 1.0 | http |
//!
//! Every default equals WCF's (wcf-reliable-sessions.md §1.B, §1.D, §4.3): window 8, 8 retries,
//! inactivity 10 min, ordered, flow control on, MaxPendingChannels 4, acknowledgement interval
//! 200 ms; open/close/send timeouts 1 min, receive timeout 10 min; maxReceivedMessageSize
//! 65,536 bytes.

use std::fmt;
use std::time::Duration;

use wsrm_proto::msg::RmVersion;
pub use wsrm_proto::{Settings, SettingsError};
pub use wsrm_wire::{AddressingVersion, SoapVersion};

/// A SOAP envelope version paired with a WS-Addressing version (WCF `MessageVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageVersion {
    /// Envelope version.
    pub soap: SoapVersion,
    /// Addressing version.
    pub addressing: AddressingVersion,
}

impl MessageVersion {
    /// `Soap12WSAddressing10` (WCF's default for every RM binding).
    pub const SOAP12_WSA10: MessageVersion = MessageVersion {
        soap: SoapVersion::Soap12,
        addressing: AddressingVersion::Wsa10,
    };
    /// `Soap11WSAddressing10`.
    pub const SOAP11_WSA10: MessageVersion = MessageVersion {
        soap: SoapVersion::Soap11,
        addressing: AddressingVersion::Wsa10,
    };
    /// `Soap12WSAddressingAugust2004`.
    pub const SOAP12_WSA200408: MessageVersion = MessageVersion {
        soap: SoapVersion::Soap12,
        addressing: AddressingVersion::Wsa200408,
    };
    /// `Soap11WSAddressingAugust2004`.
    pub const SOAP11_WSA200408: MessageVersion = MessageVersion {
        soap: SoapVersion::Soap11,
        addressing: AddressingVersion::Wsa200408,
    };

    /// WCF's configuration name (`Soap12WSAddressing10`, ...).
    pub fn wcf_name(self) -> &'static str {
        match (self.soap, self.addressing) {
            (SoapVersion::Soap12, AddressingVersion::Wsa10) => "Soap12WSAddressing10",
            (SoapVersion::Soap11, AddressingVersion::Wsa10) => "Soap11WSAddressing10",
            (SoapVersion::Soap12, AddressingVersion::Wsa200408) => "Soap12WSAddressingAugust2004",
            (SoapVersion::Soap11, AddressingVersion::Wsa200408) => "Soap11WSAddressingAugust2004",
        }
    }

    /// Parses a WCF configuration name (the four RM-capable ones).
    pub fn from_wcf_name(s: &str) -> Option<Self> {
        [
            Self::SOAP12_WSA10,
            Self::SOAP11_WSA10,
            Self::SOAP12_WSA200408,
            Self::SOAP11_WSA200408,
        ]
        .into_iter()
        .find(|v| v.wcf_name() == s)
    }
}

impl Default for MessageVersion {
    fn default() -> Self {
        Self::SOAP12_WSA10
    }
}

impl fmt::Display for MessageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wcf_name())
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// Plain HTTP (`<httpTransport/>`).
    #[default]
    Http,
    /// HTTP over TLS (`<httpsTransport/>`); certificates are given to the client or service.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The HTTP(S) transport element: quotas and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTransport {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `maxReceivedMessageSize`: largest message (HTTP body) accepted, in bytes. Default 65,536;
    /// 1 ..= 2^63−1. Larger requests get `413`; a larger response fails the exchange.
    pub max_received_message_size: u64,
    /// `openTimeout`: bounds the CreateSequence handshake incl. retries. Default 1 min.
    pub open_timeout: Duration,
    /// `closeTimeout`: bounds the close handshakes. Default 1 min.
    pub close_timeout: Duration,
    /// `sendTimeout`: bounds each send/request, including waiting for window space and for
    /// the reply, and each HTTP exchange. Default 1 min.
    pub send_timeout: Duration,
    /// `receiveTimeout`: service-side application idle time before a session is aborted
    /// (WCF's `ServiceChannel` idle rule). Default 10 min.
    pub receive_timeout: Duration,
    /// Service: simultaneous HTTP connections (further ones wait in the accept backlog).
    /// Not a WCF setting. Default 10,000; ≥ 1.
    pub max_connections: usize,
    /// Service: time allowed for a request's head, and for a TLS handshake (slow-drip
    /// defence): a connection on which no request head completes within it while no request
    /// is being handled (a head dripping in, or an idle keep-alive connection) is closed,
    /// between 1 and 1.25 times it after its last activity. Not a WCF setting (WCF's
    /// `requestInitializationTimeout` is unlimited by default). Default 30 s.
    pub request_header_timeout: Duration,
    /// Service: time allowed for a whole request body after its head. Default 30 s.
    pub request_body_timeout: Duration,
    /// Client: idle pooled connections kept per host. Not a WCF setting. Default 256.
    ///
    /// Keep it above the number of HTTP exchanges a session has in flight (its window plus a
    /// few protocol messages): an answer reaches the engine before its connection is back in
    /// the pool, so the next message often needs another connection for a moment; with fewer
    /// idle slots than that, connections are closed and opened again all the time under load
    /// (`http_bench`, one session with a window of 64, 20,000 messages: 444 connections
    /// opened with 64 slots, 102 with 256, and about 2 % more throughput).
    pub max_idle_connections_per_host: usize,
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport {
            scheme: Scheme::Http,
            max_received_message_size: 65_536,
            open_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            receive_timeout: Duration::from_secs(600),
            max_connections: 10_000,
            request_header_timeout: Duration::from_secs(30),
            request_body_timeout: Duration::from_secs(30),
            max_idle_connections_per_host: 256,
        }
    }
}

/// An invalid binding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// A reliable-session setting is out of WCF's range.
    #[error(transparent)]
    Setting(#[from] SettingsError),
    /// A transport setting is out of range.
    #[error("transport setting {setting} = {value} is out of range; allowed: {allowed}")]
    Transport {
        /// Name of the setting (WCF's name where there is one).
        setting: &'static str,
        /// The value, as text.
        value: String,
        /// The allowed range.
        allowed: &'static str,
    },
    /// A URL does not fit the binding (scheme mismatch or unparsable).
    #[error("URL {url} does not fit the binding: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A reliable-session binding: settings + message version + transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The eight `ReliableSessionBindingElement` settings (includes the RM version).
    pub session: Settings,
    /// SOAP and WS-Addressing versions.
    pub message_version: MessageVersion,
    /// HTTP(S) transport.
    pub transport: HttpTransport,
    name: &'static str,
}

impl Default for Binding {
    fn default() -> Self {
        Binding::custom()
    }
}

impl Binding {
    /// `WSHttpBinding` with `reliableSession enabled="true"` and security None: SOAP 1.2,
    /// WS-Addressing 1.0, WS-RM February 2005, HTTP.
    pub fn ws_http() -> Self {
        Binding {
            session: Settings::default(),
            message_version: MessageVersion::SOAP12_WSA10,
            transport: HttpTransport::default(),
            name: "wsHttpBinding",
        }
    }

    /// `WS2007HttpBinding` with a reliable session: as [`Binding::ws_http`] with WS-RM 1.1.
    pub fn ws2007_http() -> Self {
        let mut b = Binding::ws_http();
        b.session.reliable_messaging_version = RmVersion::Wsrm11;
        b.name = "ws2007HttpBinding";
        b
    }

    /// A `<customBinding>` with `<reliableSession/>`, `<textMessageEncoding/>` and
    /// `<httpTransport/>`, all defaults (the same values as [`Binding::ws_http`]; every knob may
    /// be changed).
    pub fn custom() -> Self {
        let mut b = Binding::ws_http();
        b.name = "customBinding";
        b
    }

    /// The preset this binding started from (`wsHttpBinding`, `ws2007HttpBinding`,
    /// `customBinding`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sets the WS-RM version.
    pub fn rm_version(mut self, v: RmVersion) -> Self {
        self.session.reliable_messaging_version = v;
        self
    }

    /// Sets `Ordered`.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.session.ordered = ordered;
        self
    }

    /// Sets `MaxTransferWindowSize` (1..=4096).
    pub fn max_transfer_window_size(mut self, n: u32) -> Self {
        self.session.max_transfer_window_size = n;
        self
    }

    /// Sets `MaxRetryCount` (≥ 1).
    pub fn max_retry_count(mut self, n: u32) -> Self {
        self.session.max_retry_count = n;
        self
    }

    /// Sets `MaxPendingChannels` (1..=16384).
    pub fn max_pending_channels(mut self, n: u32) -> Self {
        self.session.max_pending_channels = n;
        self
    }

    /// Sets `InactivityTimeout`.
    pub fn inactivity_timeout(mut self, d: Duration) -> Self {
        self.session.inactivity_timeout = d;
        self
    }

    /// Sets `AcknowledgementInterval`.
    pub fn acknowledgement_interval(mut self, d: Duration) -> Self {
        self.session.acknowledgement_interval = d;
        self
    }

    /// Sets `FlowControlEnabled`.
    pub fn flow_control(mut self, on: bool) -> Self {
        self.session.flow_control_enabled = on;
        self
    }

    /// Sets the SOAP version.
    pub fn soap(mut self, v: SoapVersion) -> Self {
        self.message_version.soap = v;
        self
    }

    /// Sets the WS-Addressing version.
    pub fn addressing(mut self, v: AddressingVersion) -> Self {
        self.message_version.addressing = v;
        self
    }

    /// Sets the message version.
    pub fn message_version(mut self, v: MessageVersion) -> Self {
        self.message_version = v;
        self
    }

    /// Switches to HTTPS (`<httpsTransport/>`).
    pub fn https(mut self) -> Self {
        self.transport.scheme = Scheme::Https;
        self
    }

    /// Sets `maxReceivedMessageSize`.
    pub fn max_received_message_size(mut self, n: u64) -> Self {
        self.transport.max_received_message_size = n;
        self
    }

    /// Sets `openTimeout`.
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.transport.open_timeout = d;
        self
    }

    /// Sets `closeTimeout`.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.transport.close_timeout = d;
        self
    }

    /// Sets `sendTimeout`.
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.transport.send_timeout = d;
        self
    }

    /// Sets `receiveTimeout`.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.transport.receive_timeout = d;
        self
    }

    /// Checks every setting; the error names the first offending one and its range.
    pub fn validate(&self) -> Result<(), BindingError> {
        self.session.validate()?;
        let t = &self.transport;
        if !(1..=i64::MAX as u64).contains(&t.max_received_message_size) {
            return Err(BindingError::Transport {
                setting: "MaxReceivedMessageSize",
                value: t.max_received_message_size.to_string(),
                allowed: "1..=9223372036854775807",
            });
        }
        if usize::try_from(t.max_received_message_size).is_err() {
            return Err(BindingError::Transport {
                setting: "MaxReceivedMessageSize",
                value: t.max_received_message_size.to_string(),
                allowed: "at most the address space of this machine",
            });
        }
        for (setting, d) in [
            ("OpenTimeout", t.open_timeout),
            ("CloseTimeout", t.close_timeout),
            ("SendTimeout", t.send_timeout),
            ("ReceiveTimeout", t.receive_timeout),
            ("RequestHeaderTimeout", t.request_header_timeout),
            ("RequestBodyTimeout", t.request_body_timeout),
        ] {
            if d.is_zero() || d > wsrm_proto::settings::MAX_TIMESPAN {
                return Err(BindingError::Transport {
                    setting,
                    value: format!("{d:?}"),
                    allowed: "greater than 0 and at most 2147483647 ms",
                });
            }
        }
        if t.max_connections == 0 {
            return Err(BindingError::Transport {
                setting: "MaxConnections",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        Ok(())
    }

    /// Checks that `url` is an absolute URL of this binding's scheme.
    pub fn check_url(&self, url: &str) -> Result<http::Uri, BindingError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| BindingError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if uri.authority().is_none() {
            return Err(BindingError::Url {
                url: url.to_string(),
                reason: "not an absolute URL".into(),
            });
        }
        let want = self.transport.scheme.as_str();
        if uri.scheme_str() != Some(want) {
            return Err(BindingError::Url {
                url: url.to_string(),
                reason: format!("the binding's transport is {want}"),
            });
        }
        Ok(uri)
    }

    pub(crate) fn max_message_bytes(&self) -> usize {
        usize::try_from(self.transport.max_received_message_size).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_carry_wcf_defaults() {
        let b = Binding::ws_http();
        assert_eq!(b.session, Settings::default());
        assert_eq!(b.session.reliable_messaging_version, RmVersion::Wsrm10);
        assert_eq!(b.message_version, MessageVersion::SOAP12_WSA10);
        assert_eq!(b.transport.max_received_message_size, 65_536);
        assert_eq!(b.transport.open_timeout, Duration::from_secs(60));
        assert_eq!(b.transport.close_timeout, Duration::from_secs(60));
        assert_eq!(b.transport.send_timeout, Duration::from_secs(60));
        assert_eq!(b.transport.receive_timeout, Duration::from_secs(600));
        assert_eq!(b.transport.scheme, Scheme::Http);
        assert_eq!(b.validate(), Ok(()));
        let b7 = Binding::ws2007_http();
        assert_eq!(b7.session.reliable_messaging_version, RmVersion::Wsrm11);
        assert_eq!(b7.name(), "ws2007HttpBinding");
        assert_eq!(Binding::custom().session, Settings::default());
        assert_eq!(Binding::custom().name(), "customBinding");
    }

    #[test]
    fn builder_methods_set_fields() {
        let b = Binding::custom()
            .rm_version(RmVersion::Wsrm11)
            .ordered(false)
            .max_transfer_window_size(64)
            .soap(SoapVersion::Soap11)
            .addressing(AddressingVersion::Wsa200408)
            .https()
            .max_received_message_size(1 << 20);
        assert!(!b.session.ordered);
        assert_eq!(b.session.max_transfer_window_size, 64);
        assert_eq!(b.message_version, MessageVersion::SOAP11_WSA200408);
        assert_eq!(b.message_version.wcf_name(), "Soap11WSAddressingAugust2004");
        assert_eq!(b.transport.scheme, Scheme::Https);
        assert_eq!(b.validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_offending_setting() {
        let e = Binding::ws_http()
            .max_transfer_window_size(0)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("MaxTransferWindowSize"), "{e}");
        let e = Binding::ws_http()
            .max_received_message_size(0)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "transport setting MaxReceivedMessageSize = 0 is out of range; allowed: 1..=9223372036854775807"
        );
        let e = Binding::ws_http()
            .send_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("SendTimeout"), "{e}");
    }

    #[test]
    fn message_version_names_round_trip() {
        for v in [
            MessageVersion::SOAP12_WSA10,
            MessageVersion::SOAP11_WSA10,
            MessageVersion::SOAP12_WSA200408,
            MessageVersion::SOAP11_WSA200408,
        ] {
            assert_eq!(MessageVersion::from_wcf_name(v.wcf_name()), Some(v));
        }
        assert_eq!(MessageVersion::from_wcf_name("Soap12"), None);
    }

    #[test]
    fn urls_must_match_the_scheme() {
        assert!(Binding::ws_http()
            .check_url("http://127.0.0.1:1/svc")
            .is_ok());
        assert!(Binding::ws_http()
            .check_url("https://127.0.0.1:1/svc")
            .is_err());
        assert!(Binding::ws_http().https().check_url("https://h/").is_ok());
        assert!(Binding::ws_http().check_url("/relative").is_err());
    }
}
