//! The launcher binary itself, driving ordinary programs (`cat`, `sh`, `id`,
//! `unshare`, `sleep`) through it: each layer is shown by an attempt that it
//! refuses. Deno under the launcher is tested by the router's and manager's
//! end-to-end tests. These run as root in CI (the uid switch and cgroups need
//! it); as another user the root-only checks say so and are skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skiff_sandbox::report::names;
use skiff_sandbox::{HostReport, Limits, Policy};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_skiff-sandbox");

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A scratch dir outside /tmp (the private /tmp would cover it).
fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let d = tempfile::tempdir_in(base).unwrap();
    // Other uids must be able to walk down to it.
    for a in d.path().ancestors() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(a) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o001));
            }
        }
    }
    d
}

fn run(policy: &Policy, program: &str, args: &[&str]) -> Output {
    Command::new(LAUNCHER)
        .args(policy.to_args(program, args))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Everything an ordinary program needs, and nothing else.
fn confined() -> Policy {
    Policy {
        system_files: true,
        exec: vec!["/usr/bin".into(), "/bin".into()],
        landlock: true,
        deny_tcp_bind: true,
        seccomp: true,
        namespaces: true,
        private_tmp: Some(1 << 20),
        ..Policy::default()
    }
}

#[test]
fn self_test_finds_every_layer_on_this_host() {
    let out = Command::new(LAUNCHER)
        .args(["--self-test", "--uid", "200999"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: HostReport = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report}");
    let mut expected = vec![
        names::SESSION,
        names::RLIMITS,
        names::NAMESPACES,
        names::PRIVATE_TMP,
        names::NO_NETWORK,
        names::NET_FORWARD,
        names::LANDLOCK_FILES,
        names::LANDLOCK_TCP_BIND,
        names::LANDLOCK_ABSTRACT_UNIX,
        names::LANDLOCK_SIGNALS,
        names::DIE_WITH_PARENT,
        names::NO_NEW_PRIVS,
        names::SECCOMP,
    ];
    if is_root() {
        expected.push(names::IDENTITY);
    }
    for name in expected {
        assert!(report.enforces(name), "{name} not enforced here:\n{report}");
    }
}

#[test]
fn files_outside_the_policy_cannot_be_read_and_allowed_ones_can() {
    let d = scratch();
    let allowed = d.path().join("allowed.txt");
    std::fs::write(&allowed, "mine\n").unwrap();
    let secret = d.path().join("secret.txt");
    std::fs::write(&secret, "not yours\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut p = confined();
    p.read.push(allowed.clone());

    let ok = run(&p, "/bin/cat", &[allowed.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout), "mine\n");

    for target in [
        secret.to_str().unwrap(),
        "/etc/passwd",
        "/etc/shadow",
        "/proc/1/environ",
    ] {
        let out = run(&p, "/bin/cat", &[target]);
        assert!(
            !out.status.success(),
            "read {target}: {}",
            text(&out.stdout)
        );
        assert!(text(&out.stdout).is_empty());
        let err = text(&out.stderr);
        assert!(err.contains("Permission denied"), "{target}: {err}");
    }
    // A listing of the data dir's parent is refused too.
    let out = run(&p, "/bin/ls", &[d.path().to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn tmp_is_private_and_writable() {
    let marker = format!("/tmp/skiff-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    let p = confined();
    let script = format!(
        "echo inside > /tmp/f && cat /tmp/f && (cat {marker} 2>&1 || true) && stat -f -c %T /tmp"
    );
    let out = run(&p, "/bin/sh", &["-c", &script]);
    let stdout = text(&out.stdout);
    std::fs::remove_file(&marker).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("inside\n"), "{stdout}");
    assert!(
        stdout.contains("No such file"),
        "the host's /tmp shows: {stdout}"
    );
    assert!(stdout.contains("tmpfs"), "{stdout}");
    assert!(
        !Path::new("/tmp/f").exists()
            || std::fs::read_to_string("/tmp/f").unwrap_or_default() != "inside\n",
        "the write escaped to the host's /tmp"
    );
    // The cap holds: 1 MiB.
    let out = run(
        &p,
        "/bin/sh",
        &["-c", "head -c 2000000 /dev/zero > /tmp/big; echo $?"],
    );
    assert_ne!(
        text(&out.stdout).trim(),
        "0",
        "wrote 2 MB into a 1 MiB /tmp"
    );
}

#[test]
fn host_sockets_under_hidden_dirs_disappear() {
    let p = Policy {
        namespaces: true,
        hide: vec!["/run".into(), "/dev/shm".into()],
        ..Policy::default()
    };
    let out = run(&p, "/bin/ls", &["-A", "/run", "/dev/shm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .map(str::to_owned)
        .collect();
    assert!(listed.is_empty(), "still visible: {listed:?}");
}

#[test]
fn a_policy_whose_paths_a_private_mount_would_cover_is_refused() {
    let d = tempfile::tempdir_in("/tmp").unwrap();
    let mut p = confined();
    p.read.push(d.path().to_owned());
    let out = run(&p, "/bin/true", &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("lies under"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn seccomp_refuses_namespaces_and_tracing() {
    let mut p = confined();
    p.landlock = false;
    let out = run(
        &p,
        "/usr/bin/unshare",
        &["--user", "--map-root-user", "/bin/true"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
    // Without the filter the same call works (the refusal is the filter's).
    p.seccomp = false;
    p.namespaces = false;
    p.private_tmp = None;
    let out = run(
        &p,
        "/usr/bin/unshare",
        &["--user", "--map-root-user", "/bin/true"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn runs_as_the_given_uid_with_its_limits() {
    if !is_root() {
        eprintln!("not root: the uid switch cannot be shown here");
        return;
    }
    // Without Landlock: `cat` (a child of sh) may read its own /proc entry.
    let mut p = confined();
    p.landlock = false;
    p.uid = Some(200_998);
    p.gid = Some(200_997);
    p.limits = Limits {
        nofile: Some(64),
        nproc: Some(32),
        cpu_secs: Some(5),
        fsize: None,
    };
    let out = run(
        &p,
        "/bin/sh",
        &["-c", "id -u; id -g; id -G; cat /proc/self/limits"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..3], ["200998", "200997", "200997"]);
    let limit = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(limit("Max open files").contains("64 64"), "{stdout}");
    assert!(limit("Max processes").contains("32 32"), "{stdout}");
    assert!(limit("Max cpu time").contains("5 5"), "{stdout}");
    assert!(limit("Max core file size").contains("0 0"), "{stdout}");
}

#[test]
fn a_cgroup_is_joined_before_the_program_runs() {
    let Some(root) = skiff_sandbox::cgroups::CgroupRoot::detect("skiff-launcher-test") else {
        eprintln!("no writable cgroups on this host");
        return;
    };
    let leaf = format!("t{}", std::process::id());
    let dirs = root
        .create(
            &leaf,
            skiff_sandbox::cgroups::CgroupLimits {
                memory_bytes: 64 << 20,
                pids: 16,
            },
        )
        .unwrap();
    let p = Policy {
        cgroups: dirs.dirs().to_vec(),
        ..Policy::default()
    };
    let out = run(&p, "/bin/cat", &["/proc/self/cgroup"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let groups = text(&out.stdout);
    assert!(groups.contains(&leaf), "{groups}");
    // The memory cap holds: 200 MB in a 64 MiB group is killed.
    let out = run(
        &p,
        "/bin/sh",
        &[
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    assert!(!out.status.success(), "allocated past the cap");
}

#[test]
fn dies_with_its_parent_even_if_it_ignores_signals() {
    let pid_file = scratch().keep().join("pid");
    let p = Policy::default();
    // sh starts the launcher in the background, writes the child's pid, and
    // waits; the child ignores SIGTERM/SIGHUP/SIGINT. Killing sh must end it.
    let inner = p.to_args("/bin/sh", ["-c", "trap '' TERM HUP INT; sleep 60"]);
    let inner: Vec<String> = inner
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let script = format!(
        "{LAUNCHER} {} & echo $! > {}; wait",
        inner.join(" "),
        pid_file.display()
    );
    let mut parent = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let child: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the child never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(PathBuf::from(format!("/proc/{child}")).exists());
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) {
        assert!(Instant::now() < deadline, "pid {child} outlived its parent");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Running and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[test]
fn bad_command_lines_and_missing_programs_fail_clearly() {
    let out = Command::new(LAUNCHER)
        .args(["--bogus", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("unknown option"));
    let out = Command::new(LAUNCHER)
        .args(["--landlock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let out = run(&Policy::default(), "/nonexistent/prog", &[]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("cannot run"));
}

/// Binds a TCP port on loopback with perl (part of every Debian system).
fn bind_script(port: u16) -> String {
    format!(
        "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', \
         LocalPort => {port}, Listen => 1, ReuseAddr => 1) or die \"refused: $!\\n\"; print \"bound\\n\";"
    )
}

#[test]
fn tcp_binds_are_refused_except_on_the_allowed_ports() {
    // Allowed: port 0 (an ephemeral port), so no port has to be found free
    // beforehand. Refused: a port this test holds, so nothing else can take
    // it; Landlock refuses the bind before the kernel sees the port in use.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = held.local_addr().unwrap().port();
    let mut p = confined();
    p.tcp_bind_ports = vec![0];
    let ok = run(&p, "/usr/bin/perl", &["-e", &bind_script(0)]);
    assert_eq!(text(&ok.stdout), "bound\n", "{}", text(&ok.stderr));
    let refused = run(&p, "/usr/bin/perl", &["-e", &bind_script(other)]);
    assert!(text(&refused.stdout).is_empty());
    assert!(
        text(&refused.stderr).contains("refused: Permission denied"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn best_effort_skips_a_layer_the_host_refuses_and_says_so() {
    // The outer launcher's seccomp filter refuses namespaces: to the inner
    // one this host has none.
    let outer = Policy {
        seccomp: true,
        ..Policy::default()
    };
    let inner = |best_effort| Policy {
        namespaces: true,
        best_effort,
        ..Policy::default()
    };
    let nested = |p: Policy| {
        let mut args = vec![LAUNCHER.to_owned()];
        args.extend(
            p.to_args("/bin/echo", ["ran"])
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&outer, refs[0], &refs[1..])
    };
    let strict = nested(inner(false));
    assert_eq!(strict.status.code(), Some(125), "{}", text(&strict.stderr));
    assert!(text(&strict.stdout).is_empty());
    let lenient = nested(inner(true));
    assert!(lenient.status.success(), "{}", text(&lenient.stderr));
    assert_eq!(text(&lenient.stdout), "ran\n");
    assert!(
        text(&lenient.stderr).contains("warning: layer skipped: namespaces"),
        "{}",
        text(&lenient.stderr)
    );
}

/// Connects to 127.0.0.1:PORT with perl, sends "ping", half-closes, prints
/// what comes back (or why the connect failed).
fn client_script(port: u16) -> String {
    format!(
        "use IO::Socket::INET; my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', \
         PeerPort => {port}, Timeout => 5) or do {{ print \"unreachable: $!\\n\"; exit 0 }}; \
         print $s \"ping\"; shutdown($s, 1); local $/; my $r = <$s>; print \"got: $r\\n\";"
    )
}

/// A Unix-socket echo server (answers "echo:" + what it read) that any uid
/// may connect to; serves until the test ends.
fn unix_echo_server(dir: &Path) -> PathBuf {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let sock = dir.join("egress.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                if conn.read_to_end(&mut got).is_ok() {
                    let _ = conn.write_all(b"echo:");
                    let _ = conn.write_all(&got);
                }
            });
        }
    });
    sock
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn net_forward_reaches_only_the_forwarded_unix_socket() {
    let d = scratch();
    let sock = unix_echo_server(d.path());
    // A service on the host's loopback, standing in for the manager or a
    // database: the sandbox must not reach it.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let port = free_port();
    let mut p = confined();
    p.no_network = true;
    p.net_forward = Some((port, sock.clone()));
    if is_root() {
        p.uid = Some(200_996);
    }

    let out = run(&p, "/usr/bin/perl", &["-e", &client_script(port)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "got: echo:ping\n",
        "{}",
        text(&out.stderr)
    );

    let out = run(&p, "/usr/bin/perl", &["-e", &client_script(host_port)]);
    assert!(
        text(&out.stdout).starts_with("unreachable"),
        "reached the host's loopback service: {}",
        text(&out.stdout)
    );

    // Without the forward the same port leads nowhere.
    p.net_forward = None;
    for target in [port, host_port] {
        let out = run(&p, "/usr/bin/perl", &["-e", &client_script(target)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with("unreachable"),
            "port {target}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn net_forward_is_refused_without_an_empty_network_namespace() {
    let d = scratch();
    let mut p = confined();
    p.net_forward = Some((free_port(), d.path().join("x.sock")));
    let out = run(&p, "/bin/true", &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--no-network"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_forwarder_goes_when_the_program_ends() {
    let d = scratch();
    let sock = unix_echo_server(d.path());
    let mut p = confined();
    p.no_network = true;
    p.net_forward = Some((free_port(), sock));
    // The program prints its pid and exits; the forwarder (its child, named
    // after it in /proc) must not stay behind.
    let out = run(&p, "/bin/sh", &["-c", "echo $$"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let launcher: u32 = text(&out.stdout).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid| {
                alive(*pid)
                    && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("--net-forwarder") && c.contains(&format!("\0{launcher}\0"))
                    })
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarder {left:?} outlived the program"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
