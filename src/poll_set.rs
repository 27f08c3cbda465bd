//! A set of file descriptors to wait on with one `ppoll(2)`.
//!
//! The service loops block in exactly one place: [`PollSet::wait`], on every
//! descriptor they serve (the line, each D-Bus connection) with a timeout
//! that is their state machine's next deadline, to the microsecond.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Descriptors to wait on, rebuilt before each wait without allocating once
/// it has grown.
#[derive(Debug, Default)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// An empty set.
    pub fn new() -> PollSet {
        PollSet {
            fds: Vec::with_capacity(16),
        }
    }

    /// Forget every descriptor.
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Add `fd`, waited on for input and/or for room to write; returns its
    /// index for [`PollSet::is_ready`].
    pub fn push(&mut self, fd: RawFd, read: bool, write: bool) -> usize {
        let mut events = 0;
        if read {
            events |= libc::POLLIN;
        }
        if write {
            events |= libc::POLLOUT;
        }
        self.fds.push(libc::pollfd { fd, events, revents: 0 });
        self.fds.len() - 1
    }

    /// Block until a descriptor is ready or `timeout` passes (`None`: no
    /// limit). A signal ends the wait early, as if it had timed out.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9, so it fits every c_long.
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let spec_ptr = spec.as_ref().map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: `fds` is a valid array of `len` pollfd structs, the timespec (if any)
        // lives across the call, and a null signal mask keeps the current one.
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                spec_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                self.fds.iter_mut().for_each(|p| p.revents = 0);
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Whether descriptor `index` is readable, writable as asked, hung up or
    /// in error after the last wait.
    pub fn is_ready(&self, index: usize) -> bool {
        self.fds.get(index).is_some_and(|p| p.revents != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn times_out_to_the_sub_millisecond_and_sees_input() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut set = PollSet::new();
        let i = set.push(a.as_raw_fd(), true, false);
        let t = Instant::now();
        set.wait(Some(Duration::from_micros(1500))).unwrap();
        assert!(t.elapsed() >= Duration::from_micros(1500));
        assert!(!set.is_ready(i));
        b.write_all(b"x").unwrap();
        set.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(set.is_ready(i));
        assert!(!set.is_ready(i + 1), "no such index");
    }
}
