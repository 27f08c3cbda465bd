//! Waiting on several connections at once, and waking that wait from another thread.
//!
//! One D-Bus thread owns every [`Service`](super::Service) (one connection each) and maybe a
//! [`BusClient`](super::BusClient). It blocks in [`Waiter::wait`] on all their fds plus a wake
//! socket; a serial-polling thread sends readings over a channel and calls [`Waker::wake`].
//! D-Bus calls are therefore answered as soon as they arrive, however long the serial side
//! is stuck in a timeout.

use dbus::channel::Watch;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// Something with a connection to wait on.
pub trait Watchable {
    /// The fd to poll, and whether libdbus wants to read and/or write.
    fn watch(&self) -> Watch;
    /// True when messages are already read and waiting: the wait must not block.
    fn has_backlog(&self) -> bool;
}

impl Watchable for super::conn::Conn {
    fn watch(&self) -> Watch {
        super::conn::Conn::watch(self)
    }

    fn has_backlog(&self) -> bool {
        super::conn::Conn::has_backlog(self)
    }
}

/// What ended a [`Waiter::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wakeup {
    /// A connection has something to read or write (or a backlog): process them all.
    pub bus: bool,
    /// [`Waker::wake`] was called since the last wait.
    pub woken: bool,
}

impl Wakeup {
    /// Neither: the timeout passed.
    pub fn timed_out(&self) -> bool {
        !self.bus && !self.woken
    }
}

/// Wakes a [`Waiter`] from any thread. Cheap to clone; waking twice before the waiter runs
/// counts once.
#[derive(Debug, Clone)]
pub struct Waker {
    tx: Arc<UnixStream>,
}

impl Waker {
    /// Makes the waiter's current or next wait return with `woken` set. Never blocks.
    pub fn wake(&self) {
        // WouldBlock means the socket already holds wake bytes: the waiter will wake anyway.
        let _ = (&*self.tx).write(&[1]);
    }
}

/// Blocks on several connections plus a wake socket, with poll(2).
#[derive(Debug)]
pub struct Waiter {
    rx: UnixStream,
    fds: Vec<libc::pollfd>,
    ready: Vec<bool>,
}

impl Waiter {
    /// A waiter and the waker that interrupts it.
    pub fn new() -> io::Result<(Waiter, Waker)> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let waiter = Waiter {
            rx,
            fds: Vec::with_capacity(8),
            ready: Vec::with_capacity(8),
        };
        Ok((waiter, Waker { tx: Arc::new(tx) }))
    }

    /// Waits until a connection is ready, the waker fires, or `timeout` passes (`None`:
    /// no limit). Returns at once when a connection has a backlog. Interrupted by a
    /// signal, it returns as a timeout. Allocates nothing once the fd list has grown.
    pub fn wait<'a, I>(&mut self, sources: I, timeout: Option<Duration>) -> io::Result<Wakeup>
    where
        I: IntoIterator<Item = &'a dyn Watchable>,
    {
        self.fds.clear();
        self.fds.push(libc::pollfd {
            fd: self.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut backlog = false;
        self.ready.clear();
        for s in sources {
            let has_backlog = s.has_backlog();
            backlog |= has_backlog;
            self.ready.push(has_backlog);
            let w = s.watch();
            let mut events = 0;
            if w.read {
                events |= libc::POLLIN;
            }
            if w.write {
                events |= libc::POLLOUT;
            }
            self.fds.push(libc::pollfd {
                fd: w.fd,
                events,
                revents: 0,
            });
        }
        let timeout_ms = match (backlog, timeout) {
            (true, _) => 0,
            (false, None) => -1,
            // Round up so a short timeout does not become a busy loop of 0 ms waits.
            (false, Some(t)) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        // SAFETY: `fds` is a valid, initialised array of `len` pollfd structs.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Wakeup::default())
            } else {
                Err(e)
            };
        }
        let woken = self.fds[0].revents != 0;
        if woken {
            self.drain();
        }
        for (ready, p) in self.ready.iter_mut().zip(&self.fds[1..]) {
            *ready |= p.revents != 0;
        }
        let bus = self.ready.iter().any(|r| *r);
        Ok(Wakeup { bus, woken })
    }

    /// Whether source number `index` (in the order the last [`Waiter::wait`] was given
    /// them) has something to process: readable, writable as wanted, or a backlog. Lets a
    /// caller with many connections skip the idle ones.
    pub fn is_ready(&self, index: usize) -> bool {
        self.ready.get(index).copied().unwrap_or(false)
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.rx.read(&mut buf), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn timeout_and_wake() {
        let (mut w, waker) = Waiter::new().unwrap();
        let t = Instant::now();
        let r = w.wait([], Some(Duration::from_millis(20))).unwrap();
        assert!(r.timed_out());
        assert!(t.elapsed() >= Duration::from_millis(20));

        waker.wake();
        waker.wake();
        let r = w.wait([], Some(Duration::from_secs(10))).unwrap();
        assert!(r.woken && !r.bus);
        // Both wake bytes were drained: the next wait times out.
        assert!(w.wait([], Some(Duration::ZERO)).unwrap().timed_out());
    }

    #[test]
    fn wake_from_another_thread() {
        let (mut w, waker) = Waiter::new().unwrap();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            waker.wake();
        });
        let r = w.wait([], Some(Duration::from_secs(30))).unwrap();
        assert!(r.woken);
        h.join().unwrap();
    }
}
