//! What the host's kernel must offer before a context is built for a spec: each protection the spec asks for
//! needs a kernel feature, and a kernel without it refuses the start, naming what is missing and the S_UNSAFE
//! word that runs the vserver without that protection. A vserver never runs weaker than its spec says.
//!
//! One small function per feature, each asked only when the spec needs it; [`check`] runs them in turn.

use crate::seccomp::{self, SeccompError};
use crate::spec::{ContextSpec, VserverName};
use crate::syscall::{SysError, Syscall};

/// The host cannot build the context the spec asks for.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The kernel cannot filter system calls, and the spec needs filters.
    #[error(
        "vserver {name}: this kernel cannot filter system calls (it was built without CONFIG_SECCOMP_FILTER), \
         and {needs} needs it; run a kernel with seccomp filters, or {remedy}"
    )]
    NoSeccompFilters {
        /// The vserver.
        name: VserverName,
        /// What needs filters: the default profile, S_FLAGS lock, or both.
        needs: &'static str,
        /// How to run the vserver without them.
        remedy: &'static str,
    },
    /// The filters the spec asks for cannot be built here (an architecture without them).
    #[error("vserver {name}: {source}")]
    SeccompPrograms {
        /// The vserver.
        name: VserverName,
        /// Why.
        source: SeccompError,
    },
    /// S_CAPS names capabilities the host's own root does not hold (its bounding set lacks them): the
    /// vserver's processes could never get them.
    #[error(
        "vserver {name}: S_CAPS asks for {caps}, which this host's root does not hold itself (its capability \
         bounding set lacks them); remove them from S_CAPS"
    )]
    CapabilitiesMissing {
        /// The vserver.
        name: VserverName,
        /// The capabilities, space separated.
        caps: String,
    },
    /// Asking the kernel whether it has a feature failed.
    #[error("vserver {name}: cannot tell whether this kernel has {feature}: {source}")]
    Probe {
        /// The vserver.
        name: VserverName,
        /// The feature asked about.
        feature: &'static str,
        /// The failed call.
        source: SysError,
    },
}

/// Checks that the kernel behind `sys` offers everything `spec` needs. Nothing is changed either way.
pub fn check(sys: &dyn Syscall, spec: &ContextSpec) -> Result<(), PreflightError> {
    seccomp_filters(sys, spec)?;
    capabilities(spec, |c| caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false))
}

/// Every capability of the vserver's ceiling must be one the starting process (the host's root) holds: the
/// kernel would otherwise refuse them half way through the start with a bare EPERM.
fn capabilities(spec: &ContextSpec, held: impl Fn(caps::Capability) -> bool) -> Result<(), PreflightError> {
    let missing: Vec<String> =
        spec.capabilities().into_iter().filter(|c| !held(c.raw())).map(|c| c.to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PreflightError::CapabilitiesMissing { name: spec.name.clone(), caps: missing.join(" ") })
}

/// The default system call profile (unless S_UNSAFE `seccomp`) and `S_FLAGS lock` are seccomp filters: the
/// kernel must have them, and their programs must build (process 1 builds them again, inside).
fn seccomp_filters(sys: &dyn Syscall, spec: &ContextSpec) -> Result<(), PreflightError> {
    let profile = !spec.relaxed.seccomp;
    let lock = spec.flags.lock;
    if !profile && !lock {
        return Ok(());
    }
    seccomp::programs(spec).map_err(|source| PreflightError::SeccompPrograms { name: spec.name.clone(), source })?;
    let supported = sys.seccomp_filters_supported().map_err(|source| PreflightError::Probe {
        name: spec.name.clone(),
        feature: "seccomp filters",
        source,
    })?;
    if supported {
        return Ok(());
    }
    let (needs, remedy) = match (profile, lock) {
        (true, false) => (
            "its default system call profile",
            "run this vserver without the profile: add seccomp to S_UNSAFE in its conf",
        ),
        (false, _) => ("S_FLAGS lock", "remove lock from S_FLAGS in its conf"),
        (true, true) => (
            "its default system call profile and S_FLAGS lock",
            "add seccomp to S_UNSAFE and remove lock from S_FLAGS in its conf",
        ),
    };
    Err(PreflightError::NoSeccompFilters { name: spec.name.clone(), needs, remedy })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::{Call, RecordingSyscall};

    fn spec(conf: impl FnOnce(&mut ContextSpec)) -> ContextSpec {
        let mut s = ContextSpec::sample();
        conf(&mut s);
        s
    }

    #[test]
    fn a_kernel_without_seccomp_filters_refuses_a_default_vserver_naming_the_opt_out() {
        let sys = RecordingSyscall::without_seccomp_filters();
        let err = check(&sys, &spec(|_| {})).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PreflightError::NoSeccompFilters { .. }), "{err:?}");
        for part in ["vserver v1", "CONFIG_SECCOMP_FILTER", "default system call profile", "seccomp to S_UNSAFE"] {
            assert!(msg.contains(part), "{part:?} in: {msg}");
        }
        assert_eq!(sys.calls(), vec![Call::ProbeSeccompFilters], "a probe, nothing else");

        let locked = check(&sys, &spec(|s| s.flags.lock = true)).unwrap_err().to_string();
        assert!(locked.contains("profile and S_FLAGS lock") && locked.contains("remove lock"), "{locked}");
    }

    #[test]
    fn s_unsafe_seccomp_starts_without_filters_unless_lock_needs_them() {
        let sys = RecordingSyscall::without_seccomp_filters();
        check(&sys, &spec(|s| s.relaxed.seccomp = true)).unwrap();
        assert_eq!(sys.calls(), vec![], "nothing to ask the kernel");

        let err = check(
            &sys,
            &spec(|s| {
                s.relaxed.seccomp = true;
                s.flags.lock = true;
            }),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("S_FLAGS lock needs it") && err.contains("remove lock from S_FLAGS"), "{err}");
    }

    #[test]
    fn a_kernel_with_seccomp_filters_passes() {
        let sys = RecordingSyscall::default();
        check(&sys, &spec(|s| s.flags.lock = true)).unwrap();
        assert_eq!(sys.calls(), vec![Call::ProbeSeccompFilters]);
    }

    #[test]
    fn this_kernel_has_seccomp_filters() {
        // The real probe: EFAULT on any kernel this product runs on, whoever asks.
        assert!(crate::syscall::LinuxSyscall.seccomp_filters_supported().unwrap());
    }

    #[test]
    fn capabilities_the_host_lacks_are_refused_by_name() {
        let mut s = ContextSpec::sample();
        s.extra_caps.insert(crate::spec::Capability(caps::Capability::CAP_SYS_RESOURCE));
        let err = capabilities(&s, |c| c != caps::Capability::CAP_SYS_RESOURCE).unwrap_err();
        let said = err.to_string();
        assert!(said.contains("CAP_SYS_RESOURCE") && said.contains("remove them from S_CAPS"), "{said}");
        assert!(capabilities(&s, |_| true).is_ok());
    }
}
