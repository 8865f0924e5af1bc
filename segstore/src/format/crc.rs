//! CRC-32C of a concatenation from the CRCs of its parts.
//!
//! A segment's body CRC covers every batch; a batch's own CRC (checked when it
//! arrived) already covers all of it but its first fields, so the builder
//! combines the two instead of reading the batch again. The `crc32c` crate's
//! `crc32c_combine` is zlib's first algorithm: it squares a 32x32 bit matrix
//! for every bit of the length, 14-50 µs a call here, slower than hashing the
//! bytes again with the CPU's CRC instruction below 1 MiB (and 5% of a broker's
//! CPU at saturation; docs/benchmarks-ab.md). This is zlib's later one
//! (1.2.12): multiply by x^(8·len) modulo the polynomial, with x^(2^k) taken
//! from a table built at compile time, about 32 shift-and-xor steps for each
//! bit of the length: under 100 ns a call, what hashing 2 KiB costs.

/// CRC-32C's polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a(x) · b(x) mod p(x)`, both reflected (the highest bit is x^0).
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p: u32 = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `X2N[k]` = x^(2^k) mod p(x), for every k a 64-bit length in bits can need.
// Evaluated at compile time: an index out of bounds fails the build.
#[allow(clippy::indexing_slicing)]
const X2N: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut p: u32 = 1 << 30; // x^1
    t[0] = p;
    let mut k = 1;
    while k < 64 {
        p = multmodp(p, p);
        t[k] = p;
        k += 1;
    }
    t
};

/// x^(8·bytes) mod p(x): the operator that appends `bytes` zero bytes.
fn x8nmodp(mut bytes: u64) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    let mut k = 3; // bytes → bits
    while bytes != 0 {
        if bytes & 1 != 0 {
            if let Some(&x) = X2N.get(k) {
                p = multmodp(x, p);
            }
        }
        bytes >>= 1;
        k += 1;
    }
    p
}

/// The CRC-32C of `A ‖ B` from `crc1` = CRC-32C(A), `crc2` = CRC-32C(B) and
/// `len2` = B's length in bytes (what `crc32c::crc32c_combine` returns).
pub fn combine(crc1: u32, crc2: u32, len2: usize) -> u32 {
    multmodp(x8nmodp(len2 as u64), crc1) ^ crc2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let cuts = [
            0usize, 1, 2, 3, 7, 8, 61, 64, 511, 4096, 65_535, 100_003, 299_999, 300_000,
        ];
        for &a in &cuts {
            for &b in &cuts {
                let (a, b) = (a.min(b), a.max(b));
                let (x, y) = (&data[..a], &data[a..b]);
                let whole = crc32c::crc32c(&data[..b]);
                let got = combine(crc32c::crc32c(x), crc32c::crc32c(y), y.len());
                assert_eq!(got, whole, "cut at {a}, {} bytes after", y.len());
                assert_eq!(
                    got,
                    crc32c::crc32c_combine(crc32c::crc32c(x), crc32c::crc32c(y), y.len())
                );
            }
        }
    }

    #[test]
    fn appending_nothing_keeps_the_crc() {
        for crc in [0, 1, 0xDEAD_BEEF, u32::MAX] {
            assert_eq!(combine(crc, 0, 0), crc);
        }
    }
}
