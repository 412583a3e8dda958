//! Settings are declared once: as clap arguments with their environment
//! variable and default. What embeds a service without a command line
//! (`skiff dev`, tests) takes the same defaults from those declarations.

use clap::{Args, Command, FromArgMatches};

/// `T` with every argument at its declared default, as if no flag were given
/// and no environment variable set (so what the embedding process happens to
/// have in its environment does not leak in). `Err` when a required argument
/// has no default or a default does not parse: a programming error, which each
/// settings type's unit test catches.
pub fn defaults<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    let command =
        T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command.try_get_matches_from(["defaults"])?;
    T::from_arg_matches(&matches)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Args)]
    struct Example {
        #[arg(long, env = "SKIFF_SETTINGS_TEST_LIMIT", default_value_t = 7)]
        limit: u32,
        #[arg(long, env = "SKIFF_SETTINGS_TEST_NAME")]
        name: Option<String>,
    }

    #[test]
    fn takes_the_declared_defaults() {
        let e: Example = defaults().unwrap();
        assert_eq!(e.limit, 7);
        assert_eq!(e.name, None);
    }
}
