//! Checking a presented credential (the cluster secret, a monitoring token) against those accepted, in a time
//! that depends neither on how much of it was right nor on its length: both sides are hashed first, and the
//! digests, of equal length, are compared in constant time; every accepted credential is compared, never
//! stopping at the first that matches.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `presented` is one of `accepted` (an empty credential never is).
pub fn matches_any<'a>(accepted: impl IntoIterator<Item = &'a str>, presented: &str) -> bool {
    let given = Sha256::digest(presented.as_bytes());
    let any = accepted
        .into_iter()
        .filter(|a| !a.is_empty())
        .fold(subtle::Choice::from(0), |any, a| any | Sha256::digest(a.as_bytes()).ct_eq(&given));
    !presented.is_empty() && bool::from(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_matches_only_one_accepted_in_full() {
        let accepted = ["s3cret-of-the-cluster", "the-one-before"];
        assert!(matches_any(accepted, "s3cret-of-the-cluster"));
        assert!(matches_any(accepted, "the-one-before"));
        for wrong in ["s3cret-of-the-cluste", "s3cret-of-the-cluster!", "", "S3cret-of-the-cluster"] {
            assert!(!matches_any(accepted, wrong), "{wrong:?}");
        }
        assert!(!matches_any([""], ""));
        assert!(!matches_any([], "anything"));
    }

    #[test]
    fn the_comparison_sees_digests_of_one_length_whatever_was_presented() {
        // What is compared in constant time has the same length for a short guess and a long one: a guess's
        // length cannot be learnt from where a comparison of unequal lengths would stop.
        let short = Sha256::digest(b"x");
        let long = Sha256::digest("y".repeat(10_000).as_bytes());
        assert_eq!(short.len(), long.len());
    }
}
