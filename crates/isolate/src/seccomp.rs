//! `S_FLAGS lock`: processes of the context may not make new contexts from inside. Namespaces are how a
//! context is made today, so a seccomp filter refuses `unshare`, `setns` and `clone` with any namespace
//! flag (EPERM). `clone3` hides its flags in memory a filter cannot read, so it answers ENOSYS, on which
//! the C library falls back to `clone`, which the filter can inspect.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Namespace flags of clone(2) that make a new context.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// The filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This CPU architecture has no filter here.
    #[error("S_FLAGS lock is not supported on this architecture ({0})")]
    Arch(String),
    /// Building the BPF program failed.
    #[error("cannot build the lock filter: {0}")]
    Build(String),
    /// The kernel refused the filter.
    #[error("cannot install the lock filter: {0}")]
    Install(String),
}

fn arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH.try_into().map_err(|_| SeccompError::Arch(std::env::consts::ARCH.into()))
}

/// Builds the two programs of the lock: EPERM for namespace calls, ENOSYS for clone3.
pub fn lock_programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = arch()?;
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let cond =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag).map_err(build)?;
            SeccompRule::new(vec![cond]).map_err(build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut deny = BTreeMap::new();
    deny.insert(libc::SYS_unshare, vec![]);
    deny.insert(libc::SYS_setns, vec![]);
    deny.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(deny, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .map_err(build)?;
    let mut nosys = BTreeMap::new();
    nosys.insert(libc::SYS_clone3, vec![]);
    let nosys = SeccompFilter::new(nosys, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)
        .map_err(build)?;
    [deny, nosys].into_iter().map(|f| BpfProgram::try_from(f).map_err(|e| SeccompError::Build(e.to_string()))).collect()
}

/// Installs the lock on the calling process (and everything it will exec or fork). It runs while the
/// process still holds CAP_SYS_ADMIN, so no_new_privs is not needed: set-uid programs inside (`su`, `ping`)
/// keep working, which a filter installed the usual unprivileged way would forbid.
pub fn apply_lock() -> Result<(), SeccompError> {
    for prog in lock_programs()? {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            // BpfProgram is a Vec of sock_filter with the kernel's layout.
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points into `prog`, which outlives the call; the kernel copies the program.
        let rc =
            unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_programs_build_on_this_architecture() {
        let progs = super::lock_programs().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty()));
    }
}
