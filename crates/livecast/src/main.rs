//! `livecast`: the umbrella binary. `livecast up` runs the whole stack in one process.

use clap::{Parser, Subcommand};
use livecast::{Stack, UpArgs};
use livecast_telemetry::LogArgs;

/// The livecast live-broadcast stack in one process (for machines without Docker).
#[derive(Debug, Parser)]
#[command(name = "livecast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start ingest, the front-ends and the balancer; stop with Ctrl-C or SIGTERM.
    Up(Box<UpArgs>),
    /// Check an http:// URL (a service's /readyz): exit 0 on a 2xx answer, 1 otherwise.
    /// The container images' health check, since they carry no curl.
    Probe {
        /// For example http://127.0.0.1:9102/readyz.
        url: String,
        /// Give up after this long.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Print a signed playback token for a stream (the balancer's --playback-secret), and the
    /// player URL that carries it.
    Token(livecast::token::TokenArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = livecast_telemetry::parse_flags();
    if let Command::Probe { url, timeout_ms } = &cli.command {
        if let Err(error) =
            livecast::probe::probe(url, std::time::Duration::from_millis(*timeout_ms))
        {
            eprintln!("livecast probe: {error:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Command::Token(args) = &cli.command {
        match livecast::token::run(args) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("livecast token: {error:#}");
                std::process::exit(2);
            }
        }
        return Ok(());
    }
    livecast_telemetry::init_logging(cli.log.log_format);
    match cli.command {
        Command::Probe { .. } | Command::Token(_) => Ok(()),
        Command::Up(args) => {
            let stack = Stack::bind(&args).await?;
            Ok(stack.run(livecast_telemetry::shutdown_on_signals()).await?)
        }
    }
}
