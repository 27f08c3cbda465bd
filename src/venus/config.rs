//! Which meters to publish: `-m ADDR:MODEL:ROLE[:NAME]` flags and the config file.
//!
//! The config file (default `/data/conf/pzem.conf`) holds one meter per
//! line, the same fields as `-m`, separated by `:` or white space; `#`
//! starts a comment:
//!
//! ```text
//! # address  model  role      name (optional, shown until the GUI gives one)
//! 1          016    grid      Mains
//! 2:016:acload
//! 3          017    dcsource  Wind charger
//! ```
//!
//! The role may be left out (then the name too): AC meters default to
//! `grid`, DC to `dcsource`, and `auto` models get the default of what they
//! turn out to be.
//!
//! Two or three single-phase AC meters make one two- or three-phase meter
//! when their addresses are joined with `+`, in phase order L1, L2, L3:
//! `1+2+3:016:grid` (or `1+2+3 016 grid`) is one service named after
//! address 1.
//!
//! # Sections
//!
//! One file configures every program of the project: a line `[name]` starts
//! a section that belongs to one program, up to the next header. The general
//! meter lines are those before the first header, and those of a `[meters]`
//! section (pzem-dbus's); they apply to every line pzem-dbus runs on. A
//! `[meters PORT]` section holds the meters of one line, named by its tty
//! (`ttyUSB0`), its adapter's USB serial number or a gateway's `host:port`
//! ([`port_config`]). A meters section may also set the poll timing:
//! `interval-ms = MS` and `timeout-ms = MS`.
//!
//! Each program reads its own sections and ignores the others' contents
//! ([`split_sections`]); a malformed header is an error for every program,
//! since no one can tell whose lines follow it. Sections other than the
//! meters hold `key = value` lines (or `key value`), read with
//! [`section_entries`]:
//!
//! ```text
//! 1 016 grid
//! 2 016 acload
//!
//! [meters A10K3x9]
//! interval-ms = 500
//! 1 017 dcsource
//!
//! [energy]
//! ac-in  = com.victronenergy.grid.pzem_ttyUSB0_1
//! ac-out = com.victronenergy.acload.pzem_ttyUSB0_2
//! ```

use std::fmt;
use std::time::Duration;

use crate::address::Address;
use crate::model::{Family, ModelChoice, UnknownModel};

use super::naming::{MAX_CUSTOM_NAME, valid_custom_name};
use super::role::Role;

/// One meter to publish: a single meter, or single-phase AC meters grouped
/// as one multi-phase meter.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Its name, shown while the GUI has given it none (`/CustomName`).
    pub name: Option<String>,
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
            name: None,
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

    /// Parse `ADDR[+ADDR[+ADDR]]:MODEL[:ROLE[:NAME]]` (fields may also be
    /// separated by white space). The name is the rest of the text after the
    /// role, spaces included, optionally in double quotes.
    pub fn parse(text: &str) -> Result<MeterSpec, SpecError> {
        let is_separator = |c: char| c == ':' || c.is_whitespace();
        let mut fields: Vec<&str> = Vec::with_capacity(3);
        let mut rest = text.trim_start_matches(is_separator);
        while fields.len() < 3 && !rest.is_empty() {
            let end = rest.find(is_separator).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start_matches(is_separator);
        }
        let (addr, model, role) = match fields.as_slice() {
            [a, m] => (*a, *m, None),
            [a, m, r] => (*a, *m, Some(*r)),
            _ => {
                return Err(SpecError(format!(
                    "'{text}': expected ADDRESS:MODEL:ROLE, e.g. 1:016:grid"
                )));
            }
        };
        let name = match rest.trim() {
            "" => None,
            n => {
                let n = match n.strip_prefix('"') {
                    None => n,
                    Some(quoted) => match quoted.find('"') {
                        Some(end) if end + 1 == quoted.len() => quoted[..end].trim(),
                        Some(_) => {
                            return Err(SpecError(format!(
                                "'{text}': nothing may follow the quoted name's closing quote"
                            )));
                        }
                        None => {
                            return Err(SpecError(format!(
                                "'{text}': the quoted name has no closing quote (in the config file, # starts a comment)"
                            )));
                        }
                    },
                };
                if !valid_custom_name(n) {
                    return Err(SpecError(format!(
                        "'{text}': the name after the role is at most {MAX_CUSTOM_NAME} bytes, without tabs or other control characters"
                    )));
                }
                (!n.is_empty()).then(|| n.to_string())
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
            Some(r) => Some(r.parse::<Role>().map_err(|e| {
                let hint = if name.is_some() {
                    " (a name comes after the role)"
                } else {
                    ""
                };
                SpecError(format!("'{text}': {e}{hint}"))
            })?),
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
            name,
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

/// Where every program looks for the config file when not told otherwise.
pub const DEFAULT_CONFIG: &str = "/data/conf/pzem.conf";

/// The config file's path and text: `explicit` (`-c FILE`), which must be
/// readable, else [`DEFAULT_CONFIG`] when it exists; `Ok(None)` when there
/// is none. An error says which file could not be read and why.
pub fn read_config(explicit: Option<&str>) -> Result<Option<(String, String)>, String> {
    read_config_with(explicit, &|p| std::fs::read_to_string(p))
}

/// [`read_config`] with the reading done by `read` (tests hand in files).
pub fn read_config_with(
    explicit: Option<&str>,
    read: &dyn Fn(&std::path::Path) -> std::io::Result<String>,
) -> Result<Option<(String, String)>, String> {
    let path = explicit.unwrap_or(DEFAULT_CONFIG);
    match read(std::path::Path::new(path)) {
        Ok(text) => Ok(Some((path.to_owned(), text))),
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

/// What the config file says for one line: its meters and poll timing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// The meters, in file order; empty: none configured (pzem-dbus scans).
    pub meters: Vec<MeterSpec>,
    /// `interval-ms`: time between polls of each meter (zero: back to back).
    pub interval: Option<Duration>,
    /// `timeout-ms`: the reply timeout.
    pub timeout: Option<Duration>,
}

/// The keys a meters section may hold besides meter lines.
pub const METER_KEYS: [&str; 2] = ["interval-ms", "timeout-ms"];

/// The shortest reply timeout accepted, ms: a PZEM needs more than this to
/// answer at all.
pub const MIN_TIMEOUT_MS: u64 = 20;

/// The longest poll interval or reply timeout accepted, ms (an hour).
pub const MAX_TIMING_MS: u64 = 3_600_000;

/// Parse a config file's meter sections for the line known by `names` (its
/// tty's base name, its adapter's USB serial number, or `host:port`).
///
/// The general meter lines (before the first header and in `[meters]`)
/// apply to every line; a `[meters PORT]` section whose PORT is one of
/// `names` replaces them for that line, its meters and keys each taking the
/// place of the general ones when it has any. Every meters section is
/// checked, whichever line it is for, so that a mistake is found on any
/// line; an error names the line and the fix.
pub fn port_config(text: &str, names: &[&str]) -> Result<PortConfig, SpecError> {
    let file = split_sections(text)?;
    let general = meters_section(&file.meter_lines)?;
    let mut chosen: Option<(PortConfig, &str, usize)> = None;
    let mut ports: Vec<(&str, usize)> = Vec::new();
    for section in file.sections.iter().filter(|s| s.name == METERS_SECTION) {
        let Some(port) = section.port.as_deref() else {
            continue;
        };
        if let Some((_, first)) = ports.iter().find(|(p, _)| *p == port) {
            return Err(SpecError(format!(
                "line {}: a second [meters {port}] section (the first is on line {first}); put all its meters in one",
                section.line
            )));
        }
        ports.push((port, section.line));
        let own = meters_section(&section.lines)?;
        if names.contains(&port) {
            if let Some((_, first_port, first_line)) = &chosen {
                return Err(SpecError(format!(
                    "line {}: [meters {port}] and [meters {first_port}] (line {first_line}) are the same line; \
                     keep one (the USB serial number stays right when the adapter moves to another socket)",
                    section.line
                )));
            }
            chosen = Some((own, port, section.line));
        }
    }
    Ok(match chosen {
        None => general,
        Some((own, _, _)) => PortConfig {
            meters: if own.meters.is_empty() {
                general.meters
            } else {
                own.meters
            },
            interval: own.interval.or(general.interval),
            timeout: own.timeout.or(general.timeout),
        },
    })
}

/// The general meters of a config file (before the first header and in
/// `[meters]`), as [`port_config`] gives them to a line without a section of
/// its own.
pub fn parse_config(text: &str) -> Result<Vec<MeterSpec>, SpecError> {
    Ok(port_config(text, &[])?.meters)
}

/// Whether `text` could be a key (`interval-ms`): a meter line's text
/// before an `=` in its name is not.
fn is_key_word(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// One meters section: meter lines, and `key = value` lines of [`METER_KEYS`].
fn meters_section(lines: &[(usize, String)]) -> Result<PortConfig, SpecError> {
    let mut config = PortConfig::default();
    let mut keys_seen: Vec<(&str, usize)> = Vec::new();
    for (n, line) in lines {
        let n = *n;
        let key_line = line.split_once('=').filter(|(k, _)| is_key_word(k.trim()));
        if let Some((key, value)) = key_line {
            let (key, value) = (key.trim(), value.trim());
            let Some(key) = METER_KEYS.iter().copied().find(|k| *k == key) else {
                return Err(SpecError(format!(
                    "line {n}: unknown key '{key}' among the meters; the keys are {}",
                    METER_KEYS.join(", ")
                )));
            };
            if let Some((_, first)) = keys_seen.iter().find(|(k, _)| *k == key) {
                return Err(SpecError(format!(
                    "line {n}: '{key}' is given twice in this section (first on line {first}); keep one"
                )));
            }
            keys_seen.push((key, n));
            let min = if key == "timeout-ms" { MIN_TIMEOUT_MS } else { 0 };
            let ms = match value.parse::<u64>() {
                Ok(v) if (min..=MAX_TIMING_MS).contains(&v) => v,
                _ => {
                    return Err(SpecError(format!(
                        "line {n}: {key} takes whole milliseconds from {min} to {MAX_TIMING_MS}, not '{value}'"
                    )));
                }
            };
            let slot = if key == "timeout-ms" {
                &mut config.timeout
            } else {
                &mut config.interval
            };
            *slot = Some(Duration::from_millis(ms));
            continue;
        }
        let spec = MeterSpec::parse(line).map_err(|e| SpecError(format!("line {n}: {e}")))?;
        check_unique(&config.meters, &spec).map_err(|e| SpecError(format!("line {n}: {e}")))?;
        config.meters.push(spec);
    }
    Ok(config)
}

/// The name of the section that holds meter lines (besides the lines before
/// the first header).
pub const METERS_SECTION: &str = "meters";

/// The sections the project's programs read; [`ConfigFile::unknown_sections`]
/// lists the others (a typo, or a newer program's). `[install]` is read by the
/// GX scripts (`scripts/venus/`: which services run, the adapter pin), not by a binary.
pub const KNOWN_SECTIONS: [&str; 5] = [METERS_SECTION, "energy", "logger", "web", "install"];

/// One `[name]` section other than the general meters, its lines not
/// interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// For `[meters PORT]`, the port; `None` for every other section.
    pub port: Option<String>,
    /// The line number of its header (1-based).
    pub line: usize,
    /// Its non-empty lines, comments removed and trimmed, with their line
    /// numbers.
    pub lines: Vec<(usize, String)>,
}

/// A config file split into meter lines and sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// The general meter lines (before the first header, and in `[meters]`),
    /// comments removed and trimmed, with their line numbers.
    pub meter_lines: Vec<(usize, String)>,
    /// Every other section, `[meters PORT]` included, in file order (a name
    /// may repeat).
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
/// checked: `[name]` with a name of lower-case letters, digits and `-`, or
/// `[meters PORT]`; an error names the line and shows the fix.
pub fn split_sections(text: &str) -> Result<ConfigFile, SpecError> {
    let mut file = ConfigFile::default();
    // `None`: in the general meter lines.
    let mut current: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') || line.ends_with(']') {
            let (name, port) = parse_header(line).ok_or_else(|| {
                SpecError(format!(
                    "line {n}: '{line}' is not a section header; write it as [name] on a line of its own, \
                     e.g. [energy], or [meters PORT] for one line's meters (a meter's name ending in ] goes \
                     in double quotes)"
                ))
            })?;
            if name == METERS_SECTION && port.is_none() {
                current = None;
            } else {
                file.sections.push(Section {
                    name: name.to_string(),
                    port: port.map(str::to_string),
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

/// `[name]` or `[meters PORT]`: the name, and the port. A port is a tty's
/// base name, a USB serial number or `host:port`: letters, digits and
/// `._:+-` (the characters `[install] pin-adapter` accepts in a serial
/// number, `scripts/venus/common.sh`).
fn parse_header(line: &str) -> Option<(&str, Option<&str>)> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?.trim();
    let (name, port) = match inner.split_once(char::is_whitespace) {
        Some((name, port)) => (name, Some(port.trim())),
        None => (inner, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let port_ok = port.is_none_or(|p| {
        name == METERS_SECTION
            && !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'-'))
    });
    (name_ok && port_ok).then_some((name, port))
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

    #[test]
    fn names_follow_the_role() {
        let s = MeterSpec::parse("1 016 grid Main house").unwrap();
        assert_eq!((s.role, s.name.as_deref()), (Some(Role::Grid), Some("Main house")));
        let s = MeterSpec::parse("2:017:dcsource:Wind: north").unwrap();
        assert_eq!(s.name.as_deref(), Some("Wind: north"));
        let s = MeterSpec::parse("3 016 acload \"  Shed  \"").unwrap();
        assert_eq!(s.name.as_deref(), Some("Shed"));
        assert_eq!(MeterSpec::parse("4 016 acload").unwrap().name, None);
        assert_eq!(MeterSpec::parse("4 016 acload \"\"").unwrap().name, None);
        let e = MeterSpec::parse("5 016 Main house").unwrap_err();
        assert!(
            e.0.contains("unknown role") && e.0.contains("a name comes after the role"),
            "{e}"
        );
        let e = MeterSpec::parse(&format!("6 016 grid {}", "x".repeat(65))).unwrap_err();
        assert!(e.0.contains("at most 64 bytes"), "{e}");
        assert!(MeterSpec::parse(&format!("6 016 grid {}", "x".repeat(64))).is_ok());
        let e = MeterSpec::parse("7 016 grid \"Pump").unwrap_err();
        assert!(e.0.contains("no closing quote"), "{e}");
        for bad in ["7 016 grid \"Pump\" spare", "7 016 grid \"a\"b\""] {
            let e = MeterSpec::parse(bad).unwrap_err();
            assert!(e.0.contains("nothing may follow"), "{bad}: {e}");
        }
        let e = MeterSpec::parse("7 016 grid Pump\t2").unwrap_err();
        assert!(e.0.contains("without tabs"), "{e}");
        // In the file, a name may hold = and (quoted) ].
        let c = port_config("1 016 grid Heater P=2kW\n2 016 acload \"Pump [2]\"\n", &[]).unwrap();
        let names: Vec<_> = c.meters.iter().map(|m| m.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["Heater P=2kW", "Pump [2]"]);
        let e = port_config("1 016 grid Pump [2]\n", &[]).unwrap_err();
        assert!(e.0.contains("goes in double quotes"), "{e}");
    }

    #[test]
    fn the_installed_example_s_meter_lines_parse_when_uncommented() {
        let example = include_str!("../../scripts/venus/pzem.conf.example");
        let meters_part = example.split("# --- [install]").next().unwrap();
        let uncommented: String = meters_part
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with(|c: char| c.is_ascii_digit())
                    || l.starts_with("[meters ")
                    || l.starts_with("interval-ms =")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let everywhere = port_config(&uncommented, &["ttyUSB0"]).unwrap();
        assert_eq!(everywhere.meters.len(), 4);
        assert_eq!(everywhere.meters[3].name.as_deref(), Some("Roof array"));
        let own = port_config(&uncommented, &["ttyUSB1", "A10K3x9"]).unwrap();
        assert_eq!((own.meters.len(), own.interval), (1, Some(Duration::from_millis(500))));
    }

    const PORTS: &str = "\
interval-ms = 2000
1 016 grid House
2 016 acload
[meters ttyUSB1]
5 017 dcsource Wind
timeout-ms = 150
[energy]
ac-in = x
[meters A10K3x9]
interval-ms = 500
";

    #[test]
    fn each_line_gets_its_own_meters_and_timing() {
        let addresses = |c: &PortConfig| c.meters.iter().map(|m| m.address.get()).collect::<Vec<_>>();
        let ms = Duration::from_millis;
        // A line without a section of its own: the general meters and timing.
        let c = port_config(PORTS, &["ttyUSB0"]).unwrap();
        assert_eq!(addresses(&c), [1, 2]);
        assert_eq!((c.interval, c.timeout), (Some(ms(2000)), None));
        assert_eq!(c.meters[0].name.as_deref(), Some("House"));
        // Its own meters replace the general ones; its keys override theirs.
        let c = port_config(PORTS, &["ttyUSB1"]).unwrap();
        assert_eq!(addresses(&c), [5]);
        assert_eq!((c.interval, c.timeout), (Some(ms(2000)), Some(ms(150))));
        // Two sections naming one line: which one is meant is not for the order to decide.
        let e = port_config(PORTS, &["ttyUSB1", "A10K3x9"]).unwrap_err();
        assert!(
            e.0.starts_with("line 9: [meters A10K3x9] and [meters ttyUSB1] (line 4)"),
            "{e}"
        );
        // A section with keys only keeps the general meters.
        let c = port_config(PORTS, &["ttyUSB2", "A10K3x9"]).unwrap();
        assert_eq!(addresses(&c), [1, 2]);
        assert_eq!(c.interval, Some(ms(500)));
        assert_eq!(parse_config(PORTS).unwrap().len(), 2);
        // Only port sections: other lines scan (no meters).
        let c = port_config("[meters ttyUSB1]\n1 016\n", &["ttyUSB0"]).unwrap();
        assert_eq!(c, PortConfig::default());
        // A port may be host:port.
        let c = port_config("[meters 10.0.0.5:502]\n3 016\n", &["10.0.0.5:502"]).unwrap();
        assert_eq!(addresses(&c), [3]);
    }

    #[test]
    fn every_meters_section_is_checked_on_every_line() {
        let err = |t: &str| port_config(t, &["ttyUSB0"]).unwrap_err().0;
        assert!(err("[meters ttyUSB9]\n1 018\n").starts_with("line 2:"));
        assert_eq!(
            err("[meters ttyUSB9]\n1 016\n[meters ttyUSB9]\n"),
            "line 3: a second [meters ttyUSB9] section (the first is on line 1); put all its meters in one"
        );
        assert_eq!(
            err("interval = 5\n"),
            "line 1: unknown key 'interval' among the meters; the keys are interval-ms, timeout-ms"
        );
        assert_eq!(
            err("interval-ms = 5\ninterval-ms = 6\n"),
            "line 2: 'interval-ms' is given twice in this section (first on line 1); keep one"
        );
        assert_eq!(
            err("timeout-ms = 19\n"),
            "line 1: timeout-ms takes whole milliseconds from 20 to 3600000, not '19'"
        );
        assert!(err("interval-ms = -1\n").contains("not '-1'"));
        assert_eq!(
            port_config("interval-ms = 0\n", &[]).unwrap().interval,
            Some(Duration::ZERO),
            "0: back to back"
        );
        assert!(err("[meters ttyUSB1]\n1 016\n1 017\n").contains("twice"));
        // The same address on two lines is fine.
        assert!(port_config("1 016\n[meters ttyUSB1]\n1 016\n", &[]).is_ok());
        for bad in [
            "[energy ttyUSB0]",
            "[meters tty USB0]",
            "[meters tty/USB0]",
            "[meters ]x",
        ] {
            assert!(err(&format!("{bad}\n")).contains("[meters PORT]"), "{bad}");
        }
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
