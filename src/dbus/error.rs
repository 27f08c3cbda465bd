//! The error type of the D-Bus layer.

use super::tree::TreeError;
use std::fmt;

/// What can go wrong talking to the bus.
#[derive(Debug)]
pub enum BusError {
    /// libdbus or a peer reported an error (connect failure, error reply, timeout…).
    Dbus(dbus::Error),
    /// `RequestName` did not make us the primary owner: another process owns the name.
    NameTaken(String),
    /// Not a valid D-Bus bus name.
    BadName(String),
    /// The connection to the bus daemon is gone; drop the service/client and reconnect.
    Disconnected,
    /// A peer answered with a body of the wrong shape.
    BadReply(String),
    /// Waited for something (a name, a signal) longer than allowed.
    Timeout(String),
    /// The item tree is not valid.
    Tree(TreeError),
    /// A system call (poll, the wake socket, spawning a process) failed.
    Io(std::io::Error),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Dbus(e) => match (e.name(), e.message()) {
                (Some(n), Some(m)) => write!(f, "D-Bus error {n}: {m}"),
                (Some(n), None) => write!(f, "D-Bus error {n}"),
                _ => write!(f, "D-Bus error"),
            },
            BusError::NameTaken(n) => write!(
                f,
                "the D-Bus name {n} is already owned by another process (is another instance running?)"
            ),
            BusError::BadName(n) => write!(
                f,
                "'{n}' is not a valid D-Bus name (elements of [A-Za-z0-9_-], not starting with a digit)"
            ),
            BusError::Disconnected => write!(f, "disconnected from the D-Bus daemon"),
            BusError::BadReply(what) => write!(f, "unexpected D-Bus reply: {what}"),
            BusError::Timeout(what) => write!(f, "timed out: {what}"),
            BusError::Tree(e) => e.fmt(f),
            BusError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for BusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BusError::Dbus(e) => Some(e),
            BusError::Tree(e) => Some(e),
            BusError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<dbus::Error> for BusError {
    fn from(e: dbus::Error) -> Self {
        BusError::Dbus(e)
    }
}

impl From<TreeError> for BusError {
    fn from(e: TreeError) -> Self {
        BusError::Tree(e)
    }
}

impl From<std::io::Error> for BusError {
    fn from(e: std::io::Error) -> Self {
        BusError::Io(e)
    }
}

impl BusError {
    /// The D-Bus error name, when the peer answered with an error reply.
    pub fn dbus_name(&self) -> Option<&str> {
        match self {
            BusError::Dbus(e) => e.name(),
            _ => None,
        }
    }
}
