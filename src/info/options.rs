//! The values on a `pzem-info` command line, checked before anything is
//! sent: addresses, ranges, shunt, alarm thresholds, timeouts.

use std::fmt;
use std::time::Duration;

use crate::ac;
use crate::address::Address;
use crate::dc::{self, Shunt};
use crate::model::ModelChoice;

/// A command-line value that is not acceptable; nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error saying `msg`.
pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// What to do with the meter (or the line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print model, readings and parameters.
    Show,
    /// List every address in the range that answers.
    Scan(ScanRange),
    /// Give the meter a new address and read it back there.
    SetAddress(Address),
    /// Reset the energy counter and read it back.
    ResetEnergy,
    /// Set a PZEM-017's shunt range.
    SetShunt(Shunt),
    /// Set an AC meter's power alarm threshold, W.
    SetPowerAlarm(u16),
    /// Set a DC meter's voltage alarm thresholds, 0.01 V.
    SetVoltageAlarms {
        /// High threshold, 0.01 V.
        high_cv: u16,
        /// Low threshold, 0.01 V.
        low_cv: u16,
    },
}

impl Action {
    /// The action's name as on the command line, e.g. `set-shunt`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Show => "show",
            Action::Scan(_) => "scan",
            Action::SetAddress(_) => "set-address",
            Action::ResetEnergy => "reset-energy",
            Action::SetShunt(_) => "set-shunt",
            Action::SetPowerAlarm(_) => "set-power-alarm",
            Action::SetVoltageAlarms { .. } => "set-voltage-alarms",
        }
    }
}

/// An inclusive range of unit addresses to scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanRange {
    /// First address.
    pub from: u8,
    /// Last address.
    pub to: u8,
}

impl ScanRange {
    /// Every unit address, 1-247.
    pub const ALL: ScanRange = ScanRange {
        from: Address::MIN_UNIT,
        to: Address::MAX_UNIT,
    };

    /// Parse `FROM-TO` or a single address (decimal or `0x` hex).
    pub fn parse(text: &str) -> Result<ScanRange, UsageError> {
        let unit = |t: &str| {
            let a = Address::parse(t).map_err(|e| usage(format!("scan range '{text}': {e}")))?;
            if a.is_general() {
                return Err(usage(format!(
                    "scan range '{text}': 0xF8 is the general address, scan unit addresses 1-247"
                )));
            }
            Ok(a.get())
        };
        let (from, to) = match text.split_once('-') {
            Some((a, b)) => (unit(a)?, unit(b)?),
            None => {
                let a = unit(text)?;
                (a, a)
            }
        };
        if from > to {
            return Err(usage(format!("scan range '{text}': FROM must not be above TO")));
        }
        Ok(ScanRange { from, to })
    }

    /// The addresses in the range.
    pub fn addresses(self) -> impl Iterator<Item = Address> {
        (self.from..=self.to).filter_map(|a| Address::unit(u32::from(a)).ok())
    }
}

/// The address to talk to (`-a`): 1-247 or 0xF8.
pub fn parse_target(text: &str) -> Result<Address, UsageError> {
    Address::parse(text).map_err(|e| usage(format!("-a {text}: {e}")))
}

/// A new address for `--set-address`: 1-247 only.
pub fn parse_new_address(text: &str) -> Result<Address, UsageError> {
    match Address::parse(text) {
        Ok(a) if !a.is_general() => Ok(a),
        Ok(_) => Err(usage(format!(
            "--set-address {text}: 0xF8 is the general address, not an address a meter can keep; use 1-247"
        ))),
        Err(e) => Err(usage(format!("--set-address {text}: {e}"))),
    }
}

/// A shunt rating for `--set-shunt`: 50, 100, 200 or 300 (A).
pub fn parse_shunt(text: &str) -> Result<Shunt, UsageError> {
    let t = text.trim();
    let t = t.strip_suffix('A').or_else(|| t.strip_suffix('a')).unwrap_or(t).trim();
    let amps: u32 = t
        .parse()
        .map_err(|_| usage(format!("--set-shunt {text}: use 50, 100, 200 or 300 (A)")))?;
    Shunt::from_amps(amps).map_err(|e| usage(format!("--set-shunt {text}: {e}")))
}

/// A power alarm threshold for `--set-power-alarm`: 1-25000 W.
pub fn parse_power_alarm(text: &str) -> Result<u16, UsageError> {
    let t = text.trim();
    let t = t.strip_suffix('W').or_else(|| t.strip_suffix('w')).unwrap_or(t).trim();
    let watts: u32 = t.parse().map_err(|_| {
        usage(format!(
            "--set-power-alarm {text}: give whole watts, 1 to {}",
            ac::MAX_POWER_ALARM_W
        ))
    })?;
    ac::power_alarm_register(watts).map_err(|e| usage(format!("--set-power-alarm {text}: {e}")))
}

/// Voltage alarm thresholds for `--set-voltage-alarms HIGH,LOW` in V:
/// high 5-350 V, low 1-350 V, low below high, 0.01 V steps. Gives
/// `(high, low)` in 0.01 V.
pub fn parse_voltage_alarms(text: &str) -> Result<(u16, u16), UsageError> {
    let bad = || {
        usage(format!(
            "--set-voltage-alarms {text}: give HIGH,LOW in volts, e.g. 14.4,11.5 \
             (high 5 to 350 V, low 1 to 350 V, low below high, 0.01 V steps)"
        ))
    };
    let (high, low) = text.split_once(',').ok_or_else(bad)?;
    let volts = |t: &str| {
        let t = t.trim();
        let t = t.strip_suffix('V').or_else(|| t.strip_suffix('v')).unwrap_or(t).trim();
        t.parse::<f64>().map_err(|_| bad())
    };
    dc::voltage_alarm_registers(volts(high)?, volts(low)?)
        .map_err(|e| usage(format!("--set-voltage-alarms {text}: {e}")))
}

/// The meter type for `-t`: `ac`, `dc`, `auto`, or a model (`016`, `017`, ...).
pub fn parse_model(text: &str) -> Result<ModelChoice, UsageError> {
    text.parse::<ModelChoice>()
        .map_err(|e| usage(format!("-t {text}: {e}")))
}

/// A reply timeout in milliseconds for `--timeout`: 10 to 10000.
pub fn parse_timeout(text: &str) -> Result<Duration, UsageError> {
    match text.trim().parse::<u64>() {
        Ok(ms) if (10..=10_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(usage(format!("--timeout {text}: give milliseconds, 10 to 10000"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn scan_ranges() {
        assert_eq!(ScanRange::parse("1-247"), Ok(ScanRange::ALL));
        assert_eq!(ScanRange::parse("5"), Ok(ScanRange { from: 5, to: 5 }));
        assert_eq!(ScanRange::parse("0x10-0x12"), Ok(ScanRange { from: 16, to: 18 }));
        assert_eq!(ScanRange::parse("3-5").unwrap().addresses().count(), 3);
        for bad in ["0-5", "1-248", "9-3", "a-b", "", "-", "1-", "0xF8", "1-2-3"] {
            assert!(ScanRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert!(parse_target("0xF8").unwrap().is_general());
        assert_eq!(parse_target("17").unwrap().get(), 17);
        assert!(parse_target("0").is_err());
        assert_eq!(parse_new_address("247").unwrap().get(), 247);
        for bad in ["0", "248", "0xF8", "256", "-1", "x"] {
            assert!(parse_new_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shunt_and_alarms() {
        assert_eq!(parse_shunt("200"), Ok(Shunt::A200));
        assert_eq!(parse_shunt("50A"), Ok(Shunt::A50));
        assert!(parse_shunt("150").is_err());
        assert!(parse_shunt("-100").is_err());
        assert_eq!(parse_power_alarm("2300"), Ok(2300));
        assert_eq!(parse_power_alarm("25000W"), Ok(25_000));
        for bad in ["0", "25001", "1.5", "", "99999999999"] {
            assert!(parse_power_alarm(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_voltage_alarms("14.4,11.5"), Ok((1440, 1150)));
        assert_eq!(parse_voltage_alarms("300V, 7V"), Ok((30_000, 700)));
        for bad in [
            "14.4",
            "4,1",
            "351,10",
            "20,0.5",
            "10,20",
            "10,10",
            "12.345,10",
            "nan,1",
            "inf,1",
            ",",
        ] {
            assert!(parse_voltage_alarms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn models_and_settings() {
        assert_eq!(parse_model("auto"), Ok(ModelChoice::Auto));
        assert_eq!(parse_model("017"), Ok(ModelChoice::Known(Model::Pzem017)));
        assert!(parse_model("xyz").is_err());
        assert_eq!(parse_timeout("80"), Ok(Duration::from_millis(80)));
        assert!(parse_timeout("5").is_err());
        assert_eq!(Action::SetPowerAlarm(1).name(), "set-power-alarm");
    }
}
