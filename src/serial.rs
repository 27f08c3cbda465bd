//! Serial lines (RS-485 dongles, pseudo-terminals) as a [`Port`].
//!
//! PZEMs talk at 9600 baud, 8 data bits, no parity; AC meters use one stop
//! bit, DC meters two, and a mixed line two (see
//! [`StopBits::for_line`](crate::StopBits::for_line)).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, TTYPort};

use crate::model::{BAUD_RATE, StopBits};
use crate::transport::{Port, RtuTransport};

/// An open serial line.
pub struct SerialLine {
    port: TTYPort,
    path: String,
}

impl std::fmt::Debug for SerialLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialLine").field("path", &self.path).finish()
    }
}

impl SerialLine {
    /// Open `path` at 9600 baud, 8 data bits, no parity, `stop_bits`, taking
    /// an exclusive lock so no other well-behaved program shares the line.
    pub fn open(path: &str, stop_bits: StopBits) -> io::Result<SerialLine> {
        let port = serialport::new(path, BAUD_RATE)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .flow_control(FlowControl::None)
            .stop_bits(match stop_bits {
                StopBits::One => serialport::StopBits::One,
                StopBits::Two => serialport::StopBits::Two,
            })
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(io::Error::from)?;
        Ok(SerialLine {
            port,
            path: path.to_string(),
        })
    }

    /// The open port, for a caller that does its own waiting.
    pub fn into_port(self) -> TTYPort {
        self.port
    }

    /// The device path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Port for SerialLine {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.port.set_timeout(timeout).map_err(io::Error::from)?;
        match self.port.read(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("{}: device went away", self.path),
            )),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn discard_input(&mut self) -> io::Result<()> {
        self.port.clear(ClearBuffer::Input).map_err(io::Error::from)
    }
}

/// Open `path` as a Modbus-RTU transport.
pub fn open_rtu(path: &str, stop_bits: StopBits) -> io::Result<RtuTransport<SerialLine>> {
    Ok(RtuTransport::new(SerialLine::open(path, stop_bits)?, stop_bits))
}

fn set_cloexec(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFD/F_SETFD only touch its flags.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) == 0
    };
    if ok { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A pseudo-terminal pair: the simulator serves the controlling side, a
/// client opens [`PtyPair::path`] as if it were a USB dongle.
pub struct PtyPair {
    /// The controlling (master) side.
    pub controller: TTYPort,
    /// The device side, kept open so the device path stays valid while
    /// clients come and go.
    pub device: TTYPort,
    /// Path of the device side, e.g. `/dev/pts/3`.
    pub path: String,
}

impl PtyPair {
    /// Create a pair.
    pub fn new() -> io::Result<PtyPair> {
        let (controller, device) = TTYPort::pair().map_err(io::Error::from)?;
        // serialport opens both sides without O_CLOEXEC: a child process started while the
        // pair exists (a test starting pzem-dbus) would inherit the controller, and the
        // device side would never see a hang-up when the simulator closes its end.
        for fd in [controller.as_raw_fd(), device.as_raw_fd()] {
            set_cloexec(fd)?;
        }
        let path = device
            .name()
            .ok_or_else(|| io::Error::other("pseudo-terminal has no device path"))?;
        Ok(PtyPair {
            controller,
            device,
            path,
        })
    }
}
