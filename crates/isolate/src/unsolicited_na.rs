//! Unsolicited neighbour advertisement (RFC 4861 §7.2.6), IPv6's gratuitous ARP: an advertisement for the
//! address that just came up, with the override flag, to all nodes (`ff02::1`). Every neighbour on the
//! segment that has an entry for the address takes the new hardware address at once (and confirms it on
//! next use); one without an entry ignores it and asks when it needs to. Built by hand and sent through a
//! packet socket from inside the network namespace that now holds the address: a freshly added address is
//! still tentative (duplicate address detection) and could not be bound by an ICMPv6 socket.

use std::net::Ipv6Addr;

use crate::packet;

/// Sending the announcement failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot announce {addr} on {dev}: {op}: {errno}")]
pub struct NaError {
    /// Device the announcement was for.
    pub dev: String,
    /// Address announced.
    pub addr: Ipv6Addr,
    /// The failing step.
    pub op: &'static str,
    /// The OS error.
    pub errno: nix::Error,
}

const ETH_P_IPV6: u16 = 0x86DD;
/// The all-nodes multicast group, and its Ethernet address (33:33 and the group's last 32 bits).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Neighbour discovery is only believed from the link itself: hop limit 255 (RFC 4861 §7.1.2).
const HOP_LIMIT: u8 = 255;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Flags: override (0x20); router (0x80) and solicited (0x40) clear.
const OVERRIDE: u8 = 0x20;
/// Option Target Link-Layer Address, 1 unit of 8 bytes long.
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// The ICMPv6 message: the 24-byte advertisement and the 8-byte option.
const MESSAGE_LEN: usize = 32;
/// Ethernet header (14), IPv6 header (40), message.
pub const FRAME_LEN: usize = 14 + 40 + MESSAGE_LEN;

/// Builds the Ethernet frame of an unsolicited neighbour advertisement for `addr` from `mac`, sent from
/// `addr` itself to all nodes.
pub fn frame(mac: [u8; 6], addr: Ipv6Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60; // version 6, traffic class and flow label 0
    ip[4..6].copy_from_slice(&(MESSAGE_LEN as u16).to_be_bytes());
    ip[6] = NEXT_HEADER_ICMPV6;
    ip[7] = HOP_LIMIT;
    ip[8..24].copy_from_slice(&addr.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let m = &mut f[54..];
    m[0] = NEIGHBOUR_ADVERTISEMENT;
    m[4] = OVERRIDE;
    m[8..24].copy_from_slice(&addr.octets());
    m[24] = TARGET_LINK_LAYER_ADDRESS;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    let sum = checksum(addr, ALL_NODES, m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `message` (its checksum field zero) from `src` to `dst`: the one's complement of
/// the one's complement sum of the pseudo-header (RFC 8200 §8.1: both addresses, the length, the next
/// header) and the message, in 16-bit words.
fn checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    pseudo.extend_from_slice(message);
    let mut sum: u32 = pseudo.chunks(2).map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` unsolicited neighbour advertisements for `addr` on `dev` of the calling thread's network
/// namespace.
pub fn announce(dev: &str, addr: Ipv6Addr, count: u32) -> Result<(), NaError> {
    let err = |op, errno| NaError { dev: dev.to_string(), addr, op, errno };
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(|e| err("find interface", e))?;
    let mac = packet::mac_of(dev).ok_or_else(|| err("read hardware address", nix::Error::ENODEV))?;
    packet::send(ifindex, ETH_P_IPV6, ALL_NODES_MAC, &frame(mac, addr), count).map_err(|(op, errno)| err(op, errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advertisement Linux 6.18 itself sent for fd00:198:18::100 from 02:00:00:00:00:09 once the
    /// address passed duplicate address detection (`ndisc_notify=1` on one end of a veth pair), as a packet
    /// socket on the other end received it.
    const KERNELS_OWN: &str = "33330000000102000000000986dd6000000000203afffd000198001800000000000000000100\
                               ff0200000000000000000000000000018800553520000000fd000198001800000000000000\
                               0001000201020000000009";

    #[test]
    fn frame_is_the_advertisement_the_kernel_itself_sends() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = frame(mac, "fd00:198:18::100".parse().unwrap());
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, KERNELS_OWN);
    }

    /// A second, independent check: the one's complement sum of pseudo-header and message, checksum
    /// included, is 0 modulo 0xffff (all ones) for a correct checksum.
    fn verifies(f: &[u8; FRAME_LEN]) -> bool {
        let mut words: Vec<u64> = Vec::new();
        let be = |b: &[u8]| b.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).collect::<Vec<_>>();
        words.extend(be(&f[22..38])); // source
        words.extend(be(&f[38..54])); // destination
        words.push(MESSAGE_LEN as u64);
        words.push(u64::from(NEXT_HEADER_ICMPV6));
        words.extend(be(&f[54..]));
        words.iter().sum::<u64>() % 0xffff == 0
    }

    #[test]
    fn fields_and_checksum_for_other_addresses() {
        for (mac, addr) in [
            ([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee], "2001:db8::1"),
            ([0x36, 0x9f, 0x3b, 0xc3, 0x19, 0x98], "fe80::349f:3bff:fec3:1998"),
            ([0xff; 6], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
        ] {
            let addr: Ipv6Addr = addr.parse().unwrap();
            let f = frame(mac, addr);
            assert_eq!(&f[0..6], &ALL_NODES_MAC, "to all nodes");
            assert_eq!(&f[6..12], &mac);
            assert_eq!(&f[12..14], &[0x86, 0xdd]);
            assert_eq!(f[21], 255, "hop limit");
            assert_eq!(&f[22..38], &addr.octets(), "sent from the address itself");
            assert_eq!(&f[38..54], &ALL_NODES.octets());
            assert_eq!((f[54], f[55]), (136, 0), "neighbour advertisement, code 0");
            assert_eq!(f[58], 0x20, "override; not router, not solicited");
            assert_eq!(&f[62..78], &addr.octets(), "target");
            assert_eq!(&f[78..86], &[&[2, 1][..], &mac[..]].concat()[..], "target link-layer address");
            assert!(verifies(&f), "checksum of {addr}");
            let mut broken = f;
            broken[70] ^= 1;
            assert!(!verifies(&broken), "a changed byte shows");
        }
    }
}
