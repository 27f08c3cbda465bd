//! Which meters to publish: `-m ADDR:MODEL:ROLE` flags and the config file.
//!
//! The config file (default `/data/conf/pzem.conf`) holds one meter per
//! line, the same three fields as `-m`, separated by `:` or white space;
//! `#` starts a comment:
//!
//! ```text
//! # address  model  role
//! 1          016    grid
//! 2:016:acload
//! 3          017    dcsource
//! ```
//!
//! The role may be left out: AC meters default to `grid`, DC to
//! `dcsource`, and `auto` models get the default of what they turn out to be.

use std::fmt;

use crate::address::Address;
use crate::model::{Family, ModelChoice, UnknownModel};

use super::role::Role;

/// One meter to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterSpec {
    /// Its Modbus unit address.
    pub address: Address,
    /// Its model, or `auto` to probe.
    pub model: ModelChoice,
    /// Its role; `None` means the default for its family.
    pub role: Option<Role>,
}

/// A meter spec that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

impl MeterSpec {
    /// Parse `ADDR:MODEL[:ROLE]` (fields may also be separated by white space).
    pub fn parse(text: &str) -> Result<MeterSpec, SpecError> {
        let fields: Vec<&str> = text
            .split(|c: char| c == ':' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let (addr, model, role) = match fields.as_slice() {
            [a, m] => (a, m, None),
            [a, m, r] => (a, m, Some(r)),
            _ => {
                return Err(SpecError(format!(
                    "'{text}': expected ADDRESS:MODEL:ROLE, e.g. 1:016:grid"
                )));
            }
        };
        let (address, model) = parse_address_and_model(addr, model).map_err(|e| SpecError(format!("'{text}': {e}")))?;
        let role = match role {
            None => None,
            Some(r) => Some(r.parse::<Role>().map_err(|e| SpecError(format!("'{text}': {e}")))?),
        };
        if let (ModelChoice::Known(m), Some(r)) = (model, role)
            && m.family() != r.family()
        {
            let kind = |f: Family| if f == Family::Ac { "an AC" } else { "a DC" };
            return Err(SpecError(format!(
                "'{text}': {m} is {} meter but {r} is {} role",
                kind(m.family()),
                kind(r.family())
            )));
        }
        Ok(MeterSpec { address, model, role })
    }

    /// The role to use for a meter of `family`.
    pub fn role_for(&self, family: Family) -> Role {
        match self.role {
            Some(r) if r.family() == family => r,
            _ => Role::default_for(family),
        }
    }
}

/// Parse the `ADDR` and `MODEL` fields of a meter (as in `-m ADDR:MODEL...`): the address
/// as [`Address::parse`] reads it, but not the general address 0xF8 (it names no single
/// meter: on a line with several, all of them answer), and the model as [`ModelChoice`]
/// reads it (`auto` included).
///
/// The one home of these rules for every meter list: pzem-dbus's `-m` flags and config
/// file (through [`MeterSpec::parse`]) and pzem-sim's `-m` flags. Errors do not quote
/// the whole field; callers add that.
pub fn parse_address_and_model(address: &str, model: &str) -> Result<(Address, ModelChoice), SpecError> {
    let address = Address::parse(address).map_err(|e| SpecError(e.to_string()))?;
    if address.is_general() {
        return Err(SpecError(
            "the general address 0xF8 cannot name one meter on a shared line; give the meter's own address (1-247)"
                .to_string(),
        ));
    }
    let model = model.parse().map_err(|e: UnknownModel| SpecError(e.to_string()))?;
    Ok((address, model))
}

/// Parse a config file's text; an error names the line. The meter lines are those before
/// the first `[section]` header: the sections belong to other services (`[logger]`,
/// `[web]`: [`crate::history::config`]).
pub fn parse_config(text: &str) -> Result<Vec<MeterSpec>, SpecError> {
    let mut meters: Vec<MeterSpec> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            break;
        }
        let spec = MeterSpec::parse(line).map_err(|e| SpecError(format!("line {}: {e}", n + 1)))?;
        check_unique(&meters, &spec).map_err(|e| SpecError(format!("line {}: {e}", n + 1)))?;
        meters.push(spec);
    }
    Ok(meters)
}

/// Refuse a second meter at the same address.
pub fn check_unique(meters: &[MeterSpec], spec: &MeterSpec) -> Result<(), SpecError> {
    if meters.iter().any(|m| m.address == spec.address) {
        Err(SpecError(format!(
            "address {} is given twice; every meter on a line needs its own",
            spec.address
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn flag_forms() {
        let s = MeterSpec::parse("10:016:acload").unwrap();
        assert_eq!(s.address.get(), 10);
        assert_eq!(s.model, ModelChoice::Known(Model::Pzem016));
        assert_eq!(s.role, Some(Role::AcLoad));
        let s = MeterSpec::parse("2 017").unwrap();
        assert_eq!((s.role, s.role_for(Family::Dc)), (None, Role::DcSource));
        let s = MeterSpec::parse("3:auto:dcsystem").unwrap();
        assert_eq!(s.role_for(Family::Dc), Role::DcSystem);
        assert_eq!(s.role_for(Family::Ac), Role::Grid);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(MeterSpec::parse("1").unwrap_err().0.contains("ADDRESS:MODEL:ROLE"));
        assert!(MeterSpec::parse("0:016:grid").unwrap_err().0.contains("1 to 247"));
        assert!(MeterSpec::parse("0xF8:016:grid").unwrap_err().0.contains("general"));
        assert!(MeterSpec::parse("x:016").unwrap_err().0.contains("not a number"));
        assert!(
            MeterSpec::parse("1:018:grid")
                .unwrap_err()
                .0
                .contains("unknown meter model")
        );
        assert!(
            MeterSpec::parse("1:016:battery")
                .unwrap_err()
                .0
                .contains("unknown role")
        );
        assert!(
            MeterSpec::parse("1:017:grid")
                .unwrap_err()
                .0
                .contains("a DC meter but grid is an AC role")
        );
    }

    #[test]
    fn address_and_model_fields() {
        let m016 = ModelChoice::Known(Model::Pzem016);
        assert_eq!(
            parse_address_and_model("1", "016"),
            Ok((Address::FACTORY_DEFAULT, m016))
        );
        assert_eq!(
            parse_address_and_model(" 0x0A", "PZEM-017"),
            Ok((Address::unit(10).unwrap(), ModelChoice::Known(Model::Pzem017)))
        );
        assert_eq!(parse_address_and_model("247", "auto").unwrap().1, ModelChoice::Auto);
        let err = |a: &str, m: &str| parse_address_and_model(a, m).unwrap_err().0;
        assert!(err("0", "016").contains("1 to 247"));
        assert!(err("248", "016").contains("general address 0xF8"));
        assert!(err("0xF8", "016").contains("general address 0xF8"));
        assert!(err("one", "016").contains("not a number"));
        assert!(err("1", "018").contains("unknown meter model '018'"));
        // The field is quoted by the caller, not here.
        assert!(!err("1", "018").starts_with('\''));
    }

    #[test]
    fn config_file() {
        let text = "# meters\n1 016 grid\n\n2:016:acload  # loads\n3 017\n";
        let m = parse_config(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].role_for(Family::Dc), Role::DcSource);
        let e = parse_config("1 016 grid\n1 017 dcload\n").unwrap_err();
        assert!(e.0.starts_with("line 2:") && e.0.contains("twice"), "{e}");
        let e = parse_config("1 016 grid\nfoo\n").unwrap_err();
        assert!(e.0.starts_with("line 2:"), "{e}");
        assert_eq!(parse_config("# nothing\n").unwrap(), vec![]);
        // Sections after the meter lines belong to other services.
        let m = parse_config("1 016 grid\n[logger]\ninterval = 60\n[web]\nlisten = 0.0.0.0:8088\n").unwrap();
        assert_eq!(m.len(), 1);
    }
}
