//! The fast order book: preallocated order store, price ladders, O(1) cancel by id.
