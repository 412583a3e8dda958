//! How many malloc arenas a service process has.
//!
//! glibc's malloc gives threads up to eight arenas per CPU, and each keeps the
//! memory its busiest moment needed. A service whose threads come and go (the
//! blocking pool's, sqlx's, the runtime's) so reaches one high-water mark per
//! arena: `skiff dev` in the soak test grew its anonymous memory by 9 MB in two
//! minutes across 15 arenas while its live heap stayed at 5 MB, and with two
//! arenas it grew by 2 MB. The arena count is read only at start, from
//! `MALLOC_ARENA_MAX`, so a service started without it sets it and starts
//! itself again (same process, same arguments). An operator's own value wins.

use std::ffi::OsString;

/// The variable glibc reads, and the value a service sets when it is unset.
pub const ARENA_VAR: &str = "MALLOC_ARENA_MAX";
pub const ARENAS: &str = "2";

/// Restarts the process image with `MALLOC_ARENA_MAX` set, when it is unset
/// and the allocator is glibc's. Call first in `main`, before any thread
/// starts. If the restart fails, the process goes on as it is.
pub fn bound_malloc_arenas() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    if std::env::var_os(ARENA_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let argv0: Option<OsString> = args.next();
    let mut cmd = std::process::Command::new(exe);
    if let Some(a0) = argv0 {
        std::os::unix::process::CommandExt::arg0(&mut cmd, a0);
    }
    cmd.args(args).env(ARENA_VAR, ARENAS);
    // `exec` returns only when it failed (the binary was replaced, say).
    let _ = std::os::unix::process::CommandExt::exec(&mut cmd);
}
