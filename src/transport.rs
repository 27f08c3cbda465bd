//! Carrying a request to a meter and its reply back: the I/O edge.
//!
//! [`Transport`] is what [`crate::Client`] talks to. [`RtuTransport`] frames
//! requests as Modbus-RTU over any byte [`Port`]: a serial line (feature
//! `serial`) or a TCP socket to a serial gateway. [`crate::tcp::ModbusTcp`]
//! speaks Modbus TCP (MBAP) instead.

use std::io;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::Error;
use crate::frame::{MAX_RTU_FRAME, Reply, Request};
use crate::model::{StopBits, frame_gap_us, wire_time_us};

/// Buffer a reply is received into.
pub type ReplyBuffer = [u8; MAX_RTU_FRAME];

/// Sends one request and returns its validated reply.
pub trait Transport {
    /// Send `request` to `address` and wait for the reply, which is
    /// received into `buf` and fully validated before it is returned.
    fn transact<'b>(
        &mut self,
        address: Address,
        request: &Request,
        buf: &'b mut ReplyBuffer,
    ) -> Result<Reply<'b>, Error>;

    /// How long to wait for a reply.
    fn set_timeout(&mut self, timeout: Duration);

    /// The current reply timeout.
    fn timeout(&self) -> Duration;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transact<'b>(
        &mut self,
        address: Address,
        request: &Request,
        buf: &'b mut ReplyBuffer,
    ) -> Result<Reply<'b>, Error> {
        (**self).transact(address, request, buf)
    }

    fn set_timeout(&mut self, timeout: Duration) {
        (**self).set_timeout(timeout)
    }

    fn timeout(&self) -> Duration {
        (**self).timeout()
    }
}

/// A byte stream with timed reads: a serial port or a socket.
pub trait Port {
    /// Write all of `bytes` and wait until they are sent.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Read what is available into `buf`, waiting at most `timeout`;
    /// `Ok(0)` means the timeout passed with nothing to read.
    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;

    /// Drop whatever input is waiting (stale or unsolicited bytes).
    fn discard_input(&mut self) -> io::Result<()>;
}

/// The default reply timeout: long enough for a PZEM's turnaround plus the
/// 25-byte AC reply at 9600 baud (26 ms), short enough that a silent meter
/// costs little bus time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Modbus-RTU over a [`Port`]: inter-frame silence, stale input dropped
/// before each request, replies read to their exact expected length.
#[derive(Debug)]
pub struct RtuTransport<P> {
    port: P,
    timeout: Duration,
    frame_gap: Duration,
    last_activity: Option<Instant>,
}

impl<P: Port> RtuTransport<P> {
    /// Wrap `port`, whose characters use `stop_bits` (for the 3.5-character
    /// inter-frame silence).
    pub fn new(port: P, stop_bits: StopBits) -> RtuTransport<P> {
        RtuTransport {
            port,
            timeout: DEFAULT_TIMEOUT,
            frame_gap: Duration::from_micros(frame_gap_us(stop_bits)),
            last_activity: None,
        }
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutably.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }
}

impl<P: Port> Transport for RtuTransport<P> {
    fn transact<'b>(
        &mut self,
        address: Address,
        request: &Request,
        buf: &'b mut ReplyBuffer,
    ) -> Result<Reply<'b>, Error> {
        if let Some(last) = self.last_activity {
            let quiet = last.elapsed();
            if quiet < self.frame_gap {
                std::thread::sleep(self.frame_gap - quiet);
            }
        }
        self.port.discard_input()?;
        let frame = request.rtu_frame(address);
        self.port.send(frame.as_bytes())?;
        let deadline = Instant::now() + self.timeout;
        let result = (|| {
            let got = fill(&mut self.port, buf, 0, 2, deadline)?;
            if got < 2 {
                return Err(if got == 0 {
                    Error::NoAnswer
                } else {
                    Error::Incomplete {
                        expected: request.rtu_reply_len(),
                        got,
                    }
                });
            }
            let expected = request.rtu_reply_len_after_header(buf[1]);
            // The timeout bounds the wait for an answer; once one has started, let it
            // finish (its wire time plus a margin), or a slow meter's tail would be lost.
            let rest = Duration::from_micros(wire_time_us(expected, StopBits::Two)) + Duration::from_millis(20);
            let deadline = deadline.max(Instant::now() + rest);
            let got = fill(&mut self.port, buf, 2, expected, deadline)?;
            if got < expected {
                return Err(Error::Incomplete { expected, got });
            }
            Ok(expected)
        })();
        self.last_activity = Some(Instant::now());
        let len = result?;
        Ok(request.decode_rtu_reply(address, &buf[..len])?)
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Read from `port` into `buf[from..to]` until it is full or `deadline`
/// passes; returns how far it got.
pub(crate) fn fill(
    port: &mut impl Port,
    buf: &mut [u8],
    mut from: usize,
    to: usize,
    deadline: Instant,
) -> Result<usize, Error> {
    while from < to {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match port.receive(&mut buf[from..to], deadline - now) {
            Ok(0) => break,
            Ok(n) => from += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(from)
}
