//! Argon2id password hashing, always on the blocking pool so a login never stalls
//! the async workers. Verifying against an unknown user still runs one full
//! verification (against a dummy hash), so response time does not reveal which
//! usernames exist.
//!
//! Each hash needs 19 MiB of working memory. At most one hash per CPU (up to
//! [`MAX_AT_ONCE`]) runs at a time, the rest wait their turn, and the working
//! memory is kept and reused: a burst of logins from many addresses cannot
//! make the manager allocate 19 MiB per blocking thread. Reusing it also keeps
//! glibc's malloc from raising its mmap threshold to 19 MiB after the first
//! hash is freed, after which every freed block below that size stayed in a
//! thread's arena (the soak test's `skiff dev` held 126 MB of anonymous memory
//! for 5 MB of live data).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, anyhow};
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::password_hash::try_generate_salt;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

pub const MIN_PASSWORD_LEN: usize = 8;
/// Longer inputs are refused before hashing: argon2 cost grows with input size.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Hashes computed at once, at most (fewer on a machine with fewer CPUs).
pub const MAX_AT_ONCE: usize = 4;

pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("the password must be at least {MIN_PASSWORD_LEN} characters long"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "invalid_password",
            format!("the password must be at most {MAX_PASSWORD_LEN} bytes long"),
        ));
    }
    Ok(())
}

/// The one gate on password hashing (every caller: logins, registrations,
/// the `user` command) and the working memory of the hashes in progress and
/// of those done.
struct Workspace {
    turns: Semaphore,
    size: usize,
    spare: Mutex<Vec<Vec<Block>>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

fn workspace() -> &'static Workspace {
    static WORK: OnceLock<Workspace> = OnceLock::new();
    WORK.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let size = cpus.clamp(1, MAX_AT_ONCE);
        Workspace {
            turns: Semaphore::new(size),
            size,
            spare: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    })
}

/// How many hashes may run at once, and the most that ever did.
pub fn turns_and_peak() -> (usize, usize) {
    let work = workspace();
    (work.size, work.peak.load(Ordering::Relaxed))
}

/// Runs `f` on the blocking pool with working memory for a hash with the
/// default parameters, once a turn is free.
async fn with_memory<T: Send + 'static>(
    f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let work = workspace();
    let turn = work
        .turns
        .acquire()
        .await
        .context("password hashing turn")?;
    // The turn goes with the work: a caller that stops waiting (a client
    // that hung up) cannot free it while the hash still runs.
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let now = work.running.fetch_add(1, Ordering::Relaxed) + 1;
        work.peak.fetch_max(now, Ordering::Relaxed);
        let taken = work.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut memory =
            taken.unwrap_or_else(|| vec![Block::default(); Params::default().block_count()]);
        let out = f(&mut memory);
        work.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(memory);
        work.running.fetch_sub(1, Ordering::Relaxed);
        out
    })
    .await
    .context("password hashing task")
}

/// Argon2id with the default parameters and a fresh salt, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
fn hash_with(memory: &mut [Block], password: &str) -> anyhow::Result<String> {
    let salt = try_generate_salt().map_err(|e| anyhow!("random salt: {e}"))?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
        .map_err(|e| anyhow!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow!("argon2 params: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow!("argon2 salt: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2 output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` gives `hash` (any Argon2 PHC string). Compared in
/// constant time (`Output`'s equality).
fn verify_with(memory: &mut [Block], password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    // A hash made with more memory than ours (not one this manager wrote)
    // gets its own.
    let done = if params.block_count() <= memory.len() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
    } else {
        argon.hash_password_into(password.as_bytes(), salt, &mut out)
    };
    done.is_ok() && Output::new(&out).is_ok_and(|o| &o == expected)
}

fn dummy_hash(memory: &mut [Block]) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_with(memory, "skiff-dummy-password").unwrap_or_default())
}

pub async fn hash(password: String) -> Result<String, ApiError> {
    with_memory(move |m| hash_with(m, &password))
        .await
        .and_then(|r| r)
        .map_err(ApiError::Internal)
}

/// True when `password` matches `hash`. With no hash (unknown user), spends the
/// same work on a dummy and returns false.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    with_memory(move |m| match hash {
        Some(h) => verify_with(m, &password, &h),
        None => {
            let dummy = dummy_hash(m);
            let _ = verify_with(m, &password, dummy);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// Computes the dummy hash ahead of the first login.
pub async fn warm_up() {
    let _ = with_memory(|m| {
        dummy_hash(m);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse!".into(), Some(h)).await);
        assert!(!verify("anything".into(), None).await);
    }

    /// Hashes written before the working memory was reused (by the argon2
    /// crate's own hasher) still verify, and ours verify with it.
    #[tokio::test]
    async fn hashes_are_interchangeable_with_the_argon2_crates() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify("correct horse".into(), Some(theirs.clone())).await);
        assert!(!verify("correct hors".into(), Some(theirs)).await);
        let ours = hash("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct horsE", &parsed)
                .is_err()
        );
        // Other Argon2 variants and parameters verify by what the string says.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(8 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"pw for argon2i")
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$"));
        assert!(verify("pw for argon2i".into(), Some(argon2i.clone())).await);
        assert!(!verify("pw for argon2d".into(), Some(argon2i)).await);
        // Garbage is a mismatch, not a panic.
        for bad in [
            "",
            "$argon2id$",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            "plain",
        ] {
            assert!(
                !verify("correct horse".into(), Some(bad.into())).await,
                "{bad}"
            );
        }
    }

    /// Many logins at once share a few working memories.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_hashes_take_turns_and_reuse_their_memory() {
        let all = (0..12).map(|i| tokio::spawn(hash(format!("password {i}"))));
        for h in futures_util::future::join_all(all).await {
            assert!(h.unwrap().unwrap().starts_with("$argon2id$"));
        }
        let kept = workspace().spare.lock().unwrap().len();
        assert!(
            (1..=MAX_AT_ONCE).contains(&kept),
            "{kept} working memories kept"
        );
    }
}
