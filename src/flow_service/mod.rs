//! pzem-energy: the MultiPlus energy-flow counters that older units lack, derived from an
//! AC-input meter, an AC-output meter and the battery monitor (issue 8), published as vebus
//! `/Energy/*` counters.
//!
//! Built like pzem-dbus (`venus`):
//! - [`machine`]: the sans-IO state machine that decides everything (inputs, steps through
//!   the [`crate::energy_flow`] core, saving and publishing, the device instance);
//! - [`service_loop`]: the one thread and one `ppoll(2)` that carry out its commands on the
//!   bus and the disk;
//! - [`layout`]: the published service's D-Bus tree;
//! - [`settings`]: its record in localsettings;
//! - [`options`]: flags over the `[energy]` section of the shared config file.
//!
//! docs/pzem-energy.md describes the service as an owner sees it.

pub mod layout;
pub mod machine;
pub mod options;
pub mod service_loop;
pub mod settings;
