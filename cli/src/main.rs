//! `skiff`: the command-line client of a Skiff server, and `skiff dev`.

mod api;
mod config_file;
mod dev;
mod dev_metrics;
mod pack;
mod stats;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use api::Api;

#[derive(Parser)]
#[command(
    version,
    about = "Skiff: deploy TypeScript functions and call them over HTTP"
)]
struct Cli {
    /// Manager API URL [default: the saved one, else http://127.0.0.1:8080]
    #[arg(long, env = "SKIFF_SERVER", global = true)]
    server: Option<String>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account
    Register(Credentials),
    /// Log in and save the token
    Login(Credentials),
    /// Upload a TypeScript file, or a directory, as a function (a new version if it exists)
    #[command(
        long_about = "Upload a TypeScript file, or a directory, as a function (a new version if it exists).\n\n\
A directory is sent as a tar.gz of its regular files. Left out: .git/, node_modules/, .skiff/, \
every dotfile and dot-directory (.env included), and links (one pointing outside the directory \
stops the deploy). The entry module is --entry, else the first of main.ts, index.ts, mod.ts, \
main.js, index.js at the directory's top."
    )]
    Deploy {
        /// A module file, or a directory holding the function's modules
        #[arg(value_name = "FILE|DIR")]
        path: PathBuf,
        /// Function name [default: the file name without extension, or the directory's name]
        #[arg(long)]
        name: Option<String>,
        /// The entry module of a directory, relative to it (e.g. src/server.ts)
        #[arg(long, value_name = "FILE")]
        entry: Option<String>,
        /// Refuse the deploy on type errors instead of warning
        #[arg(long)]
        strict: bool,
    },
    /// List your functions
    Ls,
    /// Show one function and its versions
    Info { name: String },
    /// Show a function's recent output
    Logs {
        name: String,
        /// Only the last N lines
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Delete a function
    Rm { name: String },
    /// Call a function through the router and print its answer
    Invoke {
        name: String,
        /// Path under the function, e.g. /items?id=3
        path: Option<String>,
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// Request body; @FILE reads a file, @- standard input
        #[arg(short = 'd', long)]
        data: Option<String>,
    },
    /// List a function's kept versions (* marks the live one)
    Versions { name: String },
    /// Make an earlier version live again (default: the one before the live one)
    Rollback {
        name: String,
        /// The version to make live
        version: Option<i64>,
    },
    /// A function's env vars: `env ls NAME`, `env set K=V… NAME`, `env unset K… NAME`
    #[command(subcommand)]
    Env(EnvCommand),
    /// A function's secrets (values are write-only): `secret set NAME K` reads the value from stdin
    #[command(subcommand)]
    Secret(SecretCommand),
    /// A function's calls, errors, cold starts and latency over a window, with a chart
    Stats {
        name: String,
        /// How far back: 15m, 1h, 24h, 7d…
        #[arg(long, default_value = "1h")]
        window: String,
    },
    /// Run manager + router locally on SQLite with the process runtime
    Dev(Box<dev::DevArgs>),
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Show the env vars, secret names and settings of a function's live version
    Ls { name: String },
    /// Set env vars (a new version): skiff env set K=V [K=V…] NAME
    Set {
        #[arg(value_name = "K=V… NAME", num_args = 2.., required = true)]
        args: Vec<String>,
    },
    /// Unset env vars (a new version): skiff env unset K [K…] NAME
    Unset {
        #[arg(value_name = "K… NAME", num_args = 2.., required = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret (a new version); the value is read from stdin, never echoed.
    /// One trailing newline is dropped.
    Set { name: String, key: String },
    /// Delete a secret (a new version)
    Rm { name: String, key: String },
    /// List the names of a function's secrets
    Ls { name: String },
}

#[derive(clap::Args)]
struct Credentials {
    #[arg(long)]
    username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
}

fn server(cli: &Cli, saved: &config_file::Saved) -> String {
    cli.server
        .clone()
        .or_else(|| saved.server.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}: ");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim().to_owned())
}

fn credentials(c: &Credentials) -> anyhow::Result<(String, String)> {
    let username = match &c.username {
        Some(u) => u.clone(),
        None => prompt("Username")?,
    };
    let password = if c.password_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.lines().next().unwrap_or_default().to_owned()
    } else {
        rpassword::prompt_password("Password: ")?
    };
    Ok((username, password))
}

fn print(json_mode: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_mode {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `skiff deploy FILE|DIR`.
fn deploy(
    api: &Api,
    json_mode: bool,
    path: &std::path::Path,
    name: Option<&str>,
    entry: Option<&str>,
    strict: bool,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let is_dir = meta.is_dir();
    if entry.is_some() && !is_dir {
        bail!("--entry is for directories; {} is a file", path.display());
    }
    let name = match name {
        Some(n) => n.to_owned(),
        None => {
            // `skiff deploy .` is named after the directory itself.
            let base = if is_dir {
                std::fs::canonicalize(path)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_owned()))
            } else {
                path.file_stem().map(|n| n.to_owned())
            };
            base.and_then(|b| b.to_str().and_then(pack::function_name))
                .ok_or_else(|| {
                    anyhow!(
                        "cannot take a function name from {}; use --name",
                        path.display()
                    )
                })?
        }
    };
    let (content_type, body) = if is_dir {
        let top = pack::function_name(&name).unwrap_or_else(|| "fn".into());
        let packed = pack::pack_dir(path, &top)?;
        for notice in &packed.notices {
            eprintln!("{notice}");
        }
        if let Some(entry) = entry {
            // Spelt as the server reads it: `./a//b.ts` is `a/b.ts`.
            let wanted = entry
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect::<Vec<_>>()
                .join("/");
            if !packed.files.contains(&wanted) {
                bail!(
                    "--entry {entry}: no such file is uploaded from {}",
                    path.display()
                );
            }
        }
        ("application/gzip", packed.body)
    } else {
        let source = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        ("application/typescript", source)
    };
    let mut query = format!("/func?name={}", pack::query_value(&name));
    // A single file is sent under its own name when it is a plain module
    // name: the server then knows a `.js` file is JavaScript.
    let file_name = (!is_dir)
        .then(|| path.file_name().and_then(|n| n.to_str()))
        .flatten()
        .filter(|n| single_module_name(n));
    if let Some(entry) = entry.or(file_name) {
        query.push_str(&format!("&entry={}", pack::query_value(entry)));
    }
    if strict {
        query.push_str("&check=strict");
    }
    let a = api.ok("POST", &query, Some((content_type, body)), true)?;
    let v = a.json()?;
    let verb = if a.status == 201 {
        "created"
    } else {
        "updated"
    };
    print(json_mode, &v, || {
        format!(
            "{verb} {} version {}\n{}",
            s(&v["name"]),
            s(&v["version"]),
            s(&v["url"])
        )
    });
    // On stderr, so stdout stays the success line and URL scripts read.
    for warning in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", s(warning));
    }
    if !json_mode && let Some(resolved) = v["resolved"].as_object() {
        for (bare, specifier) in resolved {
            eprintln!("resolved {bare} → {}", s(specifier));
        }
    }
    Ok(())
}

/// Whether the server takes `name` as a single module's file name.
fn single_module_name(name: &str) -> bool {
    const EXTENSIONS: [&str; 6] = [".ts", ".mts", ".tsx", ".js", ".mjs", ".jsx"];
    !name.starts_with('.')
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && EXTENSIONS.iter().any(|x| name.ends_with(x))
}

/// `args` of `env set|unset`: everything but the last, and the last (NAME).
fn split_name(args: &[String]) -> anyhow::Result<(&[String], &str)> {
    match args.split_last() {
        Some((name, rest)) if !rest.is_empty() => Ok((rest, name.as_str())),
        _ => bail!("give at least one variable and then the function's name"),
    }
}

/// A path segment for a function or variable name the user typed: names are
/// `[a-z0-9-]` / `[A-Z0-9_]`; anything else is escaped so the server, not the
/// URL, refuses it.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of a secret from stdin: hidden prompt on a terminal, else all of
/// stdin with one trailing newline dropped. Never empty.
fn secret_value(key: &str) -> anyhow::Result<String> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Value of {key} (not shown): "))?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the value from stdin (it must be UTF-8 text)")?;
        let trimmed = s
            .strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(&s);
        trimmed.to_owned()
    };
    if value.is_empty() {
        bail!(
            "the value of {key} is empty: pipe it in, e.g. `printf %s \"$VALUE\" | skiff secret set NAME {key}`"
        );
    }
    Ok(value)
}

/// Prints a configuration change's answer.
fn changed(j: bool, v: &Value, what: &str) {
    print(j, v, || {
        format!(
            "{what}: {} is now at version {}",
            s(&v["name"]),
            s(&v["version"])
        )
    });
}

fn run_env(api: &Api, j: bool, cmd: &EnvCommand) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Ls { name } => {
            let v = api
                .ok("GET", &format!("/func/{}/config", seg(name)), None, true)?
                .json()?;
            print(j, &v, || {
                let mut out = format!("{} version {}", name, s(&v["version"]));
                let env = v["env"].as_object().cloned().unwrap_or_default();
                if env.is_empty() {
                    out.push_str("\nenv:      (none)");
                } else {
                    out.push_str("\nenv:");
                    for (k, val) in env {
                        out.push_str(&format!("\n  {k}={}", val.as_str().unwrap_or_default()));
                    }
                }
                let secrets: Vec<String> = v["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect();
                out.push_str(&format!(
                    "\nsecrets:  {}",
                    if secrets.is_empty() {
                        "(none)".to_owned()
                    } else {
                        secrets.join(", ")
                    }
                ));
                out.push_str("\nsettings:");
                let overrides = v["overrides"].as_object().cloned().unwrap_or_default();
                for k in [
                    "memory_mb",
                    "timeout_secs",
                    "concurrency",
                    "min_instances",
                    "max_instances",
                    "idle_timeout_secs",
                ] {
                    let origin = if overrides.contains_key(k) {
                        ""
                    } else {
                        " (default)"
                    };
                    out.push_str(&format!("\n  {k:<18} {}{origin}", s(&v[k])));
                }
                out
            });
        }
        EnvCommand::Set { args } => {
            let (pairs, name) = split_name(args)?;
            let mut env = serde_json::Map::new();
            for p in pairs {
                let (k, val) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow!("{p:?} is not K=V"))?;
                env.insert(k.to_owned(), Value::String(val.to_owned()));
            }
            let body = json!({ "env": env });
            let v = api
                .ok(
                    "PATCH",
                    &format!("/func/{}/config", seg(name)),
                    Some(("application/json", body.to_string().into_bytes())),
                    true,
                )?
                .json()?;
            changed(j, &v, "env set");
        }
        EnvCommand::Unset { args } => {
            let (keys, name) = split_name(args)?;
            let env: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.clone(), Value::Null)).collect();
            let body = json!({ "env": env });
            let v = api
                .ok(
                    "PATCH",
                    &format!("/func/{}/config", seg(name)),
                    Some(("application/json", body.to_string().into_bytes())),
                    true,
                )?
                .json()?;
            changed(j, &v, "env unset");
        }
    }
    Ok(())
}

fn run_secret(api: &Api, j: bool, cmd: &SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set { name, key } => {
            let value = secret_value(key)?;
            let v = api
                .ok(
                    "PUT",
                    &format!("/func/{}/secrets/{}", seg(name), seg(key)),
                    Some(("text/plain; charset=utf-8", value.into_bytes())),
                    true,
                )?
                .json()?;
            changed(j, &v, &format!("secret {key} set"));
        }
        SecretCommand::Rm { name, key } => {
            let v = api
                .ok(
                    "DELETE",
                    &format!("/func/{}/secrets/{}", seg(name), seg(key)),
                    None,
                    true,
                )?
                .json()?;
            changed(j, &v, &format!("secret {key} deleted"));
        }
        SecretCommand::Ls { name } => {
            let v = api
                .ok("GET", &format!("/func/{}/config", seg(name)), None, true)?
                .json()?;
            let names = json!({"name": name, "secrets": v["secrets"]});
            print(j, &names, || {
                let list: Vec<String> = v["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect();
                if list.is_empty() {
                    format!("{name} has no secrets: `skiff secret set {name} KEY` sets one")
                } else {
                    list.join("\n")
                }
            });
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut saved = config_file::load()?;
    let server = server(&cli, &saved);
    let api = Api::new(&server, saved.token.clone());
    let j = cli.json;
    match &cli.command {
        Command::Register(c) => {
            let (username, password) = credentials(c)?;
            let body = json!({"username": username, "password": password});
            let a = api.ok(
                "POST",
                "/register",
                Some(("application/json", body.to_string().into_bytes())),
                false,
            )?;
            print(j, &a.json()?, || {
                format!("registered {username}; now run `skiff login`")
            });
        }
        Command::Login(c) => {
            let (username, password) = credentials(c)?;
            let body = json!({"username": username, "password": password});
            let a = api.ok(
                "POST",
                "/login",
                Some(("application/json", body.to_string().into_bytes())),
                false,
            )?;
            let v = a.json()?;
            saved.server = Some(server.clone());
            saved.username = Some(username.clone());
            saved.token = Some(
                v["token"]
                    .as_str()
                    .ok_or_else(|| anyhow!("the server sent no token"))?
                    .to_owned(),
            );
            let path = config_file::save(&saved)?;
            let out =
                json!({"username": username, "server": server, "expires_at": v["expires_at"]});
            print(j, &out, || {
                format!(
                    "logged in as {username} (token saved in {}, valid until {})",
                    path.display(),
                    s(&v["expires_at"])
                )
            });
        }
        Command::Deploy {
            path,
            name,
            entry,
            strict,
        } => deploy(&api, j, path, name.as_deref(), entry.as_deref(), *strict)?,
        Command::Ls => {
            let v = api.ok("GET", "/func", None, true)?.json()?;
            print(j, &v, || {
                let rows = v["functions"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return "no functions yet: `skiff deploy FILE.ts`".into();
                }
                let mut out = format!("{:<40} {:>7}  {:<24}  URL", "NAME", "VERSION", "UPDATED");
                for f in rows {
                    out.push_str(&format!(
                        "\n{:<40} {:>7}  {:<24}  {}",
                        s(&f["name"]),
                        s(&f["version"]),
                        s(&f["updated_at"]),
                        s(&f["url"])
                    ));
                }
                out
            });
        }
        Command::Info { name } => {
            let v = api
                .ok("GET", &format!("/func/{name}"), None, true)?
                .json()?;
            print(j, &v, || {
                let mut out = format!(
                    "name:     {}\nversion:  {} (latest {})\nurl:      {}\ncreated:  {}\nupdated:  {}\nsha256:   {}\nsize:     {} bytes",
                    s(&v["name"]),
                    s(&v["version"]),
                    s(&v["latest_version"]),
                    s(&v["url"]),
                    s(&v["created_at"]),
                    s(&v["updated_at"]),
                    s(&v["sha256"]),
                    s(&v["size"])
                );
                if let Some(rt) = v.get("runtime") {
                    out.push_str(&format!("\nruntime:  {rt}"));
                }
                out.push_str("\nversions:");
                for ver in v["versions"].as_array().cloned().unwrap_or_default() {
                    let live = if ver["live"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    };
                    out.push_str(&format!(
                        "\n{live} v{:<5} {}  {} bytes  {}",
                        s(&ver["version"]),
                        s(&ver["created_at"]),
                        s(&ver["size"]),
                        s(&ver["sha256"])
                    ));
                }
                out
            });
        }
        Command::Logs { name, tail } => {
            let a = api.ok("GET", &format!("/func/{name}/logs?tail={tail}"), None, true)?;
            let text = a.text();
            print(
                j,
                &json!({"name": name, "lines": text.lines().collect::<Vec<_>>()}),
                || text.trim_end().to_owned(),
            );
        }
        Command::Rm { name } => {
            api.ok("DELETE", &format!("/func/{name}"), None, true)?;
            print(j, &json!({"deleted": name}), || format!("deleted {name}"));
        }
        Command::Invoke {
            name,
            path,
            method,
            data,
        } => {
            let info = api
                .ok("GET", &format!("/func/{name}"), None, true)?
                .json()?;
            let base = info["url"]
                .as_str()
                .ok_or_else(|| anyhow!("the server sent no url"))?;
            let path = path.clone().unwrap_or_default();
            let path = if path.is_empty() || path.starts_with('/') || path.starts_with('?') {
                path
            } else {
                format!("/{path}")
            };
            let body = match data.as_deref() {
                None => None,
                Some("@-") => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b)?;
                    Some(b)
                }
                Some(d) if d.starts_with('@') => {
                    Some(std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?)
                }
                Some(d) => Some(d.as_bytes().to_vec()),
            };
            let router = Api::new(base, None);
            let a = router.call(
                &method.to_uppercase(),
                &path,
                body.map(|b| ("application/octet-stream", b)),
                false,
            )?;
            if j {
                print(
                    true,
                    &json!({"status": a.status, "body": a.text()}),
                    String::new,
                );
            } else {
                use std::io::Write;
                std::io::stdout().write_all(&a.body)?;
                if !(200..400).contains(&a.status) {
                    eprintln!("\n(HTTP {})", a.status);
                }
            }
            if !(200..400).contains(&a.status) {
                bail!("the function answered HTTP {}", a.status);
            }
        }
        Command::Versions { name } => {
            let v = api
                .ok("GET", &format!("/func/{}", seg(name)), None, true)?
                .json()?;
            print(
                j,
                &json!({"name": v["name"], "versions": v["versions"]}),
                || {
                    let mut out = format!("{:<3}{:>7}  {:<24}  SHA256", "", "VERSION", "CREATED");
                    for ver in v["versions"].as_array().cloned().unwrap_or_default() {
                        let live = if ver["live"].as_bool() == Some(true) {
                            "*"
                        } else {
                            ""
                        };
                        let sha = s(&ver["sha256"]);
                        out.push_str(&format!(
                            "\n{:<3}{:>7}  {:<24}  {}",
                            live,
                            s(&ver["version"]),
                            s(&ver["created_at"]),
                            sha.get(..12).unwrap_or(&sha)
                        ));
                    }
                    out
                },
            );
        }
        Command::Rollback { name, version } => {
            let query = version.map(|n| format!("?version={n}")).unwrap_or_default();
            let v = api
                .ok(
                    "POST",
                    &format!("/func/{}/rollback{query}", seg(name)),
                    None,
                    true,
                )?
                .json()?;
            changed(j, &v, "rolled back");
        }
        Command::Stats { name, window } => {
            let v = api
                .ok(
                    "GET",
                    &format!("/func/{}/stats?window={}", seg(name), seg(window)),
                    None,
                    true,
                )?
                .json()?;
            print(j, &v, || stats::render(name, window, &v));
        }
        Command::Env(cmd) => run_env(&api, j, cmd)?,
        Command::Secret(cmd) => run_secret(&api, j, cmd)?,
        Command::Dev(args) => dev::run((**args).clone())?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Dev(_)) {
        // The manager and the router run in this process: see the module.
        skiff_core::memory::bound_malloc_arenas();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            ExitCode::FAILURE
        }
    }
}
