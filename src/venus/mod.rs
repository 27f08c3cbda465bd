//! Venus OS knowledge that does not need a bus: roles, meter specs and
//! config files, service names and device ids.

pub mod config;
pub mod naming;
pub mod role;

pub use config::{MeterSpec, parse_config};
pub use naming::PortId;
pub use role::Role;
