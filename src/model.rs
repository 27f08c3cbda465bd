//! Meter models, their families and the serial settings each needs.

use std::fmt;
use std::str::FromStr;

/// AC or DC: which register map a meter uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// PZEM-004T v3, PZEM-014, PZEM-016: ten input registers, 8N1.
    Ac,
    /// PZEM-003, PZEM-017: eight input registers, 8N2.
    Dc,
}

impl Family {
    /// Stop bits the manuals give for this family (AC 1, DC 2).
    pub fn stop_bits(self) -> StopBits {
        match self {
            Family::Ac => StopBits::One,
            Family::Dc => StopBits::Two,
        }
    }

    /// Number of input registers holding the measurements.
    pub fn input_register_count(self) -> u16 {
        match self {
            Family::Ac => crate::ac::INPUT_REGISTERS,
            Family::Dc => crate::dc::INPUT_REGISTERS,
        }
    }

    /// The most power a meter of the family can measure, W (PZEM-016:
    /// 100 A at 260 V; PZEM-017: 300 A at 300 V). Bounds how fast an energy
    /// counter can plausibly grow.
    pub fn max_power_w(self) -> u32 {
        match self {
            Family::Ac => 26_000,
            Family::Dc => 90_000,
        }
    }

    /// `"AC"` or `"DC"`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ac => "AC",
            Family::Dc => "DC",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Serial stop bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopBits {
    /// 8N1.
    One,
    /// 8N2.
    Two,
}

impl StopBits {
    /// The stop bits for a line carrying meters of the given families.
    ///
    /// A mixed AC+DC line uses two stop bits: a sender with two stop bits
    /// only adds idle time, which 1-stop-bit receivers accept, while DC
    /// meters are documented as 8N2 (`pzem-protocol.md` §2).
    pub fn for_line(families: impl IntoIterator<Item = Family>) -> StopBits {
        if families.into_iter().any(|f| f == Family::Dc) {
            StopBits::Two
        } else {
            StopBits::One
        }
    }

    /// The stop bits for a line with meters named like this: a model of
    /// unknown family (`auto`) may be DC, so it counts as DC.
    pub fn for_choices(choices: impl IntoIterator<Item = ModelChoice>) -> StopBits {
        Self::for_line(choices.into_iter().map(|c| c.family().unwrap_or(Family::Dc)))
    }

    /// Bits per character at 8 data bits, no parity: 10 or 11.
    pub fn bits_per_char(self) -> u32 {
        match self {
            StopBits::One => 10,
            StopBits::Two => 11,
        }
    }
}

/// PZEM meters run at 9600 baud, fixed.
pub const BAUD_RATE: u32 = 9600;

/// Wire time of `bytes` characters at 9600 baud, in microseconds.
pub fn wire_time_us(bytes: usize, stop_bits: StopBits) -> u64 {
    bytes as u64 * u64::from(stop_bits.bits_per_char()) * 1_000_000 / u64::from(BAUD_RATE)
}

/// The Modbus-RTU inter-frame silence (3.5 characters), in microseconds.
pub fn frame_gap_us(stop_bits: StopBits) -> u64 {
    wire_time_us(7, stop_bits) / 2
}

/// A meter model, as a user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// PZEM-004T v3 (TTL, AC, 10 A or 100 A).
    Pzem004T,
    /// PZEM-014 (RS-485, AC, 10 A internal shunt).
    Pzem014,
    /// PZEM-016 (RS-485, AC, 100 A CT).
    Pzem016,
    /// PZEM-003 (RS-485, DC, 10 A internal shunt).
    Pzem003,
    /// PZEM-017 (RS-485, DC, external 50–300 A shunt).
    Pzem017,
    /// An AC meter whose exact model is not known (the protocol cannot tell them apart).
    GenericAc,
    /// A DC meter whose exact model is not known.
    GenericDc,
}

impl Model {
    /// The register map family.
    pub fn family(self) -> Family {
        match self {
            Model::Pzem004T | Model::Pzem014 | Model::Pzem016 | Model::GenericAc => Family::Ac,
            Model::Pzem003 | Model::Pzem017 | Model::GenericDc => Family::Dc,
        }
    }

    /// The generic model of a family.
    pub fn generic(family: Family) -> Model {
        match family {
            Family::Ac => Model::GenericAc,
            Family::Dc => Model::GenericDc,
        }
    }

    /// Product name for display, e.g. `PZEM-016`.
    pub fn product_name(self) -> &'static str {
        match self {
            Model::Pzem004T => "PZEM-004T",
            Model::Pzem014 => "PZEM-014",
            Model::Pzem016 => "PZEM-016",
            Model::Pzem003 => "PZEM-003",
            Model::Pzem017 => "PZEM-017",
            Model::GenericAc => "PZEM AC meter",
            Model::GenericDc => "PZEM DC meter",
        }
    }

    /// Whether the model has the shunt-range register (PZEM-017; a generic
    /// DC meter may have it).
    pub fn may_have_shunt(self) -> bool {
        matches!(self, Model::Pzem017 | Model::GenericDc)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.product_name())
    }
}

/// What a user may name on a command line or in a config file: a model, a
/// family, or "find out".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelChoice {
    /// This model.
    Known(Model),
    /// Probe the meter to tell AC from DC.
    Auto,
}

impl ModelChoice {
    /// The family, when the model is known.
    pub fn family(self) -> Option<Family> {
        match self {
            ModelChoice::Known(m) => Some(m.family()),
            ModelChoice::Auto => None,
        }
    }

    /// The model to name a meter by, given the family it was found to be, if it has
    /// been identified yet.
    ///
    /// The family read from the meter wins over the name: a named model of that family
    /// is kept, a named model of the other family (the meter is not what was named)
    /// and `auto` give the family's generic model. Before the family is known, a named
    /// model is taken as it is, and `auto` gives the generic AC model as a placeholder.
    ///
    /// ```
    /// use pzem::{Family, Model, ModelChoice};
    /// let named = ModelChoice::Known(Model::Pzem016);
    /// assert_eq!(named.resolve(Some(Family::Ac)), Model::Pzem016);
    /// assert_eq!(named.resolve(Some(Family::Dc)), Model::GenericDc);
    /// assert_eq!(ModelChoice::Auto.resolve(Some(Family::Dc)), Model::GenericDc);
    /// ```
    pub fn resolve(self, family: Option<Family>) -> Model {
        match (self, family) {
            (ModelChoice::Known(m), None) => m,
            (ModelChoice::Known(m), Some(f)) if m.family() == f => m,
            (_, Some(f)) => Model::generic(f),
            (ModelChoice::Auto, None) => Model::generic(Family::Ac),
        }
    }
}

/// Model text that is not one of `016 014 004t 017 003 ac dc auto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModel(pub String);

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown meter model '{}': use one of 016 014 004t 017 003 ac dc auto",
            self.0
        )
    }
}

impl std::error::Error for UnknownModel {}

impl FromStr for ModelChoice {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_prefix("pzem-").or_else(|| t.strip_prefix("pzem")).unwrap_or(&t);
        Ok(match t {
            "016" => ModelChoice::Known(Model::Pzem016),
            "014" => ModelChoice::Known(Model::Pzem014),
            "004t" | "004" | "004tv3" => ModelChoice::Known(Model::Pzem004T),
            "017" => ModelChoice::Known(Model::Pzem017),
            "003" => ModelChoice::Known(Model::Pzem003),
            "ac" => ModelChoice::Known(Model::GenericAc),
            "dc" => ModelChoice::Known(Model::GenericDc),
            "auto" => ModelChoice::Auto,
            _ => return Err(UnknownModel(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_text() {
        assert_eq!("016".parse(), Ok(ModelChoice::Known(Model::Pzem016)));
        assert_eq!("PZEM-017".parse(), Ok(ModelChoice::Known(Model::Pzem017)));
        assert_eq!("004T".parse(), Ok(ModelChoice::Known(Model::Pzem004T)));
        assert_eq!("auto".parse(), Ok(ModelChoice::Auto));
        assert!("018".parse::<ModelChoice>().is_err());
        assert_eq!(Model::Pzem003.family(), Family::Dc);
        assert_eq!(Model::Pzem014.family(), Family::Ac);
    }

    #[test]
    fn resolve_prefers_the_family_found() {
        let all = [
            Model::Pzem004T,
            Model::Pzem014,
            Model::Pzem016,
            Model::Pzem003,
            Model::Pzem017,
            Model::GenericAc,
            Model::GenericDc,
        ];
        for m in all {
            let named = ModelChoice::Known(m);
            assert_eq!(named.resolve(None), m);
            assert_eq!(named.resolve(Some(m.family())), m);
            for f in [Family::Ac, Family::Dc] {
                let got = named.resolve(Some(f));
                assert_eq!(got.family(), f, "{m} found {f}");
                if f != m.family() {
                    assert_eq!(got, Model::generic(f), "{m} found {f}");
                }
            }
        }
        assert_eq!(ModelChoice::Auto.resolve(Some(Family::Ac)), Model::GenericAc);
        assert_eq!(ModelChoice::Auto.resolve(Some(Family::Dc)), Model::GenericDc);
        assert_eq!(ModelChoice::Auto.resolve(None), Model::GenericAc);
    }

    #[test]
    fn timing() {
        assert_eq!(wire_time_us(1, StopBits::One), 1041);
        assert_eq!(wire_time_us(1, StopBits::Two), 1145);
        assert_eq!(frame_gap_us(StopBits::One), 3645);
        assert_eq!(frame_gap_us(StopBits::Two), 4010);
        assert_eq!(StopBits::for_line([Family::Ac, Family::Ac]), StopBits::One);
        assert_eq!(StopBits::for_line([Family::Ac, Family::Dc]), StopBits::Two);
        assert_eq!(
            StopBits::for_choices([ModelChoice::Known(Model::Pzem016)]),
            StopBits::One
        );
        assert_eq!(
            StopBits::for_choices([ModelChoice::Known(Model::Pzem016), ModelChoice::Auto]),
            StopBits::Two
        );
    }
}
