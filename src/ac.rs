//! Register map of the AC meters (PZEM-004T v3, PZEM-014, PZEM-016).
//!
//! Ten input registers hold one measurement snapshot; 32-bit values are
//! stored low word first (`pzem-protocol.md` §4.1, §4.3). Two holding
//! registers hold the parameters (§5.1).

use std::fmt;

use crate::frame::Registers;

/// Input registers to read for one AC reading (0x0000..=0x0009).
pub(crate) const INPUT_REGISTERS: u16 = 10;

/// Holding register of the power alarm threshold (1 W per LSB).
pub(crate) const REG_POWER_ALARM: u16 = 0x0001;

/// Holding register of the Modbus address (the same in the DC family).
pub(crate) const REG_ADDRESS: u16 = 0x0002;

/// Holding registers to read for [`AcParameters`]: 0x0001 and 0x0002.
pub(crate) const PARAMETER_REGISTERS: (u16, u16) = (REG_POWER_ALARM, 2);

/// Highest power alarm threshold accepted, in watts.
pub(crate) const MAX_POWER_ALARM_W: u16 = 25_000;

/// One AC measurement snapshot, as raw integers with unit accessors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AcReading {
    /// Voltage in 0.1 V.
    pub voltage_dv: u16,
    /// Current in mA.
    pub current_ma: u32,
    /// Active power in 0.1 W (unsigned: the meter has no direction).
    pub power_dw: u32,
    /// Active energy in Wh since the last reset (unsigned).
    pub energy_wh: u32,
    /// Frequency in 0.1 Hz.
    pub frequency_dhz: u16,
    /// Power factor in 0.01.
    pub power_factor_centi: u16,
    /// Power alarm: the power exceeds the threshold.
    pub power_alarm: bool,
}

/// Why registers could not be read as a reading or parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterCountError {
    /// Registers needed.
    pub expected: usize,
    /// Registers given.
    pub got: usize,
}

impl fmt::Display for RegisterCountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} registers given, {} needed", self.got, self.expected)
    }
}

impl std::error::Error for RegisterCountError {}

pub(crate) fn expect_len(regs: &Registers<'_>, expected: usize) -> Result<(), RegisterCountError> {
    if regs.len() == expected {
        Ok(())
    } else {
        Err(RegisterCountError {
            expected,
            got: regs.len(),
        })
    }
}

impl AcReading {
    /// Decode the ten input registers 0x0000..=0x0009.
    pub fn from_registers(regs: &Registers<'_>) -> Result<AcReading, RegisterCountError> {
        expect_len(regs, usize::from(INPUT_REGISTERS))?;
        let r = |i| regs.get(i).unwrap_or(0);
        let r32 = |i| regs.get_u32_low_word_first(i).unwrap_or(0);
        Ok(AcReading {
            voltage_dv: r(0),
            current_ma: r32(1),
            power_dw: r32(3),
            energy_wh: r32(5),
            frequency_dhz: r(7),
            power_factor_centi: r(8),
            power_alarm: r(9) != 0,
        })
    }

    /// The ten register values, as the meter holds them.
    pub fn to_registers(&self) -> [u16; INPUT_REGISTERS as usize] {
        let lo = |v: u32| v as u16;
        let hi = |v: u32| (v >> 16) as u16;
        [
            self.voltage_dv,
            lo(self.current_ma),
            hi(self.current_ma),
            lo(self.power_dw),
            hi(self.power_dw),
            lo(self.energy_wh),
            hi(self.energy_wh),
            self.frequency_dhz,
            self.power_factor_centi,
            if self.power_alarm { 0xFFFF } else { 0 },
        ]
    }

    /// Voltage in V.
    pub fn voltage_v(&self) -> f64 {
        f64::from(self.voltage_dv) / 10.0
    }

    /// Current in A.
    pub fn current_a(&self) -> f64 {
        f64::from(self.current_ma) / 1000.0
    }

    /// Active power in W.
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

    /// Frequency in Hz.
    pub fn frequency_hz(&self) -> f64 {
        f64::from(self.frequency_dhz) / 10.0
    }

    /// Power factor, 0.00 to 1.00.
    pub fn power_factor(&self) -> f64 {
        f64::from(self.power_factor_centi) / 100.0
    }
}

/// The parameters of an AC meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcParameters {
    /// Power alarm threshold in W.
    pub power_alarm_w: u16,
    /// Modbus address stored in the meter.
    pub address: u8,
}

impl AcParameters {
    /// Decode holding registers 0x0001 and 0x0002.
    pub fn from_registers(regs: &Registers<'_>) -> Result<AcParameters, RegisterCountError> {
        expect_len(regs, 2)?;
        Ok(AcParameters {
            power_alarm_w: regs.get(0).unwrap_or(0),
            address: regs.get(1).unwrap_or(0) as u8,
        })
    }
}

/// A power alarm threshold outside 1..=25 000 W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PowerAlarmOutOfRange(pub u32);

impl fmt::Display for PowerAlarmOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "power alarm {} W is out of range: use 1 to {MAX_POWER_ALARM_W} W",
            self.0
        )
    }
}

impl std::error::Error for PowerAlarmOutOfRange {}

/// Check a power alarm threshold in W and give its register value.
pub(crate) fn power_alarm_register(watts: u32) -> Result<u16, PowerAlarmOutOfRange> {
    match u16::try_from(watts) {
        Ok(w) if (1..=MAX_POWER_ALARM_W).contains(&w) => Ok(w),
        _ => Err(PowerAlarmOutOfRange(watts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(bytes: &[u8]) -> Registers<'_> {
        Registers::new(0, bytes)
    }

    #[test]
    fn manual_example() {
        let data = [
            8, 0x98, 3, 0xE8, 0, 0, 8, 0x98, 0, 0, 0, 0, 0, 0, 1, 0xF4, 0, 0x64, 0, 0,
        ];
        let r = AcReading::from_registers(&regs(&data)).unwrap();
        assert_eq!(r.voltage_v(), 220.0);
        assert_eq!(r.current_a(), 1.0);
        assert_eq!(r.power_w(), 220.0);
        assert_eq!(r.energy_kwh(), 0.0);
        assert_eq!(r.frequency_hz(), 50.0);
        assert_eq!(r.power_factor(), 1.0);
        assert!(!r.power_alarm);
    }

    #[test]
    fn low_word_first_capture() {
        // arendst/Tasmota#9687, pzem-protocol.md §13 frame 8.
        let data = [
            0x04, 0xD1, 0x61, 0x9C, 0x00, 0x01, 0x97, 0xEF, 0x00, 0x00, 0x1E, 0x40, 0x00, 0x02, 0x02, 0x57, 0x00, 0x23,
            0x00, 0x00,
        ];
        let r = AcReading::from_registers(&regs(&data)).unwrap();
        assert_eq!(r.voltage_dv, 1233);
        assert_eq!(r.current_ma, 90_524);
        assert_eq!(r.power_dw, 38_895);
        assert_eq!(r.energy_wh, 138_816);
        assert_eq!(r.frequency_dhz, 599);
        assert_eq!(r.power_factor_centi, 35);
        assert_eq!(r.energy_kwh(), 138.816);
    }

    #[test]
    fn registers_round_trip() {
        let r = AcReading {
            voltage_dv: 2301,
            current_ma: 123_456,
            power_dw: 284_000,
            energy_wh: 9_999_999,
            frequency_dhz: 500,
            power_factor_centi: 97,
            power_alarm: true,
        };
        let words = r.to_registers();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(AcReading::from_registers(&regs(&bytes)).unwrap(), r);
    }

    #[test]
    fn wrong_count_is_an_error() {
        assert_eq!(
            AcReading::from_registers(&regs(&[0; 16])),
            Err(RegisterCountError { expected: 10, got: 8 })
        );
    }

    #[test]
    fn alarm_range() {
        assert_eq!(power_alarm_register(2300), Ok(2300));
        assert!(power_alarm_register(0).is_err());
        assert!(power_alarm_register(25_001).is_err());
        assert!(power_alarm_register(70_000).is_err());
    }
}
