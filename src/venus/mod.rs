//! Venus OS knowledge that does not need a bus: roles, meter specs and
//! config files, service names and device ids.

#[cfg(feature = "dbus")]
pub mod app;
pub mod config;
#[cfg(feature = "dbus")]
pub mod energy_store;
#[cfg(feature = "dbus")]
pub mod layout;
pub mod naming;
#[cfg(feature = "dbus")]
pub mod poller;
pub mod presence;
pub mod role;
#[cfg(feature = "dbus")]
pub mod settings;

pub use config::{MeterSpec, parse_config};
pub use naming::PortId;
pub use role::Role;
