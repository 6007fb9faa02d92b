//! Logon signatures: HMAC-SHA256 over `key_id ‖ timestamp_ns ‖ nonce`, each as 8 little-endian
//! bytes (24 bytes in all), keyed with the API key's secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The 24 signed bytes.
pub fn signed_bytes(key_id: u64, timestamp_ns: u64, nonce: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&key_id.to_le_bytes());
    b[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    b[16..].copy_from_slice(&nonce.to_le_bytes());
    b
}

fn mac(secret: &[u8], key_id: u64, timestamp_ns: u64, nonce: u64) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(&signed_bytes(key_id, timestamp_ns, nonce));
    m
}

/// The Logon signature a client computes.
pub fn sign(secret: &[u8], key_id: u64, timestamp_ns: u64, nonce: u64) -> [u8; 32] {
    mac(secret, key_id, timestamp_ns, nonce).finalize().into_bytes().into()
}

/// Checks a Logon signature in constant time.
pub fn verify(secret: &[u8], key_id: u64, timestamp_ns: u64, nonce: u64, signature: &[u8; 32]) -> bool {
    mac(secret, key_id, timestamp_ns, nonce).verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2 checks the HMAC-SHA256 primitive itself.
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let out: [u8; 32] = m.finalize().into_bytes().into();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn sign_then_verify() {
        let s = sign(b"secret", 7, 1_700_000_000_000_000_000, 42);
        assert!(verify(b"secret", 7, 1_700_000_000_000_000_000, 42, &s));
        assert!(!verify(b"secret", 7, 1_700_000_000_000_000_000, 43, &s));
        assert!(!verify(b"other", 7, 1_700_000_000_000_000_000, 42, &s));
    }
}
