//! Peacefair PZEM energy meters over Modbus-RTU, for Victron Venus OS.

#[cfg(feature = "dbus")]
pub mod dbus;
