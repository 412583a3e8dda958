//! The seccomp filter: a deny list of system calls a function (or `deno
//! check`) never needs, so that a bug in Deno or V8 does not become a host
//! escape through the kernel's rarely used, often exploited corners.
//!
//! A deny list, not an allow list: Deno and V8 use a large and changing set of
//! calls, and an allow list that misses one kills functions at random. What is
//! refused here is what container runtimes refuse by default too — debugging
//! other processes, mounts and namespaces, kernel keyrings, BPF, perf,
//! userfaultfd, io_uring, module and kexec loading, clock and host settings —
//! plus socket families other than Unix, IPv4, IPv6 and netlink route queries.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported architecture {0}")]
    Arch(&'static str),
    #[error("building the filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// Calls refused outright (`EPERM`).
fn denied() -> Vec<i64> {
    let mut v = vec![
        // Other processes' memory and state.
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        libc::SYS_pidfd_getfd,
        // Mounts, namespaces, root changes.
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        // Kernel keyrings, BPF, perf, userfaultfd, io_uring.
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_fanotify_init,
        // Kernel code, reboot, swap, accounting, quotas, logs.
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        // Host-wide settings.
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        // NUMA page moves between processes.
        libc::SYS_migrate_pages,
        libc::SYS_move_pages,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_lookup_dcookie,
        libc::SYS__sysctl,
    ]);
    v
}

const CLONE_NAMESPACES: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// A condition on a 64-bit argument (flags, ioctl requests).
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?)
}

/// A condition on an `int` argument: only its low 32 bits are defined.
fn int_cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

fn arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))
}

/// The main filter: everything above, namespace flags on `clone`, terminal
/// input injection, unusual socket families, and (when `bind_lengths` is
/// given) `bind` with any other address length → `EPERM`.
///
/// Why lengths: a `bind` to an abstract Unix name (`"\0name"`) claims that
/// name host-wide, and abstract sockets have no file permissions. A filter
/// cannot read the address, but it can read its length; the program's own
/// socket path is padded to the maximum length (110), and IPv4/IPv6 binds (a
/// resolver's UDP socket) have 16 and 28. Any other abstract name is refused.
fn deny_filter(bind_lengths: Option<&[u32]>) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|s| (s, Vec::new())).collect();
    // clone(flags, …): any namespace flag. (clone3 passes its flags in memory a
    // filter cannot read; it is answered ENOSYS below, and glibc falls back.)
    rules.insert(
        libc::SYS_clone,
        CLONE_NAMESPACES
            .iter()
            .map(|&f| {
                Ok(SeccompRule::new(vec![cond(
                    0,
                    SeccompCmpOp::MaskedEq(f),
                    f,
                )?])?)
            })
            .collect::<Result<_, SeccompError>>()?,
    );
    // ioctl(fd, TIOCSTI/TIOCLINUX): typing into a terminal the host holds.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![cond(1, SeccompCmpOp::MaskedEq(0xffff_ffff), TIOCSTI)?])?,
            SeccompRule::new(vec![cond(
                1,
                SeccompCmpOp::MaskedEq(0xffff_ffff),
                TIOCLINUX,
            )?])?,
        ],
    );
    // socket(domain, …): only Unix, IPv4, IPv6, and netlink route queries
    // (glibc's resolver asks the kernel for the host's interfaces that way).
    let netlink = libc::AF_NETLINK as u64;
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![
                int_cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?,
                int_cond(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?,
                int_cond(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?,
                int_cond(0, SeccompCmpOp::Ne, netlink)?,
            ])?,
            SeccompRule::new(vec![
                int_cond(0, SeccompCmpOp::Eq, netlink)?,
                int_cond(2, SeccompCmpOp::Ne, libc::NETLINK_ROUTE as u64)?,
            ])?,
        ],
    );
    if let Some(lengths) = bind_lengths {
        let conds = lengths
            .iter()
            .map(|&n| int_cond(2, SeccompCmpOp::Ne, u64::from(n)))
            .collect::<Result<Vec<_>, _>>()?;
        let rule = if conds.is_empty() {
            Vec::new()
        } else {
            vec![SeccompRule::new(conds)?]
        };
        rules.insert(libc::SYS_bind, rule);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// `clone3` answers `ENOSYS` so that libc falls back to `clone`, whose flags
/// the main filter can see.
fn clone3_filter() -> Result<BpfProgram, SeccompError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// Installs both filters on the calling (only) thread; inherited across exec.
/// Needs `no_new_privs` (set by the caller before). `bind_lengths`: see
/// `deny_filter`; `None` leaves `bind` alone, an empty list refuses it.
pub fn install(bind_lengths: Option<&[u32]>) -> Result<(), SeccompError> {
    let deny = deny_filter(bind_lengths)?;
    let clone3 = clone3_filter()?;
    seccompiler::apply_filter(&deny)?;
    seccompiler::apply_filter(&clone3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        assert!(!deny_filter(None).unwrap().is_empty());
        assert!(!deny_filter(Some(&[])).unwrap().is_empty());
        assert!(!deny_filter(Some(&[16, 28, 110])).unwrap().is_empty());
        assert!(!clone3_filter().unwrap().is_empty());
        let d = denied();
        for must in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
        ] {
            assert!(d.contains(&must), "{must} must be denied");
        }
    }
}
