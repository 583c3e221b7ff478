//! Ingest configuration: every flag also reads `LIVECAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use livecast_telemetry::{Cidr, LogArgs};

use crate::IngestError;

/// The `--container` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerArg {
    /// Fragmented MP4 (CMAF): an init segment and .m4s segments and parts.
    Fmp4,
    /// MPEG-TS segments and parts.
    Ts,
}

impl From<ContainerArg> for livecast_media::segmenter::Container {
    fn from(arg: ContainerArg) -> Self {
        match arg {
            ContainerArg::Fmp4 => Self::Fmp4,
            ContainerArg::Ts => Self::Ts,
        }
    }
}

/// RTMP ingest that writes HLS to a shared directory.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livecast-ingest", version, about, long_about = None)]
pub struct Config {
    /// Address for RTMP publishers (rtmp://HOST:PORT/live/<stream>).
    #[arg(long, env = "LIVECAST_RTMP_LISTEN", default_value = "0.0.0.0:1935")]
    pub rtmp_listen: SocketAddr,
    /// Address of the admin server (/metrics, /livez, /readyz).
    #[arg(long, env = "LIVECAST_ADMIN_LISTEN", default_value = "0.0.0.0:9101")]
    pub admin_listen: SocketAddr,
    /// Seconds without any data from a publisher before its connection is closed.
    #[arg(long, env = "LIVECAST_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    pub idle_timeout_secs: u64,
    /// Worker threads, each serving its own publishers from accept to ENDLIST (0: one per
    /// CPU). One thread serves dozens of publishers on a fraction of a core; more threads
    /// cost more CPU per stream.
    #[arg(long, env = "LIVECAST_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// How streams are written.
    #[command(flatten)]
    pub hls: HlsFlags,
    /// Who may publish, and over what.
    #[command(flatten)]
    pub publish: PublishFlags,
    /// The server-side rendition ladder.
    #[command(flatten)]
    pub ladder: crate::ladder::LadderFlags,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How streams are written to the volume; `livecast up` takes the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HlsFlags {
    /// Directory where each stream's playlist and segments are written (<dir>/<stream>/).
    #[arg(long, env = "LIVECAST_HLS_DIR", default_value = "./data/hls")]
    pub hls_dir: PathBuf,
    /// Target segment length in seconds; segments are cut at the first keyframe after it
    /// (a stream's renditions, `<stream>@<rendition>`, at the first keyframe in each next
    /// multiple of it, so that their segments line up).
    #[arg(long, env = "LIVECAST_SEGMENT_SECS", default_value_t = 2.0)]
    pub segment_secs: f64,
    /// Segment container: fmp4 (CMAF, init segment + .m4s) or ts (MPEG-TS).
    #[arg(long, env = "LIVECAST_CONTAINER", value_enum, default_value_t = ContainerArg::Fmp4)]
    pub container: ContainerArg,
    /// LL-HLS part length in milliseconds (EXT-X-PART); 0 writes plain HLS without parts.
    #[arg(long, env = "LIVECAST_PART_MS", default_value_t = 250)]
    pub part_ms: u32,
    /// Number of segments listed in a live playlist.
    #[arg(long, env = "LIVECAST_WINDOW", default_value_t = 6)]
    pub window: usize,
    /// Keep every segment of a publish: the playlist is an EVENT while live and a VOD playlist
    /// after the end (--window is ignored; nothing is deleted).
    #[arg(long, env = "LIVECAST_RECORD")]
    pub record: bool,
    /// Seconds a stream waits for its publisher to come back after a publish ends (a dropped
    /// connection, an encoder restart, an ingest restart) before its playlist gets ENDLIST.
    /// Meanwhile players keep reloading it, and a new publish of the name continues it after
    /// a discontinuity. 0 ends it at once.
    #[arg(long, env = "LIVECAST_RECONNECT_GRACE_SECS", default_value_t = 60)]
    pub reconnect_grace_secs: u64,
}

/// Who may publish, and over what; `livecast up` takes the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishFlags {
    /// Address for RTMPS publishers (rtmps://HOST:PORT/live/<stream>, RTMP over TLS, as OBS
    /// and ffmpeg publish it); off unless given. Needs --tls-cert and --tls-key.
    #[arg(long, env = "LIVECAST_RTMPS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for --rtmps-listen.
    #[arg(long, env = "LIVECAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LIVECAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File of `<stream> <secret>` lines; a publish must then carry `?key=<secret>` on its
    /// stream name. Read again whenever it changes.
    #[arg(long, env = "LIVECAST_STREAM_KEYS")]
    pub stream_keys: Option<PathBuf>,
    /// http:// URL that gets a form POST for every publish (like nginx-rtmp's on_publish:
    /// call, app, name, addr and the stream name's query); a 2xx answer allows it.
    #[arg(long, env = "LIVECAST_ON_PUBLISH")]
    pub on_publish: Option<String>,
    /// Addresses publishers may come from (repeatable or comma-separated). Unset: loopback
    /// only while neither --stream-keys nor --on-publish is set, any address once one is.
    /// `0.0.0.0/0,::/0` opens publishing to every address.
    #[arg(
        long = "publish-allow-cidr",
        env = "LIVECAST_PUBLISH_ALLOW_CIDR",
        value_delimiter = ','
    )]
    pub publish_allow: Vec<Cidr>,
    /// Failed publish checks (a wrong key, a refusal by the callback) an address may have
    /// within --publish-failure-window-secs before its publishes are refused unchecked, until
    /// the window has passed since its last failure (0: no limit). A success clears the count.
    #[arg(long, env = "LIVECAST_PUBLISH_MAX_FAILURES", default_value_t = 5)]
    pub publish_max_failures: usize,
    /// The window of --publish-max-failures, in seconds.
    #[arg(
        long,
        env = "LIVECAST_PUBLISH_FAILURE_WINDOW_SECS",
        default_value_t = 60
    )]
    pub publish_failure_window_secs: u64,
}

impl Config {
    /// Checks values clap cannot check by type.
    pub fn validate(&self) -> Result<(), IngestError> {
        if !(0.5..=30.0).contains(&self.hls.segment_secs) {
            return Err(IngestError::Config(format!(
                "--segment-secs must be between 0.5 and 30, got {}",
                self.hls.segment_secs
            )));
        }
        // RFC 8216 §6.2.2: a live playlist should hold at least three target durations.
        if !(3..=1000).contains(&self.hls.window) {
            return Err(IngestError::Config(format!(
                "--window must be between 3 and 1000 segments, got {}",
                self.hls.window
            )));
        }
        // Parts must be shorter than segments, and at least a frame or two long.
        let segment_ms = self.hls.segment_secs * 1000.0;
        if self.hls.part_ms != 0
            && !(100.0..=segment_ms / 2.0).contains(&f64::from(self.hls.part_ms))
        {
            return Err(IngestError::Config(format!(
                "--part-ms must be 0 (no parts) or between 100 and half of --segment-secs \
                 ({segment_ms} ms), got {}",
                self.hls.part_ms
            )));
        }
        if self.hls.reconnect_grace_secs > 86_400 {
            return Err(IngestError::Config(format!(
                "--reconnect-grace-secs must be at most 86400 (a day), got {}",
                self.hls.reconnect_grace_secs
            )));
        }
        if self.publish.tls_cert.is_some() && self.publish.rtmps_listen.is_none() {
            return Err(IngestError::Config(
                "--tls-cert is for RTMPS: give --rtmps-listen too".into(),
            ));
        }
        if self.publish.publish_failure_window_secs == 0 {
            return Err(IngestError::Config(
                "--publish-failure-window-secs must be at least 1".into(),
            ));
        }
        if self.idle_timeout_secs == 0 {
            return Err(IngestError::Config(
                "--idle-timeout-secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_follow_the_contract_and_bad_values_are_refused() {
        let cfg = Config::parse_from(["livecast-ingest"]);
        assert_eq!(cfg.rtmp_listen.port(), 1935);
        assert_eq!(cfg.admin_listen.port(), 9101);
        assert_eq!(cfg.hls.segment_secs, 2.0);
        assert_eq!(cfg.hls.window, 6);
        assert_eq!(cfg.hls.reconnect_grace_secs, 60);
        cfg.validate().unwrap();
        let bad = Config::parse_from(["livecast-ingest", "--window", "1"]);
        assert!(bad.validate().unwrap_err().to_string().contains("--window"));
        let bad = Config::parse_from(["livecast-ingest", "--segment-secs", "0"]);
        assert!(bad.validate().is_err());
        assert_eq!(cfg.hls.container, ContainerArg::Fmp4);
        assert_eq!(cfg.hls.part_ms, 250);
        let bad = Config::parse_from(["livecast-ingest", "--part-ms", "1500"]);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--part-ms"));
        Config::parse_from(["livecast-ingest", "--part-ms", "0", "--container", "ts"])
            .validate()
            .unwrap();
    }
}
