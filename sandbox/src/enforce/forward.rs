//! `--net-forward PORT=SOCK`: the one way out of an empty network namespace.
//!
//! Inside the new namespace the launcher brings `lo` up and binds
//! 127.0.0.1:PORT, then starts a forwarder (this same binary, run as
//! `--net-forwarder`, the listener handed over as its stdin) that relays each
//! accepted connection to the Unix socket SOCK and back. The forwarder is
//! itself confined before it accepts anything: the program's uid, no new
//! privileges, killed with the program, a Landlock domain with no filesystem
//! access, no TCP bind or connect and no abstract sockets (a pathname Unix
//! socket connect is not a filesystem access Landlock governs), and the seccomp
//! deny list with `bind` refused. The program therefore reaches exactly one
//! endpoint, and only what listens on SOCK decides where that leads.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetError,
    RulesetStatus, Scope,
};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use nix::unistd::{Pid, getppid};

use crate::policy::Policy;

/// The argument that makes the launcher binary a forwarder.
pub const FORWARDER_ARG: &str = "--net-forwarder";
const READY: &str = "ready";
/// How often the forwarder checks that the program is still there.
const ORPHAN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("--net-forward needs --namespaces and --no-network")]
    NeedsEmptyNamespace,
    #[error("bringing lo up: {0}")]
    Loopback(nix::Error),
    #[error("binding 127.0.0.1:{port}: {error}")]
    Bind { port: u16, error: std::io::Error },
    #[error("starting the forwarder: {0}")]
    Spawn(std::io::Error),
    #[error("the forwarder did not start: {0}")]
    NotReady(String),
}

/// Sets `lo` up in the calling process's (new, empty) network namespace,
/// with one rtnetlink RTM_NEWLINK request; a plain socket message, so no
/// `ioctl` (and no `unsafe`) is needed.
pub fn loopback_up() -> Result<(), nix::Error> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let up = libc::IFF_UP as u32;
    let mut msg: Vec<u8> = Vec::with_capacity(32);
    // struct nlmsghdr
    msg.extend(32u32.to_ne_bytes());
    msg.extend(libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend(1u32.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change
    msg.extend([libc::AF_UNSPEC as u8, 0, 0, 0]);
    msg.extend(index.to_ne_bytes());
    msg.extend(up.to_ne_bytes());
    msg.extend(up.to_ne_bytes());
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 1024];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    // The answer is an NLMSG_ERROR whose error field (after the 16-byte
    // header) is 0 for success or a negative errno.
    let kind = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = buf
        .get(16..20)
        .filter(|_| n >= 20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, code) {
        (Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(k), Some(e)) if k == libc::NLMSG_ERROR as u16 => {
            Err(nix::Error::from_raw(e.saturating_neg()))
        }
        _ => Err(nix::Error::EPROTO),
    }
}

/// Inside the new namespace: `lo` up and the forwarded port bound. Done
/// while the launcher still has its privileges over the namespace.
pub fn listen(port: u16) -> Result<TcpListener, ForwardError> {
    loopback_up().map_err(ForwardError::Loopback)?;
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .map_err(|error| ForwardError::Bind { port, error })
}

/// Starts the forwarder (after the identity switch, so it runs as the
/// program's uid with no_new_privs) and waits until it is confined and
/// accepting. It is the launcher's child, so after the launcher `exec`s the
/// program, its parent-death signal fires when the program ends.
pub fn spawn(listener: TcpListener, sock: &Path, p: &Policy) -> Result<(), ForwardError> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(FORWARDER_ARG)
        .arg(sock)
        .arg(std::process::id().to_string());
    for (flag, on) in [
        ("--landlock", p.landlock),
        ("--seccomp", p.seccomp),
        ("--best-effort", p.best_effort),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    let mut child = cmd
        .env_clear()
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(ForwardError::Spawn)?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != READY {
        let _ = child.kill();
        let status = child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        return Err(ForwardError::NotReady(status));
    }
    // Not waited for: it lives as long as the program.
    Ok(())
}

/// Landlock for the forwarder: every filesystem right handled with no rule
/// (nothing readable or writable), TCP bind and connect handled with no rule,
/// abstract sockets and signals scoped.
fn confine_landlock() -> Result<RulesetStatus, RulesetError> {
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .restrict_self()?;
    Ok(status.ruleset)
}

/// `skiff-sandbox --net-forwarder SOCK PARENT_PID [--landlock] [--seccomp]
/// [--best-effort]`, stdin being the bound listener: confines itself, says
/// `ready` on stdout, then relays until the program (its parent) is gone.
pub fn run_forwarder(args: &[OsString]) -> ExitCode {
    let fail = |what: &str| {
        eprintln!("skiff-sandbox forwarder: {what}");
        ExitCode::from(125)
    };
    let (Some(sock), Some(parent)) = (args.first(), args.get(1)) else {
        return fail("usage: --net-forwarder SOCK PARENT_PID");
    };
    let sock = PathBuf::from(sock);
    let Some(parent) = parent.to_str().and_then(|p| p.parse::<i32>().ok()) else {
        return fail("bad parent pid");
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
    let best_effort = flag("--best-effort");
    // Die with the program (the launcher this was spawned from, after its
    // exec), and make sure it had not already gone.
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != Pid::from_raw(parent) {
        return fail("the program is gone");
    }
    if let Err(e) = prctl::set_no_new_privs() {
        return fail(&format!("no_new_privs: {e}"));
    }
    let listener = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => TcpListener::from(fd),
        Err(e) => return fail(&format!("no listener on stdin: {e}")),
    };
    if flag("--landlock") {
        let outcome = match confine_landlock() {
            Ok(RulesetStatus::NotEnforced) => Err("not enforced by this kernel".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            if !best_effort {
                return fail(&format!("Landlock: {e}"));
            }
            eprintln!("skiff-sandbox forwarder: warning: Landlock skipped: {e}");
        }
    }
    if flag("--seccomp")
        && let Err(e) = super::seccomp::install(Some(&[]))
    {
        if !best_effort {
            return fail(&format!("seccomp: {e}"));
        }
        eprintln!("skiff-sandbox forwarder: warning: seccomp skipped: {e}");
    }
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{READY}").and_then(|()| out.flush()).is_err() {
            return fail("the launcher stopped listening");
        }
    }
    // The program's Landlock signal scope keeps the kernel from delivering
    // the parent-death signal across domains (measured: the forwarder
    // outlived the program), so it also notices being orphaned itself.
    let parent = Pid::from_raw(parent);
    let watchdog = std::thread::Builder::new().spawn(move || {
        while getppid() == parent {
            std::thread::sleep(ORPHAN_CHECK);
        }
        std::process::exit(0);
    });
    if watchdog.is_err() {
        return fail("cannot start the watchdog thread");
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            // Out of descriptors or similar: do not spin.
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        let sock = sock.clone();
        // A thread that cannot be made (the process limit) drops the
        // connection; the client sees it closed.
        let _ = std::thread::Builder::new().spawn(move || {
            if let Ok(upstream) = UnixStream::connect(&sock) {
                relay(conn, upstream);
            }
        });
    }
    ExitCode::SUCCESS
}

/// Copies both ways until each side has finished sending.
fn relay(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let Ok(up) = std::thread::Builder::new().spawn(move || {
        let _ = std::io::copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(Shutdown::Write);
    }) else {
        return;
    };
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    let _ = std::io::copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(Shutdown::Write);
    let _ = up.join();
}
