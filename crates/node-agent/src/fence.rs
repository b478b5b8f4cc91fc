//! Fencing this host: every vserver with a group under the host's cgroup parent has its interfaces set down
//! (so its addresses stop answering at once, ARP included) and is killed through its cgroup. Used by the
//! host watchdog when the agent stops petting it, and by the agent itself when it loses the cluster's
//! majority.

use isolate::cgroup::Cgroups;
use isolate::spec::CgroupPlace;

/// Fences every vserver under `place`; `say` gets one line per step (for a log). Carries on past any
/// failure, each reported. Returns how many vservers it found.
pub fn fence_all(place: &CgroupPlace, mut say: impl FnMut(String)) -> usize {
    let names = match Cgroups::list(place) {
        Ok(n) => n,
        Err(e) => {
            say(format!("cannot list the vservers: {e}"));
            return 0;
        }
    };
    for name in &names {
        let cgroups = match Cgroups::new(place, name) {
            Ok(c) => c,
            Err(e) => {
                say(format!("{name}: {e}"));
                continue;
            }
        };
        // A process in the vserver's own network namespace (not its keeper, which stays in the host's).
        if let Some(pid) = cgroups.procs().ok().and_then(|p| isolate::network::private_netns_member(&p)) {
            match isolate::network::down_all(pid) {
                Ok(n) => say(format!("{name}: {n} interfaces set down")),
                Err(e) => say(format!("{name}: cannot set its interfaces down: {e}")),
            }
        }
        match cgroups.kill() {
            Ok(()) => say(format!("{name}: killed")),
            Err(e) => say(format!("{name}: cannot kill: {e}")),
        }
    }
    names.len()
}
