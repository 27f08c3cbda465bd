//! What one meter reports, for either family: a measurement snapshot ([`Reading`]) and
//! its parameters ([`Parameters`]).
//!
//! Sans-IO: plain values built from the AC and DC register maps ([`crate::ac`],
//! [`crate::dc`]); [`crate::Client`] fills them over a transport, the simulator serves
//! them, pzem-info and the Venus service display and publish them.

use crate::ac::{AcParameters, AcReading};
use crate::dc::{DcParameters, DcReading};
use crate::model::Family;

/// One measurement snapshot of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// From an AC meter.
    Ac(AcReading),
    /// From a DC meter.
    Dc(DcReading),
}

impl Reading {
    /// The family the reading came from.
    pub fn family(&self) -> Family {
        match self {
            Reading::Ac(_) => Family::Ac,
            Reading::Dc(_) => Family::Dc,
        }
    }

    /// The meter's energy counter in Wh.
    pub fn energy_wh(&self) -> u32 {
        match self {
            Reading::Ac(r) => r.energy_wh,
            Reading::Dc(r) => r.energy_wh,
        }
    }
}

/// Parameters of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameters {
    /// Of an AC meter.
    Ac(AcParameters),
    /// Of a DC meter.
    Dc(DcParameters),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_and_energy_of_either_kind() {
        let ac = Reading::Ac(AcReading {
            energy_wh: 12,
            ..AcReading::default()
        });
        let dc = Reading::Dc(DcReading {
            energy_wh: 34,
            ..DcReading::default()
        });
        assert_eq!((ac.family(), ac.energy_wh()), (Family::Ac, 12));
        assert_eq!((dc.family(), dc.energy_wh()), (Family::Dc, 34));
    }
}
