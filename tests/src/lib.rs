//! A lab of network namespaces on one machine, for multi-host tests, benchmarks and demos.
//!
//! A [`Lab`] is a switch namespace holding a bridge, some host namespaces and one client namespace,
//! all on 198.18.0.0/24 (the RFC 2544 benchmarking range, never routed); a lab of more than 90 hosts spans
//! 198.18.0.0/23, its hosts past the first 90 in 198.18.1.0/24. Each host has its own
//! vservers, conf and run directories and its own cgroup parent, handed to the product through
//! environment variables by [`Host::command`]. Everything a lab makes is released when it drops,
//! also when a test fails half way.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! # fn main() -> anyhow::Result<()> {
//! if vserver_lab::skip_unless_root("doc_example") {
//!     return Ok(());
//! }
//! let lab = vserver_lab::Lab::new(2)?;
//! let status = lab.hosts[0].command("busybox").args(["ping", "-c1", "-W1"]).arg(lab.hosts[1].addr.to_string()).status()?;
//! assert!(status.success());
//! let answered = lab.client.wait_http(lab.free_addr(0), 80, Instant::now() + Duration::from_secs(1));
//! assert!(answered.is_none(), "nothing serves there yet");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod agents;
pub mod arp;
pub mod bench;
pub mod blockdev;
pub mod capture;
mod cleanup;
pub mod delay;
pub mod demo;
pub mod faults;
pub mod flood;
mod lab;
mod names;
mod netns;
pub mod previous;
mod probe;
pub mod promtool;
mod root;
mod tmpfs;
pub mod treecmp;

pub use lab::{vserver_bin, Client, Host, Lab, CLIENT_ADDR, MAX_HOSTS, SUBNET_PREFIX};
pub use names::unique;
pub use netns::Netns;
pub use root::{skip_unless_root, KillOnDrop};
pub use tmpfs::Tmpfs;
