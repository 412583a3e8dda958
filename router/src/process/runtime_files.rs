//! The client runtime's files shared by every instance: `main.ts` at one fixed
//! path, and a Deno cache dir that already holds its compiled code, copied into
//! each new function version's own cache dir.
//!
//! Why: a start with an empty Deno cache spends most of its extra time compiling
//! `main.ts` without V8's code cache; Deno keys that cache by the module's path,
//! so one path for every instance lets a version's first start reuse it
//! (measured by hand, n=20: spawn → first answer 52.4 → 42.5 ms, CPU 46 → 36 ms).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::command::{MAIN_TS, Placeholders, clean_env, runtime_args};

const WARM_FN: &str = "export default () => new Response(\"warm\");\n";

#[derive(Clone)]
pub struct RuntimeFiles {
    /// `<data>/runtime/main.ts`, readable by every function identity.
    pub main: PathBuf,
    /// A Deno cache dir seeded by one run of the runtime; `None` when that failed.
    template: Option<PathBuf>,
}

impl RuntimeFiles {
    /// Writes `main.ts` (atomically, so running instances never see half a file).
    pub fn install(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("runtime");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let main = dir.join("main.ts");
        let tmp = dir.join(".main.ts.tmp");
        std::fs::write(&tmp, MAIN_TS)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &main)?;
        Ok(Self {
            main,
            template: None,
        })
    }

    /// Runs the runtime once, as the router's own user, on a module of ours with
    /// the usual flags, and keeps the Deno cache it wrote as the template. On
    /// any failure instances simply start with empty caches (logged).
    pub async fn warm(&mut self, deno: &Path, heap_mb: u32, deny_net: &str) {
        let Some(dir) = self.main.parent().map(Path::to_path_buf) else {
            return;
        };
        match warm_template(&dir, &self.main, deno, heap_mb, deny_net).await {
            Ok(t) => self.template = Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no Deno cache template: first starts compile the runtime")
            }
        }
    }

    /// Fills a version's new, empty cache dir from the template, owned by `ids`.
    pub fn seed(&self, into: &Path, ids: Option<(u32, u32)>) {
        if let Some(t) = &self.template
            && let Err(e) = copy_tree(t, into, ids)
        {
            tracing::debug!(error = %e, "seeding a Deno cache dir failed; it starts empty");
        }
    }
}

async fn warm_template(
    dir: &Path,
    main: &Path,
    deno: &Path,
    heap_mb: u32,
    deny_net: &str,
) -> anyhow::Result<PathBuf> {
    let work = dir.join("warm");
    let template = dir.join("deno-template");
    for d in [&work, &template] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::write(work.join("fn.ts"), WARM_FN)?;
    let socket = work.join("s");
    let (w, m) = (work.display().to_string(), main.display().to_string());
    let args = runtime_args(
        &Placeholders {
            code_dir: &w,
            write_dirs: &w,
            heap_mb,
            deny_net,
            main: &m,
            env_names: &[],
        },
        &work.join("fn.ts"),
        &socket,
        None,
        false,
    );
    let mut cmd = tokio::process::Command::new(deno);
    cmd.args(&args);
    clean_env(&mut cmd, &template, &work);
    let mut child = cmd
        .current_dir(&work)
        // Closing it ends the runtime cleanly (Deno closes its caches).
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    // `--env-file -`: an empty env, as one line.
    if let Some(stdin) = child.stdin.as_mut() {
        stdin.write_all(b"{}\n").await?;
    }
    // One request, so what serving compiles is cached too.
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(mut s) = tokio::net::UnixStream::connect(&socket).await {
                s.write_all(b"GET / HTTP/1.1\r\nHost: warm\r\nConnection: close\r\n\r\n")
                    .await?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await?;
                return Ok::<bool, std::io::Error>(buf.starts_with(b"HTTP/1.1 200"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(child.stdin.take());
    let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    if exited.is_err() {
        let _ = child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&work);
    match answered {
        Ok(Ok(true)) => Ok(template),
        Ok(Ok(false)) => anyhow::bail!("the warm-up instance did not answer 200"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("the warm-up instance did not answer within 10 s"),
    }
}

fn copy_tree(from: &Path, to: &Path, ids: Option<(u32, u32)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
            copy_tree(&entry.path(), &target, ids)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        } else {
            continue;
        }
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
