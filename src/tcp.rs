//! Meters behind serial-to-Ethernet gateways: Modbus-RTU tunnelled over a
//! raw TCP socket, or Modbus TCP (MBAP framing).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::address::Address;
use crate::error::Error;
use crate::exchange::{Exchange, Framing};
use crate::frame::{Reply, Request};
use crate::model::StopBits;
use crate::transport::{DEFAULT_TIMEOUT, Port, ReplyBuffer, RtuTransport, Transport, blocking_exchange};

/// How long connecting to a gateway may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A TCP connection as a byte [`Port`] (for RTU over TCP).
#[derive(Debug)]
pub struct TcpPort {
    stream: TcpStream,
}

impl TcpPort {
    /// Wrap a connected stream.
    pub fn from_stream(stream: TcpStream) -> TcpPort {
        TcpPort { stream }
    }

    /// The connected stream.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Connect to `addr` (`host:port`) within `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<TcpPort> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address to connect to"));
        for sa in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(TcpPort { stream });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Port for TcpPort {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.stream.read(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "gateway closed the connection",
            )),
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn discard_input(&mut self) -> io::Result<()> {
        self.stream.set_nonblocking(true)?;
        let mut scratch = [0u8; 64];
        let result = loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "gateway closed the connection",
                    ));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.stream.set_nonblocking(false)?;
        result
    }
}

/// Connect to a gateway that passes Modbus-RTU frames through a raw TCP
/// socket.
pub fn connect_rtu(addr: &str) -> io::Result<RtuTransport<TcpPort>> {
    Ok(RtuTransport::new(
        TcpPort::connect(addr, CONNECT_TIMEOUT)?,
        StopBits::One,
    ))
}

/// Modbus TCP (MBAP header, no CRC) to a gateway.
#[derive(Debug)]
pub struct ModbusTcp {
    port: TcpPort,
    exchange: Exchange,
}

impl ModbusTcp {
    /// Connect to `addr` (`host:port`, usually port 502).
    pub fn connect(addr: &str) -> io::Result<ModbusTcp> {
        Ok(ModbusTcp {
            port: TcpPort::connect(addr, CONNECT_TIMEOUT)?,
            exchange: Exchange::new(Framing::Mbap, DEFAULT_TIMEOUT),
        })
    }
}

impl Transport for ModbusTcp {
    fn transact<'b>(
        &mut self,
        address: Address,
        request: &Request,
        buf: &'b mut ReplyBuffer,
    ) -> Result<Reply<'b>, Error> {
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
