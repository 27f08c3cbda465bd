//! Where the meters are: a serial device or a TCP gateway, as the tools'
//! `-d TTY` / `--tcp HOST:PORT [--modbus-tcp]` flags name it.

use std::fmt;
use std::io;

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

    /// For messages: `/dev/ttyUSB0 (9600 8N2)`, `10.0.0.5:502 (Modbus TCP gateway)`.
    pub fn describe(&self, stop_bits: StopBits) -> LineDescription<'_> {
        LineDescription { line: self, stop_bits }
    }
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
