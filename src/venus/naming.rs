//! Service names, settings ids and connection text for a meter.
//!
//! The service name is `com.victronenergy.<role>.pzem_<tty>_<addr>`, where
//! `<tty>` is the base name of the device path as given: `ttyUSB0` for
//! `/dev/ttyUSB0`, `usb-FTDI_…-port0` (sanitised) for a `/dev/serial/by-id/`
//! link, which stays the same when the dongle is re-plugged. The settings
//! id (under `/Settings/Devices/`) is `pzem_<port>_<addr>`, where `<port>`
//! is the dongle's USB serial number when the system knows it (stable
//! across reboots and re-plugging), else the same base name. For TCP both
//! use the host and port.

use crate::line::Line;

/// Longest accepted custom name (`/CustomName`), bytes.
pub const MAX_CUSTOM_NAME: usize = 64;

/// Whether `name` may be a device's custom name: at most
/// [`MAX_CUSTOM_NAME`] bytes, no control characters. The one rule for
/// writes to `/CustomName` and names in the config file.
pub fn valid_custom_name(name: &str) -> bool {
    name.len() <= MAX_CUSTOM_NAME && !name.chars().any(char::is_control)
}

/// Make `text` usable inside a D-Bus name element and a settings path:
/// only `[A-Za-z0-9_]`, everything else becomes `_`.
pub fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The name of a serial device without `/dev/`: `/dev/ttyUSB0` → `ttyUSB0`,
/// `/dev/pts/3` → `pts/3` (for `/Mgmt/Connection`).
pub fn tty_name(path: &str) -> &str {
    path.strip_prefix("/dev/").unwrap_or(path)
}

/// The last element of a device path: `/dev/ttyUSB0` → `ttyUSB0`,
/// `/dev/serial/by-id/usb-FTDI_X-port0` → `usb-FTDI_X-port0`.
pub fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or(trimmed)
}

/// The identity of the line a meter is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortId {
    /// For the service name: tty name, or host_port.
    pub name: String,
    /// For the settings id: the dongle's serial number when known, else `name`.
    pub stable: String,
    /// For `/Mgmt/Connection`: `Modbus RTU ttyUSB0` or `Modbus TCP 10.0.0.5:502`.
    pub connection: String,
}

impl PortId {
    /// A serial line; `usb_serial` is the dongle's serial number if known.
    pub fn serial(path: &str, usb_serial: Option<&str>) -> PortId {
        let name = sanitise(base_name(path));
        let stable = match usb_serial {
            Some(s) if !s.trim().is_empty() => sanitise(s.trim()),
            _ => name.clone(),
        };
        PortId {
            connection: format!("Modbus RTU {}", tty_name(path)),
            name,
            stable,
        }
    }

    /// A TCP gateway at `host:port`, speaking RTU frames or Modbus TCP.
    pub fn tcp(addr: &str, mbap: bool) -> PortId {
        let name = sanitise(addr);
        let proto = if mbap { "Modbus TCP" } else { "Modbus RTU over TCP" };
        PortId {
            connection: format!("{proto} {addr}"),
            stable: name.clone(),
            name,
        }
    }

    /// D-Bus service name of the meter at `address` in `class`.
    pub fn service_name(&self, class: &str, address: u8) -> String {
        format!("com.victronenergy.{class}.pzem_{}_{address}", self.name)
    }

    /// The meter's id under `/Settings/Devices/`.
    pub fn settings_id(&self, address: u8) -> String {
        format!("pzem_{}_{address}", self.stable)
    }

    /// `/Mgmt/Connection` text, e.g. `Modbus RTU ttyUSB0:10`.
    pub fn connection(&self, address: u8) -> String {
        format!("{}:{address}", self.connection)
    }
}

/// The names a config file's `[meters PORT]` section may give the line by:
/// the base name of the path as given and of the tty it leads to
/// (`ttyUSB0`, a `/dev/serial/by-id/` link's name), the adapter's USB serial
/// number, or a gateway's `host:port`.
pub fn config_names(line: &Line) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    match line {
        Line::Serial(path) => {
            names.push(base_name(path).to_string());
            if let Some(real) = std::fs::canonicalize(path).ok().as_deref().and_then(|p| p.to_str()) {
                names.push(base_name(real).to_string());
            }
            if let Some(serial) = usb_serial_of(path) {
                // Also as a by-id link spells it (odd characters as `_`).
                names.push(sanitise(&serial));
                names.push(serial);
            }
        }
        Line::RtuOverTcp(addr) | Line::ModbusTcp(addr) => names.push(addr.clone()),
    }
    names.dedup();
    names
}

/// Look up the USB serial number of the adapter behind a tty in sysfs
/// (following a `/dev/serial/by-id/` link to the tty it names).
pub fn usb_serial_of(path: &str) -> Option<String> {
    let real = std::fs::canonicalize(path).ok();
    let real = real.as_deref().and_then(|p| p.to_str()).unwrap_or(path);
    let name = base_name(real);
    ["device/../serial", "device/../../serial"].iter().find_map(|rel| {
        std::fs::read_to_string(format!("/sys/class/tty/{name}/{rel}"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = PortId::serial("/dev/ttyUSB0", None);
        assert_eq!(p.service_name("grid", 1), "com.victronenergy.grid.pzem_ttyUSB0_1");
        assert_eq!(p.settings_id(1), "pzem_ttyUSB0_1");
        assert_eq!(p.connection(10), "Modbus RTU ttyUSB0:10");
        let p = PortId::serial("/dev/ttyUSB1", Some("A10K-3x.9"));
        assert_eq!(p.settings_id(2), "pzem_A10K_3x_9_2");
        assert_eq!(p.service_name("dcload", 2), "com.victronenergy.dcload.pzem_ttyUSB1_2");
        let t = PortId::tcp("10.0.0.5:502", true);
        assert_eq!(t.service_name("grid", 3), "com.victronenergy.grid.pzem_10_0_0_5_502_3");
        assert_eq!(t.connection(3), "Modbus TCP 10.0.0.5:502:3");
        assert_eq!(sanitise("pts/3"), "pts_3");
        assert_eq!(
            PortId::serial("/dev/pts/3", None).service_name("grid", 1),
            "com.victronenergy.grid.pzem_3_1"
        );
        let by_id = PortId::serial("/dev/serial/by-id/usb-FTDI_FT232R_A10K3x9-if00-port0", None);
        assert_eq!(
            by_id.service_name("grid", 2),
            "com.victronenergy.grid.pzem_usb_FTDI_FT232R_A10K3x9_if00_port0_2"
        );
        assert_eq!(
            PortId::serial("/tmp/x/ttyUSB0", None).service_name("acload", 10),
            "com.victronenergy.acload.pzem_ttyUSB0_10"
        );
    }
}
