//! Peacefair PZEM energy meters over Modbus-RTU, for Victron Venus OS.
//!
//! The core is sans-IO and allocation-free: [`frame`] builds requests and
//! validates replies, [`ac`] and [`dc`] decode the two register maps into
//! [`reading`]s, [`model`] knows the meters and their serial settings. I/O sits at the
//! edges: [`transport`] carries frames over a [`transport::Port`] (serial
//! line with feature `serial`, or [`tcp`]), and [`Client`] offers typed
//! operations with bounded retries. [`sim`] emulates meters for tests,
//! demos and benchmarks. [`energy_flow`] derives a MultiPlus's energy flows
//! from two meters and a battery monitor (sans-IO too), and [`state_file`]
//! keeps small state files safe across crashes and damage.
//!
//! With `default-features = false` only the core, the client, TCP and the
//! simulator core are built: no serial port, no D-Bus. With feature `dbus`,
//! [`dbus`] publishes and reads Venus OS services (BusItem API).
#![warn(missing_docs)]

pub mod ac;
pub mod address;
pub mod client;
pub mod crc;
#[cfg(feature = "dbus")]
pub mod dbus;
pub mod dc;
pub mod energy;
pub mod energy_flow;
pub mod error;
pub mod exchange;
pub mod frame;
pub mod history;
#[cfg(feature = "cli")]
pub mod info;
pub mod line;
pub mod model;
#[cfg(unix)]
pub mod poll_set;
pub mod reading;
#[cfg(feature = "serial")]
pub mod serial;
pub mod sim;
pub mod state_file;
pub mod tcp;
pub mod transport;
pub mod venus;
#[cfg(all(feature = "web", unix))]
pub mod web;

pub use ac::{AcParameters, AcReading};
pub use address::Address;
pub use client::Client;
pub use dc::{DcParameters, DcReading, Shunt};
pub use error::Error;
pub use frame::{ExceptionCode, FrameError, Function, Reply, Request};
pub use line::Line;
pub use model::{Family, Model, ModelChoice, StopBits};
pub use reading::{Parameters, Reading};
pub use transport::{Port, RtuTransport, Transport};
