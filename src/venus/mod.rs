//! pzem-dbus: the meters on one line published as Venus OS devices.
//!
//! Where a poll's reply becomes a D-Bus signal:
//! - `meter_line`: the sans-IO state machine that decides everything
//!   (what to poll when, presence, energy, roles and instances);
//! - `service_loop`: the one thread and one epoll wait that carry out its
//!   commands on the line, the bus and the disk;
//! - `layout`: a meter's D-Bus paths, and how a reading fills them.
//!
//! The rest is the knowledge they use: [`role`]s, [`config`] files,
//! [`naming`] of services and settings ids, [`presence`], `settings`
//! records in localsettings and `energy_store` files.

pub mod config;
pub mod discovery;
#[cfg(feature = "dbus")]
pub mod energy_store;
#[cfg(feature = "dbus")]
pub mod layout;
#[cfg(feature = "dbus")]
pub mod meter_line;
pub mod naming;
pub mod presence;
pub mod role;
#[cfg(all(feature = "dbus", unix))]
pub mod service_loop;
#[cfg(feature = "dbus")]
pub mod settings;

pub use config::{MeterSpec, parse_config};
pub use naming::PortId;
pub use role::Role;
