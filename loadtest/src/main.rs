//! `livecast-loadtest`: parse flags, run the audience, write the summary, exit by thresholds.

use livecast_loadtest::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = livecast_telemetry::parse_flags();
    livecast_telemetry::init_logging(cli.log.log_format);
    match cli.command {
        Command::Run(args) => {
            let summary = livecast_loadtest::run(&args).await?;
            if !summary.passed {
                eprintln!("thresholds missed: {}", summary.failures.join("; "));
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
