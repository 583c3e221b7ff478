//! `livecast-loadtest`: parse flags, run the audience, write the summary, exit by thresholds.

use livecast_loadtest::{Cli, Command};

fn main() {
    let cli: Cli = livecast_telemetry::parse_flags();
    livecast_telemetry::init_logging(cli.log.log_format);
    let threads = match &cli.command {
        Command::Run(args) => args.threads,
        Command::Merge(_) => 1,
    };
    let runtime = match threads {
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = runtime.unwrap_or_else(|error| {
        eprintln!("livecast-loadtest: cannot start the runtime: {error}");
        std::process::exit(2);
    });
    let outcome = runtime.block_on(async {
        match cli.command {
            // SIGINT or SIGTERM ends the run early; its summary is still written.
            Command::Run(args) => {
                livecast_loadtest::run(&args, livecast_telemetry::shutdown_on_signals()).await
            }
            Command::Merge(args) => livecast_loadtest::merge(&args).await,
        }
    });
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
