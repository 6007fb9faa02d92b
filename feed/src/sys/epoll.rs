//! Epoll backend (through mio, edge-triggered): the shard reads until `WouldBlock` and relies on a
//! writable edge after a short write.

use super::{Backend, Notifier, Ready};
use crate::hub::ConnId;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Duration;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

pub(crate) struct Epoll {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    waker: Arc<Waker>,
    conns: Vec<Option<TcpStream>>,
    sndbuf: Option<usize>,
}

impl Epoll {
    pub(crate) fn new(listener: std::net::TcpListener, sndbuf: Option<usize>) -> io::Result<Epoll> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Epoll { poll, events: Events::with_capacity(1024), listener, waker, conns: Vec::new(), sndbuf })
    }

    fn stream(&mut self, id: ConnId) -> io::Result<&mut TcpStream> {
        self.conns
            .get_mut(id as usize)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Backend for Epoll {
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            out.push(match ev.token() {
                LISTENER => Ready::Listener,
                WAKER => Ready::Wake,
                Token(t) => Ready::Conn {
                    id: t as ConnId,
                    readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    writable: ev.is_writable() || ev.is_write_closed(),
                },
            });
        }
        Ok(())
    }

    fn accept(&mut self, alloc: &mut dyn FnMut() -> ConnId) -> io::Result<Option<ConnId>> {
        let (mut s, _) = match self.listener.accept() {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let _ = s.set_nodelay(true);
        if let Some(n) = self.sndbuf {
            let _ = socket2::SockRef::from(&s).set_send_buffer_size(n);
        }
        let id = alloc();
        if self.poll.registry().register(&mut s, Token(id as usize), Interest::READABLE | Interest::WRITABLE).is_err() {
            // Not stored: the hub's handshake linger closes the id.
            return Ok(Some(id));
        }
        let i = id as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(s);
        Ok(Some(id))
    }

    fn read(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        self.stream(id)?.read(buf)
    }

    fn writev(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream(id)?.write_vectored(bufs)
    }

    fn close(&mut self, id: ConnId) {
        if let Some(mut s) = self.conns.get_mut(id as usize).and_then(|s| s.take()) {
            let _ = self.poll.registry().deregister(&mut s);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The stream table (one fd per slot; mio keeps no user-space state per registration on
    /// Linux: the epoll item is kernel memory).
    fn conn_memory_bytes(&self) -> usize {
        self.conns.capacity() * std::mem::size_of::<Option<TcpStream>>()
    }

    fn trim(&mut self) {}

    fn fixed_memory_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<libc::epoll_event>()
    }

    fn notifier(&self) -> Notifier {
        let w = self.waker.clone();
        Notifier(Arc::new(move || {
            let _ = w.wake();
        }))
    }
}
