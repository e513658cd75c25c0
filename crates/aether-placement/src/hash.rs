//! Aether's stable hash: the one function every placement decision uses.
//!
//! Placement must agree between processes, machines, Rust versions and restarts, so it cannot
//! use `std`'s `DefaultHasher` (whose algorithm and keys may change, and are randomised per
//! process for `HashMap`). Aether uses its own small, fixed function instead:
//!
//! 1. FNV-1a 64 over the bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`);
//! 2. then the 64-bit finaliser of MurmurHash3 (`fmix64`), because FNV-1a alone spreads short,
//!    similar keys (`node-1#0`, `node-1#1`, ...) poorly over the high bits, and those are the
//!    bits a ring lookup compares.
//!
//! The function is part of the cluster protocol (and of how partitioned projections split
//! their actors): changing it moves every actor. It is not a cryptographic hash; keys an
//! attacker controls can be made to collide.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` with Aether's stable 64-bit hash (FNV-1a 64 followed by `fmix64`).
///
/// ```
/// use aether_placement::stable_hash64;
/// // Fixed forever: the same on every machine and in every release.
/// assert_eq!(stable_hash64(b"order-1"), stable_hash64(b"order-1"));
/// assert_ne!(stable_hash64(b"order-1"), stable_hash64(b"order-2"));
/// ```
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(FNV_OFFSET, bytes))
}

/// Hashes the concatenation of `parts`, without allocating it: the same value as
/// [`stable_hash64`] of the joined bytes. Hash rings and rendezvous scores hash
/// `"<node>#<i>"`-like keys this way on every lookup.
///
/// ```
/// use aether_placement::{stable_hash64, stable_hash64_parts};
/// assert_eq!(stable_hash64_parts(&[b"node-1", b"#", b"42"]), stable_hash64(b"node-1#42"));
/// ```
pub fn stable_hash64_parts(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for p in parts {
        h = fnv1a64(h, p);
    }
    fmix64(h)
}

fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Pinned so that an accidental change of the function (which would move every actor of
        // every running cluster) fails loudly.
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(stable_hash64(b"actor-1"), PINNED_ACTOR_1);
    }

    const PINNED_ACTOR_1: u64 = 0x23d5_c1ee_6139_0535;

    #[test]
    fn parts_equal_concatenation() {
        assert_eq!(
            stable_hash64_parts(&[b"node-1", b"#", b"42"]),
            stable_hash64(b"node-1#42")
        );
    }
}
