//! `skiff-manager user add|rm|revoke-tokens`: account administration from the
//! shell, for servers where signup is closed.

use std::io::BufRead;

use anyhow::{Context, bail};
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
