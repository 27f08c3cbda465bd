//! Serial lines (RS-485 dongles, pseudo-terminals) as a [`Port`].
//!
//! PZEMs talk at 9600 baud, 8 data bits, no parity; AC meters use one stop
//! bit, DC meters two, and a mixed line two (see
//! [`StopBits::for_line`](crate::StopBits::for_line)).

use std::io::{self, Read, Write};
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
            .map_err(|e| io::Error::new(io::Error::from(e.clone()).kind(), format!("{path}: {e}")))?;
        Ok(SerialLine {
            port,
            path: path.to_string(),
        })
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
