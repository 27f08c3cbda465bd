//! The error type of the D-Bus layer.

use super::tree::TreeError;
use std::fmt;

/// What can go wrong talking to the bus.
#[derive(Debug)]
pub enum Error {
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dbus(e) => match (e.name(), e.message()) {
                (Some(n), Some(m)) => write!(f, "D-Bus error {n}: {m}"),
                (Some(n), None) => write!(f, "D-Bus error {n}"),
                _ => write!(f, "D-Bus error"),
            },
            Error::NameTaken(n) => write!(
                f,
                "the D-Bus name {n} is already owned by another process (is another instance running?)"
            ),
            Error::BadName(n) => write!(
                f,
                "'{n}' is not a valid D-Bus name (elements of [A-Za-z0-9_-], not starting with a digit)"
            ),
            Error::Disconnected => write!(f, "disconnected from the D-Bus daemon"),
            Error::BadReply(what) => write!(f, "unexpected D-Bus reply: {what}"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Tree(e) => e.fmt(f),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dbus(e) => Some(e),
            Error::Tree(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<dbus::Error> for Error {
    fn from(e: dbus::Error) -> Self {
        Error::Dbus(e)
    }
}

impl From<TreeError> for Error {
    fn from(e: TreeError) -> Self {
        Error::Tree(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// The D-Bus error name, when the peer answered with an error reply.
    pub fn dbus_name(&self) -> Option<&str> {
        match self {
            Error::Dbus(e) => e.name(),
            _ => None,
        }
    }
}
