//! Sending a hand-built Ethernet frame out of an interface through a raw `AF_PACKET` socket, as the
//! announcements do (gratuitous ARP, unsolicited neighbour advertisement): no address needs to be usable
//! yet, and nothing of the kernel's own neighbour machinery is involved.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Time between two copies of the same frame.
const GAP: Duration = Duration::from_millis(50);

/// The hardware address of `dev` in the calling thread's network namespace.
pub(crate) fn mac_of(dev: &str) -> Option<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        if ifa.interface_name != dev {
            continue;
        }
        if let Some(link) = ifa.address.as_ref().and_then(|a| a.as_link_addr()) {
            if let Some(mac) = link.addr() {
                return Some(mac);
            }
        }
    }
    None
}

/// Sends `frame` (a whole Ethernet frame of type `ethertype`, to `dst`) `count` times, [`GAP`] apart, on
/// interface `ifindex` of the calling thread's network namespace. On failure: the failing step and its error.
pub(crate) fn send(
    ifindex: u32,
    ethertype: u16,
    dst: [u8; 6],
    frame: &[u8],
    count: u32,
) -> Result<(), (&'static str, nix::Error)> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ethertype.to_be())) };
    if fd < 0 {
        return Err(("open packet socket", nix::Error::last()));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value that we fill in below.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ethertype.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&dst);
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(GAP);
        }
        // SAFETY: the buffer and address point to live, correctly sized values for the whole call.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(("send", nix::Error::last()));
        }
    }
    Ok(())
}
