//! What the launcher does to one process before it `exec`s it, and how that is
//! written on the launcher's command line. The services build a `Policy`; the
//! launcher parses the same arguments back. One definition, both directions,
//! tested as a round trip.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// Resource limits set with `setrlimit` (soft = hard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Open files.
    pub nofile: Option<u64>,
    /// Processes and threads of the (real) uid.
    pub nproc: Option<u64>,
    /// CPU seconds; the kernel sends SIGXCPU then SIGKILL past it.
    pub cpu_secs: Option<u64>,
    /// Largest file the process may write, in bytes.
    pub fsize: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Run as this uid/gid (the launcher must start as root to switch).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Landlock: paths readable (files and directory listings) beneath.
    pub read: Vec<PathBuf>,
    /// Landlock: paths readable and executable beneath.
    pub exec: Vec<PathBuf>,
    /// Landlock: paths fully usable beneath (read, write, create, remove).
    pub write: Vec<PathBuf>,
    /// Also allow what any dynamically linked program needs (shared
    /// libraries, resolver configuration, time zones), read-only; see
    /// `system_paths`.
    pub system_files: bool,
    /// Apply Landlock (filesystem rules, TCP bind, abstract-socket and signal
    /// scopes).
    pub landlock: bool,
    /// Refuse every TCP bind (Landlock ABI ≥ 4) but to these ports.
    pub deny_tcp_bind: bool,
    pub tcp_bind_ports: Vec<u16>,
    /// A layer the kernel or the container does not allow (Landlock,
    /// namespaces, seccomp, the session) is skipped with a warning on stderr
    /// instead of refusing to run. For places that cannot ask the self-test
    /// first (a container's entry point); the services never set it.
    pub best_effort: bool,
    /// Apply the seccomp filter (`enforce::seccomp`).
    pub seccomp: bool,
    /// Private mount and IPC namespaces (a user namespace too when not root).
    pub namespaces: bool,
    /// A private tmpfs on `/tmp` of this many bytes (needs `namespaces`).
    pub private_tmp: Option<u64>,
    /// A new, empty network namespace: no network at all (needs `namespaces`).
    pub no_network: bool,
    /// With `no_network`: the one way out. `lo` is brought up inside the
    /// empty namespace, 127.0.0.1:PORT is bound there, and a confined
    /// forwarder process relays each connection to it to the Unix socket at
    /// the path (outside, an egress proxy listens there). The program can
    /// reach that port and nothing else.
    pub net_forward: Option<(u16, PathBuf)>,
    /// Directories covered by an empty read-only tmpfs (needs `namespaces`):
    /// host sockets and shared memory under `/run` or `/dev/shm` disappear.
    pub hide: Vec<PathBuf>,
    /// With `seccomp`: `bind` is allowed only with these address lengths (the
    /// program's own Unix socket path, IPv4/IPv6 for resolvers), which keeps
    /// it from claiming abstract Unix socket names of other lengths.
    pub restrict_bind: bool,
    pub bind_lengths: Vec<u32>,
    /// cgroup directories to join (their `cgroup.procs` is written).
    pub cgroups: Vec<PathBuf>,
    pub limits: Limits,
    /// Working directory of the program.
    pub chdir: Option<PathBuf>,
}

/// A launcher command line that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("{0} needs a value")]
    Missing(&'static str),
    #[error("invalid value for {0}: {1:?}")]
    Invalid(&'static str, String),
    #[error("no program to run (expected `-- PROGRAM [ARGS…]`)")]
    NoProgram,
}

impl Policy {
    /// The launcher arguments for this policy, then `--`, the program and its
    /// arguments.
    pub fn to_args(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut opt = |name: &str, value: OsString| {
            out.push(name.into());
            out.push(value);
        };
        if let Some(u) = self.uid {
            opt("--uid", u.to_string().into());
        }
        if let Some(g) = self.gid {
            opt("--gid", g.to_string().into());
        }
        for p in &self.read {
            opt("--ro", p.clone().into_os_string());
        }
        for p in &self.exec {
            opt("--rx", p.clone().into_os_string());
        }
        for p in &self.write {
            opt("--rw", p.clone().into_os_string());
        }
        for p in &self.cgroups {
            opt("--cgroup", p.clone().into_os_string());
        }
        if let Some(b) = self.private_tmp {
            opt("--private-tmp", b.to_string().into());
        }
        let l = &self.limits;
        for (name, v) in [
            ("--nofile", l.nofile),
            ("--nproc", l.nproc),
            ("--cpu-secs", l.cpu_secs),
            ("--fsize", l.fsize),
        ] {
            if let Some(v) = v {
                opt(name, v.to_string().into());
            }
        }
        if let Some(d) = &self.chdir {
            opt("--chdir", d.clone().into_os_string());
        }
        for p in &self.hide {
            opt("--hide", p.clone().into_os_string());
        }
        for n in &self.bind_lengths {
            opt("--bind-len", n.to_string().into());
        }
        for n in &self.tcp_bind_ports {
            opt("--tcp-bind-port", n.to_string().into());
        }
        if let Some((port, sock)) = &self.net_forward {
            let mut v = OsString::from(format!("{port}="));
            v.push(sock);
            opt("--net-forward", v);
        }
        for (flag, on) in [
            ("--system-files", self.system_files),
            ("--landlock", self.landlock),
            ("--deny-tcp-bind", self.deny_tcp_bind),
            ("--seccomp", self.seccomp),
            ("--namespaces", self.namespaces),
            ("--no-network", self.no_network),
            ("--restrict-bind", self.restrict_bind),
            ("--best-effort", self.best_effort),
        ] {
            if on {
                out.push(flag.into());
            }
        }
        out.push("--".into());
        out.push(program.as_ref().to_owned());
        out.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        out
    }

    /// Parses what `to_args` wrote: the policy, then the program and its arguments.
    pub fn parse(args: &[OsString]) -> Result<(Policy, Vec<OsString>), ParseError> {
        let mut p = Policy::default();
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].to_string_lossy().into_owned();
            i += 1;
            if arg == "--" {
                let rest = args[i..].to_vec();
                if rest.is_empty() {
                    return Err(ParseError::NoProgram);
                }
                return Ok((p, rest));
            }
            match arg.as_str() {
                "--system-files" => p.system_files = true,
                "--landlock" => p.landlock = true,
                "--deny-tcp-bind" => p.deny_tcp_bind = true,
                "--seccomp" => p.seccomp = true,
                "--namespaces" => p.namespaces = true,
                "--no-network" => p.no_network = true,
                "--restrict-bind" => p.restrict_bind = true,
                "--best-effort" => p.best_effort = true,
                name => {
                    let flag =
                        known_valued(name).ok_or_else(|| ParseError::Unknown(arg.clone()))?;
                    let value = args.get(i).ok_or(ParseError::Missing(flag))?.clone();
                    i += 1;
                    set_valued(&mut p, flag, value)?;
                }
            }
        }
        Err(ParseError::NoProgram)
    }
}

const VALUED: [&str; 16] = [
    "--uid",
    "--gid",
    "--ro",
    "--rx",
    "--rw",
    "--cgroup",
    "--private-tmp",
    "--nofile",
    "--nproc",
    "--cpu-secs",
    "--fsize",
    "--chdir",
    "--hide",
    "--bind-len",
    "--tcp-bind-port",
    "--net-forward",
];

fn known_valued(name: &str) -> Option<&'static str> {
    VALUED.iter().copied().find(|v| *v == name)
}

fn number<T: std::str::FromStr>(flag: &'static str, v: &OsStr) -> Result<T, ParseError> {
    let s = v.to_string_lossy();
    s.parse()
        .map_err(|_| ParseError::Invalid(flag, s.into_owned()))
}

/// `PORT=/absolute/path/of/the.sock`.
fn net_forward(flag: &'static str, v: OsString) -> Result<(u16, PathBuf), ParseError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = v.as_bytes();
    let invalid = || ParseError::Invalid(flag, v.to_string_lossy().into_owned());
    let eq = bytes.iter().position(|b| *b == b'=').ok_or_else(invalid)?;
    let port: u16 = std::str::from_utf8(&bytes[..eq])
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|p| *p != 0)
        .ok_or_else(invalid)?;
    let path = PathBuf::from(OsStr::from_bytes(&bytes[eq + 1..]));
    if !path.is_absolute() {
        return Err(invalid());
    }
    Ok((port, path))
}

fn set_valued(p: &mut Policy, flag: &'static str, v: OsString) -> Result<(), ParseError> {
    match flag {
        "--uid" => p.uid = Some(number(flag, &v)?),
        "--gid" => p.gid = Some(number(flag, &v)?),
        "--ro" => p.read.push(v.into()),
        "--rx" => p.exec.push(v.into()),
        "--rw" => p.write.push(v.into()),
        "--cgroup" => p.cgroups.push(v.into()),
        "--private-tmp" => p.private_tmp = Some(number(flag, &v)?),
        "--nofile" => p.limits.nofile = Some(number(flag, &v)?),
        "--nproc" => p.limits.nproc = Some(number(flag, &v)?),
        "--cpu-secs" => p.limits.cpu_secs = Some(number(flag, &v)?),
        "--fsize" => p.limits.fsize = Some(number(flag, &v)?),
        "--chdir" => p.chdir = Some(v.into()),
        "--hide" => p.hide.push(v.into()),
        "--bind-len" => p.bind_lengths.push(number(flag, &v)?),
        "--tcp-bind-port" => p.tcp_bind_ports.push(number(flag, &v)?),
        "--net-forward" => p.net_forward = Some(net_forward(flag, v)?),
        _ => return Err(ParseError::Unknown(flag.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let p = Policy {
            uid: Some(200_001),
            gid: Some(200_002),
            read: vec!["/code dir".into(), "/x".into()],
            exec: vec!["/usr/local/bin/deno".into()],
            write: vec!["/inst".into()],
            system_files: true,
            landlock: true,
            deny_tcp_bind: true,
            seccomp: true,
            namespaces: true,
            private_tmp: Some(64 << 20),
            no_network: true,
            net_forward: Some((8787, "/run/skiff egress/1.sock".into())),
            hide: vec!["/run".into(), "/dev/shm".into()],
            restrict_bind: true,
            bind_lengths: vec![16, 28, 110],
            tcp_bind_ports: vec![8080, 8081],
            best_effort: true,
            cgroups: vec!["/sys/fs/cgroup/memory/skiff/1".into()],
            limits: Limits {
                nofile: Some(1024),
                nproc: Some(256),
                cpu_secs: Some(70),
                fsize: Some(1 << 30),
            },
            chdir: Some("/inst".into()),
        };
        let args = p.to_args("/bin/prog", ["--flag", "--", "x y"]);
        let (back, rest) = Policy::parse(&args).unwrap();
        assert_eq!(back, p);
        assert_eq!(rest, ["/bin/prog", "--flag", "--", "x y"]);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            Policy::parse(&os(&["--bogus", "--", "x"])),
            Err(ParseError::Unknown("--bogus".into()))
        );
        assert_eq!(
            Policy::parse(&os(&["--uid"])),
            Err(ParseError::Missing("--uid"))
        );
        assert!(matches!(
            Policy::parse(&os(&["--uid", "root", "--", "x"])),
            Err(ParseError::Invalid("--uid", _))
        ));
        assert_eq!(
            Policy::parse(&os(&["--landlock"])),
            Err(ParseError::NoProgram)
        );
        assert_eq!(Policy::parse(&os(&["--"])), Err(ParseError::NoProgram));
        for bad in [
            "8787",
            "0=/x.sock",
            "x=/x.sock",
            "70000=/x.sock",
            "8787=rel.sock",
        ] {
            assert!(
                matches!(
                    Policy::parse(&os(&["--net-forward", bad, "--", "x"])),
                    Err(ParseError::Invalid("--net-forward", _))
                ),
                "{bad}"
            );
        }
    }
}
