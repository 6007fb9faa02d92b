//! `state_hash()` support: a small, stable 64-bit hash (FNV-1a over little-endian words).
//!
//! Stable across runs, platforms and builds, so a hash printed at shutdown can be compared with one
//! printed after recovery, or by a reference model in the tests. Not for hash tables.

/// Incremental state hasher.
#[derive(Clone, Copy, Debug)]
pub struct StateHasher(u64);

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl StateHasher {
    /// Mixes in one 64-bit word (as its 8 little-endian bytes).
    #[inline]
    pub fn word(&mut self, w: u64) -> &mut Self {
        for b in w.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// The hash so far.
    #[inline]
    pub fn finish(&self) -> u64 {
        self.0
    }
}
