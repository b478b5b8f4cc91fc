//! Delay on a host's link without netem (this kernel may lack it): a relay in the switch namespace that
//! holds every frame the host sends for a fixed time before passing it on to the bridge.
//!
//! While a [`Delay`] lives, host `i`'s switch port is off the bridge; a second veth pair takes its place
//! (`d<port>` on the bridge, `r<port>` free), and two threads carry frames between the port and `r<port>`
//! through `AF_PACKET` sockets: from the host with the delay, to the host at once. Like `tc netem delay` on
//! the host's own interface: a frame between two delayed hosts is late once. The sockets use virtio-net
//! headers, so large segments (the veths offload TCP segmentation) and partial checksums pass intact.
//! Dropping the `Delay` plugs the port back in. Loss and partition rules (they name the port) do not apply
//! while it lives.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::lab::Lab;

/// `SOL_PACKET`, `PACKET_VNET_HDR` and `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>`.
const SOL_PACKET: libc::c_int = 263;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Room for a virtio-net header and the largest segment a veth hands over.
const FRAME_BUF: usize = 70_000;

/// How often a relay thread looks at its stop flag while no frame comes.
const POLL: Duration = Duration::from_millis(50);

/// A delay on one host's link; removed when dropped.
pub struct Delay<'lab> {
    lab: &'lab Lab,
    index: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Holds every frame host `i` sends for `delay` before it reaches the switch, until the returned
    /// [`Delay`] drops.
    pub fn delay(&self, i: usize, delay: Duration) -> Result<Delay<'_>> {
        self.delay_with_loss(i, delay, 0)
    }

    /// [`Lab::delay`], and besides `loss_percent` % of the frames dropped at random each way (the loss rules
    /// of [`Lab::set_loss`] do not apply to a delayed port).
    pub fn delay_with_loss(&self, i: usize, delay: Duration, loss_percent: u8) -> Result<Delay<'_>> {
        anyhow::ensure!(loss_percent <= 100, "a loss of {loss_percent} %: at most 100");
        let port = self.hosts[i].switch_port.clone();
        let (on_bridge, relay_end) = (format!("d{port}"), format!("r{port}"));
        let switch = self.switch();
        switch.ip(["link", "add", &on_bridge, "type", "veth", "peer", "name", &relay_end])?;
        let mut guard = Delay { lab: self, index: i, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() };
        for dev in [&on_bridge, &relay_end] {
            switch.ip(["link", "set", dev, "up"])?;
        }
        for dev in [&port, &relay_end] {
            switch.ip(["link", "set", dev, "promisc", "on"])?;
        }
        let (from_host, to_host) = switch
            .run(|| Ok::<_, io::Error>((packet_socket(&port)?, packet_socket(&relay_end)?)))
            .context("entering the switch namespace")?
            .with_context(|| format!("opening packet sockets on {port} and {relay_end}"))?;
        let (from_host, to_host) = (Arc::new(from_host), Arc::new(to_host));
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
        guard.threads.extend(relay(
            Arc::clone(&from_host),
            Arc::clone(&to_host),
            delay,
            loss_percent,
            seed,
            &guard.stop,
        ));
        guard.threads.extend(relay(to_host, from_host, Duration::ZERO, loss_percent, !seed, &guard.stop));
        switch.ip(["link", "set", &port, "nomaster"])?;
        switch.ip(["link", "set", &on_bridge, "master", "br0"])?;
        Ok(guard)
    }
}

impl Drop for Delay<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let switch = self.lab.switch();
        let port = &self.lab.hosts[self.index].switch_port;
        if let Err(e) = switch.ip(["link", "set", port, "master", "br0"]) {
            eprintln!("delay: plugging {port} back into the bridge: {e:#}");
        }
        let _ = switch.ip(["link", "set", port, "promisc", "off"]);
        if let Err(e) = switch.ip(["link", "del", &format!("d{port}")]) {
            eprintln!("delay: removing the relay's veth of {port}: {e:#}");
        }
    }
}

/// A raw packet socket on `dev` (in the calling thread's namespace) that sees only frames coming in on
/// it, with virtio-net headers, and times out reads after [`POLL`].
fn packet_socket(dev: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(dev).map_err(io::Error::other)?;
    // SAFETY: plain system calls on a descriptor this function owns; every pointer passed lives across
    // the call and the lengths given are those of the pointed-to values.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: nothing arrives before bind names the interface.
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let one: libc::c_int = 1;
        for (level, opt) in [(SOL_PACKET, PACKET_VNET_HDR), (SOL_PACKET, PACKET_IGNORE_OUTGOING)] {
            let p = std::ptr::from_ref(&one).cast();
            if libc::setsockopt(raw, level, opt, p, size_of::<libc::c_int>() as libc::socklen_t) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let buf: libc::c_int = 8 << 20;
        let p = std::ptr::from_ref(&buf).cast();
        libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, size_of::<libc::c_int>() as libc::socklen_t);
        let tv = libc::timeval { tv_sec: 0, tv_usec: POLL.as_micros() as libc::suseconds_t };
        let p = std::ptr::from_ref(&tv).cast();
        if libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, p, size_of::<libc::timeval>() as libc::socklen_t)
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as libc::c_int;
        let p = std::ptr::from_ref(&addr).cast();
        if libc::bind(raw, p, size_of::<libc::sockaddr_ll>() as libc::socklen_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Two threads carrying frames from `src` to `dst`, each sent `delay` after it arrived, in order, but for
/// `loss` % of them dropped at random (a xorshift generator started from `seed`).
fn relay(
    src: Arc<OwnedFd>,
    dst: Arc<OwnedFd>,
    delay: Duration,
    loss: u8,
    seed: u64,
    stop: &Arc<AtomicBool>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let stop = Arc::clone(stop);
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; FRAME_BUF];
        let mut state = seed | 1;
        let mut lost = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 100 < u64::from(loss)
        };
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: reads into a buffer of the length given, on a descriptor kept alive by the Arc.
            let n = unsafe { libc::recv(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 || lost() {
                continue;
            }
            if tx.send((Instant::now() + delay, buf[..n as usize].to_vec())).is_err() {
                break;
            }
        }
    });
    let writer = thread::spawn(move || {
        let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        loop {
            let next = match held.front() {
                Some((due, _)) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
                None => rx.recv_timeout(POLL),
            };
            match next {
                Ok(frame) => held.push_back(frame),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            while held.front().is_some_and(|(due, _)| *due <= now) {
                let (_, frame) = held.pop_front().expect("front exists");
                // SAFETY: writes a buffer of the length given, on a descriptor kept alive by the Arc. A
                // frame the device refuses is lost, as on a real link.
                unsafe { libc::send(dst.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            }
        }
    });
    [reader, writer]
}
