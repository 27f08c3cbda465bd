//! Where the meters are: a serial device or a TCP gateway, as the tools'
//! `-d TTY` / `--tcp HOST:PORT [--modbus-tcp]` flags name it.

use std::fmt;
use std::io;

use crate::exchange::Framing;
use crate::model::StopBits;
use crate::transport::Transport;

/// A line of meters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A serial device such as `/dev/ttyUSB0` (9600 baud).
    Serial(String),
    /// A gateway passing Modbus-RTU frames through a TCP socket, `host:port`.
    RtuOverTcp(String),
    /// A Modbus TCP (MBAP) gateway, `host:port`.
    ModbusTcp(String),
}

impl Line {
    /// The line named by `-d TTY`, `--tcp HOST:PORT` and `--modbus-tcp`;
    /// the error says which flags to give.
    pub fn from_flags(device: Option<String>, tcp: Option<String>, modbus_tcp: bool) -> Result<Line, String> {
        match (device, tcp, modbus_tcp) {
            (Some(_), Some(_), _) => Err("give either -d TTY or --tcp HOST:PORT, not both".into()),
            (Some(_), None, true) => Err("--modbus-tcp goes with --tcp HOST:PORT".into()),
            (Some(tty), None, false) => Ok(Line::Serial(tty)),
            (None, Some(addr), false) => Ok(Line::RtuOverTcp(addr)),
            (None, Some(addr), true) => Ok(Line::ModbusTcp(addr)),
            (None, None, _) => Err("say where the meters are: -d /dev/ttyUSB0 or --tcp HOST:PORT".into()),
        }
    }

    /// The device path or `host:port`.
    pub fn place(&self) -> &str {
        match self {
            Line::Serial(s) | Line::RtuOverTcp(s) | Line::ModbusTcp(s) => s,
        }
    }

    /// Whether the line is a serial device (stop bits apply).
    pub fn is_serial(&self) -> bool {
        matches!(self, Line::Serial(_))
    }

    /// Open the line as a Modbus transport; `stop_bits` applies to serial
    /// lines only.
    pub fn open(&self, stop_bits: StopBits) -> io::Result<Box<dyn Transport + Send>> {
        Ok(match self {
            #[cfg(feature = "serial")]
            Line::Serial(path) => Box::new(crate::serial::open_rtu(path, stop_bits)?),
            #[cfg(not(feature = "serial"))]
            Line::Serial(path) => {
                let _ = stop_bits;
                return Err(io::Error::other(format!(
                    "{path}: built without serial support (feature `serial`); use --tcp"
                )));
            }
            Line::RtuOverTcp(addr) => Box::new(crate::tcp::connect_rtu(addr)?),
            Line::ModbusTcp(addr) => Box::new(crate::tcp::ModbusTcp::connect(addr)?),
        })
    }

    /// Open the line as a raw byte stream for a epoll wait loop, with its
    /// framing; `stop_bits` applies to serial lines only.
    pub fn open_stream(&self, stop_bits: StopBits) -> io::Result<(LineStream, Framing)> {
        Ok(match self {
            #[cfg(feature = "serial")]
            Line::Serial(path) => (
                LineStream::Serial(crate::serial::SerialLine::open(path, stop_bits)?.into_port()),
                Framing::rtu_serial(stop_bits),
            ),
            #[cfg(not(feature = "serial"))]
            Line::Serial(path) => {
                let _ = stop_bits;
                return Err(io::Error::other(format!(
                    "{path}: built without serial support (feature `serial`); use --tcp"
                )));
            }
            Line::RtuOverTcp(addr) => (
                LineStream::Tcp(crate::tcp::TcpPort::connect(addr, crate::tcp::CONNECT_TIMEOUT)?.into_stream()),
                // The gateway keeps the serial timing; a short gap costs nothing.
                Framing::rtu_serial(StopBits::One),
            ),
            Line::ModbusTcp(addr) => (
                LineStream::Tcp(crate::tcp::TcpPort::connect(addr, crate::tcp::CONNECT_TIMEOUT)?.into_stream()),
                Framing::Mbap,
            ),
        })
    }

    /// For messages: `/dev/ttyUSB0 (9600 8N2)`, `10.0.0.5:502 (Modbus TCP gateway)`.
    pub fn describe(&self, stop_bits: StopBits) -> LineDescription<'_> {
        LineDescription { line: self, stop_bits }
    }
}

/// An open line as a non-blocking byte stream: what a epoll wait loop reads
/// and writes. Reads and writes are single system calls.
#[derive(Debug)]
pub enum LineStream {
    /// A serial device (exclusive, 9600 baud, raw).
    #[cfg(feature = "serial")]
    Serial(serialport::TTYPort),
    /// A TCP connection to a gateway.
    Tcp(std::net::TcpStream),
}

impl LineStream {
    /// The file descriptor to poll for input.
    pub fn fd(&self) -> RawFd {
        match self {
            #[cfg(feature = "serial")]
            LineStream::Serial(p) => p.as_raw_fd(),
            LineStream::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Make reads and writes return at once.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            #[cfg(feature = "serial")]
            LineStream::Serial(p) => set_fd_nonblocking(p.as_raw_fd()),
            LineStream::Tcp(s) => s.set_nonblocking(true),
        }
    }

    /// Write a whole request frame (a few bytes: the kernel takes them at once).
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut rest = frame;
        while !rest.is_empty() {
            // SAFETY: writing from a valid slice to a descriptor we own.
            let n = unsafe { libc_write(self.fd(), rest) };
            match n {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "line took no bytes")),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "the line's output is full"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read what is there into `buf`: `Ok(0)` when nothing is, an error when
    /// the line is gone (a serial device unplugged, the gateway closed).
    pub fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reading into a valid slice from a descriptor we own.
            match unsafe { libc_read(self.fd(), buf) } {
                Ok(0) if !buf.is_empty() => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the line was closed"));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

use std::os::fd::{AsRawFd, RawFd};

#[cfg(feature = "serial")]
fn set_fd_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; only its status flags change.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `write(2)`. Safety: `fd` must be an open descriptor.
unsafe fn libc_write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length come from a valid slice.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `read(2)`. Safety: `fd` must be an open descriptor.
unsafe fn libc_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length come from a valid mutable slice.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// [`Line::describe`]'s text.
pub struct LineDescription<'a> {
    line: &'a Line,
    stop_bits: StopBits,
}

impl fmt::Display for LineDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.stop_bits) {
            (Line::Serial(p), StopBits::One) => write!(f, "{p} (9600 8N1)"),
            (Line::Serial(p), StopBits::Two) => write!(f, "{p} (9600 8N2)"),
            (Line::RtuOverTcp(a), _) => write!(f, "{a} (RTU over TCP gateway)"),
            (Line::ModbusTcp(a), _) => write!(f, "{a} (Modbus TCP gateway)"),
        }
    }
}

/// The program's arguments (without the program name), or the first one
/// that is not UTF-8, described for a usage error.
pub fn utf8_args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|bad| format!("argument {bad:?} is not valid UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            Line::from_flags(s("/dev/ttyUSB0"), None, false),
            Ok(Line::Serial("/dev/ttyUSB0".into()))
        );
        assert_eq!(
            Line::from_flags(None, s("h:502"), true),
            Ok(Line::ModbusTcp("h:502".into()))
        );
        assert_eq!(
            Line::from_flags(None, s("h:8899"), false),
            Ok(Line::RtuOverTcp("h:8899".into()))
        );
        assert!(
            Line::from_flags(s("/dev/x"), s("h:1"), false)
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            Line::from_flags(s("/dev/x"), None, true)
                .unwrap_err()
                .contains("--modbus-tcp")
        );
        assert!(
            Line::from_flags(None, None, false)
                .unwrap_err()
                .contains("-d /dev/ttyUSB0")
        );
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            Line::Serial("/dev/ttyUSB0".into()).describe(StopBits::Two).to_string(),
            "/dev/ttyUSB0 (9600 8N2)"
        );
        assert_eq!(
            Line::ModbusTcp("h:502".into()).describe(StopBits::Two).to_string(),
            "h:502 (Modbus TCP gateway)"
        );
    }
}
