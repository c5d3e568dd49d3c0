//! WhatsApp's settings: the `[whatsapp]` table, `--whatsapp-*` flags and
//! `GIRDER_WHATSAPP_*` variables, resolved to a validated [`WhatsAppConfig`].

use std::time::Duration;

use girder_system::SettingsError;
use serde::{Deserialize, Serialize};

use crate::WhatsAppConfig;

/// WhatsApp's settings as given; unset fields take the defaults.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "WhatsApp")]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSettings {
    /// Days a message is kept (1–3650) [default: 30].
    #[arg(long, env = "GIRDER_WHATSAPP_RETENTION_DAYS")]
    #[serde(rename = "retention_days", skip_serializing_if = "Option::is_none")]
    pub whatsapp_retention_days: Option<u64>,
    /// Message shard databases, comma-separated `sqlite:PATH` or `postgres://…` (at
    /// most 64); every instance must list the same shards in the same order [default:
    /// the instance's own database].
    #[arg(long, env = "GIRDER_WHATSAPP_MESSAGE_SHARDS", value_delimiter = ',')]
    #[serde(rename = "message_shards", skip_serializing_if = "Option::is_none")]
    pub whatsapp_message_shards: Option<Vec<String>>,
    /// WebSocket connections this instance holds (1–1,000,000) [default: 10000].
    #[arg(long, env = "GIRDER_WHATSAPP_CONNECTIONS_MAX")]
    #[serde(rename = "connections_max", skip_serializing_if = "Option::is_none")]
    pub whatsapp_connections_max: Option<u64>,
    /// The largest frame a client may send, bytes (1024–1048576) [default: 16384].
    #[arg(long, env = "GIRDER_WHATSAPP_MAX_FRAME_BYTES")]
    #[serde(rename = "max_frame_bytes", skip_serializing_if = "Option::is_none")]
    pub whatsapp_max_frame_bytes: Option<u64>,
    /// Between pings to a connection, ms (100–300000) [default: 20000].
    #[arg(long, env = "GIRDER_WHATSAPP_PING_INTERVAL_MS")]
    #[serde(rename = "ping_interval_ms", skip_serializing_if = "Option::is_none")]
    pub whatsapp_ping_interval_ms: Option<u64>,
    /// Silence after which a connection is closed as unresponsive, ms (more than the
    /// ping interval, at most 600000) [default: 45000].
    #[arg(long, env = "GIRDER_WHATSAPP_IDLE_TIMEOUT_MS")]
    #[serde(rename = "idle_timeout_ms", skip_serializing_if = "Option::is_none")]
    pub whatsapp_idle_timeout_ms: Option<u64>,
    /// How long a device counts as online after its connection's last beat, ms
    /// (1000–600000) [default: 30000].
    #[arg(long, env = "GIRDER_WHATSAPP_PRESENCE_TTL_MS")]
    #[serde(rename = "presence_ttl_ms", skip_serializing_if = "Option::is_none")]
    pub whatsapp_presence_ttl_ms: Option<u64>,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl WhatsAppSettings {
    /// Applies the defaults and checks every bound.
    ///
    /// # Errors
    /// A value out of range, named as in the TOML file.
    pub fn resolve(self) -> Result<WhatsAppConfig, SettingsError> {
        let d = WhatsAppConfig::new();
        let days = self.whatsapp_retention_days.unwrap_or(30);
        SettingsError::check_range("whatsapp.retention_days", signed(days), 1, 3_650)?;
        let message_shards = self.whatsapp_message_shards.unwrap_or_default();
        if message_shards.len() > 64 {
            return Err(SettingsError::invalid(
                "whatsapp.message_shards",
                format!("at most 64 shards, got {}", message_shards.len()),
            ));
        }
        for url in &message_shards {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(SettingsError::invalid(
                    "whatsapp.message_shards",
                    format!("{url:?} is neither sqlite:PATH nor postgres://…"),
                ));
            }
        }
        let connections_max =
            self.whatsapp_connections_max.unwrap_or(d.registry.connections_max as u64);
        SettingsError::check_range(
            "whatsapp.connections_max",
            signed(connections_max),
            1,
            1_000_000,
        )?;
        let max_frame_bytes = self.whatsapp_max_frame_bytes.unwrap_or(d.max_frame_bytes as u64);
        SettingsError::check_range(
            "whatsapp.max_frame_bytes",
            signed(max_frame_bytes),
            1_024,
            1 << 20,
        )?;
        let ping =
            self.whatsapp_ping_interval_ms.unwrap_or(d.keepalive.ping_interval.as_millis() as u64);
        SettingsError::check_range("whatsapp.ping_interval_ms", signed(ping), 100, 300_000)?;
        let idle =
            self.whatsapp_idle_timeout_ms.unwrap_or(d.keepalive.idle_timeout.as_millis() as u64);
        SettingsError::check_range(
            "whatsapp.idle_timeout_ms",
            signed(idle),
            signed(ping) + 1,
            600_000,
        )?;
        let presence_ttl_ms = self.whatsapp_presence_ttl_ms.unwrap_or(d.presence_ttl_ms);
        SettingsError::check_range(
            "whatsapp.presence_ttl_ms",
            signed(presence_ttl_ms),
            1_000,
            600_000,
        )?;
        Ok(WhatsAppConfig {
            retention_ms: days * 24 * 3_600_000,
            message_shards,
            max_frame_bytes: max_frame_bytes as usize,
            keepalive: girder_realtime::ws::KeepAlive {
                ping_interval: Duration::from_millis(ping),
                idle_timeout: Duration::from_millis(idle),
            },
            registry: girder_realtime::ws::RegistryConfig {
                connections_max: connections_max as usize,
                ..d.registry
            },
            presence_ttl_ms,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = WhatsAppSettings::default().resolve().unwrap();
        assert_eq!(c.retention_ms, 30 * 86_400_000);
        assert_eq!(c.registry.connections_max, 10_000);
        for bad in [
            WhatsAppSettings { whatsapp_retention_days: Some(0), ..Default::default() },
            WhatsAppSettings { whatsapp_max_frame_bytes: Some(10), ..Default::default() },
            WhatsAppSettings {
                whatsapp_ping_interval_ms: Some(50_000),
                whatsapp_idle_timeout_ms: Some(40_000),
                ..Default::default()
            },
            WhatsAppSettings {
                whatsapp_message_shards: Some(vec!["mysql://x".into()]),
                ..Default::default()
            },
        ] {
            assert!(bad.resolve().is_err());
        }
    }
}
