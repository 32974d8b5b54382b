//! `memcmp` and `bcmp` for policy instances, eight bytes at a time.
//!
//! Every `==` on strings or byte slices compiles to a call of one of these. For wasm32 the
//! ones Rust links by default compare one byte per loop iteration: 22 instructions, so 22 fuel,
//! per byte. `limits` compared its 66 bytes of parameters with the cached ones for each op,
//! and the field names of its JSON parameters with the names it knows: half its fuel per op.
//! These compare words, at about a tenth of that, and the linker prefers them to the defaults
//! (which are weak symbols).

/// Compares `len` bytes at `a` and `b` as unsigned bytes, as C's `memcmp` does: negative if
/// `a` sorts first, positive if `b` does, zero if they are equal.
///
/// # Safety
/// `a` and `b` must be valid for reads of `len` bytes.
pub(crate) unsafe fn compare(a: *const u8, b: *const u8, len: usize) -> i32 {
    let mut at = 0;
    while at + 8 <= len {
        // SAFETY: `at + 8 <= len`, and the caller vouches for `len` bytes at each.
        let (x, y) = unsafe {
            (
                a.add(at).cast::<u64>().read_unaligned(),
                b.add(at).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // Read little-endian, the lowest differing bit is in the first differing byte.
            at += ((x ^ y).to_le().trailing_zeros() / 8) as usize;
            // SAFETY: `at` is below the word's end, itself within `len`.
            return unsafe { i32::from(*a.add(at)) - i32::from(*b.add(at)) };
        }
        at += 8;
    }
    while at < len {
        // SAFETY: `at < len`.
        let (x, y) = unsafe { (*a.add(at), *b.add(at)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        at += 1;
    }
    0
}

#[cfg(target_arch = "wasm32")]
mod symbols {
    /// # Safety
    /// As C's `memcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
        // SAFETY: the caller's contract.
        unsafe { super::compare(a, b, len) }
    }

    /// # Safety
    /// As C's `bcmp`: only whether the bytes are equal matters.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
        // SAFETY: the caller's contract.
        unsafe { super::compare(a, b, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn sign(ordering: std::cmp::Ordering) -> i32 {
        ordering as i32
    }

    fn compared(a: &[u8], b: &[u8]) -> i32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: both slices hold `len` bytes.
        unsafe { compare(a.as_ptr(), b.as_ptr(), a.len()) }.signum()
    }

    #[test]
    fn orders_as_unsigned_bytes_at_every_length_and_position() {
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            assert_eq!(compared(&base, &base), 0, "len {len}");
            for at in 0..len {
                for delta in [1u8, 0x7f, 0x80, 0xff] {
                    let mut other = base.clone();
                    other[at] = other[at].wrapping_add(delta);
                    // Later bytes differ the other way round: only the first difference counts.
                    for later in &mut other[at + 1..] {
                        *later = !*later;
                    }
                    assert_eq!(
                        compared(&base, &other),
                        sign(base.cmp(&other)),
                        "len {len}, differing at {at} by {delta}"
                    );
                    assert_eq!(compared(&other, &base), sign(other.cmp(&base)));
                }
            }
        }
    }

    #[test]
    fn reads_unaligned_words() {
        let bytes: Vec<u8> = (0..64).collect();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        for len in 0..60 {
            // SAFETY: each side holds at least `len` bytes from where it starts.
            let same = unsafe { compare(bytes[3..].as_ptr(), shifted[4..].as_ptr(), len) };
            assert_eq!(same, 0, "len {len}");
        }
    }
}
