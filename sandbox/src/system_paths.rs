//! What any dynamically linked program on this host needs to read, beyond the
//! paths a policy names: the dynamic loader and shared libraries, the resolver's
//! configuration (a function's `fetch` resolves names through glibc), time-zone
//! data, and a few harmless devices. Nothing here holds a secret; `/etc` as a
//! whole is NOT included (`/etc/shadow`, `/etc/passwd`, host configs stay hidden).

use std::path::{Path, PathBuf};

/// Read and execute beneath: libraries and the loader.
pub const LIBRARIES: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
];

/// Read-only files and trees.
pub const READ_ONLY: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    // Number of CPUs (sysconf, available_parallelism) and their topology.
    "/sys/devices/system/cpu",
];

/// Devices a program may open read-write: they carry no data of anyone's.
/// (Not `/dev/zero` or `/dev/urandom`: endless files, which `import "/dev/zero"`
/// turns into a memory bomb in a type checker.)
pub const DEVICES: &[&str] = &["/dev/null"];

/// The entries of a list that exist on this host (a Landlock rule needs an
/// open file; hosts differ, e.g. no `/lib64` on arm64).
pub fn existing(list: &[&str]) -> Vec<PathBuf> {
    list.iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(Path::to_path_buf)
        .collect()
}
