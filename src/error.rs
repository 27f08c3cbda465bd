//! The error type of a request to a meter.

use std::fmt;
use std::io;

use crate::frame::{ExceptionCode, FrameError};

/// Why a request to a meter failed.
#[derive(Debug)]
pub enum Error {
    /// Nothing came back before the timeout: the meter is absent, unpowered
    /// (an AC meter without mains is silent), at another address, or the
    /// wiring (A/B, termination, stop bits) is wrong.
    NoAnswer,
    /// Some bytes came back, then nothing: a truncated reply.
    Incomplete {
        /// Bytes a full reply has.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A reply came back but is not valid (CRC, length, address, function),
    /// or the meter refused the request ([`FrameError::Exception`]).
    Frame(FrameError),
    /// A value written was not read back.
    Verify {
        /// What was written.
        what: &'static str,
        /// The value written.
        wrote: u32,
        /// The value read back.
        read: u32,
    },
    /// An argument outside what the meter accepts; nothing was sent.
    Argument(String),
    /// A valid reply holds a value the manuals do not document (e.g. an
    /// unknown shunt code): nothing was decoded from it.
    UnexpectedValue(String),
    /// The port or socket failed.
    Io(io::Error),
}

impl Error {
    /// The meter's exception code, when it refused the request.
    pub fn exception(&self) -> Option<ExceptionCode> {
        match self {
            Error::Frame(FrameError::Exception { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// Whether something answered, but garbled: a CRC error, a wrong or
    /// truncated length. At the general address this is what two meters
    /// answering at once look like.
    pub fn is_garbled(&self) -> bool {
        match self {
            Error::Incomplete { .. } => true,
            Error::Frame(FrameError::Exception { .. }) => false,
            Error::Frame(_) => true,
            _ => false,
        }
    }

    /// Whether trying again may help (no answer, garbled reply). Refusals,
    /// bad arguments, failed verification and I/O errors are final.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::NoAnswer) || self.is_garbled()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAnswer => f.write_str("no answer"),
            Error::Incomplete { expected, got } => {
                write!(f, "reply cut short: {got} of {expected} bytes")
            }
            Error::Frame(e) => e.fmt(f),
            Error::Verify { what, wrote, read } => {
                write!(f, "{what} was written as {wrote} but reads back as {read}")
            }
            Error::Argument(why) => f.write_str(why),
            Error::UnexpectedValue(why) => {
                write!(f, "{why}: is this a PZEM of the family asked for, and is it working?")
            }
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Frame(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        Error::Frame(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
