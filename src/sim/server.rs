//! Serving a [`SimBus`] on a pseudo-terminal, a tty or a TCP socket.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::crc::frame_crc_ok;
use crate::frame::MBAP_HEADER_LEN;
use crate::model::{StopBits, wire_time_us};
use crate::tcp::TcpPort;
use crate::transport::Port;

use super::bus::SimBus;

/// A simulated line shared between the serving thread and its owner.
pub type SimHandle = Arc<Mutex<SimBus>>;

/// How a TCP simulator frames its traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFraming {
    /// Raw Modbus-RTU frames through the socket (a transparent gateway).
    Rtu,
    /// Modbus TCP (MBAP).
    Mbap,
}

/// Timing of the simulated line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Wait as long as the request and reply would take on the wire at
    /// 9600 baud before replying.
    pub wire_time: bool,
    /// Stop bits for the wire time.
    pub stop_bits: StopBits,
    /// The meter's turnaround time before it starts to reply.
    pub turnaround: Duration,
}

impl Pacing {
    /// Reply at once.
    pub const NONE: Pacing = Pacing {
        wire_time: false,
        stop_bits: StopBits::One,
        turnaround: Duration::ZERO,
    };

    /// Real 9600-baud wire time plus a 10 ms turnaround.
    pub fn real(stop_bits: StopBits) -> Pacing {
        Pacing {
            wire_time: true,
            stop_bits,
            turnaround: Duration::from_millis(10),
        }
    }

    fn wait(&self, request_len: usize, reply_len: usize, extra: Duration) {
        let mut wait = extra;
        if reply_len > 0 {
            wait += self.turnaround;
        }
        if self.wire_time {
            wait += Duration::from_micros(wire_time_us(request_len + reply_len, self.stop_bits));
        }
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A simulator serving in its own thread until dropped or hung up.
pub struct SimServer {
    bus: SimHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: Option<String>,
    local_addr: Option<SocketAddr>,
}

impl SimServer {
    /// Serve `bus` on a new pseudo-terminal; clients open [`SimServer::path`].
    #[cfg(feature = "serial")]
    pub fn pty(bus: SimBus, pacing: Pacing) -> io::Result<SimServer> {
        Self::pty_shared(Arc::new(Mutex::new(bus)), pacing)
    }

    /// Serve a line that is already shared (the [`SimServer::handle`] of another server,
    /// e.g. one that [hung up](SimServer::hang_up)) on a new pseudo-terminal. The meters
    /// keep their state (values, energy counters, faults, what was served), as when a USB
    /// adapter is pulled and plugged in again: the tty is new, the meters are the same.
    /// Do not serve one line from two running servers: their requests would interleave.
    #[cfg(feature = "serial")]
    pub fn pty_shared(bus: SimHandle, pacing: Pacing) -> io::Result<SimServer> {
        let pair = crate::serial::PtyPair::new()?;
        let path = pair.path.clone();
        let mut server = Self::start_shared(bus, move |bus, stop| {
            let device = pair.device;
            let mut port = Controller(pair.controller);
            serve_rtu(&mut port, &bus, &stop, pacing);
            drop(device);
        });
        server.path = Some(path);
        Ok(server)
    }

    /// Serve `bus` on an existing serial device (e.g. a USB dongle wired to
    /// another dongle, or a pty made by socat).
    #[cfg(feature = "serial")]
    pub fn tty(path: &str, stop_bits: StopBits, bus: SimBus, pacing: Pacing) -> io::Result<SimServer> {
        let mut line = crate::serial::SerialLine::open(path, stop_bits)?;
        let mut server = Self::start(bus, move |bus, stop| serve_rtu(&mut line, &bus, &stop, pacing));
        server.path = Some(path.to_string());
        Ok(server)
    }

    /// Serve `bus` on a TCP listener at `listen` (e.g. `127.0.0.1:0`).
    pub fn tcp(listen: &str, framing: TcpFraming, bus: SimBus, pacing: Pacing) -> io::Result<SimServer> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut server = Self::start(bus, move |bus, stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if stream
                            .set_nonblocking(false)
                            .and_then(|_| stream.set_nodelay(true))
                            .is_err()
                        {
                            continue;
                        }
                        match framing {
                            TcpFraming::Rtu => serve_rtu(&mut TcpPort::from_stream(stream), &bus, &stop, pacing),
                            TcpFraming::Mbap => serve_mbap(stream, &bus, &stop, pacing),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        server.local_addr = Some(addr);
        Ok(server)
    }

    fn start(bus: SimBus, body: impl FnOnce(SimHandle, Arc<AtomicBool>) + Send + 'static) -> SimServer {
        Self::start_shared(Arc::new(Mutex::new(bus)), body)
    }

    fn start_shared(bus: SimHandle, body: impl FnOnce(SimHandle, Arc<AtomicBool>) + Send + 'static) -> SimServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bus.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("pzem-sim".into())
            .spawn(move || body(b, s))
            .expect("spawning the simulator thread");
        SimServer {
            bus,
            stop,
            thread: Some(thread),
            path: None,
            local_addr: None,
        }
    }

    /// The device path clients open (pty or tty).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The TCP address clients connect to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The shared line, to inspect or change meters while serving.
    pub fn handle(&self) -> SimHandle {
        self.bus.clone()
    }

    /// Lock the line (a poisoned lock is taken over: the simulator holds no
    /// invariants a panic could break).
    pub fn bus(&self) -> MutexGuard<'_, SimBus> {
        self.bus.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop serving and close the line: on a pty the device side hangs up,
    /// as a USB dongle does when it is pulled.
    pub fn hang_up(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.hang_up();
    }
}

/// The controlling side of a pty as a [`Port`].
#[cfg(feature = "serial")]
struct Controller(serialport::TTYPort);

#[cfg(feature = "serial")]
impl Port for Controller {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use serialport::SerialPort;
        self.0.set_timeout(timeout).map_err(io::Error::from)?;
        match self.0.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn discard_input(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock(bus: &SimHandle) -> MutexGuard<'_, SimBus> {
    bus.lock().unwrap_or_else(|e| e.into_inner())
}

/// Length of the request frame that starts `buf`, judged from its function
/// code, or `None` when the function is unknown (the byte is noise).
fn request_len(function: u8) -> Option<usize> {
    match function {
        0x03 | 0x04 | 0x06 => Some(8),
        0x42 => Some(4),
        0x41 => Some(6),
        _ => None,
    }
}

/// Answer RTU requests arriving on `port` until `stop` or a port error.
fn serve_rtu(port: &mut impl Port, bus: &SimHandle, stop: &AtomicBool, pacing: Pacing) {
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    let mut last_byte = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = match port.receive(&mut chunk, Duration::from_millis(50)) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            continue;
        }
        // A gap inside a frame ends it (Modbus-RTU framing by silence).
        if last_byte.elapsed() > Duration::from_millis(50) {
            buf.clear();
        }
        last_byte = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 2 {
            let Some(len) = request_len(buf[1]) else {
                buf.remove(0);
                continue;
            };
            if buf.len() < len {
                break;
            }
            if !frame_crc_ok(&buf[..len]) {
                buf.remove(0);
                continue;
            }
            let reply = lock(bus).respond_rtu(&buf[..len], Instant::now());
            pacing.wait(len, reply.bytes.len(), reply.delay);
            buf.drain(..len);
            if !reply.bytes.is_empty() && port.send(&reply.bytes).is_err() {
                return;
            }
        }
    }
}

/// Answer Modbus TCP requests on `stream` until it closes or `stop`.
fn serve_mbap(mut stream: TcpStream, bus: &SimHandle, stop: &AtomicBool, pacing: Pacing) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut header = [0u8; MBAP_HEADER_LEN];
    let mut got = 0;
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut header[got..]) {
            Ok(0) => return,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        if got < MBAP_HEADER_LEN {
            continue;
        }
        got = 0;
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if !(2..=254).contains(&len) || header[2..4] != [0, 0] {
            return;
        }
        let mut pdu = vec![0u8; len - 1];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.read_exact(&mut pdu).is_err() {
            return;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let (reply, delay) = lock(bus).respond_pdu(header[6], &pdu, Instant::now());
        pacing.wait(0, 0, delay);
        if let Some(reply) = reply {
            let mut out = Vec::with_capacity(MBAP_HEADER_LEN + reply.len());
            out.extend_from_slice(&header[..4]);
            out.extend_from_slice(&(1 + reply.len() as u16).to_be_bytes());
            out.push(header[6]);
            out.extend_from_slice(&reply);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}
