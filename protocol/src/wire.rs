//! Little-endian field cursors over one frame. Both are bounds-safe: the decoder hands them exactly
//! one frame of the message's fixed size, and a read past the end yields zeros rather than a panic
//! (a unit test checks that every message reads and writes exactly its size).

/// Writes fields in order into a frame-sized slice.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        let end = (self.pos + b.len()).min(self.buf.len());
        let n = end.saturating_sub(self.pos);
        self.buf[self.pos..end].copy_from_slice(&b[..n]);
        self.pos += b.len();
    }
    #[inline]
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    #[inline]
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    pub(crate) fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    /// `n` reserved zero bytes.
    #[inline]
    pub(crate) fn zero(&mut self, n: usize) {
        for _ in 0..n {
            self.u8(0);
        }
    }
    #[cfg(test)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
}

/// Reads fields in order from one frame.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Set when a reserved byte was not zero.
    pub(crate) reserved_dirty: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, reserved_dirty: false }
    }

    #[inline]
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(s);
        }
        self.pos += N;
        out
    }
    #[inline]
    pub(crate) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    #[inline]
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    #[inline]
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    #[inline]
    pub(crate) fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    #[inline]
    pub(crate) fn bytes32(&mut self) -> [u8; 32] {
        self.take()
    }
    /// Skips `n` reserved bytes, noting any that is not zero.
    #[inline]
    pub(crate) fn zero(&mut self, n: usize) {
        for _ in 0..n {
            if self.u8() != 0 {
                self.reserved_dirty = true;
            }
        }
    }
    #[cfg(test)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
}
