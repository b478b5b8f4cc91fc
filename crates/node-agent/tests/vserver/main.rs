//! The `vserver` command on one host, for real: busybox vservers in a network-namespace lab, as root.
//! Every scenario builds its own lab (unique namespaces, directories and cgroups) and removes it, also
//! when it fails; without root each test says it is skipped.

mod fixture;

mod bad_input;
mod cgroup_v2;
mod devices;
mod escape;
mod isolation;
mod lifecycle;
mod limits;
mod network;
mod reboot;
mod root_device;
mod seccomp;
