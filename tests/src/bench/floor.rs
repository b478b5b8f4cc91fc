//! The floor: what any isolation costs at least. One shell sequence makes a network namespace with
//! a macvlan of the host's `eth0` in it carrying the address, and runs busybox httpd under `unshare`
//! and `chroot`; stopping kills the namespace's processes and deletes it.
//!
//! The macvlan is created inside the namespace (`ip link add ... netns NS`) and the namespace's
//! address and links are set by one `ip -batch`. The literal sequence (create the macvlan in the
//! host, then `ip link set DEV netns NS`, then one `ip` per setting) is kept as the `floor-move`
//! variant: the move alone waits for an RCU grace period, 20-35 ms on the reference machine, which a
//! floor should not include but a product that moves its devices pays.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;

use anyhow::{Context, Result};

use super::contender::{plumb, Contender};
use super::service::make_busybox_root;
use crate::lab::{Host, SUBNET_PREFIX};
use crate::names::unique;
use crate::netns::destroy_by_name;

/// The timed start, as one shell run: `$1` namespace, `$2` macvlan name, `$3` address/prefix,
/// `$4` root, `$5` device. httpd runs in the foreground (`-f`): under `unshare --pid --fork` it is
/// the new namespace's init, and a daemonizing httpd would end that namespace as it forks away.
const START_SCRIPT: &str = r#"set -e
ip netns add "$1"
ip link add "$2" link "$5" netns "$1" type macvlan mode bridge
ip -n "$1" -batch - <<END
addr add $3 dev $2
link set $2 up
link set lo up
END
ip netns exec "$1" unshare --mount --pid --ipc --uts --fork chroot "$4" /bin/busybox httpd -f -p 80 -h /www &
"#;

/// [`START_SCRIPT`] as first written: the macvlan made in the host and moved into the namespace,
/// one `ip` run per setting.
const START_SCRIPT_MOVING: &str = r#"set -e
ip netns add "$1"
ip link add "$2" link "$5" type macvlan mode bridge
ip link set "$2" netns "$1"
ip -n "$1" addr add "$3" dev "$2"
ip -n "$1" link set "$2" up
ip -n "$1" link set lo up
ip netns exec "$1" unshare --mount --pid --ipc --uts --fork chroot "$4" /bin/busybox httpd -f -p 80 -h /www &
"#;

/// Roots `fb0`, `fb1`, ... under the host's directory, each started in a namespace of its own.
pub(crate) struct Floor<'lab> {
    host: &'lab Host,
    dir: PathBuf,
    busybox: PathBuf,
    script: &'static str,
    /// Instance → (namespace, address); each namespace is destroyed on drop if it still exists.
    instances: BTreeMap<usize, (String, Ipv4Addr)>,
}

impl<'lab> Floor<'lab> {
    /// A directory for the roots, with one copy of busybox that the roots hard-link; `move_device`
    /// picks the literal, moving sequence (`floor-move`).
    pub(crate) fn new(host: &'lab Host, move_device: bool) -> Result<Self> {
        let dir = host.dir.join(if move_device { "floor-move" } else { "floor" });
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let busybox = dir.join("busybox");
        fs::copy("/usr/bin/busybox", &busybox).context("copying /usr/bin/busybox (apt-get install busybox-static)")?;
        Ok(Floor {
            host,
            dir,
            busybox,
            script: if move_device { START_SCRIPT_MOVING } else { START_SCRIPT },
            instances: BTreeMap::new(),
        })
    }

    fn root(&self, i: usize) -> PathBuf {
        self.dir.join(format!("fb{i}"))
    }
}

impl Contender for Floor<'_> {
    fn prepare(&mut self, i: usize, addr: Ipv4Addr, marker: &str) -> Result<()> {
        make_busybox_root(&self.root(i), &self.busybox, marker)?;
        self.instances.insert(i, (unique("vfl"), addr));
        Ok(())
    }

    fn launch(&mut self, i: usize) -> Result<Child> {
        let (netns, addr) = self.instances.get(&i).context("launching an unprepared instance")?;
        let mut start = self.host.command("sh");
        start
            .args(["-c", self.script, "floor", netns, &format!("mv{i}")])
            .arg(format!("{addr}/{SUBNET_PREFIX}"))
            .arg(self.root(i))
            .arg(&self.host.dev);
        plumb(&mut start, &self.log_path(i))?;
        start.spawn().context("starting the floor's shell")
    }

    fn stop(&mut self, i: usize) -> Result<()> {
        if let Some((netns, _)) = self.instances.get(&i) {
            destroy_by_name(netns);
        }
        Ok(())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("fb{i}.log"))
    }
}

impl Drop for Floor<'_> {
    fn drop(&mut self) {
        for (netns, _) in self.instances.values() {
            destroy_by_name(netns);
        }
    }
}
