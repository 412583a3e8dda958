//! `--self-test`: this (throw-away) process applies each layer to itself the
//! way a launch would, then tries to get past it. A layer counts as enforced
//! only when the attempt that it should stop is refused — not merely because a
//! system call returned success. Prints a JSON `HostReport` and exits 0.

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::ExitCode;

use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::{
    Gid, Pid, Uid, getpgrp, getpid, getppid, setgroups, setresgid, setresuid, setsid,
};
use skiff_sandbox::Policy;
use skiff_sandbox::enforce::{forward, landlock_rules, namespaces, seccomp};
use skiff_sandbox::report::{HostReport, Layer, names};

struct Report(Vec<Layer>);

impl Report {
    fn push(&mut self, name: &str, enforced: bool, detail: impl Into<String>) {
        self.0.push(Layer {
            name: name.to_owned(),
            enforced,
            detail: detail.into(),
        });
    }
}

fn parse_ids(args: &[OsString]) -> (Option<u32>, Option<u32>) {
    let mut uid = None;
    let mut gid = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok());
        if a == "--uid" {
            uid = v;
        } else if a == "--gid" {
            gid = v;
        }
    }
    (uid, gid.or(uid))
}

/// What an attempt came to, in words, and whether it was refused.
fn refused<T>(r: std::io::Result<T>) -> (bool, String) {
    match r {
        Ok(_) => (false, "NOT refused".into()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (true, format!("refused ({e})"))
        }
        Err(e) => (false, format!("failed for another reason ({e})")),
    }
}

/// `--net-forward`'s first steps inside the empty namespace: `lo` up, a
/// port bound on 127.0.0.1 and reachable there.
fn loopback_in_empty_namespace() -> (bool, String) {
    use std::io::{Read, Write};
    if let Err(e) = forward::loopback_up() {
        return (false, format!("cannot bring lo up: {e}"));
    }
    let tried = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| {
        let mut c = std::net::TcpStream::connect(l.local_addr()?)?;
        let (mut s, _) = l.accept()?;
        c.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(b == *b"x")
    });
    match tried {
        Ok(true) => (
            true,
            "lo up in the empty namespace: one forwarded port for the resolve step".into(),
        ),
        Ok(false) => (false, "loopback garbled a byte".into()),
        Err(e) => (false, format!("loopback unusable: {e}")),
    }
}

pub fn run(args: &[OsString]) -> ExitCode {
    let (uid, gid) = parse_ids(args);
    let mut r = Report(Vec::new());
    let parent = getppid();
    let root = Uid::effective().is_root();

    let session = setsid().is_ok() && getpgrp() == getpid();
    r.push(names::SESSION, session, "own session and process group");

    let limits_ok = setrlimit(Resource::RLIMIT_NOFILE, 256, 256).is_ok()
        && getrlimit(Resource::RLIMIT_NOFILE).is_ok_and(|l| l == (256, 256));
    r.push(
        names::RLIMITS,
        limits_ok,
        "setrlimit (open files, processes, CPU, core)",
    );

    // Namespaces, with a private /tmp, as an instance gets them.
    let ns_policy = Policy {
        namespaces: true,
        private_tmp: Some(1 << 20),
        ..Policy::default()
    };
    let mut private_tmp = false;
    match namespaces::enter(&ns_policy) {
        Ok(e) => {
            let how = if e.user_namespace {
                "private mount and IPC namespaces inside an unprivileged user namespace"
            } else {
                "private mount and IPC namespaces"
            };
            r.push(names::NAMESPACES, true, how);
            private_tmp = statfs("/tmp").is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
                && std::fs::write("/tmp/.skiff-self-test", b"x").is_ok();
            r.push(
                names::PRIVATE_TMP,
                private_tmp,
                if private_tmp {
                    "a private size-capped tmpfs on /tmp"
                } else {
                    "/tmp is not a private tmpfs"
                },
            );
            // The checker's empty network namespace: no interface but lo.
            let no_net = unshare(CloneFlags::CLONE_NEWNET).is_ok()
                && std::fs::read_to_string("/proc/self/net/dev")
                    .is_ok_and(|s| s.lines().skip(2).all(|l| l.trim_start().starts_with("lo:")));
            r.push(
                names::NO_NETWORK,
                no_net,
                "an empty network namespace for the deploy-time checker",
            );
            let (fwd, how) = if no_net {
                loopback_in_empty_namespace()
            } else {
                (false, "needs the empty network namespace".to_owned())
            };
            r.push(names::NET_FORWARD, fwd, how);
        }
        Err(e) => {
            let why = e.to_string();
            r.push(names::NAMESPACES, false, why.clone());
            r.push(
                names::PRIVATE_TMP,
                false,
                format!("needs namespaces: {why}"),
            );
            r.push(names::NO_NETWORK, false, format!("needs namespaces: {why}"));
            r.push(
                names::NET_FORWARD,
                false,
                format!("needs namespaces: {why}"),
            );
        }
    }

    // An abstract socket made before Landlock, i.e. outside the sandbox's
    // domain: standing in for a host service.
    let name = format!("skiff-self-test-{}", std::process::id());
    let listener = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a).map(|l| (l, a)));

    let mut lp = Policy {
        system_files: true,
        landlock: true,
        deny_tcp_bind: true,
        ..Policy::default()
    };
    if private_tmp {
        lp.write.push("/tmp".into());
    }
    match landlock_rules::restrict(&lp) {
        Ok(e) => {
            let status = format!("{:?}", e.status);
            let (files, how) = refused(std::fs::File::open("/etc/passwd"));
            r.push(
                names::LANDLOCK_FILES,
                files,
                format!("{status}; reading /etc/passwd: {how}"),
            );
            let (bind, how) = refused(std::net::TcpListener::bind("0.0.0.0:0"));
            r.push(names::LANDLOCK_TCP_BIND, bind, format!("TCP bind: {how}"));
            let (abs, how) = match &listener {
                Ok((_, addr)) => refused(UnixStream::connect_addr(addr)),
                Err(e) => (false, format!("no abstract socket to try ({e})")),
            };
            r.push(
                names::LANDLOCK_ABSTRACT_UNIX,
                abs,
                format!("connecting to an abstract socket outside the sandbox: {how}"),
            );
            let sig = match kill(parent, None::<Signal>) {
                Err(nix::errno::Errno::EPERM) => (true, "refused (EPERM)".to_owned()),
                Err(e) => (false, format!("failed for another reason ({e})")),
                Ok(()) => (false, "NOT refused".to_owned()),
            };
            r.push(
                names::LANDLOCK_SIGNALS,
                sig.0,
                format!("signalling the parent: {}", sig.1),
            );
        }
        Err(e) => {
            for n in [
                names::LANDLOCK_FILES,
                names::LANDLOCK_TCP_BIND,
                names::LANDLOCK_ABSTRACT_UNIX,
                names::LANDLOCK_SIGNALS,
            ] {
                r.push(n, false, format!("Landlock unavailable: {e}"));
            }
        }
    }
    drop(listener);

    match (uid, root) {
        (Some(u), true) => {
            let g = gid.unwrap_or(u);
            let switched = setgroups(&[]).is_ok()
                && setresgid(Gid::from_raw(g), Gid::from_raw(g), Gid::from_raw(g)).is_ok()
                && setresuid(Uid::from_raw(u), Uid::from_raw(u), Uid::from_raw(u)).is_ok();
            let stuck = switched
                && Uid::current().as_raw() == u
                && nix::unistd::setuid(Uid::from_raw(0)).is_err();
            r.push(
                names::IDENTITY,
                stuck,
                format!("runs as uid {u}, gid {g}, cannot become root again"),
            );
        }
        (Some(u), false) => r.push(
            names::IDENTITY,
            false,
            format!(
                "not root: cannot switch to uid {u}; runs as the service's own uid {}",
                Uid::current()
            ),
        ),
        (None, _) => r.push(
            names::IDENTITY,
            false,
            format!("no separate uid configured; runs as uid {}", Uid::current()),
        ),
    }

    let death = prctl::set_pdeathsig(Signal::SIGKILL).is_ok()
        && prctl::get_pdeathsig().is_ok_and(|s| s == Some(Signal::SIGKILL))
        && getppid() == parent;
    r.push(
        names::DIE_WITH_PARENT,
        death,
        "SIGKILL when the parent exits",
    );

    let nnp = prctl::set_no_new_privs().is_ok() && prctl::get_no_new_privs().unwrap_or(false);
    r.push(
        names::NO_NEW_PRIVS,
        nnp,
        "no privileges gained through exec",
    );

    // Reading our own memory through process_vm_readv works for any process;
    // the filter must refuse it.
    let probe = [7u8; 8];
    let mut buf = [0u8; 8];
    let mut read = || {
        process_vm_readv(
            Pid::this(),
            &mut [IoSliceMut::new(&mut buf)],
            &[RemoteIoVec {
                base: probe.as_ptr() as usize,
                len: probe.len(),
            }],
        )
    };
    let before = read().is_ok();
    let sc = match seccomp::install(None) {
        Ok(()) => match read() {
            Err(nix::errno::Errno::EPERM) => (
                true,
                format!(
                    "deny-list filter installed; process_vm_readv refused (EPERM){}",
                    if before {
                        ""
                    } else {
                        " (it also failed before the filter)"
                    }
                ),
            ),
            Err(e) => (
                false,
                format!("filter installed, but process_vm_readv failed with {e}"),
            ),
            Ok(_) => (
                false,
                "filter installed, but process_vm_readv was NOT refused".into(),
            ),
        },
        Err(e) => (false, e.to_string()),
    };
    r.push(names::SECCOMP, sc.0, sc.1);

    println!(
        "{}",
        serde_json::to_string(&HostReport { layers: r.0 }).unwrap_or_default()
    );
    ExitCode::SUCCESS
}
