//! tickwire-gateway: order entry.
//!
//! - [`session`]: the sans-IO session state machine (logon, heartbeats, throttling,
//!   authorisation, idempotency, cancel-on-disconnect, sequenced execution reports and replay),
//!   speaking the wire protocol of `tickwire-protocol`.
//!
//! The event loop, the server binary and the clients come later.

pub mod session;
pub mod config;
pub mod net;
pub mod replay_journal;
pub mod server;
