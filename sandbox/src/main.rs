//! `skiff-sandbox [POLICY…] -- PROGRAM [ARGS…]`: applies the policy to itself,
//! then `exec`s the program (which inherits every layer). On any failure it
//! prints one line and exits 125, so the program never runs half-confined.
//!
//! `skiff-sandbox --self-test [--uid N --gid N]` applies every layer to itself,
//! tries to get past each one, and prints a JSON `HostReport`.

#[cfg(target_os = "linux")]
mod self_test;

use std::ffi::OsString;
use std::process::ExitCode;

const EXIT_SANDBOX: u8 = 125;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--self-test") {
        #[cfg(target_os = "linux")]
        return self_test::run(&args[1..]);
        #[cfg(not(target_os = "linux"))]
        {
            println!("{}", serde_json::json!({"layers": []}));
            return ExitCode::SUCCESS;
        }
    }
    #[cfg(target_os = "linux")]
    if args
        .first()
        .is_some_and(|a| a == skiff_sandbox::enforce::forward::FORWARDER_ARG)
    {
        return skiff_sandbox::enforce::forward::run_forwarder(&args[1..]);
    }
    launch(&args)
}

#[cfg(target_os = "linux")]
fn launch(args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;

    let (policy, command) = match skiff_sandbox::Policy::parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("skiff-sandbox: {e}");
            return ExitCode::from(EXIT_SANDBOX);
        }
    };
    if let Err(e) = skiff_sandbox::enforce::apply(&policy) {
        eprintln!("skiff-sandbox: {e}");
        return ExitCode::from(EXIT_SANDBOX);
    }
    let Some((program, rest)) = command.split_first() else {
        return ExitCode::from(EXIT_SANDBOX);
    };
    // Only returns on failure.
    let e = std::process::Command::new(program).args(rest).exec();
    eprintln!(
        "skiff-sandbox: cannot run {}: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

#[cfg(not(target_os = "linux"))]
fn launch(_args: &[OsString]) -> ExitCode {
    eprintln!("skiff-sandbox: only Linux is supported");
    ExitCode::from(EXIT_SANDBOX)
}
