//! How `vserver NAME start` (and `restart`) learns that a vserver's tree is the file system of a block device:
//! the flags `--root-device DEV` and `--root-fstype TYPE`, or their environment variables, which is how a
//! program that runs the command (the agent's supervisor) passes them: [`env`].

use std::ffi::OsString;
use std::path::PathBuf;

use isolate::RootDevice;

/// The environment variable of `--root-device`.
pub const DEVICE_ENV: &str = "VSERVER_ROOT_DEVICE";
/// The environment variable of `--root-fstype`.
pub const FSTYPE_ENV: &str = "VSERVER_ROOT_FSTYPE";
/// Both, for a caller that must make sure a start runs from the tree's directory: it removes them from the
/// command's environment (`env_remove`; an empty `VSERVER_ROOT_DEVICE` is refused as a usage error).
pub const ENV_NAMES: [&str; 2] = [DEVICE_ENV, FSTYPE_ENV];
/// The file system type of a root device when none is given.
pub const DEFAULT_FSTYPE: &str = "ext4";

/// The environment that makes `vserver NAME start` or `restart` run the vserver on `device`, for a program
/// that runs the command (e.g. `Command::envs(root_device::env(&device))`).
pub fn env(device: &RootDevice) -> [(&'static str, OsString); 2] {
    [(DEVICE_ENV, device.path.clone().into_os_string()), (FSTYPE_ENV, OsString::from(&device.fstype))]
}

/// The root device flags of `vserver NAME start` and `restart`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RootDeviceArgs {
    /// Run the vserver from the file system on this block device (an iSCSI or FC LUN, an RBD image), not from
    /// the directory VSERVERS_DIR/NAME.
    ///
    /// The device is mounted on VSERVERS_DIR/NAME (an empty directory, made when missing) inside the vserver's
    /// own mount namespace only: the host's mount namespace never sees it, and the kernel unmounts it when the
    /// vserver's last process ends, by a stop or a kill. `stop` returns once it is mounted nowhere on this
    /// host. The start is refused, with nothing started, when the device is mounted anywhere on this host (in
    /// any mount namespace), is not a block device, or has a file system type the kernel does not list in
    /// /proc/filesystems, and with LIMIT_DISK (the device's size bounds the tree). That no other host mounts it
    /// is the cluster's part. Not through this host's agent.
    #[arg(long, env = DEVICE_ENV, value_name = "DEV", help_heading = "Root device")]
    pub root_device: Option<PathBuf>,
    /// The file system type of --root-device, as mount(2) takes it.
    #[arg(long, env = FSTYPE_ENV, value_name = "TYPE", default_value = DEFAULT_FSTYPE, help_heading = "Root device")]
    pub root_fstype: String,
}

impl RootDeviceArgs {
    /// The root device given, if any (an empty path, which the command line refuses anyway, gives none).
    pub fn device(&self) -> Option<RootDevice> {
        let path = self.root_device.clone().filter(|p| !p.as_os_str().is_empty())?;
        let fstype = if self.root_fstype.is_empty() { DEFAULT_FSTYPE.to_string() } else { self.root_fstype.clone() };
        Some(RootDevice { path, fstype })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_carries_path_and_type_and_reads_back() {
        let device = RootDevice { path: "/dev/disk/by-id/wwn-0x5000".into(), fstype: "xfs".into() };
        let env = env(&device);
        assert_eq!(env[0], ("VSERVER_ROOT_DEVICE", OsString::from("/dev/disk/by-id/wwn-0x5000")));
        assert_eq!(env[1], ("VSERVER_ROOT_FSTYPE", OsString::from("xfs")));
        assert_eq!(ENV_NAMES, [env[0].0, env[1].0]);
        let args = RootDeviceArgs { root_device: Some(device.path.clone()), root_fstype: "xfs".into() };
        assert_eq!(args.device(), Some(device));
        assert_eq!(RootDeviceArgs { root_device: Some("".into()), ..Default::default() }.device(), None);
        let typeless = RootDeviceArgs { root_device: Some("/dev/sdb".into()), root_fstype: String::new() };
        assert_eq!(typeless.device().unwrap().fstype, "ext4");
    }
}
