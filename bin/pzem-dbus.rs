//! `pzem-dbus`: publish the PZEM meters on one line as Venus OS devices.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use getopts::Options;
use pzem::Line;
use pzem::cli::{self, Program};
use pzem::dbus::Bus;
use pzem::venus::config::{
    DEFAULT_CONFIG, MAX_TIMING_MS, MIN_TIMEOUT_MS, MeterSpec, PortConfig, check_unique, port_config, read_config,
    split_sections,
};
use pzem::venus::discovery::{DEFAULT_RANGE, parse_range};
use pzem::venus::meter_line::ExitReason;
use pzem::venus::presence::DEFAULT_FAILURES;
use pzem::venus::service_loop::{self, Config};

const DEFAULT_STATE_DIR: &str = "/data/var/lib/pzem-venus";

/// Defaults of the numeric flags (stated once: the help text is made from them).
const INTERVAL_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 300;
const SETTINGS_WAIT_S: u64 = 10;
const SILENT_EXIT_S: u64 = 60;

const HELP_TAIL: &str = "\
Meters: -m ADDR:MODEL:ROLE[:NAME], repeatable. MODEL is one of 016 014 004t
017 003 ac dc auto; ROLE is grid acload pvinverter genset evcharger heatpump
(AC) or dcsource dcload dcsystem alternator (DC); NAME is shown until one is
given in the GUI. Two or three AC meters make one multi-phase meter with their
addresses joined by + in phase order: -m 1+2+3:016:grid. Without -m, meters
come from the config file: one ADDR MODEL ROLE NAME per line (# comments), for
every line, or under [meters PORT] for the line whose tty (ttyUSB0), adapter
serial number or HOST:PORT is PORT; interval-ms = MS and timeout-ms = MS there
set what -i and -t set. Without meters, addresses 1-32
(--discover FROM-TO) are scanned for AC and DC meters; those found are
published (the first AC meter as grid, further ones as acload, DC meters as
dcsource) and remembered for the port, so a meter silent at the next start
is still published; --forget clears that memory.
Once a meter is registered in localsettings, its role there (set in the GUI)
wins over the configured one.

The bus: the D-Bus system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured), or --dbus.

Examples:
  pzem-dbus -d /dev/ttyUSB0 -m 1:016:grid -m 2:016:acload -m 3:017:dcsource
  pzem-dbus -d /dev/ttyUSB0 -m 1+2+3:016:grid -m 9:017:dcsource
  pzem-dbus -d /dev/ttyUSB0 -c /data/conf/pzem.conf
  pzem-dbus -d /dev/ttyUSB0 --discover 1-10
  pzem-dbus --tcp 192.168.1.50:502 --modbus-tcp -m 1:016:pvinverter
";

fn main() -> ExitCode {
    let program = Program {
        name: "pzem-dbus",
        usage: "pzem-dbus (-d TTY | --tcp HOST:PORT [--modbus-tcp]) [options]",
        help_tail: HELP_TAIL,
        exit_codes: ExitReason::ALL.iter().map(|r| (r.code(), r.meaning())).collect(),
        usage_code: ExitReason::Usage.code(),
    };
    let usage_error = |message: &str| program.usage_error(message);
    let mut opts = Options::new();
    opts.optopt("d", "device", "serial device of the RS-485 adapter", "TTY");
    opts.optopt(
        "",
        "tcp",
        "a serial-to-Ethernet gateway passing RTU frames",
        "HOST:PORT",
    );
    opts.optflag("", "modbus-tcp", "with --tcp: the gateway speaks Modbus TCP");
    opts.optmulti(
        "m",
        "meter",
        "a meter on the line (then no config file is read)",
        "ADDR:MODEL:ROLE[:NAME]",
    );
    opts.optopt(
        "c",
        "config",
        &format!("meters from this file (default {DEFAULT_CONFIG} if present)"),
        "FILE",
    );
    opts.optopt(
        "i",
        "interval",
        &format!("time between polls of each meter in ms, 0 = back to back (default {INTERVAL_MS})"),
        "MS",
    );
    opts.optopt(
        "t",
        "timeout",
        &format!("reply timeout in ms (default {TIMEOUT_MS})"),
        "MS",
    );
    opts.optopt("", "dbus", "D-Bus address instead of the system bus", "ADDRESS");
    opts.optopt(
        "",
        "state-dir",
        &format!("energy state directory (default {DEFAULT_STATE_DIR})"),
        "DIR",
    );
    opts.optopt(
        "",
        "settings-wait",
        &format!("seconds to wait for localsettings (default {SETTINGS_WAIT_S})"),
        "S",
    );
    opts.optopt(
        "",
        "silent-exit",
        &format!("exit after all meters were silent this long, 0 = never (default {SILENT_EXIT_S})"),
        "S",
    );
    opts.optopt(
        "",
        "discover",
        "without -m or a config file, scan these addresses (default 1-32)",
        "FROM-TO",
    );
    opts.optflag(
        "",
        "forget",
        "forget the meters discovery remembers for the line, and exit",
    );
    let matches = match program.start(opts) {
        Ok(m) => m,
        Err(code) => return code,
    };

    let line = match Line::from_flags(
        matches.opt_str("d"),
        matches.opt_str("tcp"),
        matches.opt_present("modbus-tcp"),
    ) {
        Ok(l) => l,
        Err(e) => return usage_error(&e),
    };
    let names = pzem::venus::naming::config_names(&line);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (from_file, discover) = match meters(&matches, &names) {
        Ok(m) => m,
        Err(e) => return usage_error(&e),
    };
    // `--NAME N`: a whole number of at least `min` in the flag's unit; else the config
    // file's value, else the default.
    let number =
        |name: &str, configured: Option<u64>, default: u64, range: RangeInclusive<u64>, unit: &str| match matches
            .opt_str(name)
        {
            None => Ok(configured.unwrap_or(default)),
            Some(t) => match t.parse::<u64>() {
                Ok(v) if range.contains(&v) => Ok(v),
                _ => Err(format!(
                    "--{name} takes whole {unit} from {} to {}, not '{t}'",
                    range.start(),
                    range.end()
                )),
            },
        };
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let parsed = (|| -> Result<Config, String> {
        let poll_interval = Duration::from_millis(number(
            "interval",
            ms(from_file.interval),
            INTERVAL_MS,
            0..=MAX_TIMING_MS,
            "milliseconds",
        )?);
        let timeout = Duration::from_millis(number(
            "timeout",
            ms(from_file.timeout),
            TIMEOUT_MS,
            MIN_TIMEOUT_MS..=MAX_TIMING_MS,
            "milliseconds",
        )?);
        let settings_wait = number("settings-wait", None, SETTINGS_WAIT_S, 0..=3600, "seconds")?;
        let silent_exit = number("silent-exit", None, SILENT_EXIT_S, 0..=86_400, "seconds")?;
        Ok(Config {
            line,
            meters: from_file.meters,
            poll_interval,
            timeout,
            bus: Bus::from_flag(matches.opt_str("dbus").as_deref()),
            state_dir: PathBuf::from(matches.opt_str("state-dir").unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
            settings_wait: Duration::from_secs(settings_wait),
            silent_exit: (silent_exit > 0).then(|| Duration::from_secs(silent_exit)),
            startup_budget: Duration::from_secs(4),
            failures_to_vanish: DEFAULT_FAILURES,
            discover,
        })
    })();
    let config = match parsed {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if matches.opt_present("forget") {
        return match service_loop::forget(&config) {
            Ok(gone) if gone.is_empty() => {
                println!("pzem-dbus: nothing was remembered for {}", config.line.place());
                ExitCode::SUCCESS
            }
            Ok(gone) => {
                for m in gone {
                    println!("forgot the {} meter at address {}", m.family, m.address);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pzem-dbus: cannot forget: {e}");
                ExitCode::from(ExitReason::Usage.code())
            }
        };
    }
    let stop = cli::install_stop_signals();
    ExitCode::from(service_loop::run(&config, stop).code())
}

/// Meters from -m, else the config file's for this line (known by `names`), else a scan
/// of a range of addresses; with the config file's poll timing.
fn meters(matches: &getopts::Matches, names: &[&str]) -> Result<(PortConfig, Option<RangeInclusive<u8>>), String> {
    let discover = matches.opt_str("discover").map(|t| parse_range(&t)).transpose()?;
    let configured = configured(matches, names)?;
    if configured.meters.is_empty() {
        return Ok((configured, Some(discover.unwrap_or(DEFAULT_RANGE))));
    }
    match discover {
        Some(_) => Err("--discover scans when no meters are given: leave out -m and the config file's meters".into()),
        None => Ok((configured, None)),
    }
}

/// Meters from -m (the config file is not read), else the config file's for this line,
/// with its timing.
fn configured(matches: &getopts::Matches, names: &[&str]) -> Result<PortConfig, String> {
    let flags = matches.opt_strs("m");
    if !flags.is_empty() {
        let mut config = PortConfig::default();
        for text in &flags {
            let spec = MeterSpec::parse(text).map_err(|e| format!("-m {e}"))?;
            check_unique(&config.meters, &spec).map_err(|e| format!("-m {text}: {e}"))?;
            config.meters.push(spec);
        }
        return Ok(config);
    }
    match read_config(matches.opt_str("c").as_deref())? {
        Some((path, text)) => {
            let config = port_config(&text, names).map_err(|e| format!("{path}: {e}"))?;
            let file = split_sections(&text).map_err(|e| format!("{path}: {e}"))?;
            if file.sections.is_empty() && config == PortConfig::default() {
                return Err(format!("{path}: no meters in it (one ADDR MODEL ROLE per line)"));
            }
            Ok(config)
        }
        None => Ok(PortConfig::default()),
    }
}
