//! WCF's eight reliable-session settings (`ReliableSessionBindingElement`) with WCF's real
//! defaults and valid ranges (wire-protocol.md §4.1, wcf-reliable-sessions.md F12–F19).

use std::time::Duration;

use crate::msg::RmVersion;

/// Largest millisecond value WCF accepts for a `TimeSpan` setting (`Int32.MaxValue` ms).
pub const MAX_TIMESPAN: Duration = Duration::from_millis(i32::MAX as u64);

/// The reliable-session settings of one endpoint (client or service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Destination ack batching interval on duplex transports. Default 200 ms; 1 µs ..= 2^31−1 ms.
    pub acknowledgement_interval: Duration,
    /// Write (destination) / honour (source) `netrm:BufferRemaining`. Default true.
    pub flow_control_enabled: bool,
    /// Session dies after this long without any message from the peer. Default 10 min;
    /// 1 µs ..= 2^31−1 ms.
    pub inactivity_timeout: Duration,
    /// Sessions created but not yet accepted by the service. Default 4; 1 ..= 16384.
    pub max_pending_channels: u32,
    /// Retransmissions per message before the session fails. Default 8; 1 ..= 2^31−1.
    pub max_retry_count: u32,
    /// Sender window and receiver buffer, in messages. Default 8; 1 ..= 4096.
    pub max_transfer_window_size: u32,
    /// In-order delivery. Default true.
    pub ordered: bool,
    /// Protocol version. Default WS-RM February 2005 (1.0).
    pub reliable_messaging_version: RmVersion,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            acknowledgement_interval: Duration::from_millis(200),
            flow_control_enabled: true,
            inactivity_timeout: Duration::from_secs(600),
            max_pending_channels: 4,
            max_retry_count: 8,
            max_transfer_window_size: 8,
            ordered: true,
            reliable_messaging_version: RmVersion::Wsrm10,
        }
    }
}

/// An out-of-range setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {setting} = {value} is out of range; allowed: {allowed}")]
pub struct SettingsError {
    /// WCF's name of the setting (e.g. `MaxTransferWindowSize`).
    pub setting: &'static str,
    /// The rejected value, as text.
    pub value: String,
    /// The allowed range, as text.
    pub allowed: &'static str,
}

impl Settings {
    /// Checks every setting against WCF's allowed range; the error names the first offending
    /// setting and its range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        fn dur(
            setting: &'static str,
            d: Duration,
            allowed: &'static str,
        ) -> Result<(), SettingsError> {
            if d.is_zero() || d > MAX_TIMESPAN {
                return Err(SettingsError {
                    setting,
                    value: format!("{d:?}"),
                    allowed,
                });
            }
            Ok(())
        }
        dur(
            "AcknowledgementInterval",
            self.acknowledgement_interval,
            "greater than 0 and at most 2147483647 ms",
        )?;
        dur(
            "InactivityTimeout",
            self.inactivity_timeout,
            "greater than 0 and at most 2147483647 ms",
        )?;
        if !(1..=16384).contains(&self.max_pending_channels) {
            return Err(SettingsError {
                setting: "MaxPendingChannels",
                value: self.max_pending_channels.to_string(),
                allowed: "1..=16384",
            });
        }
        if !(1..=i32::MAX as u32).contains(&self.max_retry_count) {
            return Err(SettingsError {
                setting: "MaxRetryCount",
                value: self.max_retry_count.to_string(),
                allowed: "1..=2147483647",
            });
        }
        if !(1..=4096).contains(&self.max_transfer_window_size) {
            return Err(SettingsError {
                setting: "MaxTransferWindowSize",
                value: self.max_transfer_window_size.to_string(),
                allowed: "1..=4096",
            });
        }
        Ok(())
    }

    /// `IncompleteSequenceBehavior` WCF writes for a sequence it receives with these settings.
    pub fn incomplete_sequence_behavior(&self) -> crate::msg::IncompleteSequenceBehavior {
        if self.ordered {
            crate::msg::IncompleteSequenceBehavior::DiscardFollowingFirstGap
        } else {
            crate::msg::IncompleteSequenceBehavior::NoDiscard
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_wcf_defaults() {
        let s = Settings::default();
        assert_eq!(s.acknowledgement_interval, Duration::from_millis(200));
        assert!(s.flow_control_enabled);
        assert_eq!(s.inactivity_timeout, Duration::from_secs(600));
        assert_eq!(s.max_pending_channels, 4);
        assert_eq!(s.max_retry_count, 8);
        assert_eq!(s.max_transfer_window_size, 8);
        assert!(s.ordered);
        assert_eq!(s.reliable_messaging_version, RmVersion::Wsrm10);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_name_setting_and_range() {
        let mut s = Settings {
            max_transfer_window_size: 4097,
            ..Settings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.setting, "MaxTransferWindowSize");
        assert_eq!(e.allowed, "1..=4096");
        assert!(e.to_string().contains("MaxTransferWindowSize"));
        s.max_transfer_window_size = 0;
        assert_eq!(s.validate().unwrap_err().setting, "MaxTransferWindowSize");
        s.max_transfer_window_size = 4096;
        assert_eq!(s.validate(), Ok(()));
        s.max_pending_channels = 16385;
        assert_eq!(s.validate().unwrap_err().setting, "MaxPendingChannels");
        s.max_pending_channels = 0;
        assert_eq!(s.validate().unwrap_err().setting, "MaxPendingChannels");
        s.max_pending_channels = 16384;
        s.max_retry_count = 0;
        assert_eq!(s.validate().unwrap_err().setting, "MaxRetryCount");
        s.max_retry_count = 1;
        s.inactivity_timeout = Duration::ZERO;
        assert_eq!(s.validate().unwrap_err().setting, "InactivityTimeout");
        s.inactivity_timeout = Duration::from_secs(1);
        s.acknowledgement_interval = MAX_TIMESPAN + Duration::from_millis(1);
        assert_eq!(s.validate().unwrap_err().setting, "AcknowledgementInterval");
    }
}
