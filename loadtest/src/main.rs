//! `livecast-loadtest`: parse flags, run the audience, write the summary, exit by thresholds.

use livecast_loadtest::{Cli, Command};

#[tokio::main]
async fn main() {
    let cli: Cli = livecast_telemetry::parse_flags();
    livecast_telemetry::init_logging(cli.log.log_format);
    let outcome = match cli.command {
        Command::Run(args) => livecast_loadtest::run(&args).await,
        Command::Merge(args) => livecast_loadtest::merge(&args).await,
    };
    match outcome {
        Ok(summary) if summary.passed => {}
        Ok(summary) => {
            eprintln!("thresholds missed: {}", summary.failures.join("; "));
            std::process::exit(1);
        }
        // One line that says what is wrong with the input, not a backtrace.
        Err(error) => {
            eprintln!("livecast-loadtest: {error:#}");
            std::process::exit(2);
        }
    }
}
