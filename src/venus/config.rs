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
//!
//! Two or three single-phase AC meters make one two- or three-phase meter
//! when their addresses are joined with `+`, in phase order L1, L2, L3:
//! `1+2+3:016:grid` (or `1+2+3 016 grid`) is one service named after
//! address 1.
//!
//! # Sections
//!
//! One file configures every program of the project: a line `[name]` starts
//! a section that belongs to one program, up to the next header. The meter
//! lines are those before the first header, and those of a `[meters]`
//! section (pzem-dbus's). Each program reads its own sections and ignores
//! the others' contents ([`split_sections`]); a malformed header is an
//! error for every program, since no one can tell whose lines follow it.
//! Sections other than the meters hold `key = value` lines (or `key value`),
//! read with [`section_entries`]:
//!
//! ```text
//! 1 016 grid
//! 2 016 acload
//!
//! [energy]
//! ac-in  = com.victronenergy.grid.pzem_ttyUSB0_1
//! ac-out = com.victronenergy.acload.pzem_ttyUSB0_2
//! ```

use std::fmt;

use crate::address::Address;
use crate::model::{Family, ModelChoice, UnknownModel};

use super::role::Role;

/// One meter to publish: a single meter, or single-phase AC meters grouped
/// as one multi-phase meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterSpec {
    /// Its Modbus unit address; in a group, the L1 meter's (it names the
    /// service).
    pub address: Address,
    /// In a group, the addresses of the L2 and L3 meters (L3 `None` for two phases).
    pub more_phases: [Option<Address>; 2],
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
    /// One meter at `address`.
    pub fn single(address: Address, model: ModelChoice, role: Option<Role>) -> MeterSpec {
        MeterSpec {
            address,
            more_phases: [None; 2],
            model,
            role,
        }
    }

    /// The addresses of its meters, L1 first.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        std::iter::once(self.address).chain(self.more_phases.iter().flatten().copied())
    }

    /// How many phases (meters) it has: 1 for a single meter.
    pub fn phase_count(&self) -> usize {
        1 + self.more_phases.iter().flatten().count()
    }

    /// Parse `ADDR[+ADDR[+ADDR]]:MODEL[:ROLE]` (fields may also be separated by
    /// white space).
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
        let mut group = addr.split('+');
        let first = group.next().unwrap_or(addr);
        let (address, model) =
            parse_address_and_model(first, model).map_err(|e| SpecError(format!("'{text}': {e}")))?;
        let mut more_phases = [None; 2];
        for (n, phase) in group.enumerate() {
            let Some(slot) = more_phases.get_mut(n) else {
                return Err(SpecError(format!(
                    "'{text}': a group has at most three meters, L1+L2+L3"
                )));
            };
            let (a, _) = parse_address_and_model(phase, "ac").map_err(|e| SpecError(format!("'{text}': {e}")))?;
            *slot = Some(a);
        }
        if more_phases[0].is_some() && !matches!(model, ModelChoice::Known(m) if m.family() == Family::Ac) {
            return Err(SpecError(format!(
                "'{text}': only AC meters (016, 014, 004t, ac) can be grouped into phases, and the model must be named"
            )));
        }
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
        let spec = MeterSpec {
            address,
            more_phases,
            model,
            role,
        };
        let mut seen: Vec<Address> = Vec::with_capacity(3);
        for a in spec.addresses() {
            if seen.contains(&a) {
                return Err(SpecError(format!("'{text}': address {a} is in the group twice")));
            }
            seen.push(a);
        }
        Ok(spec)
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

/// Parse a config file's meters (the lines before the first section header
/// and in `[meters]`; other sections are not looked at); an error names the
/// line.
pub fn parse_config(text: &str) -> Result<Vec<MeterSpec>, SpecError> {
    let file = split_sections(text)?;
    let mut meters: Vec<MeterSpec> = Vec::new();
    for (n, line) in &file.meter_lines {
        let spec = MeterSpec::parse(line).map_err(|e| SpecError(format!("line {n}: {e}")))?;
        check_unique(&meters, &spec).map_err(|e| SpecError(format!("line {n}: {e}")))?;
        meters.push(spec);
    }
    Ok(meters)
}

/// The name of the section that holds meter lines (besides the lines before
/// the first header).
pub const METERS_SECTION: &str = "meters";

/// The sections the project's programs read; [`ConfigFile::unknown_sections`]
/// lists the others (a typo, or a newer program's). `[install]` is read by the
/// GX scripts (`scripts/venus/`: which services run, the adapter pin), not by a binary.
pub const KNOWN_SECTIONS: [&str; 5] = [METERS_SECTION, "energy", "logger", "web", "install"];

/// One `[name]` section other than the meters, its lines not interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// The line number of its header (1-based).
    pub line: usize,
    /// Its non-empty lines, comments removed and trimmed, with their line
    /// numbers.
    pub lines: Vec<(usize, String)>,
}

/// A config file split into meter lines and sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// The meter lines (before the first header, and in `[meters]`), comments
    /// removed and trimmed, with their line numbers.
    pub meter_lines: Vec<(usize, String)>,
    /// Every other section, in file order (a name may repeat).
    pub sections: Vec<Section>,
}

impl ConfigFile {
    /// Sections whose names no program of the project reads, with their
    /// header lines: worth a warning (a typo such as `[enrgy]`).
    pub fn unknown_sections(&self) -> impl Iterator<Item = &Section> {
        self.sections
            .iter()
            .filter(|s| !KNOWN_SECTIONS.contains(&s.name.as_str()))
    }
}

/// Split a config file into meter lines and sections. Only the headers are
/// checked: `[name]` with a name of lower-case letters, digits and `-`; an
/// error names the line and shows the fix.
pub fn split_sections(text: &str) -> Result<ConfigFile, SpecError> {
    let mut file = ConfigFile::default();
    // `None`: in the meter lines.
    let mut current: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') || line.ends_with(']') {
            let name = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .map(str::trim)
                .filter(|name| {
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                .ok_or_else(|| {
                    SpecError(format!(
                        "line {n}: '{line}' is not a section header; write it as [name] on a line of its own, \
                         e.g. [energy]"
                    ))
                })?;
            if name == METERS_SECTION {
                current = None;
            } else {
                file.sections.push(Section {
                    name: name.to_string(),
                    line: n,
                    lines: Vec::new(),
                });
                current = Some(file.sections.len() - 1);
            }
            continue;
        }
        match current {
            None => file.meter_lines.push((n, line.to_string())),
            Some(s) => file.sections[s].lines.push((n, line.to_string())),
        }
    }
    Ok(file)
}

/// One `key = value` line of a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its line number (1-based), for error messages.
    pub line: usize,
    /// The key.
    pub key: String,
    /// The value, trimmed (never empty).
    pub value: String,
}

/// The entries of section `[name]` of a config file, for the program that
/// owns it; `Ok(None)` when the file has no such section. Each line is
/// `key = value` or `key value`; an error names the line and the fix: a
/// line without a value, a key not in `keys`, a key given twice, the
/// section given twice.
pub fn section_entries(text: &str, name: &str, keys: &[&str]) -> Result<Option<Vec<Entry>>, SpecError> {
    let file = split_sections(text)?;
    let mut found = file.sections.iter().filter(|s| s.name == name);
    let Some(section) = found.next() else {
        return Ok(None);
    };
    if let Some(again) = found.next() {
        return Err(SpecError(format!(
            "line {}: a second [{name}] section (the first is on line {}); put all its keys in one",
            again.line, section.line
        )));
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (n, line) in &section.lines {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => line
                .split_once(char::is_whitespace)
                .map_or((line.as_str(), ""), |(k, v)| (k.trim(), v.trim())),
        };
        if !keys.contains(&key) {
            return Err(SpecError(format!(
                "line {n}: unknown key '{key}' in [{name}]; the keys are {}",
                keys.join(", ")
            )));
        }
        if value.is_empty() {
            return Err(SpecError(format!(
                "line {n}: '{key}' has no value; write {key} = VALUE"
            )));
        }
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err(SpecError(format!(
                "line {n}: '{key}' is given twice in [{name}] (first on line {}); keep one",
                first.line
            )));
        }
        entries.push(Entry {
            line: *n,
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(Some(entries))
}

/// Refuse a second meter at an address already used (alone or in a group).
pub fn check_unique(meters: &[MeterSpec], spec: &MeterSpec) -> Result<(), SpecError> {
    match spec
        .addresses()
        .find(|a| meters.iter().any(|m| m.addresses().any(|b| b == *a)))
    {
        Some(a) => Err(SpecError(format!(
            "address {a} is given twice; every meter on a line needs its own"
        ))),
        None => Ok(()),
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
    fn phase_groups() {
        let s = MeterSpec::parse("1+2+3:016:grid").unwrap();
        let a = |n| Address::unit(n).unwrap();
        assert_eq!(s.addresses().collect::<Vec<_>>(), vec![a(1), a(2), a(3)]);
        assert_eq!((s.address, s.phase_count()), (a(1), 3));
        let s = MeterSpec::parse("7+9 ac").unwrap();
        assert_eq!((s.phase_count(), s.more_phases), (2, [Some(a(9)), None]));
        assert_eq!(MeterSpec::parse("4 016").unwrap().phase_count(), 1);
        for (bad, says) in [
            ("1+2+3+4:016:grid", "at most three"),
            ("1+2:017:dcload", "only AC meters"),
            ("1+2:auto:grid", "only AC meters"),
            ("1+1:016:grid", "in the group twice"),
            ("1+0xF8:016:grid", "general address"),
            ("1+x:016:grid", "'1+x:016:grid'"),
        ] {
            let e = MeterSpec::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
        let e = parse_config("1+2+3 016 grid\n3 017 dcload\n").unwrap_err();
        assert!(
            e.0.starts_with("line 2:") && e.0.contains("address 3 is given twice"),
            "{e}"
        );
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

    const WITH_SECTIONS: &str = "\
# meters first
1 016 grid
[energy]
ac-in = com.victronenergy.grid.a   # the grid side
ac-out com.victronenergy.acload.b
this line is not a meter = and pzem-dbus does not care
[meters]
2 016 acload
[future-thing]
whatever
";

    #[test]
    fn meters_ignore_other_sections() {
        let m = parse_config(WITH_SECTIONS).unwrap();
        assert_eq!(m.iter().map(|s| s.address.get()).collect::<Vec<_>>(), [1, 2]);
        let e = parse_config("1 016 grid\n[meters]\n1 017\n").unwrap_err();
        assert!(e.0.starts_with("line 3:") && e.0.contains("twice"), "{e}");
        let file = split_sections(WITH_SECTIONS).unwrap();
        assert_eq!(
            file.meter_lines,
            [(2, "1 016 grid".to_string()), (8, "2 016 acload".to_string())]
        );
        assert_eq!(file.sections.len(), 2);
        assert_eq!(file.sections[0].line, 3);
        assert_eq!(
            file.sections[0].lines[0],
            (4, "ac-in = com.victronenergy.grid.a".to_string())
        );
        assert_eq!(
            file.unknown_sections().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["future-thing"]
        );
    }

    #[test]
    fn malformed_headers_are_errors_for_everyone() {
        for bad in ["[energy", "energy]", "[Energy]", "[]", "[en ergy]", "[a] b"] {
            let text = format!("1 016 grid\n{bad}\n");
            let e = parse_config(&text).unwrap_err();
            assert!(e.0.starts_with("line 2:") && e.0.contains("[name]"), "{bad}: {e}");
            assert!(section_entries(&text, "energy", &[]).is_err());
        }
        assert!(
            split_sections("[ energy ]\n").is_ok(),
            "spaces inside the brackets are fine"
        );
    }

    #[test]
    fn section_entries_name_the_line_and_the_fix() {
        let keys = ["ac-in", "ac-out", "state"];
        let text = "[energy]\nac-in = a.b\nac-out   c.d\n";
        let e = section_entries(text, "energy", &keys).unwrap().unwrap();
        assert_eq!(
            e,
            [
                Entry {
                    line: 2,
                    key: "ac-in".into(),
                    value: "a.b".into()
                },
                Entry {
                    line: 3,
                    key: "ac-out".into(),
                    value: "c.d".into()
                }
            ]
        );
        assert_eq!(section_entries("1 016\n", "energy", &keys).unwrap(), None);
        let err = |t: &str| section_entries(t, "energy", &keys).unwrap_err().0;
        assert_eq!(
            err("[energy]\nacin = x\n"),
            "line 2: unknown key 'acin' in [energy]; the keys are ac-in, ac-out, state"
        );
        assert_eq!(
            err("[energy]\n\nstate =\n"),
            "line 3: 'state' has no value; write state = VALUE"
        );
        assert_eq!(
            err("[energy]\nstate\n"),
            "line 2: 'state' has no value; write state = VALUE"
        );
        assert_eq!(
            err("[energy]\nstate = a\nstate = b\n"),
            "line 3: 'state' is given twice in [energy] (first on line 2); keep one"
        );
        assert_eq!(
            err("[energy]\nstate = a\n[energy]\n"),
            "line 3: a second [energy] section (the first is on line 1); put all its keys in one"
        );
        // The meters are not the energy section's business.
        assert!(section_entries("1 018 nonsense\n[energy]\nstate = s\n", "energy", &keys).is_ok());
    }
}
