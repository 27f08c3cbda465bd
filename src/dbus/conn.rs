//! One connection to a bus daemon, and which bus to use.
//!
//! [`Conn`] wraps a libdbus channel with the two things the blocking API lacks for a
//! poll(2)-driven loop: a non-blocking "next message", and a backlog. A blocking method
//! call reads the socket until its reply arrives and leaves any other message it read in
//! libdbus's queue, where poll(2) cannot see it; [`Conn::call`] moves those messages into
//! the backlog, and [`super::wait::Waiter`] returns at once while a backlog is non-empty.

use super::error::BusError;
use dbus::channel::{BusType, Channel, Watch};
use dbus::strings::{BusName, Interface, Member};
use dbus::{Message, Path};
use std::collections::VecDeque;
use std::time::Duration;

/// Which bus daemon to talk to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Bus {
    /// The system bus, as on a GX device. libdbus honours `DBUS_SYSTEM_BUS_ADDRESS`; without
    /// it the (vendored) default is `unix:path=/run/dbus/system_bus_socket`.
    #[default]
    System,
    /// An explicit address such as `unix:path=/tmp/x/bus` (a `--dbus ADDRESS` flag).
    Address(String),
}

impl Bus {
    /// `Address` when a flag gave one, else `System`.
    pub fn from_flag(address: Option<&str>) -> Bus {
        address.map_or(Bus::System, |a| Bus::Address(a.to_owned()))
    }
}

// SAFETY (all four): valid, NUL-terminated D-Bus names.
const DBUS_NAME: BusName<'static> = unsafe { BusName::from_slice_unchecked("org.freedesktop.DBus\0") };
const DBUS_PATH: Path<'static> = unsafe { Path::from_slice_unchecked("/org/freedesktop/DBus\0") };
const DBUS_IFACE: Interface<'static> = unsafe { Interface::from_slice_unchecked("org.freedesktop.DBus\0") };

/// Default bound for blocking calls to the bus daemon and to peers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A private connection to a bus daemon (one per Venus service, venus-conventions.md §1).
#[derive(Debug)]
pub struct Conn {
    channel: Channel,
    backlog: VecDeque<Message>,
}

impl Conn {
    /// Connects and registers (`Hello`). Blocking, bounded by libdbus's own timeouts.
    pub fn open(bus: &Bus) -> Result<Conn, BusError> {
        let mut channel = match bus {
            Bus::System => Channel::get_private(BusType::System)?,
            Bus::Address(address) => {
                let mut c = Channel::open_private(address)?;
                c.register()?;
                c
            }
        };
        channel.set_watch_enabled(true);
        Ok(Conn {
            channel,
            backlog: VecDeque::new(),
        })
    }

    /// The unique name the daemon gave this connection (`:1.42`). Always `Some` after
    /// [`Conn::open`], which registers (`Hello`); `None` would mean libdbus has none.
    pub fn unique_name(&self) -> Option<&str> {
        self.channel.unique_name()
    }

    /// The fd to poll and whether to poll it for reading and/or writing.
    pub fn watch(&self) -> Watch {
        self.channel.watch()
    }

    /// True when messages were read but not handled yet: process before waiting again.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Queues a message for sending (no reply expected).
    pub fn send(&self, msg: Message) -> Result<(), BusError> {
        self.channel.send(msg).map(drop).map_err(|()| BusError::Disconnected)
    }

    /// Queues a method call without waiting for its reply; returns the call's serial, which
    /// the reply names as its reply serial when it comes out of [`Conn::next_message`].
    pub fn send_call(&self, msg: Message) -> Result<u32, BusError> {
        self.channel.send(msg).map_err(|()| BusError::Disconnected)
    }

    /// Writes everything queued for sending. Blocks only while the daemon's socket is full.
    pub fn flush(&self) {
        self.channel.flush();
    }

    /// Writes one complete message, already in wire format, straight to the socket: one
    /// `send(2)` instead of libdbus building (or re-validating) it. Whatever libdbus still
    /// has queued is written first, so messages never interleave; a full socket is waited
    /// on up to [`DEFAULT_TIMEOUT`], then the connection counts as lost.
    ///
    /// The bytes must be a valid message with a serial of its own (see
    /// [`super::items_changed`]); the bus daemon disconnects a client that sends anything else.
    pub fn send_marshalled(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        if self.channel.has_messages_to_send() {
            self.channel.flush();
            if self.channel.has_messages_to_send() {
                return Err(BusError::Disconnected);
            }
        }
        let fd = self.channel.watch().fd;
        // Read the clock only if the socket is ever full (never, in steady state).
        let mut deadline = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: sending from a valid slice on the connection's own socket, which
            // nothing else writes to at this moment (libdbus's queue is empty).
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                rest = &rest[n..];
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    // The daemon is not reading: wait for room, up to the deadline.
                    let now = std::time::Instant::now();
                    let deadline = *deadline.get_or_insert(now + DEFAULT_TIMEOUT);
                    let left = deadline.saturating_duration_since(now);
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
                    // SAFETY: one valid pollfd.
                    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
                    if ready == 0 || std::time::Instant::now() >= deadline {
                        return Err(BusError::Disconnected);
                    }
                }
                _ => return Err(BusError::Disconnected),
            }
        }
        Ok(())
    }

    /// Sends a method call and waits up to `timeout` for its reply. An error reply becomes
    /// [`BusError::Dbus`] with the error's name. Messages read meanwhile go to the backlog.
    pub fn call(&mut self, msg: Message, timeout: Duration) -> Result<Message, BusError> {
        let reply = self.channel.send_with_reply_and_block(msg, timeout);
        while let Some(m) = self.channel.pop_message() {
            self.backlog.push_back(m);
        }
        Ok(reply?)
    }

    /// The next incoming message without blocking: the backlog first, then whatever the
    /// socket has. `Err(Disconnected)` once the daemon is gone.
    pub fn next_message(&mut self) -> Result<Option<Message>, BusError> {
        if let Some(m) = self.backlog.pop_front() {
            return Ok(Some(m));
        }
        if let Some(m) = self.channel.pop_message() {
            return Ok(Some(m));
        }
        self.channel
            .read_write(Some(Duration::ZERO))
            .map_err(|()| BusError::Disconnected)?;
        Ok(self.channel.pop_message())
    }

    /// A method call to the bus daemon itself (`org.freedesktop.DBus`).
    pub(crate) fn daemon_call(member: &'static str) -> Message {
        Message::method_call(&DBUS_NAME, &DBUS_PATH, &DBUS_IFACE, &Member::from(member))
    }

    /// `RequestName(name, DO_NOT_QUEUE)`; `Err(NameTaken)` unless we became primary owner.
    pub fn request_name(&mut self, name: &str) -> Result<(), BusError> {
        const DO_NOT_QUEUE: u32 = 4;
        const PRIMARY_OWNER: u32 = 1;
        const ALREADY_OWNER: u32 = 4;
        check_bus_name(name)?;
        let msg = Conn::daemon_call("RequestName").append2(name, DO_NOT_QUEUE);
        let reply = self.call(msg, DEFAULT_TIMEOUT)?;
        match reply.read1::<u32>() {
            Ok(PRIMARY_OWNER | ALREADY_OWNER) => Ok(()),
            Ok(_) => Err(BusError::NameTaken(name.to_owned())),
            Err(e) => Err(BusError::BadReply(format!("RequestName: {e}"))),
        }
    }

    /// `ReleaseName(name)`, waiting for the daemon's answer: once this returns, the name is
    /// free for another connection (closing the connection frees it only when the daemon
    /// gets round to noticing).
    pub fn release_name(&mut self, name: &str) -> Result<(), BusError> {
        check_bus_name(name)?;
        let msg = Conn::daemon_call("ReleaseName").append1(name);
        self.call(msg, DEFAULT_TIMEOUT).map(drop)
    }
}

/// `Ok` when `name` is a valid well-known bus name.
pub(crate) fn check_bus_name(name: &str) -> Result<(), BusError> {
    match BusName::new(name) {
        Ok(_) if !name.starts_with(':') => Ok(()),
        _ => Err(BusError::BadName(name.to_owned())),
    }
}

/// Replies with a D-Bus error, unless the caller asked for no reply.
pub(crate) fn error_reply(msg: &Message, name: &'static str, text: &str) -> Option<Message> {
    if msg.get_no_reply() {
        return None;
    }
    let text = std::ffi::CString::new(text.replace('\0', " ")).unwrap_or_default();
    Some(msg.error(&dbus::strings::ErrorName::from(name), &text))
}

/// D-Bus error names used in replies.
pub(crate) mod errors {
    /// No object at that path.
    pub(crate) const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
    /// The object has no such method.
    pub(crate) const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";
    /// The object has no such interface.
    pub(crate) const UNKNOWN_INTERFACE: &str = "org.freedesktop.DBus.Error.UnknownInterface";
    /// Wrong number or types of arguments.
    pub(crate) const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
}
