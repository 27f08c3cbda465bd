//! Peacefair PZEM energy meters over Modbus-RTU, for Victron Venus OS.
//!
//! The core is sans-IO and allocation-free. A [`Request`] is built on the
//! stack and framed for RTU or Modbus TCP; an [`Exchange`] assembles and
//! times its reply from whatever bytes arrive; the reply is validated
//! ([`Reply`], [`FrameError`]) and decoded into an [`AcReading`] or a
//! [`DcReading`]. [`Model`], [`Family`] and [`StopBits`] know the meters and
//! their serial settings; [`energy`] keeps totals that never go backwards
//! and [`energy_flow`] derives a MultiPlus's energy flows from two meters
//! and a battery monitor.
//!
//! I/O sits at the edges: a blocking [`Client`] with bounded retries over
//! any [`Transport`] — [`RtuTransport`] on a [`Port`] (a serial line with
//! feature `serial`, or a TCP socket: [`tcp`]) or Modbus TCP. [`sim`]
//! emulates meters for tests, demos and benchmarks.
//!
//! ```
//! use pzem::{Address, Exchange, Framing, Request, StopBits};
//! use std::time::{Duration, Instant};
//!
//! let read = Request::read_input_registers(0, 10).unwrap();
//! let mut exchange = Exchange::new(Framing::rtu_serial(StopBits::One), Duration::from_millis(300));
//! let frame = exchange.start(Instant::now(), Address::FACTORY_DEFAULT, read);
//! assert_eq!(frame.as_bytes(), [0x01, 0x04, 0x00, 0x00, 0x00, 0x0A, 0x70, 0x0D]);
//! // ... write the frame, then feed the reply: exchange.handle_input(now, &bytes)
//! ```
//!
//! With `default-features = false` only the core, the client, TCP and the
//! simulator are built: no serial port, no D-Bus. With feature `dbus`, the
//! `dbus` module publishes and reads Venus OS services (BusItem API).
#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod ac;
mod address;
mod client;
mod crc;
#[cfg(feature = "dbus")]
pub mod dbus;
mod dc;
pub mod energy;
pub mod energy_flow;
mod error;
mod exchange;
pub mod frame;
mod line;
mod model;
#[cfg(unix)]
mod poll_set;
mod reading;
#[cfg(feature = "serial")]
pub mod serial;
pub mod sim;
// Used by the services (feature `dbus`); the core does not need it.
#[cfg_attr(not(feature = "dbus"), allow(dead_code))]
mod state_file;
pub mod tcp;
mod transport;

// The tools' internals (pzem-info, pzem-dbus, pzem-energy, pzem-logger, pzem-web): public
// for the binaries, not API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[cfg(all(feature = "dbus", unix))]
#[doc(hidden)]
pub mod flow_service;
// Harnesses of the fuzz targets in fuzz/, shared with tests/fuzz_corpus.rs.
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod info;
#[doc(hidden)]
pub mod venus;
#[doc(hidden)]
pub use line::utf8_args;
#[cfg(unix)]
#[doc(hidden)]
pub use poll_set::PollSet;
// pzem-logger's and pzem-web's: the history core and store, the page and its server.
#[doc(hidden)]
pub mod history;
#[cfg(all(feature = "web", unix))]
#[doc(hidden)]
pub mod web;

pub use ac::{AcParameters, AcReading};
pub use address::{Address, InvalidAddress};
pub use client::Client;
pub use crc::{crc_bytes, crc16, frame_crc_ok};
pub use dc::{DcParameters, DcReading, Shunt};
pub use error::Error;
pub use exchange::{Ended, Exchange, Framing, Input};
pub use frame::{ExceptionCode, FrameError, Function, Registers, Reply, Request, RequestFrame};
#[cfg(unix)]
pub use line::LineStream;
pub use line::{Line, LineDescription};
pub use model::{BAUD_RATE, Family, Model, ModelChoice, StopBits, UnknownModel, frame_gap_us, wire_time_us};
pub use reading::{Parameters, Reading};
pub use transport::{DEFAULT_TIMEOUT, Port, ReplyBuffer, RtuTransport, Transport};
