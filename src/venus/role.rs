//! Venus OS roles (service classes) a meter can take, and positions.

use std::fmt;
use std::str::FromStr;

use crate::model::Family;

/// The class a meter is published under: `com.victronenergy.<role>.…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Grid meter (AC).
    Grid,
    /// AC loads (AC).
    AcLoad,
    /// PV inverter (AC).
    PvInverter,
    /// Generator (AC).
    Genset,
    /// EV charger (AC).
    EvCharger,
    /// Heat pump (AC).
    HeatPump,
    /// DC source: a charger, wind or DC generator (DC).
    DcSource,
    /// A single DC load (DC).
    DcLoad,
    /// All DC loads and chargers of the system (DC); systemcalc uses it.
    DcSystem,
    /// Alternator (DC).
    Alternator,
}

/// Roles an AC meter may take, as `/AllowedRoles` lists them.
pub const AC_ROLES: [Role; 6] = [
    Role::Grid,
    Role::PvInverter,
    Role::Genset,
    Role::AcLoad,
    Role::EvCharger,
    Role::HeatPump,
];

/// Roles a DC meter may take.
pub const DC_ROLES: [Role; 4] = [Role::DcSource, Role::DcLoad, Role::DcSystem, Role::Alternator];

/// What `/Position` means for a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// pvinverter: 0 = AC input 1, 1 = AC output, 2 = AC input 2.
    PvInverter,
    /// acload, evcharger, heatpump: 0 = AC output, 1 = AC input.
    Load,
}

impl PositionKind {
    /// The highest position any kind allows: the bound of the
    /// `/Settings/Devices/<id>/Position` setting, which outlives role changes.
    pub const MAX_OF_ANY: i32 = 2;

    /// Highest valid position.
    pub fn max(self) -> i32 {
        match self {
            PositionKind::PvInverter => 2,
            PositionKind::Load => 1,
        }
    }

    /// Human name of a position.
    pub fn describe(self, position: i32) -> &'static str {
        match (self, position) {
            (PositionKind::PvInverter, 0) => "AC input 1",
            (PositionKind::PvInverter, 1) => "AC output",
            (PositionKind::PvInverter, 2) => "AC input 2",
            (PositionKind::Load, 0) => "AC output",
            (PositionKind::Load, 1) => "AC input",
            _ => "unknown",
        }
    }
}

impl Role {
    /// The class name used in service names and `ClassAndVrmInstance`.
    pub fn class(self) -> &'static str {
        match self {
            Role::Grid => "grid",
            Role::AcLoad => "acload",
            Role::PvInverter => "pvinverter",
            Role::Genset => "genset",
            Role::EvCharger => "evcharger",
            Role::HeatPump => "heatpump",
            Role::DcSource => "dcsource",
            Role::DcLoad => "dcload",
            Role::DcSystem => "dcsystem",
            Role::Alternator => "alternator",
        }
    }

    /// The meter family this role is for.
    pub fn family(self) -> Family {
        match self {
            Role::Grid | Role::AcLoad | Role::PvInverter | Role::Genset | Role::EvCharger | Role::HeatPump => {
                Family::Ac
            }
            Role::DcSource | Role::DcLoad | Role::DcSystem | Role::Alternator => Family::Dc,
        }
    }

    /// The role a meter of `family` gets when none is configured.
    pub fn default_for(family: Family) -> Role {
        match family {
            Family::Ac => Role::Grid,
            Family::Dc => Role::DcSource,
        }
    }

    /// The roles a meter of `family` may switch to.
    pub fn allowed(family: Family) -> &'static [Role] {
        match family {
            Family::Ac => &AC_ROLES,
            Family::Dc => &DC_ROLES,
        }
    }

    /// Whether the class has a `/Position`, and what it means.
    pub fn position(self) -> Option<PositionKind> {
        match self {
            Role::PvInverter => Some(PositionKind::PvInverter),
            Role::AcLoad | Role::EvCharger | Role::HeatPump => Some(PositionKind::Load),
            _ => None,
        }
    }

    /// For DC roles: whether the meter's energy is published as produced
    /// (`/History/EnergyOut`) rather than consumed (`/History/EnergyIn`).
    pub fn dc_energy_is_out(self) -> bool {
        matches!(self, Role::DcSource | Role::Alternator)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class())
    }
}

/// Role text that is not a known class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownRole(pub String);

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown role '{}': AC meters take grid acload pvinverter genset evcharger heatpump, DC meters dcsource dcload dcsystem alternator",
            self.0
        )
    }
}

impl std::error::Error for UnknownRole {}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        AC_ROLES
            .iter()
            .chain(DC_ROLES.iter())
            .copied()
            .find(|r| r.class() == s.trim())
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_belong_to_families() {
        for r in AC_ROLES {
            assert_eq!(r.class().parse(), Ok(r));
            assert_eq!(r.family(), Family::Ac);
        }
        for r in DC_ROLES {
            assert_eq!(r.class().parse(), Ok(r));
            assert_eq!(r.family(), Family::Dc);
        }
        assert!("battery".parse::<Role>().is_err());
        assert_eq!(Role::default_for(Family::Dc), Role::DcSource);
    }

    #[test]
    fn positions_follow_the_gui_enums() {
        assert_eq!(Role::PvInverter.position().map(|p| p.describe(1)), Some("AC output"));
        assert_eq!(Role::AcLoad.position().map(|p| p.describe(1)), Some("AC input"));
        assert_eq!(Role::Grid.position(), None);
        assert_eq!(PositionKind::PvInverter.max(), 2);
        assert_eq!(PositionKind::Load.max(), 1);
    }

    #[test]
    fn dc_energy_direction() {
        assert!(Role::DcSource.dc_energy_is_out());
        assert!(Role::Alternator.dc_energy_is_out());
        assert!(!Role::DcLoad.dc_energy_is_out());
        assert!(!Role::DcSystem.dc_energy_is_out());
    }
}
