//! Test harness for code that talks to Venus D-Bus services (feature `testkit`).
//!
//! - [`PrivateBus`]: a real `dbus-daemon` on a socket in a temporary directory, killed (that
//!   PID only) when dropped, also when a test panics.
//! - [`SettingsDouble`]: a `com.victronenergy.settings` that behaves as localsettings does
//!   for the calls a driver makes (venus-conventions.md §5), on its own connection and thread.
//! - [`DeviceDouble`]: Victron devices that cannot be installed here (a battery monitor, a
//!   real Multi's vebus service, `com.victronenergy.system`, an AC meter), each a service
//!   on its own connection and thread, announcing changes as veutil does.
//! - [`systemcalc`]: systemcalc's choice of *the* Multi and of the automatic battery
//!   service, to assert that a second vebus service leaves the real Multi in charge.
//!
//! It lives in the library (not in `tests/`) so that integration tests of every binary
//! *and* a demo binary can start the same bus and settings service. This package's own
//! tests get the feature through a self dev-dependency; nothing of it is in a default build.

mod bus;
mod devices;
mod settings;
pub mod systemcalc;

pub use bus::PrivateBus;
pub use devices::{DeviceDouble, MULTI_INSTANCE, MULTI_MK2_CONNECTION, SYSTEM_SERVICE};
pub use settings::SettingsDouble;
