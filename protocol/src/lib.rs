//! tickwire-protocol: the order-entry wire protocol, sans IO.
//!
//! Every frame is a fixed little-endian layout behind a 4-byte header
//! (`length u16` = whole frame including the header, `msg_type u8`, `version u8`); each message
//! type has one fixed size. `docs/protocol.md` describes every message byte by byte.
//!
//! - Decoding ([`ClientMsg::decode`], [`ServerMsg::decode`]) reads the front of a byte slice in
//!   place, without allocating: the header is validated first (length against the maximum frame
//!   size and the type's size, version, type) before the body is awaited, and the answer is
//!   [`Decoded::NeedMore`], [`Decoded::Frame`] or [`Decoded::Error`] with a
//!   [`SessionRejectReason`]. No input makes it panic.
//! - Encoding ([`Message::encode`], [`Message::encode_to_vec`]) writes into the caller's buffer.
//! - [`auth`]: the Logon's HMAC-SHA256 signature.
//!
//! No sockets, clocks or threads here: the gateway's session machine and any client drive it.

pub mod auth;
mod msg;
mod wire;

pub use msg::*;
pub mod md;
