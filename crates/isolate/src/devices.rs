//! The devices a vserver may use. Root inside keeps CAP_MKNOD (as in a Docker container), so it can make a
//! node for any device; the kernel's device checks decide which nodes it can then open. [`ALLOWED`] lets the
//! vserver read and write the harmless character devices its `/dev` holds (null, zero, full, random,
//! urandom, tty, console, ptmx and the pseudo-terminals) and make nodes of any other device without ever
//! opening them, as Docker does; everything else is denied.
//!
//! The list is enforced by whatever the host has, both where it has both, before any process of the
//! vserver runs (`context::start` calls [`restrict`] right after making the cgroups):
//! - a cgroup v1 `devices` hierarchy (pure v1, or the v1 side of a hybrid host): the vserver's group there
//!   gets `a` in `devices.deny`, then one rule a line in `devices.allow`;
//! - cgroup v2, which has no devices controller: a BPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, made
//!   from the same list ([`program`]), attached to the vserver's authoritative v2 group (the `unified/` group
//!   of a hybrid host).
//!
//! A host that offers neither, or a kernel that refuses the program, refuses the start with an error naming
//! what is missing and the opt-out, S_UNSAFE `devices`: a vserver never runs with fewer device checks than
//! asked for.

use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rbpf::insn_builder::{Arch, BpfCode, Cond, Instruction, IntoBytes, MemSize, Source};

use crate::cgroup::{CgroupError, Cgroups, Layout};
use crate::syscall::Syscall;

/// The kind of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

impl DeviceKind {
    /// The kernel's code for the kind in a device program's context (`BPF_DEVCG_DEV_*`).
    fn bpf(self) -> u32 {
        match self {
            Self::Block => 1,
            Self::Char => 2,
        }
    }
}

/// What a process does with a device node: the three checks the kernel makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    /// Open it for reading.
    pub read: bool,
    /// Open it for writing.
    pub write: bool,
    /// Make a node for it (mknod).
    pub mknod: bool,
}

impl Access {
    /// Read, write and mknod.
    pub const ALL: Access = Access { read: true, write: true, mknod: true };
    /// Making the node only: it exists but cannot be opened.
    pub const MKNOD: Access = Access { read: false, write: false, mknod: true };

    /// The kernel's bits for it in a device program's context (`BPF_DEVCG_ACC_*`).
    fn bits(self) -> u32 {
        u32::from(self.mknod) | u32::from(self.read) << 1 | u32::from(self.write) << 2
    }

    /// Whether everything `asked` wants is granted by `self`.
    fn covers(self, asked: Access) -> bool {
        asked.bits() & !self.bits() == 0
    }
}

impl fmt::Display for Access {
    /// `rwm`, `m`...: the letters of the v1 `devices.allow` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, letter) in [(self.read, "r"), (self.write, "w"), (self.mknod, "m")] {
            if on {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// One entry of an allow-list: devices of a kind, by major and minor number (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRule {
    /// Character or block.
    pub kind: DeviceKind,
    /// The major number, or any.
    pub major: Option<u32>,
    /// The minor number, or any.
    pub minor: Option<u32>,
    /// What may be done.
    pub access: Access,
}

impl DeviceRule {
    const fn char(major: u32, minor: Option<u32>, access: Access) -> Self {
        Self { kind: DeviceKind::Char, major: Some(major), minor, access }
    }

    /// Whether this rule grants `access` to the device `kind` `major`:`minor`.
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access.covers(access)
    }
}

impl fmt::Display for DeviceRule {
    /// The rule as a line of a v1 `devices.allow` file: `c 1:3 rwm`, `b *:* m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(f, "{kind} {}:{} {}", number(self.major), number(self.minor), self.access)
    }
}

/// The devices of a default vserver. Process 1 makes the nodes of `rootfs::DEVICES` after joining the
/// cgroups, so they are allowed `m` as well as `rw`; `/dev/ptmx` (5:2) comes with the vserver's own devpts
/// instance, whose terminals are 136:*. Any other node may be made, never opened.
pub const ALLOWED: &[DeviceRule] = &[
    DeviceRule::char(1, Some(3), Access::ALL), // null
    DeviceRule::char(1, Some(5), Access::ALL), // zero
    DeviceRule::char(1, Some(7), Access::ALL), // full
    DeviceRule::char(1, Some(8), Access::ALL), // random
    DeviceRule::char(1, Some(9), Access::ALL), // urandom
    DeviceRule::char(5, Some(0), Access::ALL), // tty
    DeviceRule::char(5, Some(1), Access::ALL), // console
    DeviceRule::char(5, Some(2), Access::ALL), // ptmx
    DeviceRule::char(136, None, Access::ALL),  // pts/*
    DeviceRule { kind: DeviceKind::Char, major: None, minor: None, access: Access::MKNOD },
    DeviceRule { kind: DeviceKind::Block, major: None, minor: None, access: Access::MKNOD },
];

/// Whether `rules` grant `access` to the device `kind` `major`:`minor`: what the kernel decides with the
/// v1 controller or the program made by [`program`].
pub fn allowed(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
    rules.iter().any(|r| r.allows(kind, major, minor, access))
}

/// Registers of the device program. R1 holds the context on entry; R0 the verdict on exit.
const CTX: u8 = 1;
const ACCESS: u8 = 2;
const KIND: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

/// The eBPF instructions of a `BPF_PROG_TYPE_CGROUP_DEVICE` program that allows exactly what `rules` allow
/// (1: allowed, 0: denied), 8 bytes each.
///
/// The kernel calls it with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where
/// `access_type` holds the device's kind in its low 16 bits and the access asked for in its high 16 bits.
/// The program loads the four values into registers, then tests the rules in order: each test of a rule
/// (kind, access, major, minor) is one jump past the rule's end when it fails; a rule whose tests all pass
/// returns 1. After the last rule it returns 0.
pub fn program(rules: &[DeviceRule]) -> Vec<u8> {
    let mut code = BpfCode::new();
    code.load_x(MemSize::Word).set_dst(KIND).set_src(CTX).set_off(0).push();
    code.mov(Source::Reg, Arch::X32).set_dst(ACCESS).set_src(KIND).push();
    code.bit_and(Source::Imm, Arch::X32).set_dst(KIND).set_imm(0xffff).push();
    code.right_shift(Source::Imm, Arch::X32).set_dst(ACCESS).set_imm(16).push();
    code.load_x(MemSize::Word).set_dst(MAJOR).set_src(CTX).set_off(4).push();
    code.load_x(MemSize::Word).set_dst(MINOR).set_src(CTX).set_off(8).push();
    for rule in rules {
        // (condition, register, value): the rule does not apply when the condition holds.
        let mut tests = vec![(Cond::NotEquals, KIND, rule.kind.bpf())];
        // Any bit asked for that the rule does not grant, those the kernel may add one day included.
        let refused = 0xffff & !rule.access.bits();
        tests.push((Cond::BitAnd, ACCESS, refused));
        tests.extend(rule.major.map(|m| (Cond::NotEquals, MAJOR, m)));
        tests.extend(rule.minor.map(|m| (Cond::NotEquals, MINOR, m)));
        let count = tests.len();
        for (i, (cond, reg, value)) in tests.into_iter().enumerate() {
            // Past the tests left and the two instructions that allow.
            let past = (count - 1 - i + 2) as i16;
            // Device numbers are below 2^20 and access bits below 2^16: the immediate is never negative, so
            // the kernel's sign extension of it changes nothing.
            let imm = i32::try_from(value).expect("device numbers fit in 20 bits");
            code.jump_conditional(cond, Source::Imm).set_dst(reg).set_imm(imm).set_off(past).push();
        }
        code.mov(Source::Imm, Arch::X32).set_dst(0).set_imm(1).push();
        code.exit().push();
    }
    code.mov(Source::Imm, Arch::X32).set_dst(0).set_imm(0).push();
    code.exit().push();
    code.into_bytes().to_vec()
}

/// The device allow-list could not be put in place; the vserver does not start.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// The v1 `devices` group could not be made or given its list.
    #[error(
        "cannot limit the vserver's devices: {source}; S_UNSAFE=\"devices\" in the vserver's conf starts it without a \
         device allow-list (root inside can then open any device node it makes)"
    )]
    V1Group {
        /// What failed.
        source: CgroupError,
    },
    /// The kernel refused to load the device program.
    #[error(
        "cannot limit the vserver's devices: the kernel refused to load a cgroup device program \
         (bpf BPF_PROG_LOAD of type BPF_PROG_TYPE_CGROUP_DEVICE: {errno}); on cgroup v2 the device allow-list \
         needs Linux 4.15 or later built with CONFIG_CGROUP_BPF and CONFIG_BPF_SYSCALL; S_UNSAFE=\"devices\" \
         in the vserver's conf starts it without a device allow-list (root inside can then open any device \
         node it makes)"
    )]
    Load {
        /// The OS error.
        errno: nix::Error,
    },
    /// The kernel refused to attach the device program to the vserver's group.
    #[error(
        "cannot limit the vserver's devices: the kernel refused to attach the device program to cgroup \
         {group} (bpf BPF_PROG_ATTACH, BPF_CGROUP_DEVICE: {errno}; EPERM: a group above it holds a device \
         program that allows no other); S_UNSAFE=\"devices\" in the vserver's conf starts it without a device \
         allow-list (root inside can then open any device node it makes)"
    )]
    Attach {
        /// The vserver's v2 group.
        group: PathBuf,
        /// The OS error.
        errno: nix::Error,
    },
}

/// Puts [`ALLOWED`] in place for the vserver of `cgroups`, whose groups exist and hold no process yet: in
/// its v1 `devices` group where the host mounts that hierarchy, and as a device program on its v2 group
/// where it has one (pure v2, hybrid). Running it again on the same groups sets the same list.
pub fn restrict(sys: &dyn Syscall, cgroups: &Cgroups) -> Result<(), DevicesError> {
    let lines: Vec<String> = ALLOWED.iter().map(ToString::to_string).collect();
    // A pure v1 host has nothing else: a missing devices hierarchy is an error there (said by the call).
    if cgroups.layout() == Layout::V1 || cgroups.devices_group().is_some() {
        cgroups.limit_devices_v1(&lines).map_err(|source| DevicesError::V1Group { source })?;
    }
    if cgroups.layout() != Layout::V1 {
        let prog = sys.load_device_program(&program(ALLOWED)).map_err(|e| DevicesError::Load { errno: e.errno })?;
        sys.attach_device_program(prog.as_fd(), cgroups.path())
            .map_err(|e| DevicesError::Attach { group: cgroups.path().to_path_buf(), errno: e.errno })?;
    }
    tracing::debug!(group = %cgroups.path().display(), layout = %cgroups.layout(), "device allow-list in place");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use tempfile::TempDir;

    use super::*;
    use crate::spec::{CgroupPlace, VserverName};
    use crate::syscall::{Call, RecordingSyscall};

    const RWM: Access = Access::ALL;
    const R: Access = Access { read: true, write: false, mknod: false };
    const W: Access = Access { read: false, write: true, mknod: false };
    const M: Access = Access::MKNOD;

    /// Every access a process can ask for: each non-empty combination of the three.
    fn accesses() -> Vec<Access> {
        (1u8..8).map(|b| Access { mknod: b & 1 != 0, read: b & 2 != 0, write: b & 4 != 0 }).collect()
    }

    /// What the kernel hands a device program.
    fn context(kind: DeviceKind, major: u32, minor: u32, access: Access) -> Vec<u8> {
        let access_type = kind.bpf() | access.bits() << 16;
        [access_type, major, minor].iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    /// Runs `prog` in rbpf's interpreter, an implementation of eBPF independent of this module.
    fn run(prog: &[u8], kind: DeviceKind, major: u32, minor: u32, access: Access) -> u64 {
        let mut ctx = context(kind, major, minor, access);
        let vm = rbpf::EbpfVmRaw::new(Some(prog)).expect("the program passes rbpf's verifier");
        vm.execute_program(&mut ctx).expect("the program runs")
    }

    #[test]
    fn the_list_allows_the_vservers_own_devices_and_only_mknod_of_others() {
        use DeviceKind::{Block, Char};
        let yes = |kind, major, minor, access| allowed(ALLOWED, kind, major, minor, access);
        for (name, major, minor) in crate::rootfs::DEVICES {
            assert!(yes(Char, *major as u32, *minor as u32, RWM), "/dev/{name} is made and used inside");
        }
        for (major, minor) in [(5, 1), (5, 2), (136, 0), (136, 7), (136, 1 << 19)] {
            assert!(yes(Char, major, minor, RWM), "c {major}:{minor}");
        }
        // Host devices: the loop device, kvm, memory, disks, the pts of other majors, tun.
        for (kind, major, minor) in
            [(Block, 7, 0), (Block, 8, 0), (Char, 10, 232), (Char, 1, 1), (Char, 1, 4), (Char, 137, 0), (Char, 10, 200)]
        {
            assert!(yes(kind, major, minor, M), "{kind:?} {major}:{minor} may be made");
            for access in [R, W, RWM] {
                assert!(!yes(kind, major, minor, access), "{kind:?} {major}:{minor} {access} must be denied");
            }
        }
        assert!(!yes(Block, 1, 3, R), "a block device with null's numbers is not null");
    }

    #[test]
    fn the_v1_lines_are_the_devices_allow_syntax() {
        let lines: Vec<String> = ALLOWED.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c *:* m",
                "b *:* m"
            ]
        );
    }

    #[test]
    fn the_program_decides_as_the_list_for_every_device_and_access() {
        let prog = program(ALLOWED);
        assert!(prog.len().is_multiple_of(8));
        let majors = [0, 1, 2, 4, 5, 7, 8, 10, 135, 136, 137, 254, (1 << 12) - 1];
        let minors = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 232, (1 << 20) - 1];
        let mut checked = 0;
        for kind in [DeviceKind::Char, DeviceKind::Block] {
            for major in majors {
                for minor in minors {
                    for access in accesses() {
                        let want = u64::from(allowed(ALLOWED, kind, major, minor, access));
                        let got = run(&prog, kind, major, minor, access);
                        assert_eq!(got, want, "{kind:?} {major}:{minor} {access}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * majors.len() * minors.len() * 7);
    }

    #[test]
    fn the_program_pins_each_test_of_a_rule() {
        use DeviceKind::{Block, Char};
        // One rule per shape: a wrong comparison or jump in any test shows up here.
        let rules = [
            DeviceRule::char(1, Some(3), R),
            DeviceRule {
                kind: Block,
                major: Some(7),
                minor: None,
                access: Access { read: true, write: true, mknod: false },
            },
        ];
        let prog = program(&rules);
        let cases = [
            (Char, 1, 3, R, 1),
            (Char, 1, 3, W, 0),
            (Char, 1, 3, RWM, 0),
            (Char, 1, 4, R, 0),
            (Char, 2, 3, R, 0),
            (Block, 1, 3, R, 0),
            (Block, 7, 0, R, 1),
            (Block, 7, 9, Access { read: true, write: true, mknod: false }, 1),
            (Block, 7, 0, M, 0),
            (Char, 7, 0, R, 0),
            (Block, 8, 0, R, 0),
        ];
        for (kind, major, minor, access, want) in cases {
            assert_eq!(run(&prog, kind, major, minor, access), want, "{kind:?} {major}:{minor} {access}");
        }
        assert_eq!(run(&program(&[]), Char, 1, 3, R), 0, "an empty list denies everything");
    }

    fn web() -> VserverName {
        VserverName::parse("web").unwrap()
    }

    fn place(dir: &TempDir) -> CgroupPlace {
        CgroupPlace { root: dir.path().to_path_buf(), parent: "vservers".into() }
    }

    /// The v1 control files of the vserver's devices group, as the kernel would show them.
    fn devices_files(root: &Path) {
        let group = root.join("devices/vservers/web");
        fs::create_dir_all(&group).unwrap();
        fs::write(group.join("devices.deny"), "").unwrap();
        fs::write(group.join("devices.allow"), "").unwrap();
    }

    #[test]
    fn pure_v2_attaches_the_program_to_the_vservers_group() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "pids").unwrap();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let sys = RecordingSyscall::default();
        restrict(&sys, &cg).unwrap();
        assert_eq!(
            sys.calls(),
            [Call::LoadDeviceProgram(program(ALLOWED)), Call::AttachDeviceProgram(dir.path().join("vservers/web"))]
        );
    }

    #[test]
    fn a_hybrid_host_gets_both_the_v1_group_and_the_program_on_the_unified_group() {
        let dir = TempDir::new().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("unified")).unwrap();
        fs::write(r.join("unified/cgroup.procs"), "1\n").unwrap();
        devices_files(r);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let sys = RecordingSyscall::default();
        restrict(&sys, &cg).unwrap();
        assert_eq!(fs::read_to_string(r.join("devices/vservers/web/devices.deny")).unwrap(), "a");
        // One write a rule: a plain file shows them end to end.
        let lines: String = ALLOWED.iter().map(ToString::to_string).collect();
        assert_eq!(fs::read_to_string(r.join("devices/vservers/web/devices.allow")).unwrap(), lines);
        assert_eq!(sys.calls()[1], Call::AttachDeviceProgram(r.join("unified/vservers/web")));
    }

    #[test]
    fn pure_v1_uses_the_devices_group_only_and_refuses_without_one() {
        let dir = TempDir::new().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("freezer")).unwrap();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let sys = RecordingSyscall::default();
        let err = restrict(&sys, &cg).unwrap_err();
        assert!(matches!(
            &err,
            DevicesError::V1Group { source: CgroupError::Controller { controller: "devices", .. } }
        ));
        let msg = err.to_string();
        assert!(msg.contains(&r.join("devices").display().to_string()) && msg.contains("S_UNSAFE"), "{msg}");
        assert!(sys.calls().is_empty(), "no program on a v1 host");

        devices_files(r);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        restrict(&sys, &cg).unwrap();
        assert_eq!(fs::read_to_string(r.join("devices/vservers/web/devices.deny")).unwrap(), "a");
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_kernel_without_device_programs_refuses_the_start_and_names_the_opt_out() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "pids").unwrap();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let sys = RecordingSyscall::refusing_device_programs(nix::Error::EINVAL);
        let err = restrict(&sys, &cg).unwrap_err();
        assert!(matches!(err, DevicesError::Load { errno: nix::Error::EINVAL }), "{err:?}");
        let msg = err.to_string();
        for said in ["BPF_PROG_TYPE_CGROUP_DEVICE", "EINVAL", "CONFIG_CGROUP_BPF", "S_UNSAFE=\"devices\""] {
            assert!(msg.contains(said), "{said}: {msg}");
        }
        assert_eq!(sys.calls(), [Call::LoadDeviceProgram(program(ALLOWED))], "nothing is attached");
    }
}
