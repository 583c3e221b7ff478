//! Balancer configuration: every flag also reads `LIVECAST_<FLAG>` from the environment.

use std::net::SocketAddr;

use livecast_telemetry::LogArgs;

use crate::ProxyError;

/// Reverse-proxy load balancer for the HLS front-ends.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livecast-proxy", version, about, long_about = None)]
pub struct Config {
    /// Address for viewers.
    #[arg(long, env = "LIVECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin server (/metrics, /livez, /readyz).
    #[arg(long, env = "LIVECAST_ADMIN_LISTEN", default_value = "0.0.0.0:9103")]
    pub admin_listen: SocketAddr,
    /// A front-end as HOST:PORT; repeatable. Names are re-resolved every --resolve-interval-secs
    /// and every address they resolve to gets traffic. In the environment, separate with commas.
    #[arg(
        long = "backend",
        env = "LIVECAST_BACKEND",
        value_delimiter = ',',
        required = true
    )]
    pub backends: Vec<String>,
    /// Seconds between DNS re-resolutions of the backend names.
    #[arg(long, env = "LIVECAST_RESOLVE_INTERVAL_SECS", default_value_t = 2)]
    pub resolve_interval_secs: u64,
    /// Milliseconds allowed for connecting to a backend before trying another.
    #[arg(long, env = "LIVECAST_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Checks values clap cannot check by type.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if self.backends.is_empty() {
            return Err(ProxyError::Config(
                "at least one --backend is required".into(),
            ));
        }
        for backend in &self.backends {
            split_host_port(backend)?;
        }
        if self.resolve_interval_secs == 0 || self.connect_timeout_ms == 0 {
            return Err(ProxyError::Config(
                "--resolve-interval-secs and --connect-timeout-ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`).
pub(crate) fn split_host_port(spec: &str) -> Result<(String, u16), ProxyError> {
    let bad = || ProxyError::Config(format!("--backend must be HOST:PORT, got {spec:?}"));
    let (host, port) = spec.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn backends_parse_and_bad_ones_are_refused() {
        assert_eq!(split_host_port("web:8081").unwrap(), ("web".into(), 8081));
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        for bad in ["web", "web:", ":80", "web:99999", "web:0"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
        let cfg = Config::parse_from(["livecast-proxy", "--backend", "a:1", "--backend", "b:2"]);
        assert_eq!(cfg.backends, ["a:1", "b:2"]);
        assert_eq!(cfg.listen.port(), 8080);
        assert!(Config::try_parse_from(["livecast-proxy"]).is_err());
    }
}
