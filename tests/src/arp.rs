//! Counting gratuitous ARPs as a neighbour sees them: a raw `AF_PACKET` socket in the client's namespace
//! that keeps, for one IPv4 address, every ARP request whose sender and target address are both that
//! address (what a host sends to announce it).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::Lab;

const ETH_P_ARP: u16 = 0x0806;

/// Counts the gratuitous ARPs for one address that reach the client, until dropped.
pub struct ArpWatch {
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArpWatch {
    /// How many have arrived since [`Lab::watch_arp`].
    pub fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Lab {
    /// Starts counting the gratuitous ARPs for `addr` that arrive at the client's interface.
    pub fn watch_arp(&self, addr: Ipv4Addr) -> Result<ArpWatch> {
        let dev = self.client.dev.clone();
        let fd = self
            .client
            .netns
            .run(|| arp_socket(&dev))
            .context("entering the client's namespace")?
            .with_context(|| format!("opening a packet socket on the client's {dev}"))?;
        let (seen, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                // SAFETY: the buffer lives across the call and its length is the one given.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && is_gratuitous_for(&buf[..n as usize], addr) {
                    s.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(ArpWatch { seen, stop, thread: Some(thread) })
    }
}

/// Whether `frame` (Ethernet) is an ARP request announcing `addr`: sender and target protocol address both
/// `addr`.
pub fn is_gratuitous_for(frame: &[u8], addr: Ipv4Addr) -> bool {
    frame.len() >= 42
        && frame[12..14] == ETH_P_ARP.to_be_bytes()
        && frame[20..22] == [0, 1]
        && frame[28..32] == addr.octets()
        && frame[38..42] == addr.octets()
}

/// A raw packet socket on `dev` (in the calling thread's namespace) that receives ARP frames, with reads
/// that time out every 100 ms.
fn arp_socket(dev: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(dev).map_err(io::Error::other)?;
    // SAFETY: plain system calls on a descriptor this function owns; every pointer passed lives across the
    // call and the lengths given are those of the pointed-to values.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be()));
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        let p = std::ptr::from_ref(&tv).cast();
        if libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, p, size_of::<libc::timeval>() as libc::socklen_t)
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_ll = std::mem::zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_ARP.to_be();
        sa.sll_ifindex = ifindex as libc::c_int;
        let p = std::ptr::from_ref(&sa).cast();
        if libc::bind(raw, p, size_of::<libc::sockaddr_ll>() as libc::socklen_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_announcement_of_the_address_counts() {
        let addr = Ipv4Addr::new(198, 18, 0, 100);
        let mut frame = [0u8; 42];
        frame[0..6].copy_from_slice(&[0xff; 6]);
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[20..22].copy_from_slice(&[0, 1]);
        frame[28..32].copy_from_slice(&addr.octets());
        frame[38..42].copy_from_slice(&addr.octets());
        assert!(is_gratuitous_for(&frame, addr));
        assert!(!is_gratuitous_for(&frame, Ipv4Addr::new(198, 18, 0, 101)));
        let mut reply = frame;
        reply[21] = 2;
        assert!(!is_gratuitous_for(&reply, addr));
        assert!(!is_gratuitous_for(&frame[..40], addr));
    }
}
