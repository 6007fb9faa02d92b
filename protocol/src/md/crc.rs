//! CRC-32 as in zlib / IEEE 802.3 (reflected polynomial 0xEDB88320, initial value and final xor
//! 0xFFFFFFFF): the same as Python's `zlib.crc32`, so any client has it at hand.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// Running CRC-32: start from 0, feed chunks, the value is the checksum of their concatenation.
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0, bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        let c = super::crc32_update(super::crc32_update(0, b"1234"), b"56789");
        assert_eq!(c, 0xCBF4_3926);
    }
}
