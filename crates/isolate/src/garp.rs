//! Gratuitous ARP: a broadcast ARP request in which the sender and target address are both the address
//! that just came up, so every neighbour on the segment updates its table at once instead of waiting for
//! its entry to go stale. Sent from inside the network namespace that now holds the address.

use std::net::Ipv4Addr;

use crate::packet;

/// Sending the announcement failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot announce {addr} on {dev}: {op}: {errno}")]
pub struct GarpError {
    /// Device the announcement was for.
    pub dev: String,
    /// Address announced.
    pub addr: Ipv4Addr,
    /// The failing step.
    pub op: &'static str,
    /// The OS error.
    pub errno: nix::Error,
}

const ETH_P_ARP: u16 = 0x0806;

/// Builds the 42-byte Ethernet frame of a gratuitous ARP request for `addr` from `mac`.
pub fn frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]); // destination: broadcast
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target hardware address stays zero; target protocol address is our own.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Sends `count` gratuitous ARP requests for `addr` on `dev` of the calling thread's network namespace.
pub fn announce(dev: &str, addr: Ipv4Addr, count: u32) -> Result<(), GarpError> {
    let err = |op, errno| GarpError { dev: dev.to_string(), addr, op, errno };
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(|e| err("find interface", e))?;
    let mac = packet::mac_of(dev).ok_or_else(|| err("read hardware address", nix::Error::ENODEV))?;
    packet::send(ifindex, ETH_P_ARP, [0xff; 6], &frame(mac, addr), count).map_err(|(op, errno)| err(op, errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_a_broadcast_request_for_our_own_address() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = frame(mac, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[198, 18, 0, 100]);
        assert_eq!(&f[38..42], &[198, 18, 0, 100]);
    }
}
