//! The OS side of a shard, behind one small trait so the epoll backend (mio, `epoll.rs`) can be
//! joined by an io_uring one (`uring.rs`, later) without touching the hub or the shard loop.
//!
//! The model is readiness: `wait` reports listener / connection readiness; the shard then reads
//! (into its one shared scratch buffer), and writes each connection's queue with one vectored
//! write. A completion backend can offer the same surface (poll-add for readiness, or
//! provided-buffer reads copied into the scratch).

pub(crate) mod epoll;

use crate::hub::ConnId;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Wakes a shard from another thread.
#[derive(Clone)]
pub struct Notifier(pub(crate) Arc<dyn Fn() + Send + Sync>);

impl Notifier {
    /// Wakes the shard's `wait`.
    pub fn notify(&self) {
        (self.0)()
    }
}

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Connections wait to be accepted.
    Listener,
    /// The notifier fired.
    Wake,
    /// A connection is readable and/or writable (or hung up: reading reports it).
    Conn { id: ConnId, readable: bool, writable: bool },
}

/// The OS operations a shard needs.
pub(crate) trait Backend {
    /// Waits for readiness (or `timeout`); appends reports to `out`.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()>;
    /// Accepts one pending connection and registers it under the id `alloc` gives.
    /// `Ok(None)` when none is pending.
    fn accept(&mut self, alloc: &mut dyn FnMut() -> ConnId) -> io::Result<Option<ConnId>>;
    /// Reads into `buf` (`Ok(0)` = peer closed; `WouldBlock` = nothing more now).
    fn read(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize>;
    /// One vectored write.
    fn writev(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Deregisters and closes the connection.
    fn close(&mut self, id: ConnId);
    /// A handle that wakes `wait` from another thread.
    fn notifier(&self) -> Notifier;
}

/// A non-blocking TCP listener with SO_REUSEADDR and SO_REUSEPORT, so several shard processes
/// (or threads) can listen on the same port and let the kernel spread connections.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}
