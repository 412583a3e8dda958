//! `skiff-manager secrets rotate-key`: re-seals every function secret under a
//! new key, in one transaction (a failure changes nothing). Neither key is
//! ever printed: only their fingerprints.

use std::path::PathBuf;

use anyhow::{Context, bail};
use skiff_core::secret::Secret;
use skiff_core::secrets::SecretsKey;
use skiff_core::store::Store;

/// Where the new key comes from when `--new-key-file` is not given.
pub const NEW_KEY_ENV: &str = "SKIFF_NEW_SECRETS_KEY";

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every function secret under a new key. The old key is
    /// SKIFF_SECRETS_KEY; the new one is read from --new-key-file, else from
    /// the SKIFF_NEW_SECRETS_KEY variable (never from a flag: it would show in `ps`).
    RotateKey {
        /// A file holding the new key (64 hex digits or base64 of 32 bytes)
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
    },
}

fn new_key(file: Option<&PathBuf>) -> anyhow::Result<SecretsKey> {
    let text = match file {
        Some(path) => Secret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the new key from {}", path.display()))?,
        ),
        None => match std::env::var(NEW_KEY_ENV) {
            Ok(v) => Secret::new(v),
            Err(_) => bail!("give the new key with --new-key-file PATH or in {NEW_KEY_ENV}"),
        },
    };
    SecretsKey::parse(text.expose()).map_err(|e| anyhow::anyhow!("the new key: {e}"))
}

/// Runs the command; the old key is SKIFF_SECRETS_KEY (`old`).
pub async fn run(
    store: &Store,
    old: Option<&Secret>,
    cmd: SecretsCommand,
) -> anyhow::Result<String> {
    match cmd {
        SecretsCommand::RotateKey { new_key_file } => {
            let old = old.context("SKIFF_SECRETS_KEY (the current key) is required")?;
            let old = SecretsKey::parse(old.expose())
                .map_err(|e| anyhow::anyhow!("the current key: {e}"))?;
            let new = new_key(new_key_file.as_ref())?;
            if old.fingerprint() == new.fingerprint() {
                bail!("the new key is the current key; make one with `openssl rand -hex 32`");
            }
            let count = store.rotate_secrets_key(&old, &new).await?;
            Ok(format!(
                "re-sealed {count} secret(s) under the new key (fingerprint {new_fp}; the old one \
                 was {old_fp}).\nRestart every skiff-manager and skiff-router with \
                 SKIFF_SECRETS_KEY set to the new key: the old key is refused from now on.",
                new_fp = new.fingerprint(),
                old_fp = old.fingerprint(),
            ))
        }
    }
}
