//! What the logger records: which services, which paths, in which unit (sans-IO).

use std::fmt;

/// The two kinds of series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// Power in W: a sample is the average over its interval.
    Power,
    /// An energy counter in kWh: a sample is the counter at the end of its interval.
    Energy,
}

impl Quantity {
    /// The unit as stored and served: `W` or `kWh`.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::Power => "W",
            Quantity::Energy => "kWh",
        }
    }

    /// The quantity of a unit text.
    pub fn from_unit(unit: &str) -> Option<Quantity> {
        match unit {
            "W" => Some(Quantity::Power),
            "kWh" => Some(Quantity::Energy),
            _ => None,
        }
    }
}

/// Every D-Bus path that is recorded when a followed service has it
/// (venus-conventions §4: meters, DC meters, battery monitors, vebus energy counters).
pub const RECORDED_PATHS: [(&str, Quantity); 12] = [
    ("/Ac/Power", Quantity::Power),
    ("/Ac/Energy/Forward", Quantity::Energy),
    ("/Ac/Energy/Reverse", Quantity::Energy),
    ("/Dc/0/Power", Quantity::Power),
    ("/History/EnergyIn", Quantity::Energy),
    ("/History/EnergyOut", Quantity::Energy),
    ("/History/ChargedEnergy", Quantity::Energy),
    ("/History/DischargedEnergy", Quantity::Energy),
    ("/Energy/AcIn1ToAcOut", Quantity::Energy),
    ("/Energy/AcIn1ToInverter", Quantity::Energy),
    ("/Energy/InverterToAcOut", Quantity::Energy),
    ("/Energy/OutToInverter", Quantity::Energy),
];

/// The recorded path equal to `path` (as a `'static` str) and its quantity.
pub fn recorded(path: &str) -> Option<(&'static str, Quantity)> {
    RECORDED_PATHS.iter().copied().find(|(p, _)| *p == path)
}

/// The services followed by default: the PZEM meters, the energy-flow service and the
/// battery monitors.
pub const DEFAULT_PATTERNS: [&str; 3] = [
    "com.victronenergy.*.pzem_*",
    "com.victronenergy.vebus.pzem_energy",
    "com.victronenergy.battery.*",
];

/// A service-name pattern: `*` matches any run of characters (dots included), everything
/// else matches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

/// A pattern that cannot name a Venus service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// A pattern over `com.victronenergy.` names, of bus-name characters and `*`.
    pub fn new(text: &str) -> Result<Pattern, PatternError> {
        let ok_chars = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'));
        if !text.starts_with("com.victronenergy.") || !ok_chars || text.len() > 255 {
            return Err(PatternError(format!(
                "'{text}' is not a service pattern: com.victronenergy.… of letters, digits, . _ - and *"
            )));
        }
        Ok(Pattern(text.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `*`: every matching name starts with it.
    pub fn literal_prefix(&self) -> &str {
        self.0.split('*').next().unwrap_or("")
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative `*` glob with backtracking to the last star: linear in practice.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The default patterns, parsed.
pub fn default_patterns() -> Vec<Pattern> {
    DEFAULT_PATTERNS
        .iter()
        .map(|p| Pattern::new(p).expect("the default patterns are valid"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = default_patterns();
        let any = |name: &str| p.iter().any(|p| p.matches(name));
        assert!(any("com.victronenergy.grid.pzem_ttyUSB0_1"));
        assert!(any("com.victronenergy.dcsource.pzem_7_3"));
        assert!(any("com.victronenergy.vebus.pzem_energy"));
        assert!(any("com.victronenergy.battery.ttyO1"));
        assert!(!any("com.victronenergy.vebus.ttyS4"));
        assert!(!any("com.victronenergy.settings"));
        assert!(!any("com.victronenergy.system"));
        assert_eq!(p[0].literal_prefix(), "com.victronenergy.");
        assert_eq!(p[2].literal_prefix(), "com.victronenergy.battery.");
        assert!(Pattern::new("org.example.*").is_err());
        assert!(Pattern::new("com.victronenergy.a b").is_err());
        let exact = Pattern::new("com.victronenergy.grid.x").unwrap();
        assert!(exact.matches("com.victronenergy.grid.x") && !exact.matches("com.victronenergy.grid.xy"));
        let many = Pattern::new("com.victronenergy.*a*b*").unwrap();
        assert!(many.matches("com.victronenergy.xxaxxbxx") && !many.matches("com.victronenergy.xxbxxa"));
    }

    #[test]
    fn paths_and_units() {
        assert_eq!(recorded("/Ac/Power"), Some(("/Ac/Power", Quantity::Power)));
        assert_eq!(recorded("/Ac/L1/Power"), None);
        assert_eq!(Quantity::from_unit(Quantity::Energy.unit()), Some(Quantity::Energy));
    }
}
