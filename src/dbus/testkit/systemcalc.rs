//! systemcalc's choice of *the* Multi and of the automatic battery service, restated from
//! venus-conventions.md §4.4 and issue 8 (measured with Victron's systemcalc v2.256), so a
//! test can assert that a second vebus service does not take the real Multi's place.
//!
//! - "The Multi" (`/VebusService`): the vebus services sorted by (not on-board, device
//!   instance), first one. On-board means `/Interfaces/Mk2/Connection` does not start with
//!   `/dev/ttyUSB`; an absent or invalid path counts as on-board.
//! - The automatic battery service (`/Dc/Battery/BatteryService` when no battery monitor is
//!   present): the vebus service with the lowest device instance, whatever its interface.
//! - Like dbusmonitor, a service without `/DeviceInstance` is not seen at all.

use crate::dbus::{BusClient, BusError, Value};

/// Prefix of vebus service names.
pub const VEBUS_PREFIX: &str = "com.victronenergy.vebus.";

/// One vebus service as systemcalc sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VebusDevice {
    /// Its name.
    pub service: String,
    /// `/DeviceInstance`.
    pub instance: i32,
    /// `/Interfaces/Mk2/Connection`, if it has a string there.
    pub mk2_connection: Option<String>,
}

impl VebusDevice {
    /// Whether systemcalc counts it as on-board: its MK2 connection is not a `/dev/ttyUSB…`
    /// port (an absent path counts as on-board).
    pub fn is_onboard(&self) -> bool {
        self.mk2_connection
            .as_deref()
            .is_none_or(|c| !c.starts_with("/dev/ttyUSB"))
    }
}

/// Every vebus service on the bus with a device instance, read with `GetItems`.
pub fn vebus_devices(client: &mut BusClient) -> Result<Vec<VebusDevice>, BusError> {
    let mut devices = Vec::new();
    for service in client.list_services()? {
        if !service.starts_with(VEBUS_PREFIX) {
            continue;
        }
        let items = client.get_items(&service)?;
        let Some(instance) = items
            .get("/DeviceInstance")
            .and_then(Value::as_i64)
            .and_then(|i| i32::try_from(i).ok())
        else {
            continue;
        };
        let mk2_connection = items
            .get("/Interfaces/Mk2/Connection")
            .and_then(Value::as_str)
            .map(str::to_owned);
        devices.push(VebusDevice {
            service,
            instance,
            mk2_connection,
        });
    }
    Ok(devices)
}

/// The Multi systemcalc controls: on-board interfaces first, then the lowest instance.
pub fn the_multi(devices: &[VebusDevice]) -> Option<&VebusDevice> {
    devices.iter().min_by_key(|d| (!d.is_onboard(), d.instance))
}

/// The vebus service systemcalc takes as the battery when no battery monitor is present:
/// the lowest instance.
pub fn auto_battery_service(devices: &[VebusDevice]) -> Option<&VebusDevice> {
    devices.iter().min_by_key(|d| d.instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(service: &str, instance: i32, mk2: Option<&str>) -> VebusDevice {
        VebusDevice {
            service: service.into(),
            instance,
            mk2_connection: mk2.map(str::to_owned),
        }
    }

    #[test]
    fn the_issues_measurements() {
        let real = d("com.victronenergy.vebus.ttyS4", 276, Some("/dev/ttyS4"));
        // Ours at instance 0 with a ttyUSB-style connection: still not the Multi, but the battery.
        let low = [
            real.clone(),
            d("com.victronenergy.vebus.pzem_energy", 0, Some("/dev/ttyUSB-x")),
        ];
        assert_eq!(the_multi(&low), Some(&real));
        assert_eq!(auto_battery_service(&low).unwrap().instance, 0);
        // At 277 the real Multi is both.
        let high = [
            real.clone(),
            d("com.victronenergy.vebus.pzem_energy", 277, Some("/dev/ttyUSB-x")),
        ];
        assert_eq!(the_multi(&high), Some(&real));
        assert_eq!(auto_battery_service(&high), Some(&real));
        // Without the connection path ours would count as on-board and win at instance 0.
        let bare = [real.clone(), d("com.victronenergy.vebus.x", 0, None)];
        assert_eq!(the_multi(&bare).unwrap().instance, 0);
        // A real Multi on an MK3-USB ties on on-boardness: the instance decides.
        let usb = d("com.victronenergy.vebus.ttyUSB0", 289, Some("/dev/ttyUSB0"));
        assert_eq!(
            the_multi(&[usb.clone(), d("x", 290, Some("/dev/ttyUSB-x"))]),
            Some(&usb)
        );
        assert_eq!(the_multi(&[]), None);
    }
}
