//! The D-Bus path tree of one published meter, and how readings fill it.
//!
//! Built once per service (the tree is complete before the name is
//! claimed); each poll then sets a fixed set of items by id, so the steady
//! state neither looks up paths nor formats text (text is made only for the
//! items an `ItemsChanged` carries or a client asks for).

use crate::client::Reading;
use crate::dbus::TreeError;
use crate::dbus::{Format, ItemId, ItemTree, Kind, TreeBuilder, Value};
use crate::model::{Family, Model};

use super::role::Role;

/// `/ProductId` for third-party devices.
pub const PRODUCT_ID: i64 = 0xFFFF;

/// Everything about a meter that its tree shows besides measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterIdentity {
    /// The model (`/ProductName`).
    pub model: Model,
    /// The class it is published as (`/Role`).
    pub role: Role,
    /// `/DeviceInstance`, from localsettings.
    pub instance: i32,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/Position`, used when the role has one.
    pub position: i32,
    /// `/Mgmt/Connection`, e.g. `Modbus RTU ttyUSB0:1`.
    pub connection: String,
    /// `/Serial`: the stable device id.
    pub serial: String,
    /// `/Mgmt/ProcessName`.
    pub process_name: &'static str,
    /// `/Mgmt/ProcessVersion`.
    pub process_version: &'static str,
}

/// Ids of the items a poll sets.
#[derive(Clone, Copy, Debug)]
pub struct MeterPaths {
    /// `/Connected`.
    pub connected: ItemId,
    /// Measurement items of the family.
    pub measurements: Measurements,
}

/// Ids of the measurement items.
#[derive(Clone, Copy, Debug)]
pub enum Measurements {
    /// Single-phase AC meter: totals and L1.
    Ac {
        /// `/Ac/Power`, `/Ac/L1/Power`.
        power: [ItemId; 2],
        /// `/Ac/L1/Voltage`.
        voltage: ItemId,
        /// `/Ac/L1/Current`.
        current: ItemId,
        /// `/Ac/Frequency`.
        frequency: ItemId,
        /// `/Ac/PowerFactor`, `/Ac/L1/PowerFactor`.
        power_factor: [ItemId; 2],
        /// `/Ac/Energy/Forward`, `/Ac/L1/Energy/Forward`.
        energy: [ItemId; 2],
    },
    /// DC meter.
    Dc {
        /// `/Dc/0/Voltage`.
        voltage: ItemId,
        /// `/Dc/0/Current`.
        current: ItemId,
        /// `/Dc/0/Power`.
        power: ItemId,
        /// `/History/EnergyOut` or `/History/EnergyIn`, by role.
        energy: ItemId,
        /// `/Alarms/HighVoltage`.
        high_voltage_alarm: ItemId,
        /// `/Alarms/LowVoltage`.
        low_voltage_alarm: ItemId,
    },
}

/// Why a tree could not be made.
#[derive(Debug)]
pub enum LayoutError {
    /// The role is not for this model's family.
    RoleMismatch {
        /// The model.
        model: Model,
        /// The role.
        role: Role,
    },
    /// The tree itself was refused.
    Tree(TreeError),
    /// A path the layout declared is missing from the built tree.
    Missing(&'static str),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::RoleMismatch { model, role } => write!(f, "{model} cannot take the role {role}"),
            LayoutError::Tree(e) => write!(f, "{e}"),
            LayoutError::Missing(p) => write!(f, "path {p} missing from the tree"),
        }
    }
}

impl std::error::Error for LayoutError {}

const W: Format = Format::number(1, "W");
const KWH: Format = Format::number(3, "kWh");

/// Build the complete tree for a meter: mandatory paths, role paths and
/// measurements (all invalid until the first reading, `/Connected` 0).
pub fn build_tree(id: &MeterIdentity) -> Result<(ItemTree, MeterPaths), LayoutError> {
    let family = id.model.family();
    if id.role.family() != family {
        return Err(LayoutError::RoleMismatch {
            model: id.model,
            role: id.role,
        });
    }
    let mut t = TreeBuilder::new();
    t.add("/Mgmt/ProcessName", Kind::Str, Format::Plain)
        .value(id.process_name);
    t.add("/Mgmt/ProcessVersion", Kind::Str, Format::Plain)
        .value(id.process_version);
    t.add("/Mgmt/Connection", Kind::Str, Format::Plain)
        .value(id.connection.as_str());
    t.add("/DeviceInstance", Kind::Int, Format::Plain)
        .value(i64::from(id.instance));
    t.add("/ProductId", Kind::Int, Format::Hex).value(PRODUCT_ID);
    t.add("/ProductName", Kind::Str, Format::Plain)
        .value(id.model.product_name());
    t.add("/FirmwareVersion", Kind::Str, Format::Plain);
    t.add("/HardwareVersion", Kind::Str, Format::Plain);
    t.add("/Connected", Kind::Int, Format::Plain).value(0i64);
    t.add("/CustomName", Kind::Str, Format::Plain)
        .value(id.custom_name.as_str())
        .writable();
    t.add("/Serial", Kind::Str, Format::Plain).value(id.serial.as_str());
    t.add("/Role", Kind::Str, Format::Plain)
        .value(id.role.class())
        .writable();
    let allowed: Vec<String> = Role::allowed(family).iter().map(|r| r.class().to_string()).collect();
    t.add("/AllowedRoles", Kind::StrList, Format::Plain)
        .value(Value::StrList(allowed));
    if let Some(kind) = id.role.position() {
        t.add("/Position", Kind::Int, Format::Plain)
            .value(i64::from(id.position.clamp(0, kind.max())))
            .writable();
    }
    match family {
        Family::Ac => {
            t.add("/NrOfPhases", Kind::Int, Format::Plain).value(1i64);
            t.add("/IsGenericEnergyMeter", Kind::Int, Format::Plain)
                .value(i64::from(id.role != Role::Grid));
            for p in ["/Ac/Power", "/Ac/L1/Power"] {
                t.add(p, Kind::Double, W);
            }
            t.add("/Ac/L1/Voltage", Kind::Double, Format::number(1, "V"));
            t.add("/Ac/L1/Current", Kind::Double, Format::number(3, "A"));
            t.add("/Ac/Frequency", Kind::Double, Format::number(1, "Hz"));
            for p in ["/Ac/PowerFactor", "/Ac/L1/PowerFactor"] {
                t.add(p, Kind::Double, Format::number(2, ""));
            }
            for p in ["/Ac/Energy/Forward", "/Ac/L1/Energy/Forward"] {
                t.add(p, Kind::Double, KWH);
            }
        }
        Family::Dc => {
            t.add("/Dc/0/Voltage", Kind::Double, Format::number(2, "V"));
            t.add("/Dc/0/Current", Kind::Double, Format::number(2, "A"));
            t.add("/Dc/0/Power", Kind::Double, W);
            t.add(energy_path(id.role), Kind::Double, KWH);
            t.add("/Alarms/HighVoltage", Kind::Int, Format::Plain);
            t.add("/Alarms/LowVoltage", Kind::Int, Format::Plain);
        }
    }
    let tree = t.build().map_err(LayoutError::Tree)?;
    let id_of = |p: &'static str| tree.id(p).ok_or(LayoutError::Missing(p));
    let measurements = match family {
        Family::Ac => Measurements::Ac {
            power: [id_of("/Ac/Power")?, id_of("/Ac/L1/Power")?],
            voltage: id_of("/Ac/L1/Voltage")?,
            current: id_of("/Ac/L1/Current")?,
            frequency: id_of("/Ac/Frequency")?,
            power_factor: [id_of("/Ac/PowerFactor")?, id_of("/Ac/L1/PowerFactor")?],
            energy: [id_of("/Ac/Energy/Forward")?, id_of("/Ac/L1/Energy/Forward")?],
        },
        Family::Dc => Measurements::Dc {
            voltage: id_of("/Dc/0/Voltage")?,
            current: id_of("/Dc/0/Current")?,
            power: id_of("/Dc/0/Power")?,
            energy: id_of(energy_path(id.role))?,
            high_voltage_alarm: id_of("/Alarms/HighVoltage")?,
            low_voltage_alarm: id_of("/Alarms/LowVoltage")?,
        },
    };
    let paths = MeterPaths {
        connected: id_of("/Connected")?,
        measurements,
    };
    Ok((tree, paths))
}

/// The DC energy path of a role: produced energy for sources, consumed for loads.
pub fn energy_path(role: Role) -> &'static str {
    if role.dc_energy_is_out() {
        "/History/EnergyOut"
    } else {
        "/History/EnergyIn"
    }
}

/// Venus alarm level of a PZEM alarm bit: 0 ok, 2 alarm.
fn alarm(on: bool) -> i64 {
    if on { 2 } else { 0 }
}

/// Fill the tree from a reading; `energy_kwh` is the monotonic published
/// total. Sets `/Connected` to 1. A reading of the wrong family changes
/// nothing and returns false.
pub fn publish(tree: &mut ItemTree, paths: &MeterPaths, reading: &Reading, energy_kwh: f64) -> bool {
    match (&paths.measurements, reading) {
        (
            Measurements::Ac {
                power,
                voltage,
                current,
                frequency,
                power_factor,
                energy,
            },
            Reading::Ac(r),
        ) => {
            for id in power {
                tree.set(*id, r.power_w());
            }
            tree.set(*voltage, r.voltage_v());
            tree.set(*current, r.current_a());
            tree.set(*frequency, r.frequency_hz());
            for id in power_factor {
                tree.set(*id, r.power_factor());
            }
            for id in energy {
                tree.set(*id, energy_kwh);
            }
        }
        (
            Measurements::Dc {
                voltage,
                current,
                power,
                energy,
                high_voltage_alarm,
                low_voltage_alarm,
            },
            Reading::Dc(r),
        ) => {
            tree.set(*voltage, r.voltage_v());
            tree.set(*current, r.current_a());
            tree.set(*power, r.power_w());
            tree.set(*energy, energy_kwh);
            tree.set(*high_voltage_alarm, alarm(r.high_voltage_alarm));
            tree.set(*low_voltage_alarm, alarm(r.low_voltage_alarm));
        }
        _ => return false,
    }
    tree.set(paths.connected, 1i64);
    true
}

/// Mark the meter absent: `/Connected` 0 and every measurement invalid.
pub fn invalidate(tree: &mut ItemTree, paths: &MeterPaths) {
    let mut clear = |id: ItemId| {
        tree.set(id, Value::Invalid);
    };
    match paths.measurements {
        Measurements::Ac {
            power,
            voltage,
            current,
            frequency,
            power_factor,
            energy,
        } => power
            .into_iter()
            .chain(power_factor)
            .chain(energy)
            .chain([voltage, current, frequency])
            .for_each(&mut clear),
        Measurements::Dc {
            voltage,
            current,
            power,
            energy,
            high_voltage_alarm,
            low_voltage_alarm,
        } => [voltage, current, power, energy, high_voltage_alarm, low_voltage_alarm]
            .into_iter()
            .for_each(&mut clear),
    }
    tree.set(paths.connected, 0i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AcReading, DcReading};

    fn identity(model: Model, role: Role) -> MeterIdentity {
        MeterIdentity {
            model,
            role,
            instance: 41,
            custom_name: String::new(),
            position: 1,
            connection: "Modbus RTU ttyUSB0:1".into(),
            serial: "pzem_ttyUSB0_1".into(),
            process_name: "pzem-dbus",
            process_version: "0.1.0",
        }
    }

    fn value(tree: &ItemTree, path: &str) -> Value {
        tree.value(tree.id(path).unwrap()).clone()
    }

    #[test]
    fn ac_tree_has_mandatory_and_phase_paths() {
        let (tree, _) = build_tree(&identity(Model::Pzem016, Role::Grid)).unwrap();
        for p in [
            "/Mgmt/ProcessName",
            "/Mgmt/ProcessVersion",
            "/Mgmt/Connection",
            "/DeviceInstance",
            "/ProductId",
            "/ProductName",
            "/FirmwareVersion",
            "/HardwareVersion",
            "/Connected",
            "/CustomName",
            "/Serial",
            "/Role",
            "/AllowedRoles",
            "/NrOfPhases",
            "/Ac/Power",
            "/Ac/L1/Power",
            "/Ac/L1/Current",
            "/Ac/L1/Voltage",
            "/Ac/Frequency",
            "/Ac/Energy/Forward",
            "/Ac/L1/Energy/Forward",
            "/Ac/L1/PowerFactor",
        ] {
            assert!(tree.id(p).is_some(), "{p} missing");
        }
        assert!(tree.id("/Position").is_none(), "grid has no position");
        assert_eq!(value(&tree, "/DeviceInstance"), Value::Int(41));
        assert_eq!(value(&tree, "/Ac/L1/Power"), Value::Invalid);
        assert_eq!(value(&tree, "/Connected"), Value::Int(0));
        let (tree, _) = build_tree(&identity(Model::Pzem016, Role::PvInverter)).unwrap();
        assert_eq!(value(&tree, "/Position"), Value::Int(1));
        assert_eq!(value(&tree, "/IsGenericEnergyMeter"), Value::Int(1));
    }

    #[test]
    fn readings_fill_in_venus_units() {
        let (mut tree, paths) = build_tree(&identity(Model::Pzem016, Role::Grid)).unwrap();
        let r = AcReading {
            voltage_dv: 2301,
            current_ma: 1234,
            power_dw: 2750,
            energy_wh: 5,
            frequency_dhz: 500,
            power_factor_centi: 97,
            power_alarm: false,
        };
        assert!(publish(&mut tree, &paths, &Reading::Ac(r), 12.345));
        assert_eq!(value(&tree, "/Ac/L1/Voltage"), Value::Double(230.1));
        assert_eq!(value(&tree, "/Ac/L1/Current"), Value::Double(1.234));
        assert_eq!(value(&tree, "/Ac/Power"), Value::Double(275.0));
        assert_eq!(value(&tree, "/Ac/L1/Power"), Value::Double(275.0));
        assert_eq!(value(&tree, "/Ac/Energy/Forward"), Value::Double(12.345));
        assert_eq!(value(&tree, "/Connected"), Value::Int(1));
        invalidate(&mut tree, &paths);
        assert_eq!(value(&tree, "/Ac/L1/Voltage"), Value::Invalid);
        assert_eq!(value(&tree, "/Ac/Energy/Forward"), Value::Invalid);
        assert_eq!(value(&tree, "/Connected"), Value::Int(0));
        assert!(!publish(&mut tree, &paths, &Reading::Dc(DcReading::default()), 0.0));
    }

    #[test]
    fn dc_energy_path_follows_role() {
        let (tree, _) = build_tree(&identity(Model::Pzem017, Role::DcSource)).unwrap();
        assert!(tree.id("/History/EnergyOut").is_some() && tree.id("/History/EnergyIn").is_none());
        let (mut tree, paths) = build_tree(&identity(Model::Pzem017, Role::DcLoad)).unwrap();
        assert!(tree.id("/History/EnergyIn").is_some() && tree.id("/History/EnergyOut").is_none());
        let r = DcReading {
            voltage_cv: 1325,
            current_ca: 420,
            power_dw: 556,
            low_voltage_alarm: true,
            ..Default::default()
        };
        publish(&mut tree, &paths, &Reading::Dc(r), 0.5);
        assert_eq!(value(&tree, "/Dc/0/Power"), Value::Double(55.6));
        assert_eq!(value(&tree, "/Dc/0/Voltage"), Value::Double(13.25));
        assert_eq!(value(&tree, "/History/EnergyIn"), Value::Double(0.5));
        assert_eq!(value(&tree, "/Alarms/LowVoltage"), Value::Int(2));
        assert_eq!(value(&tree, "/Alarms/HighVoltage"), Value::Int(0));
    }

    #[test]
    fn role_must_fit_the_family() {
        assert!(matches!(
            build_tree(&identity(Model::Pzem017, Role::Grid)),
            Err(LayoutError::RoleMismatch { .. })
        ));
    }
}
