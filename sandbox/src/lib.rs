//! The launcher every tenant-controlled process starts through (`skiff-sandbox`),
//! and what the services need to drive it: the `Policy` they write on its
//! command line, where to find the binary, the per-process cgroups, and the
//! self-test that says which layers this host enforces.
//!
//! The launcher runs between the service and Deno: it switches to the
//! process's own uid, sets no_new_privs and the parent-death signal, its own
//! session, rlimits and cgroup, private namespaces with a private `/tmp`, then
//! Landlock and a seccomp filter, and finally `exec`s the program. A plain
//! `exec` of a separate binary keeps all of this out of the (multi-threaded)
//! services and needs no `unsafe` anywhere in Skiff's own code.

pub mod cgroups;
#[cfg(target_os = "linux")]
pub mod enforce;
pub mod host_addresses;
pub mod locate;
pub mod policy;
pub mod report;
pub mod system_paths;

pub use policy::{Limits, Policy};
pub use report::{HostReport, Layer};
