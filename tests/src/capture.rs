//! A sniffer on the lab's switch, as an attacker on the cluster network would run one: every frame that
//! crosses the bridge (an `AF_PACKET` socket in the switch's namespace, each frame once, as it enters the
//! switch), parsed into IPv4 TCP segments and UDP datagrams, and the means to replay them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Result};

use crate::Netns;

/// One IPv4 packet seen on the switch.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
    /// TCP (with its sequence number) or UDP.
    pub tcp_seq: Option<u32>,
    /// The payload (TCP data or the UDP datagram's).
    pub payload: Vec<u8>,
}

/// The capture, running until [`Capture::finish`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    /// Starts capturing every frame that enters the switch of namespace `switch`.
    pub fn start(switch: &Netns) -> Result<Capture> {
        let enter = switch.enterer();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let socket = enter().map_err(anyhow::Error::from).and_then(|()| packet_socket());
            let socket = match socket {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Vec::new();
                }
            };
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::Relaxed) {
                // SAFETY: an address of the right size for AF_PACKET, and a buffer of `buf.len()` bytes.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: as above.
                let n = unsafe {
                    libc::recvfrom(
                        socket.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        std::ptr::addr_of_mut!(from).cast(),
                        &mut len,
                    )
                };
                // Each frame once: as it enters the switch from a port, not again as it leaves by another.
                if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            frames
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Capture { stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the capture thread ended before it started"),
        }
    }

    /// Stops, and gives every frame seen, raw.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An `AF_PACKET` socket for every protocol on every interface of the calling thread's namespace, with a
/// large buffer and a short receive timeout (so that the capture sees its stop).
fn packet_socket() -> Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket calls; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol) };
    if fd < 0 {
        bail!("cannot open a packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size: libc::c_int = 32 << 20;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: option values of the sizes given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// The IPv4 TCP and UDP packets of `frames` (Ethernet II, no VLAN).
pub fn packets(frames: &[Vec<u8>]) -> Vec<Packet> {
    let mut out = Vec::new();
    for f in frames {
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if ihl < 20 || total < ihl {
            continue;
        }
        let (src, dst) = (Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]), Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        let l4 = &ip[ihl..total];
        let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        match ip[9] {
            6 if l4.len() >= 20 => {
                let off = usize::from(l4[12] >> 4) * 4;
                if off < 20 || off > l4.len() {
                    continue;
                }
                out.push(Packet {
                    src: SocketAddrV4::new(src, port(&l4[0..2])),
                    dst: SocketAddrV4::new(dst, port(&l4[2..4])),
                    tcp_seq: Some(u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]])),
                    payload: l4[off..].to_vec(),
                });
            }
            17 if l4.len() >= 8 => out.push(Packet {
                src: SocketAddrV4::new(src, port(&l4[0..2])),
                dst: SocketAddrV4::new(dst, port(&l4[2..4])),
                tcp_seq: None,
                payload: l4[8..].to_vec(),
            }),
            _ => {}
        }
    }
    out
}

/// Each TCP stream's bytes in one direction, by (sender, receiver): segments in sequence order, each
/// sequence number once (retransmissions dropped).
pub fn tcp_streams(packets: &[Packet]) -> BTreeMap<(SocketAddrV4, SocketAddrV4), Vec<u8>> {
    let mut segments: BTreeMap<(SocketAddrV4, SocketAddrV4), BTreeMap<u32, &[u8]>> = BTreeMap::new();
    for p in packets.iter().filter(|p| !p.payload.is_empty()) {
        if let Some(seq) = p.tcp_seq {
            segments.entry((p.src, p.dst)).or_default().entry(seq).or_insert(&p.payload);
        }
    }
    segments.into_iter().map(|(k, segs)| (k, segs.into_values().flatten().copied().collect())).collect()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
