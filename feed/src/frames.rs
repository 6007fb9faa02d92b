//! The frames a shard has queued to its connections, each held once and shared by index.
//!
//! A fan-out queues the same encoded frame to thousands of connections. Holding it as a
//! `bytes::Bytes` per queue entry costs an atomic reference-count increment per subscriber on
//! queueing and a decrement on writing, and 32 bytes per entry; at millions of frame-subscriber
//! pairs per second those increments were a tenth of the shard's CPU. A shard is one thread, so
//! the table keeps each frame once with a plain `u32` count of the queue entries that hold it;
//! a connection's queue holds 4-byte [`FrameId`]s.

use bytes::Bytes;

/// Index of a frame in a [`FrameTable`].
pub(crate) type FrameId = u32;

/// Frames by id, with a count of holders each; a frame is dropped when its count reaches 0.
#[derive(Default)]
pub(crate) struct FrameTable {
    frames: Vec<Bytes>,
    refs: Vec<u32>,
    /// Ids whose count is 0 (their slot holds an empty `Bytes`), reused first.
    free: Vec<FrameId>,
}

impl FrameTable {
    /// Stores `f` with one holder (the caller, who must [`FrameTable::release`] it).
    pub(crate) fn insert(&mut self, f: Bytes) -> FrameId {
        if let Some(id) = self.free.pop() {
            debug_assert_eq!(self.refs[id as usize], 0);
            self.frames[id as usize] = f;
            self.refs[id as usize] = 1;
            id
        } else {
            self.frames.push(f);
            self.refs.push(1);
            (self.frames.len() - 1) as FrameId
        }
    }

    /// One more holder of `id`.
    pub(crate) fn retain(&mut self, id: FrameId) {
        debug_assert!(self.refs[id as usize] > 0, "retain of a dropped frame");
        self.refs[id as usize] += 1;
    }

    /// One holder fewer; the frame is dropped with its last holder.
    pub(crate) fn release(&mut self, id: FrameId) {
        let r = &mut self.refs[id as usize];
        debug_assert!(*r > 0, "release of a dropped frame");
        *r -= 1;
        if *r == 0 {
            self.frames[id as usize] = Bytes::new();
            self.free.push(id);
        }
    }

    /// The frame's bytes.
    pub(crate) fn get(&self, id: FrameId) -> &[u8] {
        &self.frames[id as usize]
    }

    /// Frames held.
    pub(crate) fn live(&self) -> usize {
        self.frames.len() - self.free.len()
    }

    /// Bytes of the table itself (slots and free list; the frames' contents are shared).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<Bytes>()
            + self.refs.capacity() * std::mem::size_of::<u32>()
            + self.free.capacity() * std::mem::size_of::<FrameId>()
    }

    /// Gives back the slots a burst left (called every tick): free slots at the end go, and the
    /// whole table when nothing is held.
    pub(crate) fn trim(&mut self) {
        if self.live() == 0 {
            *self = FrameTable::default();
            return;
        }
        let before = self.frames.len();
        while self.refs.last() == Some(&0) {
            self.refs.pop();
            self.frames.pop();
        }
        if self.frames.len() < before {
            let len = self.frames.len() as FrameId;
            self.free.retain(|&id| id < len);
        }
        if self.frames.capacity() > 2 * self.frames.len() + 64 {
            self.frames.shrink_to_fit();
            self.refs.shrink_to_fit();
            self.free.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_holders_and_reuses_slots() {
        let mut t = FrameTable::default();
        let a = t.insert(Bytes::from_static(b"a"));
        t.retain(a);
        t.retain(a);
        t.release(a);
        t.release(a);
        assert_eq!(t.get(a), b"a");
        assert_eq!(t.live(), 1);
        t.release(a);
        assert_eq!(t.live(), 0);
        let b = t.insert(Bytes::from_static(b"b"));
        assert_eq!(a, b, "a freed slot is reused");
        assert_eq!(t.get(b), b"b");
    }

    #[test]
    fn trim_drops_free_tail_only() {
        let mut t = FrameTable::default();
        let ids: Vec<FrameId> = (0..100).map(|i| t.insert(Bytes::from(vec![i as u8]))).collect();
        for &id in &ids[1..] {
            t.release(id);
        }
        t.trim();
        assert_eq!(t.live(), 1);
        assert_eq!(t.get(ids[0]), [0u8]);
        let n = t.insert(Bytes::from_static(b"n"));
        assert_eq!(n, 1, "slots past the last held one were dropped");
        t.release(ids[0]);
        t.release(n);
        t.trim();
        assert_eq!(t.memory_bytes(), 0);
    }
}
