//! The generic Venus OS D-Bus layer: publishing `com.victronenergy.BusItem` services and
//! reading other services the way Venus consumers do (docs: venus-conventions.md).
//!
//! Sans-IO core, unit-tested without a bus:
//! - the value model ([`Value`], [`Kind`]) and its stable wire types (invalid = empty
//!   `ai`, string lists = `av`);
//! - per-path text ([`Format`]: `230.1 V`, `---` when invalid);
//! - the fixed path tree of one service ([`ItemTree`], built with a [`TreeBuilder`]) with
//!   batched changes, and the `ItemsChanged` signal written from it ([`items_changed`]).
//!
//! I/O at the edges:
//! - [`Service`]: one connection + one well-known name + one tree (§1: one connection per
//!   service); name claimed after the tree is complete.
//! - [`BusClient`]: `GetItems`/`GetValue`/`SetValue`/`AddSettings` on other services, and
//!   their signals as [`Event`]s.
//! - [`Follower`]: a few named services followed and read without ever blocking on them,
//!   for a service that reads peers which read it back (systemcalc).
//! - [`Watchable`]: the fd each connection wants polled, for a loop's one wait;
//!   [`Waiter`]/[`Waker`] for applications that feed the loop from other threads.
//!
//! # An application loop
//!
//! pzem-dbus waits in one epoll wait on its line and every connection. An application with
//! a blocking data source can instead keep it on a thread of its own that sends readings
//! over a channel and wakes the D-Bus thread, so D-Bus calls are still answered at once:
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

mod client;
mod conn;
mod error;
mod follower;
mod introspect;
mod localsettings;
mod marshal;
mod service;
mod text;
mod tree;
mod value;
mod wait;
mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{BusClient, Event, VENUS_PREFIX};
pub use conn::{Bus, Conn, DEFAULT_TIMEOUT};
pub use error::BusError;
pub use follower::{Followed, Follower};
pub use localsettings::{SETTINGS_IFACE, SETTINGS_SERVICE, Setting, SettingResult, connect_to_settings};
pub use marshal::{FIRST_SIGNAL_SERIAL, items_changed};
pub use service::{SET_REFUSED, SET_REJECTED, Service, WriteHandler, WriteOutcome};
pub use text::{Format, INVALID_TEXT};
pub use tree::{Access, ItemId, ItemTree, NodeId, NodeRef, TreeBuilder, TreeError, UnknownPath};
pub use value::{Kind, Unsupported, Value};
pub use wait::{Waiter, Waker, Wakeup, Watchable};
pub use wire::BUSITEM;
