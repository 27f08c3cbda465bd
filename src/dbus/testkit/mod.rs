//! Test harness for code that talks to Venus D-Bus services (feature `testkit`).
//!
//! - [`PrivateBus`]: a real `dbus-daemon` on a socket in a temporary directory, killed (that
//!   PID only) when dropped, also when a test panics.
//! - [`SettingsDouble`]: a `com.victronenergy.settings` that behaves as localsettings does
//!   for the calls a driver makes (venus-conventions.md §5), on its own connection and thread.
//!
//! It lives in the library (not in `tests/`) so that integration tests of every binary
//! *and* a demo binary can start the same bus and settings service. This package's own
//! tests get the feature through a self dev-dependency; nothing of it is in a default build.

mod bus;
mod settings;

pub use bus::PrivateBus;
pub use settings::SettingsDouble;
