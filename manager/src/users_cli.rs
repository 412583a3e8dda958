//! `skiff-manager user add|rm|revoke-tokens|limits`: account administration
//! from the shell, for servers where signup is closed, and per-user quotas.

use std::io::BufRead;

use anyhow::{Context, bail};
use skiff_core::fnconfig::{EffectiveQuotas, UserLimits};
use skiff_core::names::UserName;
use skiff_core::store::{Store, StoreError};

use crate::passwords;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user
    Add {
        username: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user with all their functions
    Rm { username: String },
    /// Invalidate every token issued so far for a user
    RevokeTokens { username: String },
    /// Set a user's own quotas (a number, or `default` for the operator's);
    /// prints the user's effective quotas
    Limits {
        username: String,
        /// Functions the user may have
        #[arg(long, value_name = "N|default")]
        functions: Option<Limit>,
        /// Versions kept per function
        #[arg(long, value_name = "N|default")]
        versions: Option<Limit>,
        /// Bytes of uploads and artifacts the user may store
        #[arg(long, value_name = "N|default")]
        artifact_bytes: Option<Limit>,
        /// Requests per second to the user's functions, at each router
        #[arg(long, value_name = "N|default")]
        rps: Option<Limit>,
        /// Instances of the user's functions each router may run at once
        #[arg(long, value_name = "N|default")]
        instances: Option<Limit>,
        /// Drop every override first (then apply the ones given)
        #[arg(long)]
        clear: bool,
    },
}

/// One quota as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Default,
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "default" {
            return Ok(Self::Default);
        }
        s.parse()
            .map(Self::Value)
            .map_err(|_| format!("{s:?} is neither a whole number nor `default`"))
    }
}

fn apply(slot: &mut Option<u64>, given: Option<Limit>) {
    match given {
        Some(Limit::Value(v)) => *slot = Some(v),
        Some(Limit::Default) => *slot = None,
        None => {}
    }
}

fn describe(name: &UserName, limits: &UserLimits, q: &EffectiveQuotas) -> String {
    let mark = |o: Option<u64>| {
        if o.is_some() {
            " (set for this user)"
        } else {
            ""
        }
    };
    format!(
        "quotas of {name}:\n  functions       {}{}\n  versions kept   {}{}\n  \
         artifact bytes  {}{}\n  requests/s      {}{}\n  instances       {}{}",
        q.max_functions,
        mark(limits.max_functions),
        q.max_versions,
        mark(limits.max_versions),
        q.max_artifact_bytes,
        mark(limits.max_artifact_bytes),
        q.rps,
        mark(limits.rps),
        q.max_instances,
        mark(limits.max_instances),
    )
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password("Password: ").context("reading the password")?
    };
    passwords::check_policy(&pw).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pw)
}

pub async fn run(store: &Store, cmd: UserCommand) -> anyhow::Result<String> {
    match cmd {
        UserCommand::Add {
            username,
            password_stdin,
        } => {
            let name = UserName::parse(&username)?;
            let pw = read_password(password_stdin)?;
            let hash = passwords::hash(pw)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match store.create_user(&name, &hash).await {
                Ok(_) => Ok(format!("created user {name}")),
                Err(StoreError::Conflict) => bail!("the username {name} is taken"),
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::Rm { username } => {
            let name = UserName::parse(&username)?;
            if store.delete_user(&name).await? {
                Ok(format!("deleted user {name} and their functions"))
            } else {
                bail!("no user {name}")
            }
        }
        UserCommand::Limits {
            username,
            functions,
            versions,
            artifact_bytes,
            rps,
            instances,
            clear,
        } => {
            let name = UserName::parse(&username)?;
            let user = store
                .find_user(name.as_str())
                .await?
                .with_context(|| format!("no user {name}"))?;
            let mut limits = if clear {
                UserLimits::default()
            } else {
                store.user_limits(user.id).await?
            };
            apply(&mut limits.max_functions, functions);
            apply(&mut limits.max_versions, versions);
            apply(&mut limits.max_artifact_bytes, artifact_bytes);
            apply(&mut limits.rps, rps);
            apply(&mut limits.max_instances, instances);
            store.set_user_limits(&name, &limits).await?;
            let effective = store.user_quotas(user.id).await?;
            Ok(describe(
                &name,
                &store.user_limits(user.id).await?,
                &effective,
            ))
        }
        UserCommand::RevokeTokens { username } => {
            let name = UserName::parse(&username)?;
            if store.revoke_tokens(&name).await? {
                Ok(format!("revoked every token of {name}"))
            } else {
                bail!("no user {name}")
            }
        }
    }
}
