//! The generic Venus OS D-Bus layer: publishing `com.victronenergy.BusItem` services and
//! reading other services the way Venus consumers do (docs: venus-conventions.md).
//!
//! Sans-IO core, unit-tested without a bus:
//! - [`value`]: the value model ([`Value`], [`Kind`]) and its stable wire types
//!   (invalid = empty `ai`, string lists = `av`).
//! - [`text`]: per-path text ([`Format`]: `230.1 V`, `---` when invalid).
//! - [`tree`]: the fixed path tree of one service ([`ItemTree`]) with batched changes.
//! - [`wire`], [`introspect`]: message bodies and introspection XML built from a tree.
//!
//! I/O at the edges:
//! - [`Service`]: one connection + one well-known name + one tree (§1: one connection per
//!   service); name claimed after the tree is complete.
//! - [`BusClient`]: `GetItems`/`GetValue`/`SetValue`/`AddSettings` on other services, and
//!   their signals as [`Event`]s.
//! - [`Waiter`]/[`Waker`]: poll(2) over every connection plus a wake socket.
//!
//! # An application loop
//!
//! One thread owns the services and blocks on all their fds; a serial thread sends readings
//! over a channel and wakes it, so D-Bus calls are answered within milliseconds even while
//! the serial side waits out a timeout.
//!
//! ```no_run
//! use pzem::dbus::{Bus, Format, Kind, Service, TreeBuilder, Value, WriteOutcome, Waiter, Watchable};
//! use std::sync::mpsc;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut tree = TreeBuilder::new();
//! tree.add("/DeviceInstance", Kind::Int, Format::Plain).value(40);
//! tree.add("/Ac/Power", Kind::Double, Format::number(1, "W"));
//! tree.add("/CustomName", Kind::Str, Format::Plain).value("").writable();
//! let mut service = Service::new(&Bus::System, "com.victronenergy.grid.pzem_demo", tree.build()?)?;
//! let power = service.tree().id("/Ac/Power").expect("declared above");
//!
//! let (mut waiter, waker) = Waiter::new()?;
//! let (tx, rx) = mpsc::channel::<Option<f64>>();
//! std::thread::spawn(move || loop {
//!     let reading = Some(230.0); // poll the meter here; None when it did not answer
//!     if tx.send(reading).is_err() { break; }
//!     waker.wake();
//!     std::thread::sleep(Duration::from_secs(1));
//! });
//!
//! let mut on_write = |path: &str, value: &Value| match (path, value) {
//!     ("/CustomName", Value::Str(s)) if s.len() <= 32 => WriteOutcome::Accept, // persist it here
//!     _ => WriteOutcome::Reject(2),
//! };
//! loop {
//!     waiter.wait([&service as &dyn Watchable], Some(Duration::from_secs(1)))?;
//!     service.process(&mut on_write)?;
//!     for reading in rx.try_iter() {
//!         service.set(power, Value::from(reading));
//!     }
//!     service.flush()?; // one ItemsChanged with what changed, nothing otherwise
//! }
//! # }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod conn;
pub mod error;
pub mod introspect;
pub mod localsettings;
pub mod marshal;
pub mod service;
pub mod text;
pub mod tree;
pub mod value;
pub mod wait;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{BusClient, Event};
pub use conn::Bus;
pub use error::BusError;
pub use localsettings::{Setting, SettingResult};
pub use service::{Service, WriteHandler, WriteOutcome};
pub use text::Format;
pub use tree::{Access, ItemId, ItemTree, NodeRef, TreeBuilder};
pub use value::{Kind, Value};
pub use wait::{Waiter, Waker, Wakeup, Watchable};
