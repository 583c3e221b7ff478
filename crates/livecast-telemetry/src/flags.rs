//! Command-line parsing shared by every binary: flags, then `LIVECAST_*` variables, where an
//! empty variable counts as unset.
//!
//! Compose files and systemd units pass every setting through (`LIVECAST_ON_PUBLISH:
//! ${LIVECAST_ON_PUBLISH:-}`), so a setting the operator left out arrives as an empty variable.
//! clap would take that as the value `""` (and refuse it, or let it conflict with another
//! flag); here it means "not set", so the default applies.

use clap::{ArgMatches, Command, Parser};

/// Parses the process's arguments and environment into `T`, exiting with clap's message (and
/// status 2) on bad input, as `T::parse()` would.
pub fn parse_flags<T: Parser>() -> T {
    parse_flags_with(std::env::args_os(), |name| {
        std::env::var_os(name).is_some_and(|v| v.is_empty())
    })
    .unwrap_or_else(|e| e.exit())
}

/// [`parse_flags`] with the arguments and the "is this variable empty" test given (for tests).
pub fn parse_flags_with<T: Parser, A: Into<std::ffi::OsString> + Clone>(
    args: impl IntoIterator<Item = A>,
    empty: impl Fn(&std::ffi::OsStr) -> bool + Copy,
) -> Result<T, clap::Error> {
    let command = ignore_empty(T::command(), empty);
    let matches: ArgMatches = command.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// Drops the environment variable of every argument whose variable is empty, in `command` and
/// all its subcommands.
fn ignore_empty(mut command: Command, empty: impl Fn(&std::ffi::OsStr) -> bool + Copy) -> Command {
    let unset: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(empty))
        .map(|a| a.get_id().clone())
        .collect();
    for id in unset {
        command = command.mut_arg(id, |a| a.env(None));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        command = command.mut_subcommand(name, |s| ignore_empty(s, empty));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PATH` is set (and not a number) in every test environment: it stands for a variable
    /// that is present, so the test needs no change to the process's environment.
    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long, env = "LIVECAST_TEST_SURELY_UNSET")]
        url: Option<String>,
        #[arg(long, env = "PATH", default_value_t = 5)]
        secs: u64,
        #[command(subcommand)]
        sub: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Up {
            #[arg(long, env = "PATH", default_value_t = 1)]
            replicas: u64,
        },
    }

    #[test]
    fn a_variable_reported_empty_is_unset_in_subcommands_too() {
        let refused: Result<Flags, _> = parse_flags_with(["prog"], |_| false);
        assert!(refused.is_err(), "PATH is no number: clap reads it");
        let flags: Flags = parse_flags_with(["prog"], |n| n == "PATH").unwrap();
        assert_eq!((flags.url, flags.secs), (None, 5));
        let flags: Flags = parse_flags_with(["prog", "up"], |n| n == "PATH").unwrap();
        assert!(matches!(flags.sub, Some(Sub::Up { replicas: 1 })));
        // A flag on the command line still wins.
        let flags: Flags = parse_flags_with(["prog", "--secs", "9"], |n| n == "PATH").unwrap();
        assert_eq!(flags.secs, 9);
    }
}
