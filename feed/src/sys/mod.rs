//! The OS side of a shard, behind one small trait: the epoll backend (mio, `epoll.rs`) and the
//! io_uring one (`uring.rs`, Linux), chosen per shard with [`BackendKind`].
//!
//! The model is readiness: `wait` reports listener / connection readiness; the shard then reads
//! (into its one shared scratch buffer), and writes each connection's queue with one vectored
//! write. A completion backend can offer the same surface (poll-add for readiness, or
//! provided-buffer reads copied into the scratch).

pub(crate) mod epoll;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

use crate::hub::ConnId;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which OS interface a shard uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// epoll through mio (edge-triggered readiness, `writev`).
    #[default]
    Epoll,
    /// io_uring: multishot accept, multishot receive into a provided-buffer ring, batched sends.
    Uring,
}

impl BackendKind {
    /// Both kinds, for tests and benchmarks.
    pub const ALL: [BackendKind; 2] = [BackendKind::Epoll, BackendKind::Uring];

    /// `"epoll"` or `"uring"`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Epoll => "epoll",
            BackendKind::Uring => "uring",
        }
    }

    /// Whether this process can run the backend here; `Err` says why not (io_uring refused by
    /// the kernel or a sandbox, kernel too old, not Linux).
    pub fn available(self) -> Result<(), String> {
        match self {
            BackendKind::Epoll => Ok(()),
            #[cfg(target_os = "linux")]
            BackendKind::Uring => uring::probe(),
            #[cfg(not(target_os = "linux"))]
            BackendKind::Uring => Err("io_uring is Linux only".into()),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "epoll" => Ok(BackendKind::Epoll),
            "uring" | "io_uring" | "io-uring" => Ok(BackendKind::Uring),
            _ => Err(format!("unknown backend {s:?} (expected epoll or uring)")),
        }
    }
}

/// The backend a shard runs (static dispatch over the kinds).
pub(crate) enum AnyBackend {
    Epoll(epoll::Epoll),
    #[cfg(target_os = "linux")]
    Uring(Box<uring::Uring>),
}

impl AnyBackend {
    pub(crate) fn new(kind: BackendKind, listener: std::net::TcpListener, sndbuf: Option<usize>) -> io::Result<AnyBackend> {
        match kind {
            BackendKind::Epoll => Ok(AnyBackend::Epoll(epoll::Epoll::new(listener, sndbuf)?)),
            #[cfg(target_os = "linux")]
            BackendKind::Uring => Ok(AnyBackend::Uring(Box::new(uring::Uring::new(listener, sndbuf)?))),
            #[cfg(not(target_os = "linux"))]
            BackendKind::Uring => Err(io::Error::other("io_uring is Linux only")),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Epoll($b) => $e,
            #[cfg(target_os = "linux")]
            AnyBackend::Uring($b) => $e,
        }
    };
}

impl Backend for AnyBackend {
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
        dispatch!(self, b => b.wait(timeout, out))
    }
    fn accept(&mut self, alloc: &mut dyn FnMut() -> ConnId) -> io::Result<Option<ConnId>> {
        dispatch!(self, b => b.accept(alloc))
    }
    fn read(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        dispatch!(self, b => b.read(id, buf))
    }
    fn writev(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        dispatch!(self, b => b.writev(id, bufs))
    }
    fn close(&mut self, id: ConnId) {
        dispatch!(self, b => b.close(id))
    }
    fn notifier(&self) -> Notifier {
        dispatch!(self, b => b.notifier())
    }
    fn conn_memory_bytes(&self) -> usize {
        dispatch!(self, b => b.conn_memory_bytes())
    }
    fn fixed_memory_bytes(&self) -> usize {
        dispatch!(self, b => b.fixed_memory_bytes())
    }
    fn trim(&mut self) {
        dispatch!(self, b => b.trim())
    }
    fn submit(&mut self) {
        dispatch!(self, b => b.submit())
    }
}

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
    /// Bytes held for connections in user space (sizes and capacities of per-connection state
    /// and of tables that grow with the connections).
    fn conn_memory_bytes(&self) -> usize;
    /// Bytes held per shard whatever the connections (buffers allocated up front).
    fn fixed_memory_bytes(&self) -> usize;
    /// Gives back memory that bursts left in per-shard tables (called every tick).
    fn trim(&mut self);
    /// Starts the writes accepted so far without waiting (a completion backend that queues
    /// `writev`s until `wait` hands them to the kernel here; readiness backends wrote already).
    fn submit(&mut self) {}
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
