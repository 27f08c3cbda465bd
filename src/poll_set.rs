//! The one place a service loop blocks: the descriptors it serves and a
//! timeout, waited on with epoll.
//!
//! The loop lists its descriptors before every wait ([`PollSet::clear`],
//! [`PollSet::push`]) as it would for `poll(2)`, but the kernel keeps them
//! in an epoll interest list that changes only when the list does (a new
//! connection, libdbus wanting to write): a wait costs the same however
//! many connections are served, where `ppoll(2)` sets up and tears down a
//! wait on each of them every time. The timeout is kept to the microsecond
//! with `epoll_pwait2` (Linux 5.11 and later); older kernels round it up to
//! the next millisecond.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The size of the kernel's signal set (`_NSIG / 8`), which the raw `epoll_pwait2` system
/// call takes with the mask.
const KERNEL_SIGSET_BYTES: usize = 8;

/// One listed descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    fd: RawFd,
    /// Names what is behind `fd`, so that a descriptor closed and reopened
    /// under the same number is not taken for the one registered before.
    key: u64,
    events: u32,
    index: usize,
}

/// Descriptors to wait on, listed again before each wait; allocation-free
/// once it has grown.
pub struct PollSet {
    epoll: OwnedFd,
    /// What the caller listed for the coming wait.
    wanted: Vec<Entry>,
    /// What the kernel's interest list holds.
    registered: Vec<Entry>,
    ready: Vec<bool>,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` is missing (kernel older than 5.11).
    no_pwait2: bool,
    /// The signal mask during the wait (`None`: the thread's own).
    wait_mask: Option<libc::sigset_t>,
}

impl std::fmt::Debug for PollSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollSet")
            .field("wanted", &self.wanted)
            .field("registered", &self.registered)
            .field("no_pwait2", &self.no_pwait2)
            .field("wait_mask", &self.wait_mask.is_some())
            .finish_non_exhaustive()
    }
}

impl PollSet {
    /// An empty set.
    pub fn new() -> io::Result<PollSet> {
        // SAFETY: epoll_create1 has no memory arguments; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PollSet {
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            wanted: Vec::with_capacity(16),
            registered: Vec::with_capacity(16),
            ready: Vec::with_capacity(16),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 16],
            no_pwait2: false,
            wait_mask: None,
        })
    }

    /// Wait with this signal mask in place of the thread's (the kernel swaps it in and out
    /// atomically around the wait). A loop that blocks its stop signals everywhere else and
    /// unblocks them here can never miss one between checking its stop flag and waiting.
    pub fn set_wait_mask(&mut self, mask: Option<libc::sigset_t>) {
        self.wait_mask = mask;
    }

    /// Start listing the descriptors for the next wait.
    pub fn clear(&mut self) {
        self.wanted.clear();
    }

    /// List `fd`, waited on for input and/or for room to write; returns its
    /// index for [`PollSet::is_ready`]. `key` names what is behind the
    /// descriptor (a connection's serial number, say): give a new key when
    /// the descriptor is closed and another opened, since the number may
    /// be the same. A negative `fd` is listed but not waited on. Hang-ups
    /// and errors always count as ready.
    pub fn push(&mut self, fd: RawFd, key: u64, read: bool, write: bool) -> usize {
        let mut events = 0;
        if read {
            events |= libc::EPOLLIN as u32;
        }
        if write {
            events |= libc::EPOLLOUT as u32;
        }
        let index = self.wanted.len();
        self.wanted.push(Entry { fd, key, events, index });
        index
    }

    /// Block until a listed descriptor is ready or `timeout` passes (`None`:
    /// no limit). A signal ends the wait early, as if it had timed out.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sync()?;
        self.ready.clear();
        self.ready.resize(self.wanted.len(), false);
        if self.events.len() < self.wanted.len() {
            self.events
                .resize(self.wanted.len(), libc::epoll_event { events: 0, u64: 0 });
        }
        let n = self.epoll_wait(timeout)?;
        for e in &self.events[..n] {
            if let Some(r) = usize::try_from(e.u64).ok().and_then(|i| self.ready.get_mut(i)) {
                *r = true;
            }
        }
        Ok(())
    }

    /// Whether descriptor `index` is readable, writable as asked, hung up or
    /// in error after the last wait.
    pub fn is_ready(&self, index: usize) -> bool {
        self.ready.get(index).copied().unwrap_or(false)
    }

    /// Bring the kernel's interest list in line with the listed descriptors.
    /// Nothing to do (no system call) when the list did not change.
    fn sync(&mut self) -> io::Result<()> {
        if self.wanted == self.registered {
            return Ok(());
        }
        let same = |a: &Entry, b: &Entry| a.fd == b.fd && a.key == b.key;
        for old in &self.registered {
            if old.fd >= 0 && !self.wanted.iter().any(|w| same(w, old)) {
                // Closed already (which removed it), or leaving: either way not watched.
                let _ = self.ctl(libc::EPOLL_CTL_DEL, old.fd, 0, 0);
            }
        }
        for want in &self.wanted {
            if want.fd < 0 {
                continue;
            }
            match self.registered.iter().find(|r| r.fd >= 0 && same(r, want)) {
                Some(r) if r.events == want.events && r.index == want.index => {}
                Some(_) => self.ctl_or(libc::EPOLL_CTL_MOD, libc::ENOENT, libc::EPOLL_CTL_ADD, want)?,
                None => self.ctl_or(libc::EPOLL_CTL_ADD, libc::EEXIST, libc::EPOLL_CTL_MOD, want)?,
            }
        }
        self.registered.clear();
        self.registered.extend_from_slice(&self.wanted);
        Ok(())
    }

    /// `op` on `e`, or `fallback` when `op` fails with `errno`.
    fn ctl_or(&self, op: libc::c_int, errno: i32, fallback: libc::c_int, e: &Entry) -> io::Result<()> {
        match self.ctl(op, e.fd, e.events, e.index) {
            Err(err) if err.raw_os_error() == Some(errno) => self.ctl(fallback, e.fd, e.events, e.index),
            other => other,
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, index: usize) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events,
            u64: index as u64,
        };
        // SAFETY: a valid epoll descriptor and a valid event struct.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn epoll_wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let max = self.events.len().min(i32::MAX as usize) as libc::c_int;
        let events = self.events.as_mut_ptr();
        let epfd = self.epoll.as_raw_fd();
        let mask = self
            .wait_mask
            .as_ref()
            .map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
        let n = if self.no_pwait2 {
            -1
        } else {
            let spec = timeout.map(|t| libc::timespec {
                tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                // Below 10^9: fits every c_long.
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let spec_ptr = spec.as_ref().map_or(std::ptr::null(), |s| s as *const libc::timespec);
            // SAFETY: the events buffer holds `max` entries, the timespec and the mask (if
            // any) live across the call, and a null signal mask keeps the current one. The
            // kernel reads `_NSIG / 8` bytes of the mask (the size passed), fewer than a
            // libc sigset_t holds.
            unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    epfd,
                    events,
                    max,
                    spec_ptr,
                    mask,
                    if mask.is_null() { 0usize } else { KERNEL_SIGSET_BYTES },
                ) as libc::c_int
            }
        };
        let n = if n < 0 && (self.no_pwait2 || io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)) {
            self.no_pwait2 = true;
            let ms = timeout.map_or(-1, |t| i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX));
            // SAFETY: as above; glibc's epoll_pwait passes the mask's kernel size itself.
            unsafe { libc::epoll_pwait(epfd, events, max, ms, mask) }
        } else {
            n
        };
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(0)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread; returns the mask it had, to wait with (so the
/// signals are delivered only while the loop waits, never between its check of the stop
/// flag and the wait), and to restore. Used by the services' loops (features `dbus` and
/// `web`: pzem-logger needs both, pzem-web the latter).
#[cfg(any(feature = "dbus", feature = "web"))]
pub(crate) fn block_stop_signals() -> Option<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; the calls get valid pointers to locals.
    unsafe {
        let mut stop: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut stop);
        libc::sigaddset(&mut stop, libc::SIGTERM);
        libc::sigaddset(&mut stop, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &stop, &mut old) != 0 {
            return None;
        }
        libc::sigdelset(&mut old, libc::SIGTERM);
        libc::sigdelset(&mut old, libc::SIGINT);
        Some(old)
    }
}

#[cfg(any(feature = "dbus", feature = "web"))]
pub(crate) fn restore_signals(mask: Option<libc::sigset_t>) {
    if let Some(mask) = mask {
        // SAFETY: a valid mask from block_stop_signals.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn times_out_to_the_sub_millisecond_and_sees_input() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut set = PollSet::new().unwrap();
        let i = set.push(a.as_raw_fd(), 1, true, false);
        let t = Instant::now();
        set.wait(Some(Duration::from_micros(1500))).unwrap();
        assert!(t.elapsed() >= Duration::from_micros(1500));
        assert!(!set.is_ready(i));
        b.write_all(b"x").unwrap();
        set.clear();
        set.push(a.as_raw_fd(), 1, true, false);
        set.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(set.is_ready(i));
        assert!(!set.is_ready(i + 1), "no such index");
    }

    #[test]
    fn the_listed_set_can_change_between_waits() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let mut set = PollSet::new().unwrap();
        set.push(a.as_raw_fd(), 1, true, false);
        set.push(b.as_raw_fd(), 2, true, false);
        b_peer.write_all(b"x").unwrap();
        set.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(!set.is_ready(0) && set.is_ready(1));
        // b leaves, a moves to index 1 behind a writable-only wait on b.
        set.clear();
        set.push(b.as_raw_fd(), 2, false, true);
        set.push(a.as_raw_fd(), 1, true, false);
        a_peer.write_all(b"y").unwrap();
        set.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(set.is_ready(0), "b is writable");
        assert!(set.is_ready(1), "a has input");
        // A descriptor replaced under the same number (and a new key) is watched. dup2 puts
        // another socket at a's number, which this test owns: tests run in parallel, so a
        // number closed and reopened could be another test's.
        let num = a.into_raw_fd();
        drop(a_peer);
        let replace = |with: &UnixStream| {
            // SAFETY: `num` is this test's; dup2 closes what it held and makes it `with`'s.
            assert_eq!(unsafe { libc::dup2(with.as_raw_fd(), num) }, num);
        };
        let (c, mut c_peer) = UnixStream::pair().unwrap();
        replace(&c);
        set.clear();
        set.push(b.as_raw_fd(), 2, false, true);
        set.push(num, 3, true, false);
        c_peer.write_all(b"z").unwrap();
        set.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(set.is_ready(1), "c has input");
        // Same number, same index, same events: only the key tells it is another file.
        let (d, mut d_peer) = UnixStream::pair().unwrap();
        replace(&d);
        drop((c, c_peer));
        set.clear();
        set.push(b.as_raw_fd(), 2, false, true);
        set.push(num, 4, true, false);
        d_peer.write_all(b"w").unwrap();
        set.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(set.is_ready(1), "d has input");
        // SAFETY: `num` is this test's, and nothing else closes it.
        drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(num) });
    }
}
