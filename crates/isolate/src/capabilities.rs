//! The super-user ceiling of a context. Root inside keeps only the default set plus S_CAPS: every other
//! capability leaves the bounding set, which no process can ever raise again, so no later `exec` (even of a
//! set-uid binary) regains it.

use std::collections::BTreeSet;

use caps::{CapSet, CapsHashSet};

use crate::spec::Capability;

use crate::syscall::{SysResult, Syscall};

/// Reduces the calling thread to `keep`: bounding set first (needs CAP_SETPCAP, still held), then the
/// inheritable, permitted and effective sets, and the ambient set cleared.
pub fn restrict_to(sys: &dyn Syscall, keep: &BTreeSet<Capability>) -> SysResult {
    for cap in caps::all() {
        if !keep.contains(&Capability(cap)) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            sys.drop_bounding(cap)?;
        }
    }
    let keep: CapsHashSet = keep.iter().map(|c| c.raw()).collect();
    sys.clear_ambient()?;
    sys.set_caps(CapSet::Inheritable, &CapsHashSet::new())?;
    // Effective must stay within permitted at every step: shrink effective before permitted.
    sys.set_caps(CapSet::Effective, &keep)?;
    sys.set_caps(CapSet::Permitted, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPABILITIES;
    use crate::syscall::{Call, RecordingSyscall};

    #[test]
    fn drops_admin_capabilities_and_keeps_the_default_set() {
        let sys = RecordingSyscall::default();
        let mut keep: BTreeSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().map(Capability).collect();
        keep.insert(Capability(caps::Capability::CAP_NET_RAW));
        restrict_to(&sys, &keep).unwrap();
        let calls = sys.calls();
        let dropped: Vec<Capability> = calls
            .iter()
            .filter_map(|c| if let Call::DropBounding(c) = c { Some(Capability(*c)) } else { None })
            .collect();
        // The test process may itself lack some capabilities; whatever it has beyond `keep` is dropped.
        for cap in &dropped {
            assert!(!keep.contains(cap));
        }
        if caps::has_cap(None, CapSet::Bounding, caps::Capability::CAP_SYS_ADMIN).unwrap() {
            for admin in
                [caps::Capability::CAP_SYS_ADMIN, caps::Capability::CAP_NET_ADMIN, caps::Capability::CAP_SYS_MODULE]
            {
                assert!(dropped.contains(&Capability(admin)));
            }
        }
        let permitted = calls.iter().find_map(|c| match c {
            Call::SetCaps(set, v) if set == "Permitted" => Some(v.iter().copied().map(Capability).collect::<Vec<_>>()),
            _ => None,
        });
        assert_eq!(permitted.unwrap(), keep.into_iter().collect::<Vec<_>>());
    }
}
