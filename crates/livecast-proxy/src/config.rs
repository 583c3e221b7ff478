//! Balancer configuration: every flag also reads `LIVECAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use livecast_telemetry::{Cidr, LogArgs};

use crate::pool::Policy;
use crate::ProxyError;

/// Reverse-proxy load balancer for the HLS front-ends.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livecast-proxy", version, about, long_about = None)]
pub struct Config {
    /// Address for viewers.
    #[arg(long, env = "LIVECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin server (/metrics, /livez, /readyz, and the operator page /status).
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
    /// How requests are spread over healthy backends.
    #[arg(long, env = "LIVECAST_BALANCE", value_enum, default_value = "p2c")]
    pub balance: Policy,
    /// Path of the backends' readiness endpoint, checked on every backend.
    #[arg(long, env = "LIVECAST_HEALTH_PATH", default_value = "/readyz")]
    pub health_path: String,
    /// Milliseconds between active health checks.
    #[arg(long, env = "LIVECAST_HEALTH_INTERVAL_MS", default_value_t = 1000)]
    pub health_interval_ms: u64,
    /// Milliseconds a health check may take.
    #[arg(long, env = "LIVECAST_HEALTH_TIMEOUT_MS", default_value_t = 1000)]
    pub health_timeout_ms: u64,
    /// Passed checks in a row before a pending or ejected backend gets traffic.
    #[arg(long, env = "LIVECAST_HEALTHY_AFTER", default_value_t = 2)]
    pub healthy_after: u32,
    /// Failed checks in a row before a healthy backend is ejected.
    #[arg(long, env = "LIVECAST_UNHEALTHY_AFTER", default_value_t = 2)]
    pub unhealthy_after: u32,
    /// Failed requests in a row (connect errors, 5xx) before a healthy backend is ejected.
    #[arg(long, env = "LIVECAST_EJECT_AFTER_ERRORS", default_value_t = 3)]
    pub eject_after_errors: u32,
    /// Viewer address ranges allowed to watch (repeatable or comma-separated); others get 403.
    #[arg(long = "allow-cidr", env = "LIVECAST_ALLOW_CIDR", value_delimiter = ',',
          default_value = livecast_telemetry::PRIVATE_RANGES)]
    pub allow: Vec<Cidr>,
    /// Proxies in front of this one whose X-Forwarded-For and X-Request-Id are believed
    /// (repeatable or comma-separated). By default nobody's are.
    #[arg(
        long = "trusted-proxy",
        env = "LIVECAST_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,
    /// Seconds a client has to send its request headers, counted from the connection's start
    /// or the end of the previous answer (slowloris protection; also the keep-alive idle time,
    /// and how long an HTTP/2 connection may have no stream open).
    #[arg(long, env = "LIVECAST_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Largest request head accepted, in bytes; larger ones are refused.
    #[arg(long, env = "LIVECAST_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Client connections served at once; further ones are closed at once.
    #[arg(long, env = "LIVECAST_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Requests per second per client address (burst: twice as many); 0 turns limiting off.
    #[arg(long, env = "LIVECAST_RATE_LIMIT_RPS", default_value_t = 0.0)]
    pub rate_limit_rps: f64,
    /// Where the shipper publishes viewer counts (http://HOST:9104/api/viewers); the balancer
    /// then answers `/api/viewers` for the player page from a copy refreshed every second.
    #[arg(long, env = "LIVECAST_VIEWERS_URL")]
    pub viewers_url: Option<String>,
    /// The front-ends' admin port: the operator page then reads their operator stream list
    /// there (`/api/streams` with each publisher's address) instead of the public one.
    #[arg(long, env = "LIVECAST_BACKEND_ADMIN_PORT")]
    pub backend_admin_port: Option<u16>,
    /// Worker threads, each serving its own connections from accept to the last byte
    /// (0: one per CPU).
    #[arg(long, env = "LIVECAST_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// PEM certificate chain: serve HTTPS (with HTTP/2) instead of HTTP.
    #[arg(long, env = "LIVECAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LIVECAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Who may watch, and who may see the operator page.
    #[command(flatten)]
    pub access: AccessFlags,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Who may watch (signed playback, the authentication service) and who may see the
/// operator page; `livecast up` takes the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessFlags {
    /// Secret of signed playback URLs: with it, every request under /hls/ needs a valid token
    /// for its stream (README, "Who may watch"); others get 403. At least 16 bytes.
    /// Prefer the environment or --playback-secret-file to the command line.
    #[arg(
        long,
        env = "LIVECAST_PLAYBACK_SECRET",
        hide_env_values = true,
        conflicts_with = "playback_secret_file"
    )]
    pub playback_secret: Option<Secret>,
    /// File holding the playback secret (a trailing newline is ignored).
    #[arg(long, env = "LIVECAST_PLAYBACK_SECRET_FILE")]
    pub playback_secret_file: Option<PathBuf>,
    /// http:// URL of the company's authentication service (as nginx's auth_request): the
    /// player page asks /api/token, the balancer asks this URL with the viewer's Cookie and
    /// Authorization headers, and a 2xx answer gets a token for the viewer named in its
    /// X-Auth-Request-User (or X-Auth-Request-Email) header. Needs a playback secret.
    #[arg(long, env = "LIVECAST_AUTH_URL")]
    pub auth_url: Option<String>,
    /// Seconds a token from /api/token is valid (the player page renews it at half-time).
    #[arg(long, env = "LIVECAST_PLAYBACK_TOKEN_SECS", default_value_t = 3600)]
    pub playback_token_secs: u64,
    /// Bind tokens from /api/token to the viewer's address: a copied URL or cookie then
    /// works from nowhere else (leave off where viewers' addresses change, e.g. behind NAT
    /// pools).
    #[arg(long, env = "LIVECAST_PLAYBACK_BIND_ADDRESS")]
    pub playback_bind_address: bool,
    /// Credential of the operator page (/status, /api/status on the admin port): a browser
    /// gives it as the password of the HTTP Basic prompt (any user name), a script as
    /// `Authorization: Bearer <token>`. /metrics, /livez and /readyz stay open for Prometheus
    /// and health checks. Without it the page is open to whoever reaches the admin port.
    #[arg(long, env = "LIVECAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
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
        let positive = [
            ("--resolve-interval-secs", self.resolve_interval_secs),
            ("--connect-timeout-ms", self.connect_timeout_ms),
            ("--health-interval-ms", self.health_interval_ms),
            ("--health-timeout-ms", self.health_timeout_ms),
            ("--healthy-after", u64::from(self.healthy_after)),
            ("--unhealthy-after", u64::from(self.unhealthy_after)),
            ("--eject-after-errors", u64::from(self.eject_after_errors)),
            ("--header-timeout-secs", self.header_timeout_secs),
            ("--max-connections", self.max_connections as u64),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ProxyError::Config(format!("{flag} must be positive")));
        }
        if !self.health_path.starts_with('/') {
            return Err(ProxyError::Config("--health-path must start with /".into()));
        }
        if self.max_header_bytes < 8192 {
            return Err(ProxyError::Config(
                "--max-header-bytes must be at least 8192".into(),
            ));
        }
        if !(self.rate_limit_rps >= 0.0 && self.rate_limit_rps.is_finite()) {
            return Err(ProxyError::Config(
                "--rate-limit-rps must be 0 or more".into(),
            ));
        }
        if let Some(url) = &self.viewers_url {
            http_url("--viewers-url", url)?;
        }
        if let Some(url) = &self.access.auth_url {
            http_url("--auth-url", url)?;
            if self.access.playback_secret.is_none() && self.access.playback_secret_file.is_none() {
                return Err(ProxyError::Config(
                    "--auth-url hands out signed tokens: give --playback-secret or \
                     --playback-secret-file too"
                        .into(),
                ));
            }
        }
        if !(60..=7 * 86_400).contains(&self.access.playback_token_secs) {
            return Err(ProxyError::Config(format!(
                "--playback-token-secs must be between 60 and 604800, got {}",
                self.access.playback_token_secs
            )));
        }
        if self.allow.is_empty() {
            return Err(ProxyError::Config(
                "--allow-cidr needs at least one range".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The playback guard, when a secret is configured (read from its file if given).
    pub fn playback(&self) -> Result<Option<crate::playback::Playback>, ProxyError> {
        let secret = match (
            &self.access.playback_secret,
            &self.access.playback_secret_file,
        ) {
            (Some(secret), _) => secret.0.as_bytes().to_vec(),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|e| {
                    ProxyError::Config(format!(
                        "cannot read --playback-secret-file {}: {e}",
                        path.display()
                    ))
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (None, None) => return Ok(None),
        };
        crate::playback::Playback::new(&secret)
            .map(Some)
            .map_err(ProxyError::Config)
    }
}

/// Checks that the value of `flag` is an `http://` URL with a host.
fn http_url(flag: &str, url: &str) -> Result<(), ProxyError> {
    let ok = url
        .parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(ProxyError::Config(format!(
            "{flag} must be an http:// URL, got {url:?}"
        )))
    }
}

/// A secret given as a flag: never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
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
        assert_eq!(cfg.allow.len(), 10, "private ranges by default");
        assert!(cfg.trusted_proxies.is_empty());
        cfg.validate().unwrap();
        assert!(Config::try_parse_from(["livecast-proxy"]).is_err());
        assert!(Config::try_parse_from([
            "livecast-proxy",
            "--backend=a:1",
            "--allow-cidr=10.0.0.0/33"
        ])
        .is_err());
        assert!(
            Config::try_parse_from(["livecast-proxy", "--backend=a:1", "--tls-cert=x.pem"])
                .is_err()
        );
        let zero = Config::parse_from(["livecast-proxy", "--backend=a:1", "--healthy-after=0"]);
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--healthy-after"));
    }
}
