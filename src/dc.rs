//! Register map of the DC meters (PZEM-003, PZEM-017).
//!
//! Eight input registers; unlike the AC map the current is a single 16-bit
//! register, so power starts at 0x0002 (`pzem-protocol.md` §4.2). Holding
//! registers: voltage alarm thresholds, address and, on the PZEM-017, the
//! shunt range (§5.2).

use std::fmt;

use crate::ac::{RegisterCountError, expect_len};
use crate::frame::Registers;

/// Input registers to read for one DC reading (0x0000..=0x0007).
pub(crate) const INPUT_REGISTERS: u16 = 8;

/// Holding register of the high-voltage alarm threshold (0.01 V).
pub(crate) const REG_HIGH_VOLTAGE_ALARM: u16 = 0x0000;

/// Holding register of the low-voltage alarm threshold (0.01 V).
pub(crate) const REG_LOW_VOLTAGE_ALARM: u16 = 0x0001;

/// Holding register of the shunt range (PZEM-017 only).
pub(crate) const REG_SHUNT: u16 = 0x0003;

/// Lowest high-voltage alarm threshold, 0.01 V (5 V).
pub(crate) const MIN_HIGH_ALARM_CV: u16 = 500;
/// Lowest low-voltage alarm threshold, 0.01 V (1 V).
pub(crate) const MIN_LOW_ALARM_CV: u16 = 100;
/// Highest voltage alarm threshold, 0.01 V (350 V).
pub(crate) const MAX_ALARM_CV: u16 = 35_000;

/// One DC measurement snapshot, as raw integers with unit accessors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DcReading {
    /// Voltage in 0.01 V.
    pub voltage_cv: u16,
    /// Current in 0.01 A (unsigned: the meter has no direction).
    pub current_ca: u16,
    /// Power in 0.1 W.
    pub power_dw: u32,
    /// Energy in Wh since the last reset.
    pub energy_wh: u32,
    /// Voltage above the high-voltage threshold.
    pub high_voltage_alarm: bool,
    /// Voltage below the low-voltage threshold.
    pub low_voltage_alarm: bool,
}

impl DcReading {
    /// Decode the eight input registers 0x0000..=0x0007.
    pub fn from_registers(regs: &Registers<'_>) -> Result<DcReading, RegisterCountError> {
        expect_len(regs, usize::from(INPUT_REGISTERS))?;
        let r = |i| regs.get(i).unwrap_or(0);
        let r32 = |i| regs.get_u32_low_word_first(i).unwrap_or(0);
        Ok(DcReading {
            voltage_cv: r(0),
            current_ca: r(1),
            power_dw: r32(2),
            energy_wh: r32(4),
            high_voltage_alarm: r(6) != 0,
            low_voltage_alarm: r(7) != 0,
        })
    }

    /// The eight register values, as the meter holds them.
    pub fn to_registers(&self) -> [u16; INPUT_REGISTERS as usize] {
        let flag = |b: bool| if b { 0xFFFF } else { 0 };
        [
            self.voltage_cv,
            self.current_ca,
            self.power_dw as u16,
            (self.power_dw >> 16) as u16,
            self.energy_wh as u16,
            (self.energy_wh >> 16) as u16,
            flag(self.high_voltage_alarm),
            flag(self.low_voltage_alarm),
        ]
    }

    /// Voltage in V.
    pub fn voltage_v(&self) -> f64 {
        f64::from(self.voltage_cv) / 100.0
    }

    /// Current in A.
    pub fn current_a(&self) -> f64 {
        f64::from(self.current_ca) / 100.0
    }

    /// Power in W.
    pub fn power_w(&self) -> f64 {
        f64::from(self.power_dw) / 10.0
    }

    /// Energy in Wh.
    pub fn energy_wh(&self) -> f64 {
        f64::from(self.energy_wh)
    }

    /// Energy in kWh (the unit Venus OS uses).
    pub fn energy_kwh(&self) -> f64 {
        f64::from(self.energy_wh) / 1000.0
    }
}

/// The shunt a PZEM-017 is set up for. The register codes are not in
/// order of size: 0 is 100 A and 1 is 50 A.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shunt {
    /// 100 A shunt, code 0 (factory setting).
    A100,
    /// 50 A shunt, code 1.
    A50,
    /// 200 A shunt, code 2.
    A200,
    /// 300 A shunt, code 3.
    A300,
}

/// A shunt code or current that PZEM-017 does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidShunt {
    /// Register value other than 0..=3.
    Code(u16),
    /// Rating other than 50, 100, 200 or 300 A.
    Amps(u32),
}

impl fmt::Display for InvalidShunt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidShunt::Code(c) => write!(f, "unknown shunt code {c} (0=100 A, 1=50 A, 2=200 A, 3=300 A)"),
            InvalidShunt::Amps(a) => write!(f, "no {a} A shunt range: use 50, 100, 200 or 300"),
        }
    }
}

impl std::error::Error for InvalidShunt {}

impl Shunt {
    /// All ranges, smallest first.
    pub const ALL: [Shunt; 4] = [Shunt::A50, Shunt::A100, Shunt::A200, Shunt::A300];

    /// From the register value.
    pub fn from_code(code: u16) -> Result<Shunt, InvalidShunt> {
        match code {
            0 => Ok(Shunt::A100),
            1 => Ok(Shunt::A50),
            2 => Ok(Shunt::A200),
            3 => Ok(Shunt::A300),
            c => Err(InvalidShunt::Code(c)),
        }
    }

    /// From the shunt rating in A.
    pub fn from_amps(amps: u32) -> Result<Shunt, InvalidShunt> {
        match amps {
            50 => Ok(Shunt::A50),
            100 => Ok(Shunt::A100),
            200 => Ok(Shunt::A200),
            300 => Ok(Shunt::A300),
            a => Err(InvalidShunt::Amps(a)),
        }
    }

    /// The register value.
    pub fn code(self) -> u16 {
        match self {
            Shunt::A100 => 0,
            Shunt::A50 => 1,
            Shunt::A200 => 2,
            Shunt::A300 => 3,
        }
    }

    /// The rating in A.
    pub fn amps(self) -> u32 {
        match self {
            Shunt::A50 => 50,
            Shunt::A100 => 100,
            Shunt::A200 => 200,
            Shunt::A300 => 300,
        }
    }
}

impl fmt::Display for Shunt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} A", self.amps())
    }
}

/// The parameters of a DC meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DcParameters {
    /// High-voltage alarm threshold in 0.01 V.
    pub high_voltage_alarm_cv: u16,
    /// Low-voltage alarm threshold in 0.01 V.
    pub low_voltage_alarm_cv: u16,
    /// Modbus address stored in the meter.
    pub address: u8,
    /// Shunt range; `None` when the meter has no such register (PZEM-003).
    pub shunt: Option<Shunt>,
}

impl DcParameters {
    /// Decode holding registers from 0x0000: three (no shunt register) or
    /// four.
    pub fn from_registers(regs: &Registers<'_>) -> Result<DcParameters, DcParametersError> {
        if regs.len() != 3 && regs.len() != 4 {
            return Err(DcParametersError::Count(RegisterCountError {
                expected: 4,
                got: regs.len(),
            }));
        }
        let r = |i| regs.get(i).unwrap_or(0);
        let shunt = match regs.get(3) {
            Some(code) => Some(Shunt::from_code(code).map_err(DcParametersError::Shunt)?),
            None => None,
        };
        Ok(DcParameters {
            high_voltage_alarm_cv: r(0),
            low_voltage_alarm_cv: r(1),
            address: r(2) as u8,
            shunt,
        })
    }

    /// High-voltage alarm threshold in V.
    pub fn high_voltage_alarm_v(&self) -> f64 {
        f64::from(self.high_voltage_alarm_cv) / 100.0
    }

    /// Low-voltage alarm threshold in V.
    pub fn low_voltage_alarm_v(&self) -> f64 {
        f64::from(self.low_voltage_alarm_cv) / 100.0
    }
}

/// Why DC parameter registers could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DcParametersError {
    /// Wrong number of registers.
    Count(RegisterCountError),
    /// The shunt register holds an unknown code.
    Shunt(InvalidShunt),
}

impl fmt::Display for DcParametersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DcParametersError::Count(e) => e.fmt(f),
            DcParametersError::Shunt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DcParametersError {}

/// Voltage alarm thresholds the meter would not accept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct VoltageAlarmsOutOfRange {
    /// High threshold asked for, V.
    pub high_v: f64,
    /// Low threshold asked for, V.
    pub low_v: f64,
}

impl fmt::Display for VoltageAlarmsOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "voltage alarms {}/{} V out of range: high 5 to 350 V, low 1 to 350 V, low below high, 0.01 V steps",
            self.high_v, self.low_v
        )
    }
}

impl std::error::Error for VoltageAlarmsOutOfRange {}

/// Check voltage alarm thresholds in V and give their register values
/// `(high, low)` in 0.01 V.
pub(crate) fn voltage_alarm_registers(high_v: f64, low_v: f64) -> Result<(u16, u16), VoltageAlarmsOutOfRange> {
    let err = VoltageAlarmsOutOfRange { high_v, low_v };
    let to_cv = |v: f64| {
        let cv = (v * 100.0).round();
        if v.is_finite() && (cv - v * 100.0).abs() < 1e-6 && (0.0..=f64::from(MAX_ALARM_CV)).contains(&cv) {
            Some(cv as u16)
        } else {
            None
        }
    };
    let (Some(high), Some(low)) = (to_cv(high_v), to_cv(low_v)) else {
        return Err(err);
    };
    if high < MIN_HIGH_ALARM_CV || low < MIN_LOW_ALARM_CV || low >= high {
        return Err(err);
    }
    Ok((high, low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_reply() {
        // pzem-protocol.md §13 frame 3: 11.73 V, 0 A, 0 W, 2 Wh.
        let data = [0x04, 0x95, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
        let r = DcReading::from_registers(&Registers::new(0, &data)).unwrap();
        assert_eq!(r.voltage_v(), 11.73);
        assert_eq!(r.current_a(), 0.0);
        assert_eq!(r.power_w(), 0.0);
        assert_eq!(r.energy_wh, 2);
        assert_eq!(r.energy_kwh(), 0.002);
    }

    #[test]
    fn manual_example_and_sample() {
        // §4.2: 100.00 V, 1.00 A, 100.0 W.
        let r = DcReading {
            voltage_cv: 10_000,
            current_ca: 100,
            power_dw: 1000,
            ..Default::default()
        };
        let bytes: Vec<u8> = r.to_registers().iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(&bytes[..8], &[0x27, 0x10, 0x00, 0x64, 0x03, 0xE8, 0x00, 0x00]);
        // §13 frame 9 (DC): 13.44 V, 0.10 A, 1.3 W, 2 Wh.
        let data = [0x05, 0x40, 0x00, 0x0A, 0x00, 0x0D, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
        let s = DcReading::from_registers(&Registers::new(0, &data)).unwrap();
        assert_eq!((s.voltage_cv, s.current_ca, s.power_dw, s.energy_wh), (1344, 10, 13, 2));
    }

    #[test]
    fn registers_round_trip() {
        let r = DcReading {
            voltage_cv: 5432,
            current_ca: 29_999,
            power_dw: 900_000,
            energy_wh: 9_999_000,
            high_voltage_alarm: false,
            low_voltage_alarm: true,
        };
        let bytes: Vec<u8> = r.to_registers().iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(DcReading::from_registers(&Registers::new(0, &bytes)).unwrap(), r);
    }

    #[test]
    fn shunt_codes_are_not_in_size_order() {
        assert_eq!(Shunt::from_code(0), Ok(Shunt::A100));
        assert_eq!(Shunt::from_code(1), Ok(Shunt::A50));
        assert_eq!(Shunt::from_amps(300).unwrap().code(), 3);
        assert!(Shunt::from_code(4).is_err());
        assert!(Shunt::from_amps(150).is_err());
        for s in Shunt::ALL {
            assert_eq!(Shunt::from_code(s.code()), Ok(s));
            assert_eq!(Shunt::from_amps(s.amps()), Ok(s));
        }
    }

    #[test]
    fn parameters() {
        let data = [0x75, 0x30, 0x02, 0xBC, 0x00, 0x05, 0x00, 0x02];
        let p = DcParameters::from_registers(&Registers::new(0, &data)).unwrap();
        assert_eq!(p.high_voltage_alarm_v(), 300.0);
        assert_eq!(p.low_voltage_alarm_v(), 7.0);
        assert_eq!(p.address, 5);
        assert_eq!(p.shunt, Some(Shunt::A200));
        let p3 = DcParameters::from_registers(&Registers::new(0, &data[..6])).unwrap();
        assert_eq!(p3.shunt, None);
        assert!(DcParameters::from_registers(&Registers::new(0, &[0, 0, 0, 0, 0, 0, 0, 9])).is_err());
    }

    #[test]
    fn voltage_alarm_ranges() {
        assert_eq!(voltage_alarm_registers(200.0, 10.0), Ok((20_000, 1_000)));
        assert_eq!(voltage_alarm_registers(14.4, 11.5), Ok((1440, 1150)));
        assert!(voltage_alarm_registers(4.0, 1.0).is_err());
        assert!(voltage_alarm_registers(351.0, 10.0).is_err());
        assert!(voltage_alarm_registers(20.0, 0.5).is_err());
        assert!(voltage_alarm_registers(20.0, 20.0).is_err());
        assert!(voltage_alarm_registers(12.345, 10.0).is_err());
        assert!(voltage_alarm_registers(f64::NAN, 10.0).is_err());
    }
}
