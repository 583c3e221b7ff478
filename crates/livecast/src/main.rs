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
    Up(UpArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    livecast_telemetry::init_logging(cli.log.log_format);
    match cli.command {
        Command::Up(args) => {
            let stack = Stack::bind(&args).await?;
            stack.run(livecast_telemetry::shutdown_on_signals()).await
        }
    }
}
