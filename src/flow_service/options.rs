//! pzem-energy's options: flags over the `[energy]` section of the config file pzem-dbus
//! also reads (`/data/conf/pzem.conf`), over defaults. Every error names where the bad
//! value came from (the flag, or the file and line) and what would be right.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dbus::Bus;
use crate::energy_flow::FlowConfig;
use crate::venus::config::{ConfigFile, DEFAULT_CONFIG, read_config_with, section_entries, split_sections};

use super::machine::{PublishMode, ServiceConfig};
use super::service_loop::Config;

/// The state file when none is configured (`/data` survives firmware updates).
pub const DEFAULT_STATE: &str = "/data/var/lib/pzem-venus/pzem-energy.state";
/// The config file's section for pzem-energy.
pub const SECTION: &str = "energy";
/// The keys of the `[energy]` section; each is also a flag (`--ac-in` …).
pub const KEYS: [&str; 8] = [
    "ac-in",
    "ac-out",
    "battery",
    "publish",
    "state",
    "settle-ms",
    "save-ms",
    "max-power-w",
];

/// How long to wait for localsettings at start-up, by default.
pub const DEFAULT_SETTINGS_WAIT: Duration = Duration::from_secs(10);
/// How long pzem-energy waits at start-up for the VE.Bus devices' instances.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(3);
/// How long a read of another service may take; also the retry interval.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The flags as given (each `None` when absent): what [`resolve`] starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `-c FILE`.
    pub config: Option<String>,
    /// `--ac-in`, `--ac-out`, `--battery`, `--publish`, `--state`, `--settle-ms`,
    /// `--save-ms`, `--max-power-w`, in [`KEYS`] order.
    pub values: [Option<String>; 8],
    /// `--dbus ADDRESS`.
    pub dbus: Option<String>,
    /// `--settings-wait S`.
    pub settings_wait: Option<String>,
}

impl Flags {
    /// The flag for `key` (one of [`KEYS`]).
    pub fn value(&self, key: &str) -> Option<&str> {
        KEYS.iter()
            .position(|k| *k == key)
            .and_then(|i| self.values[i].as_deref())
    }
}

/// One setting's value and where it came from, for error messages.
struct Given {
    value: String,
    from: String,
}

/// Where each key's value comes from: the flag wins over the file.
struct Sources<'a> {
    flags: &'a Flags,
    file: Vec<(String, usize, String)>,
    path: String,
}

impl Sources<'_> {
    fn get(&self, key: &str) -> Option<Given> {
        if let Some(v) = self.flags.value(key) {
            return Some(Given {
                value: v.to_owned(),
                from: format!("--{key}"),
            });
        }
        self.file.iter().find(|(k, _, _)| k == key).map(|(_, line, v)| Given {
            value: v.clone(),
            from: format!("{}: line {line}: {key}", self.path),
        })
    }
}

fn number(given: Option<Given>, default: u64, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let Some(g) = given else { return Ok(default) };
    match g.value.parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{} takes whole {unit} from {min} to {max}, not '{}'",
            g.from, g.value
        )),
    }
}

/// Whether `name` can be a Venus service to read: `com.victronenergy.<class>.<suffix>`,
/// D-Bus name elements of `[A-Za-z0-9_-]` not starting with a digit.
pub fn check_service(name: &str) -> Result<(), String> {
    let Some(rest) = name.strip_prefix("com.victronenergy.") else {
        return Err(format!(
            "'{name}' is not a Venus service name; it starts with com.victronenergy., e.g. \
             com.victronenergy.grid.pzem_ttyUSB0_1"
        ));
    };
    let elements: Vec<&str> = rest.split('.').collect();
    let ok = name.len() <= 255
        && elements.len() >= 2
        && elements.iter().all(|e| {
            !e.is_empty()
                && !e.starts_with(|c: char| c.is_ascii_digit())
                && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid service name: com.victronenergy.<class>.<suffix>, each part of letters, \
             digits, _ and -, not starting with a digit"
        ))
    }
}

fn service(given: Option<Given>, what: &str, flag: &str, config: &str) -> Result<String, String> {
    let Some(g) = given else {
        return Err(format!(
            "no {what}: give --{flag} SERVICE, or {flag} = SERVICE in the [{SECTION}] section of {config}"
        ));
    };
    check_service(&g.value).map_err(|e| format!("{}: {e}", g.from))?;
    for mode in [PublishMode::Vebus, PublishMode::Own] {
        if g.value == mode.service_name() {
            return Err(format!("{}: {} is pzem-energy's own service", g.from, g.value));
        }
    }
    Ok(g.value)
}

/// The options pzem-energy runs with, and warnings worth a log line (sections of the file
/// that no program reads, e.g. a misspelt `[energy]`).
pub fn resolve(flags: &Flags, read: &dyn Fn(&Path) -> io::Result<String>) -> Result<(Config, Vec<String>), String> {
    let mut warnings = Vec::new();
    let (path, file) = match read_config_with(flags.config.as_deref(), read)? {
        Some((path, text)) => {
            let split: ConfigFile = split_sections(&text).map_err(|e| format!("{path}: {e}"))?;
            for s in split.unknown_sections() {
                warnings.push(format!(
                    "{path}: line {}: section [{}] is read by no program (pzem-energy reads [{SECTION}])",
                    s.line, s.name
                ));
            }
            let entries = section_entries(&text, SECTION, &KEYS)
                .map_err(|e| format!("{path}: {e}"))?
                .unwrap_or_default();
            let file = entries.into_iter().map(|e| (e.key, e.line, e.value)).collect();
            (path, file)
        }
        None => (DEFAULT_CONFIG.to_owned(), Vec::new()),
    };
    let src = Sources { flags, file, path };
    let ac_in = service(src.get("ac-in"), "AC-input meter", "ac-in", &src.path)?;
    let ac_out = service(src.get("ac-out"), "AC-output meter", "ac-out", &src.path)?;
    if ac_in == ac_out {
        return Err(format!(
            "the AC-input and AC-output meters are both {ac_in}; they must be two meters"
        ));
    }
    let battery = match src.get("battery") {
        None => None,
        Some(g) if g.value == "auto" => None,
        given => Some(service(given, "battery monitor", "battery", &src.path)?),
    };
    if let Some(b) = &battery
        && (*b == ac_in || *b == ac_out)
    {
        return Err(format!("the battery monitor {b} is also an AC meter"));
    }
    let publish = match src.get("publish") {
        None => PublishMode::Vebus,
        Some(g) => g.value.parse().map_err(|e| format!("{}: {e}", g.from))?,
    };
    let state = src
        .get("state")
        .map_or_else(|| PathBuf::from(DEFAULT_STATE), |g| PathBuf::from(g.value));
    let settle_ms = number(src.get("settle-ms"), 2_000, 0, 300_000, "milliseconds")?;
    let save_ms = number(src.get("save-ms"), 60_000, 100, 60_000, "milliseconds")?;
    let max_power_w = number(src.get("max-power-w"), 20_000, 100, 1_000_000, "watts")?;
    let settings_wait = match &flags.settings_wait {
        None => DEFAULT_SETTINGS_WAIT,
        Some(t) => match t.parse::<u64>() {
            Ok(v) if v <= 600 => Duration::from_secs(v),
            _ => return Err(format!("--settings-wait takes whole seconds from 0 to 600, not '{t}'")),
        },
    };
    let config = Config {
        service: ServiceConfig {
            ac_in,
            ac_out,
            battery,
            publish,
            flow: FlowConfig {
                settle: Duration::from_millis(settle_ms),
                save_within: Duration::from_millis(save_ms),
                max_power_w,
                ..FlowConfig::default()
            },
            discovery_wait: DISCOVERY_WAIT,
            read_timeout: READ_TIMEOUT,
        },
        state_path: state,
        bus: Bus::from_flag(flags.dbus.as_deref()),
        settings_wait,
    };
    Ok((config, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = "com.victronenergy.grid.pzem_ttyUSB0_1";
    const LOADS: &str = "com.victronenergy.acload.pzem_ttyUSB0_2";

    fn flags(pairs: &[(&str, &str)]) -> Flags {
        let mut f = Flags::default();
        for (k, v) in pairs {
            match *k {
                "c" => f.config = Some(v.to_string()),
                "dbus" => f.dbus = Some(v.to_string()),
                "settings-wait" => f.settings_wait = Some(v.to_string()),
                key => f.values[KEYS.iter().position(|x| *x == key).unwrap()] = Some(v.to_string()),
            }
        }
        f
    }

    fn no_file(_: &Path) -> io::Result<String> {
        Err(io::ErrorKind::NotFound.into())
    }

    fn file(text: &'static str) -> impl Fn(&Path) -> io::Result<String> {
        move |_| Ok(text.to_string())
    }

    #[test]
    fn flags_alone_with_defaults() {
        let (c, w) = resolve(&flags(&[("ac-in", GRID), ("ac-out", LOADS)]), &no_file).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.service.ac_in, GRID);
        assert_eq!(c.service.battery, None);
        assert_eq!(c.service.publish, PublishMode::Vebus);
        assert_eq!(c.service.flow, FlowConfig::default());
        assert_eq!(c.state_path, PathBuf::from(DEFAULT_STATE));
        assert_eq!(c.bus, Bus::System);
        assert_eq!(c.settings_wait, DEFAULT_SETTINGS_WAIT);
    }

    #[test]
    fn the_file_fills_in_and_flags_override() {
        let text = "1 016 grid\n2 016 acload\n[energy]\nac-in = com.victronenergy.grid.pzem_ttyUSB0_1\n\
                    ac-out com.victronenergy.acload.pzem_ttyUSB0_2\nbattery = com.victronenergy.battery.ttyO2\n\
                    publish = own\nstate = /data/x.state\nsettle-ms = 5000\nsave-ms = 30000\nmax-power-w = 9000\n\
                    [enrgy]\n";
        let (c, w) = resolve(&flags(&[("c", "/etc/p.conf"), ("settle-ms", "100")]), &file(text)).unwrap();
        assert_eq!(c.service.ac_out, LOADS);
        assert_eq!(c.service.battery.as_deref(), Some("com.victronenergy.battery.ttyO2"));
        assert_eq!(c.service.publish, PublishMode::Own);
        assert_eq!(c.state_path, PathBuf::from("/data/x.state"));
        assert_eq!(c.service.flow.settle, Duration::from_millis(100), "the flag wins");
        assert_eq!(c.service.flow.save_within, Duration::from_secs(30));
        assert_eq!(c.service.flow.max_power_w, 9000);
        assert_eq!(
            w,
            ["/etc/p.conf: line 12: section [enrgy] is read by no program (pzem-energy reads [energy])"]
        );
        // battery = auto: the system's.
        let (c, _) = resolve(
            &flags(&[("ac-in", GRID), ("ac-out", LOADS), ("battery", "auto")]),
            &no_file,
        )
        .unwrap();
        assert_eq!(c.service.battery, None);
    }

    #[test]
    fn errors_say_where_and_what_is_right() {
        let err = |f: Flags, read: &dyn Fn(&Path) -> io::Result<String>| resolve(&f, read).unwrap_err();
        assert_eq!(
            err(flags(&[("ac-out", LOADS)]), &no_file),
            "no AC-input meter: give --ac-in SERVICE, or ac-in = SERVICE in the [energy] section of \
             /data/conf/pzem.conf"
        );
        assert!(err(flags(&[("ac-in", "grid"), ("ac-out", LOADS)]), &no_file).starts_with("--ac-in: 'grid' is not"));
        assert!(
            err(
                flags(&[("ac-in", "com.victronenergy.grid.1x"), ("ac-out", LOADS)]),
                &no_file
            )
            .contains("not a valid service name")
        );
        assert!(err(flags(&[("ac-in", GRID), ("ac-out", GRID)]), &no_file).contains("must be two meters"));
        assert!(
            err(
                flags(&[("ac-in", GRID), ("ac-out", LOADS), ("battery", GRID)]),
                &no_file
            )
            .contains("also an AC meter")
        );
        assert!(
            err(
                flags(&[("ac-in", "com.victronenergy.vebus.pzem_energy"), ("ac-out", LOADS)]),
                &no_file
            )
            .contains("pzem-energy's own service")
        );
        assert_eq!(
            err(
                flags(&[("ac-in", GRID), ("ac-out", LOADS), ("publish", "vebus2")]),
                &no_file
            ),
            "--publish: 'vebus2' is not a publish mode; use vebus or own"
        );
        assert_eq!(
            err(
                flags(&[("ac-in", GRID), ("ac-out", LOADS), ("save-ms", "90000")]),
                &no_file
            ),
            "--save-ms takes whole milliseconds from 100 to 60000, not '90000'"
        );
        let bad_file = "[energy]\nac-in = com.victronenergy.grid.a\nac-out = com.victronenergy.acload.b\n\
                        settle-ms = soon\n";
        assert_eq!(
            err(flags(&[("c", "/p.conf")]), &file(bad_file)),
            "/p.conf: line 4: settle-ms takes whole milliseconds from 0 to 300000, not 'soon'"
        );
        assert_eq!(
            err(flags(&[("c", "/p.conf")]), &file("[energy]\nac_in = x\n")),
            "/p.conf: line 2: unknown key 'ac_in' in [energy]; the keys are ac-in, ac-out, battery, publish, \
             state, settle-ms, save-ms, max-power-w"
        );
        assert!(err(flags(&[("c", "/nope.conf")]), &no_file).starts_with("cannot read /nope.conf"));
        assert!(
            err(
                flags(&[("ac-in", GRID), ("ac-out", LOADS), ("settings-wait", "-1")]),
                &no_file
            )
            .starts_with("--settings-wait")
        );
        // The meters are pzem-dbus's business, even when wrong.
        let meters_wrong = "1 018 nonsense\n[energy]\nac-in = com.victronenergy.grid.a\n\
                            ac-out = com.victronenergy.acload.b\n";
        assert!(resolve(&flags(&[("c", "/p.conf")]), &file(meters_wrong)).is_ok());
    }
}
