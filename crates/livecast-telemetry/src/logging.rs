//! Logging setup shared by all binaries.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags every binary flattens into its own.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format; the level comes from RUST_LOG (default: info).
    #[arg(long, env = "LIVECAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Installs the global subscriber, writing to stdout (where `docker compose logs` and
/// journald look). Text lines are coloured only when stdout is a terminal, so files, pipes and
/// container logs get plain text. Calling it twice is harmless (the second call does nothing),
/// which lets `livecast up` and tests share one process.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether text lines get ANSI colours: only on a terminal, and never when `NO_COLOR` is set to
/// anything non-empty (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colours_only_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
