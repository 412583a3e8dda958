//! The Deno command line of an instance, from `client-runtime/deno-flags.txt` —
//! the one file that defines it, also read by the client-runtime image's run.sh.

use std::path::Path;

const FLAGS: &str = include_str!("../../../client-runtime/deno-flags.txt");
/// The runtime program itself, written next to each function's code.
pub const MAIN_TS: &str = include_str!("../../../client-runtime/main.ts");

pub struct Placeholders<'a> {
    pub code_dir: &'a str,
    /// Comma list: the instance dir, and `/tmp` when it is private.
    pub write_dirs: &'a str,
    pub heap_mb: u32,
    pub deny_net: &'a str,
    pub main: &'a str,
    /// The function's env and secret names (granted exactly; none: --deny-env).
    pub env_names: &'a [String],
}

/// The arguments after `deno`, with placeholders filled in.
pub fn deno_args(p: &Placeholders<'_>) -> Vec<String> {
    let heap = p.heap_mb.to_string();
    let env = if p.env_names.is_empty() {
        "--deny-env".to_owned()
    } else {
        format!("--allow-env={}", p.env_names.join(","))
    };
    FLAGS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("{code_dir}", p.code_dir)
                .replace("{write_dirs}", p.write_dirs)
                .replace("{heap_mb}", &heap)
                .replace("{deny_net}", p.deny_net)
                .replace("{main}", p.main)
                .replace("{env}", &env)
                // The values come on stdin (`--env-file -`), never a file.
                .replace("{env_file}", "")
        })
        .collect()
}

/// The whole command line after `deno` for one runtime process: the flags above,
/// then the runtime's own arguments (module, Unix socket, optional health socket).
///
/// Stdin carries, in order: ONE JSON line, the function's env and secrets
/// (`--env-file -`; JSON escapes every newline inside values, so the first
/// `\n` ends it); then, with `wait_for_go`, one byte once the process is in
/// its cgroup (the module is imported only after it); then nothing, held open
/// for the instance's life: EOF ends the instance.
pub fn runtime_args(
    p: &Placeholders<'_>,
    module: &Path,
    socket: &Path,
    health_socket: Option<&Path>,
    wait_for_go: bool,
) -> Vec<String> {
    let mut args = deno_args(p);
    args.extend([
        "--module".to_owned(),
        module.display().to_string(),
        "--listen".to_owned(),
        format!("unix:{}", socket.display()),
    ]);
    if let Some(h) = health_socket {
        args.extend(["--health-socket".to_owned(), h.display().to_string()]);
    }
    args.extend(["--env-file".to_owned(), "-".to_owned()]);
    args.push("--exit-with-parent".to_owned());
    if wait_for_go {
        args.push("--wait-for-go".to_owned());
    }
    args
}

/// Nothing of the router's environment reaches a runtime process: only where
/// Deno keeps its cache, where temporary files go (`Deno.makeTempFile`, not
/// readable by the function itself), and quiet output.
pub fn clean_env(cmd: &mut tokio::process::Command, deno_dir: &Path, tmp_dir: &Path) {
    cmd.env_clear()
        .env("DENO_DIR", deno_dir)
        .env("TMPDIR", tmp_dir)
        .env("NO_COLOR", "1")
        .env("DENO_NO_UPDATE_CHECK", "1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_narrow_and_fully_substituted() {
        let args = deno_args(&Placeholders {
            code_dir: "/c",
            write_dirs: "/t,/tmp",
            heap_mb: 64,
            deny_net: "127.0.0.0/8",
            main: "/c/main.ts",
            env_names: &[],
        });
        assert_eq!(args.first().map(String::as_str), Some("run"));
        for must in [
            "--no-prompt",
            "--no-remote",
            "--no-npm",
            "--allow-read=/c,/t,/tmp",
            "--allow-write=/t,/tmp",
            "--deny-net=127.0.0.0/8",
            "--deny-env",
            "--deny-run",
            "--deny-ffi",
            "--deny-sys",
            "--v8-flags=--max-old-space-size=64",
        ] {
            assert!(args.iter().any(|a| a == must), "missing {must}: {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("/c/main.ts"));
        assert!(args.iter().all(|a| !a.contains('{')), "{args:?}");
        assert!(
            !args
                .iter()
                .any(|a| a == "--allow-all" || a == "-A" || a.starts_with("--allow-env"))
        );
        let names = ["API_URL".to_owned(), "TOKEN".to_owned()];
        let args = deno_args(&Placeholders {
            code_dir: "/c",
            write_dirs: "/t",
            heap_mb: 64,
            deny_net: "127.0.0.0/8",
            main: "/c/main.ts",
            env_names: &names,
        });
        assert!(args.iter().any(|a| a == "--allow-env=API_URL,TOKEN"));
        assert!(!args.iter().any(|a| a == "--deny-env"));
        assert!(args.iter().any(|a| a == "--allow-read=/c,/t"));
    }
}
