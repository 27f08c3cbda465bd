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
use crate::exchange::{Ended, Exchange, Framing};
use crate::frame::{MAX_RTU_FRAME, Reply, Request};
use crate::model::StopBits;

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

/// Modbus-RTU over a [`Port`]: inter-frame silence, replies read to their
/// exact expected length. The framing and timing rules are
/// [`Exchange`]'s; this adds the blocking waits.
#[derive(Debug)]
pub struct RtuTransport<P> {
    port: P,
    exchange: Exchange,
}

impl<P: Port> RtuTransport<P> {
    /// Wrap `port`, whose characters use `stop_bits` (for the 3.5-character
    /// inter-frame silence).
    pub fn new(port: P, stop_bits: StopBits) -> RtuTransport<P> {
        RtuTransport {
            port,
            exchange: Exchange::new(Framing::rtu_serial(stop_bits), DEFAULT_TIMEOUT),
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
        if let Some(at) = self.exchange.send_not_before() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        self.port.discard_input()?;
        blocking_exchange(&mut self.port, &mut self.exchange, address, *request, buf)
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.exchange.set_timeout(timeout);
    }

    fn timeout(&self) -> Duration {
        self.exchange.timeout()
    }
}

/// Run one exchange over `port`, blocking until it ends, and decode the
/// reply into `buf`.
pub(crate) fn blocking_exchange<'b>(
    port: &mut impl Port,
    exchange: &mut Exchange,
    address: Address,
    request: Request,
    buf: &'b mut ReplyBuffer,
) -> Result<Reply<'b>, Error> {
    let frame = exchange.start(Instant::now(), address, request);
    port.send(frame.as_bytes())?;
    let ended = loop {
        let Some(deadline) = exchange.deadline() else {
            return Err(Error::NoAnswer);
        };
        // Past the deadline this still reads what is there without waiting: bytes that
        // arrived in time count even when this thread was late to look.
        let wait = deadline.saturating_duration_since(Instant::now());
        let want = exchange.bytes_wanted().min(buf.len());
        match port.receive(&mut buf[..want], wait) {
            Ok(0) => {
                if let Some(ended) = exchange.handle_timeout(Instant::now()) {
                    break ended;
                }
            }
            Ok(n) => {
                if let Some(ended) = exchange.handle_input(Instant::now(), &buf[..n]).ended {
                    break ended;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    };
    match ended {
        Ended::Failed(e) => Err(e),
        Ended::Reply => {
            // Hand the caller a reply that borrows its own buffer, not the exchange.
            let reply = exchange.reply()?;
            Ok(reply.copy_into(buf))
        }
    }
}
