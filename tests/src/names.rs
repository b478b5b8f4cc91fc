//! Short unique names for namespaces, interfaces, directories and cgroups, so labs run in parallel.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Names made so far by this process; part of every name.
static COUNTER: AtomicU32 = AtomicU32::new(0);

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A name unique on this machine: `prefix`, the process id (5 base-36 digits), a per-process counter
/// and 2 base-36 digits from the clock (so a pid reused after a crashed run rarely collides with its
/// leftovers).
///
/// The name fits a Linux interface name (15 bytes) when `prefix` has at most 6 bytes and the process
/// has made fewer than 1296 names; it only holds `[a-z0-9]` past the prefix.
pub fn unique(prefix: &str) -> String {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // Mix the clock so that coarse clocks (low bits always zero) still give varied digits.
    let salt = (nanos.wrapping_mul(2_654_435_761) >> 16) % (36 * 36);
    let mut name = String::from(prefix);
    // The pid has a fixed width and the salt is last, so (pid, count) pairs never read alike.
    push_base36(&mut name, std::process::id(), 5);
    push_base36(&mut name, count, 1);
    push_base36(&mut name, salt, 2);
    name
}

/// Appends `n` in base 36, left-padded with zeros to at least `width` digits.
fn push_base36(out: &mut String, mut n: u32, width: usize) {
    let mut digits = Vec::with_capacity(8);
    while n > 0 || digits.len() < width {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.extend(digits.iter().rev().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_distinct_and_fit_an_interface_name() {
        let names: Vec<String> = (0..200).map(|_| unique("vbr")).collect();
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        for name in &names {
            assert!(name.len() <= 15, "{name} is too long for an interface");
            assert!(name.starts_with("vbr"));
            assert!(name[3..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
    }

    #[test]
    fn base36_pads_and_converts() {
        let mut s = String::new();
        push_base36(&mut s, 0, 2);
        push_base36(&mut s, 35, 1);
        push_base36(&mut s, 36, 1);
        assert_eq!(s, "00z10");
    }
}
