//! Modbus slave addresses as PZEM meters understand them.

use std::fmt;

/// The address a request is sent to: a unit address 1..=247, or the
/// general address 0xF8 that any single PZEM answers whatever its own
/// address.
///
/// The broadcast address 0 cannot be represented: a broadcast write would
/// give every meter on the line the same value (or address), and no meter
/// answers it, so nothing in this crate ever sends one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(u8);

/// Why a number is not a usable address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidAddress(pub u32);

impl fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid Modbus address {}: PZEM unit addresses are 1 to 247 (0 is broadcast and never used)",
            self.0
        )
    }
}

impl std::error::Error for InvalidAddress {}

impl Address {
    /// The general address 0xF8. Valid only with exactly one meter on the
    /// line; with more they all answer at once and the replies collide.
    pub const GENERAL: Address = Address(0xF8);

    /// The factory default unit address.
    pub const FACTORY_DEFAULT: Address = Address(1);

    /// Lowest unit address.
    pub const MIN_UNIT: u8 = 1;

    /// Highest unit address.
    pub const MAX_UNIT: u8 = 247;

    /// A unit address 1..=247.
    pub fn unit(n: u32) -> Result<Address, InvalidAddress> {
        match u8::try_from(n) {
            Ok(v) if (Self::MIN_UNIT..=Self::MAX_UNIT).contains(&v) => Ok(Address(v)),
            _ => Err(InvalidAddress(n)),
        }
    }

    /// A unit address 1..=247, or 0xF8 (248) for the general address.
    pub fn unit_or_general(n: u32) -> Result<Address, InvalidAddress> {
        if n == u32::from(Self::GENERAL.0) {
            Ok(Self::GENERAL)
        } else {
            Self::unit(n)
        }
    }

    /// Parse decimal (`10`) or hexadecimal (`0x0A`, `0xF8`) text; accepts the
    /// general address.
    pub fn parse(text: &str) -> Result<Address, AddressParseError> {
        let t = text.trim();
        let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => t.parse::<u32>(),
        }
        .map_err(|_| AddressParseError::NotANumber)?;
        Self::unit_or_general(n).map_err(AddressParseError::OutOfRange)
    }

    /// The byte on the wire.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether this is the general address 0xF8.
    pub fn is_general(self) -> bool {
        self == Self::GENERAL
    }
}

/// Why address text could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressParseError {
    /// Not a decimal or `0x` hexadecimal number.
    NotANumber,
    /// A number, but not 1..=247 or 0xF8.
    OutOfRange(InvalidAddress),
}

impl fmt::Display for AddressParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressParseError::NotANumber => {
                f.write_str("address is not a number (use decimal 1-247 or hex like 0x0A; 0xF8 is the general address)")
            }
            AddressParseError::OutOfRange(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AddressParseError {}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_general() {
            f.write_str("0xF8 (general)")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_range() {
        assert!(Address::unit(0).is_err());
        assert_eq!(Address::unit(1).unwrap().get(), 1);
        assert_eq!(Address::unit(247).unwrap().get(), 247);
        assert!(Address::unit(248).is_err());
        assert!(Address::unit(0x1_01).is_err());
        assert!(Address::unit_or_general(248).unwrap().is_general());
        assert!(Address::unit_or_general(0).is_err());
    }

    #[test]
    fn parse_text() {
        assert_eq!(Address::parse("10").unwrap().get(), 10);
        assert_eq!(Address::parse("0x0a").unwrap().get(), 10);
        assert!(Address::parse("0xF8").unwrap().is_general());
        assert_eq!(Address::parse("ten"), Err(AddressParseError::NotANumber));
        assert!(matches!(Address::parse("0"), Err(AddressParseError::OutOfRange(_))));
        assert!(matches!(Address::parse("300"), Err(AddressParseError::OutOfRange(_))));
    }
}
