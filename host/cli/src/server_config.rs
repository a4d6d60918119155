//! The `server:` section of `qila.yaml`: the HTTP listener's and the syslog TCP listener's limits and timeouts.
//! Every key is optional; an unset key keeps its default (see `docs/security.md`, "The HTTP edge").
//!
//! ```yaml
//! server:
//!   header_timeout: 10s          # request line and headers must arrive within this
//!   request_timeout: 60s         # a request's body must have arrived this long after its first byte
//!   idle_timeout: 60s            # a kept-alive connection may stay silent this long
//!   max_connections: 1024        # connections served at once; more get 503
//!   max_head: 32KiB              # request line and headers
//!   max_uri: 8KiB                # request target
//!   max_headers: 100             # header fields
//!   max_body: 1MiB               # JSON requests and playbooks
//!   max_hook_body: 4MiB          # webhook payloads
//!   max_events_body: 32MiB       # POST /api/v1/events
//!   max_package: 256MiB          # plugin packages
//!   unverified_body_budget: 32MiB  # bytes of signed webhook bodies held before their signature is checked
//!   webhook_tolerance: 5m        # Standard Webhooks timestamp tolerance
//!   delivery_window: 24h         # how long X-GitHub-Delivery ids are remembered
//!   idempotency_window: 24h      # how long an Idempotency-Key names its run
//!   syslog_max_connections: 1024 # syslog over TCP
//!   syslog_idle_timeout: 5m
//!   syslog_frame_timeout: 30s
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::{parse_duration, parse_size};

/// The `server:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_head: Option<String>,
    max_uri: Option<String>,
    max_headers: Option<usize>,
    max_body: Option<String>,
    max_hook_body: Option<String>,
    max_events_body: Option<String>,
    max_package: Option<String>,
    unverified_body_budget: Option<String>,
    webhook_tolerance: Option<String>,
    delivery_window: Option<String>,
    idempotency_window: Option<String>,
    syslog_max_connections: Option<usize>,
    syslog_idle_timeout: Option<String>,
    syslog_frame_timeout: Option<String>,
}

fn size(value: &Option<String>, key: &str, into: &mut usize) -> anyhow::Result<()> {
    if let Some(v) = value {
        let n = parse_size(v).with_context(|| format!("server.{key}"))?;
        if n == 0 {
            bail!("server.{key}: must be more than 0");
        }
        *into = n;
    }
    Ok(())
}

fn duration(value: &Option<String>, key: &str, into: &mut Duration) -> anyhow::Result<()> {
    if let Some(v) = value {
        let d = parse_duration(v).with_context(|| format!("server.{key}"))?;
        if d.is_zero() {
            bail!("server.{key}: must be more than 0");
        }
        *into = d;
    }
    Ok(())
}

fn count(value: Option<usize>, key: &str, into: &mut usize) -> anyhow::Result<()> {
    if let Some(n) = value {
        if n == 0 {
            bail!("server.{key}: must be more than 0");
        }
        *into = n;
    }
    Ok(())
}

impl ServerConfig {
    /// Applies the keys that are set to `options` and `syslog`; an error names the key.
    pub fn apply(
        &self,
        options: &mut qila_server::ServerOptions,
        syslog: &mut qila_siem::syslog::TcpLimits,
    ) -> anyhow::Result<()> {
        let edge = &mut options.edge;
        duration(
            &self.header_timeout,
            "header_timeout",
            &mut edge.header_timeout,
        )?;
        duration(
            &self.request_timeout,
            "request_timeout",
            &mut edge.request_timeout,
        )?;
        duration(&self.idle_timeout, "idle_timeout", &mut edge.idle_timeout)?;
        count(
            self.max_connections,
            "max_connections",
            &mut edge.max_connections,
        )?;
        size(&self.max_head, "max_head", &mut edge.max_head_bytes)?;
        size(&self.max_uri, "max_uri", &mut edge.max_uri_bytes)?;
        count(self.max_headers, "max_headers", &mut edge.max_headers)?;
        size(&self.max_body, "max_body", &mut options.max_body_bytes)?;
        size(
            &self.max_hook_body,
            "max_hook_body",
            &mut options.max_hook_bytes,
        )?;
        size(
            &self.max_events_body,
            "max_events_body",
            &mut options.max_events_bytes,
        )?;
        size(
            &self.max_package,
            "max_package",
            &mut options.max_package_bytes,
        )?;
        size(
            &self.unverified_body_budget,
            "unverified_body_budget",
            &mut options.unverified_body_budget,
        )?;
        duration(
            &self.webhook_tolerance,
            "webhook_tolerance",
            &mut options.webhook_tolerance,
        )?;
        duration(
            &self.delivery_window,
            "delivery_window",
            &mut options.delivery_window,
        )?;
        duration(
            &self.idempotency_window,
            "idempotency_window",
            &mut options.idempotency_window,
        )?;
        count(
            self.syslog_max_connections,
            "syslog_max_connections",
            &mut syslog.max_connections,
        )?;
        duration(
            &self.syslog_idle_timeout,
            "syslog_idle_timeout",
            &mut syslog.idle_timeout,
        )?;
        duration(
            &self.syslog_frame_timeout,
            "syslog_frame_timeout",
            &mut syslog.frame_timeout,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_set_replace_defaults_and_bad_values_name_their_key() {
        let config: ServerConfig = serde_yaml::from_str(
            "header_timeout: 2s\nmax_uri: 1KiB\nunverified_body_budget: 8MiB\nsyslog_frame_timeout: 5s\n",
        )
        .unwrap();
        let mut options = qila_server::ServerOptions::default();
        let mut syslog = qila_siem::syslog::TcpLimits::default();
        config.apply(&mut options, &mut syslog).unwrap();
        assert_eq!(options.edge.header_timeout, Duration::from_secs(2));
        assert_eq!(options.edge.max_uri_bytes, 1024);
        assert_eq!(options.unverified_body_budget, 8 << 20);
        assert_eq!(
            options.edge.request_timeout,
            Duration::from_secs(60),
            "unset: the default"
        );
        assert_eq!(syslog.frame_timeout, Duration::from_secs(5));
        for bad in ["header_timeout: soon", "max_head: 0", "max_connections: 0"] {
            let config: ServerConfig = serde_yaml::from_str(bad).unwrap();
            let e = format!("{:#}", config.apply(&mut options, &mut syslog).unwrap_err());
            assert!(e.contains(bad.split(':').next().unwrap()), "{e}");
        }
        assert!(serde_yaml::from_str::<ServerConfig>("header_timout: 2s").is_err());
    }
}
