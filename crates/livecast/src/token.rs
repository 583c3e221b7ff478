//! `livecast token`: mints a signed playback token with the balancer's secret, for a portal
//! script or an operator handing out a link (the format is in `livecast_proxy::playback`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use livecast_proxy::playback::{claims_for, Playback};

use crate::error::{LivecastError, Result};

/// Flags of `livecast token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The stream the token opens.
    #[arg(long)]
    pub stream: String,
    /// How long it is valid (e.g. 90m, 8h).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The viewer's identity, written to the access log as user.name.
    #[arg(long, default_value = "")]
    pub viewer: String,
    /// The only address the token works from.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// File holding the secret (or set LIVECAST_PLAYBACK_SECRET).
    #[arg(long, env = "LIVECAST_PLAYBACK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Base URL of the balancer, for the printed player link.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
}

/// The token, then the player and playlist URLs carrying it, one per line.
pub fn run(args: &TokenArgs) -> Result<String> {
    let secret = match &args.secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(LivecastError::io(format!("cannot read {}", path.display())))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        None => std::env::var("LIVECAST_PLAYBACK_SECRET").map_err(|_| {
            LivecastError::Config("give --secret-file or set LIVECAST_PLAYBACK_SECRET".into())
        })?,
    };
    if !livecast_media::publish::valid_stream_name(&args.stream) {
        return Err(LivecastError::Config(format!(
            "--stream must be a stream name (letters, digits, . _ -), got {:?}",
            args.stream
        )));
    }
    let guard = Playback::new(secret.as_bytes()).map_err(LivecastError::config)?;
    let claims = claims_for(&args.stream, args.ttl, &args.viewer, args.address);
    let token = guard.mint(&claims).map_err(LivecastError::config)?;
    let base = args.base_url.trim_end_matches('/');
    let stream = &args.stream;
    Ok(format!(
        "{token}\n{base}/?stream={stream}&token={token}\n{base}/hls/{stream}/index.m3u8?token={token}"
    ))
}
