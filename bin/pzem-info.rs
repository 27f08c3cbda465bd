//! `pzem-info`: inspect and configure PZEM meters from the command line.
//!
//! Thin: parses the arguments, opens the line, hands a client to
//! [`pzem::info`] and maps the outcome to an exit code.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options};
use pzem::DEFAULT_TIMEOUT;
use pzem::info::json_writer::JsonValue;
use pzem::info::options::{self as opt, Action, ScanRange, UsageError, usage};
use pzem::info::report::MeterReport;
use pzem::info::{Exit, Hooks, PROGRAM, Target, actions, diagnose, json, text};
use pzem::venus::config::{DEFAULT_CONFIG, port_config, read_config};
use pzem::venus::naming::config_names;
use pzem::{Address, Client, ModelChoice, StopBits, Transport};
use pzem::{Line, utf8_args};

const ABOUT: &str = "\
Inspect and configure Peacefair PZEM energy meters (AC: PZEM-004T v3, 014, 016;
DC: PZEM-003, 017) over Modbus-RTU on an RS-485 line or through a TCP gateway.

Usage: pzem-info -d TTY [-a ADDR] [-t ac|dc|auto] [-c FILE] [--json] [ACTION]
       pzem-info --tcp HOST:PORT [--modbus-tcp] [-a ADDR] [--json] [ACTION]

Without an action: print the model, the address, every reading with its unit
and the parameters (AC: power alarm threshold; DC: voltage alarm thresholds and
shunt range). Without -a, the meters the config file (-c, default
/data/conf/pzem.conf) gives this line are shown, one after another, as
pzem-dbus reads them; with none there, the one meter at the general address.";

const DETAILS: &str = "\
Addresses: 1-247, decimal or hex (0x0A). The default, 0xF8, is the general
address: any single meter answers it whatever its own address, so it works
only with ONE meter on the line. With several meters the replies collide;
use --scan to list them and -a to pick one.

Serial settings: 9600 baud, 8 data bits, no parity. -t ac opens 8N1, -t dc
8N2, and -t auto (the default) 8N2: a sender with two stop bits only adds idle
time, which AC meters accept. -t also takes a model (016 014 004t 017 003)
to name it in the output. The meter's family (AC or DC) is always found by
reading before anything is written.

Ranges (from the manuals): --set-address 1-247; --set-shunt 50, 100, 200 or
300 A (PZEM-017); --set-power-alarm 1-25000 W (AC); --set-voltage-alarms
HIGH,LOW in V (DC): high 5-350, low 1-350, low below high, 0.01 V steps.
Every change is read back and confirmed. --reset-energy asks for confirmation
on a terminal; without a terminal it needs --yes.

Output: aligned text with units, or with --json one JSON document on stdout
with the same content (\"ok\": true); when a meter fails, the document has
\"ok\": false and an \"error\" with the exit code and the message. Showing the
configured meters (no -a), --json prints an array of such documents, one per
meter, and the exit code is the first failure's. Errors and the confirmation
prompt go to stderr.

Timeouts: --timeout MS is the reply timeout, 250 ms by default (showing the
configured meters: the file's timeout-ms, if it gives one); in --scan it
is the time given to each address, 100 ms by default (no retries; addresses
with garbled replies are checked again). A full scan of 1-247 takes about
30 s at 9600 baud.";

const EXAMPLES: &str = "\
Examples:
  pzem-info -d /dev/ttyUSB0                    the configured meters, else the only one
  pzem-info -d /dev/ttyUSB0 --scan             list every meter (1-247)
  pzem-info -d /dev/ttyUSB0 --scan 1-20        list meters at addresses 1-20
  pzem-info -d /dev/ttyUSB0 --set-address 2    give the only meter address 2
  pzem-info -d /dev/ttyUSB0 -a 2 --json        read meter 2, JSON for scripts
  pzem-info -d /dev/ttyUSB0 -a 3 --set-shunt 200
  pzem-info -d /dev/ttyUSB0 -a 3 --set-voltage-alarms 14.6,11.5
  pzem-info -d /dev/ttyUSB0 -a 1 --set-power-alarm 3000
  pzem-info -d /dev/ttyUSB0 -a 1 --reset-energy --yes
  pzem-info --tcp 192.168.1.50:8899 -a 1       through an RTU-over-TCP gateway";

/// A checked command line.
struct Cli {
    line: Line,
    target: Target,
    /// Without -a: the meters the config file gives this line, with what it says of each.
    configured: Configured,
    action: Action,
    json: bool,
    yes: bool,
    timeout: Duration,
    scan_timeout: Duration,
}

enum Parsed {
    Help,
    Version,
    Run(Cli),
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt("d", "device", "serial device of the RS-485 adapter", "TTY");
    o.optopt(
        "",
        "tcp",
        "a serial-to-Ethernet gateway passing RTU frames",
        "HOST:PORT",
    );
    o.optflag("", "modbus-tcp", "the gateway speaks Modbus TCP (MBAP) instead");
    o.optopt("a", "address", "meter address 1-247, or 0xF8 (default)", "ADDR");
    o.optopt(
        "t",
        "type",
        "ac, dc, auto (default) or a model: 016 014 004t 017 003",
        "TYPE",
    );
    o.optflag("", "json", "print one JSON document on stdout");
    o.optopt(
        "c",
        "config",
        &format!("without -a, show the meters this file gives the line (default {DEFAULT_CONFIG} if present)"),
        "FILE",
    );
    o.optflagopt(
        "",
        "scan",
        "list the meters answering in FROM-TO (default 1-247)",
        "FROM-TO",
    );
    o.optopt("", "set-address", "give the meter a new address", "N");
    o.optflag("", "reset-energy", "reset the energy counter");
    o.optflag("y", "yes", "do not ask before --reset-energy");
    o.optopt("", "set-shunt", "PZEM-017 shunt range: 50, 100, 200 or 300", "A");
    o.optopt("", "set-power-alarm", "AC power alarm threshold, 1-25000", "W");
    o.optopt("", "set-voltage-alarms", "DC voltage alarm thresholds in V", "HIGH,LOW");
    o.optopt(
        "",
        "timeout",
        "reply timeout (default 250; per address in --scan: 100)",
        "MS",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

fn help(o: &Options) -> String {
    format!(
        "{}\n{DETAILS}\n\nExit codes:\n{}\n{EXAMPLES}\n",
        o.usage(ABOUT),
        Exit::help()
    )
}

fn action(m: &Matches) -> Result<Action, UsageError> {
    let mut actions = Vec::new();
    if m.opt_present("scan") {
        let range = match m.opt_str("scan") {
            Some(r) => ScanRange::parse(&r)?,
            // `--scan 1-20`: getopts leaves the range as a free argument.
            None => match m.free.as_slice() {
                [r] => ScanRange::parse(r)?,
                _ => ScanRange::ALL,
            },
        };
        actions.push(Action::Scan(range));
    }
    if let Some(n) = m.opt_str("set-address") {
        actions.push(Action::SetAddress(opt::parse_new_address(&n)?));
    }
    if m.opt_present("reset-energy") {
        actions.push(Action::ResetEnergy);
    }
    if let Some(a) = m.opt_str("set-shunt") {
        actions.push(Action::SetShunt(opt::parse_shunt(&a)?));
    }
    if let Some(w) = m.opt_str("set-power-alarm") {
        actions.push(Action::SetPowerAlarm(opt::parse_power_alarm(&w)?));
    }
    if let Some(v) = m.opt_str("set-voltage-alarms") {
        let (high_cv, low_cv) = opt::parse_voltage_alarms(&v)?;
        actions.push(Action::SetVoltageAlarms { high_cv, low_cv });
    }
    match actions.as_slice() {
        [] => Ok(Action::Show),
        [one] => Ok(*one),
        _ => Err(usage("give at most one action")),
    }
}

fn parse(args: &[String]) -> Result<Parsed, UsageError> {
    let m = options().parse(args).map_err(|e| usage(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Parsed::Help);
    }
    if m.opt_present("version") {
        return Ok(Parsed::Version);
    }
    let action = action(&m)?;
    let scan_took_free = matches!(action, Action::Scan(_)) && m.opt_str("scan").is_none() && m.free.len() == 1;
    if !m.free.is_empty() && !scan_took_free {
        return Err(usage(format!("unexpected argument '{}'", m.free[0])));
    }
    let line = Line::from_flags(m.opt_str("device"), m.opt_str("tcp"), m.opt_present("modbus-tcp")).map_err(usage)?;
    let address = match m.opt_str("address") {
        Some(_) if matches!(action, Action::Scan(_)) => {
            return Err(usage(
                "--scan tries a range of addresses; give it FROM-TO instead of -a",
            ));
        }
        Some(a) => opt::parse_target(&a)?,
        None => Address::GENERAL,
    };
    let typed = m.opt_str("type").map(|t| opt::parse_model(&t)).transpose()?;
    let model = typed.unwrap_or(ModelChoice::Auto);
    let (configured, configured_timeout) = match (action, m.opt_str("address")) {
        (Action::Show, None) => configured_meters(m.opt_str("config").as_deref(), &line, typed)?,
        _ => (Vec::new(), None),
    };
    let timeout = m.opt_str("timeout").map(|t| opt::parse_timeout(&t)).transpose()?;
    let yes = m.opt_present("yes");
    if action == Action::ResetEnergy && !yes && !io::stdin().is_terminal() {
        return Err(usage(
            "--reset-energy asks for confirmation, but there is no terminal to ask on: add --yes",
        ));
    }
    Ok(Parsed::Run(Cli {
        line,
        target: Target { address, model },
        configured,
        action,
        json: m.opt_present("json"),
        yes,
        timeout: timeout.or(configured_timeout).unwrap_or(DEFAULT_TIMEOUT),
        scan_timeout: timeout.unwrap_or(actions::SCAN_TIMEOUT),
    }))
}

/// Configured meters, each with a note of what the file says of it.
type Configured = Vec<(Target, String)>;

/// The meters the config file gives `line`, each with a note of what the file says
/// (role and name), and its reply timeout, as pzem-dbus reads them; `typed` (-t)
/// replaces their models.
fn configured_meters(
    explicit: Option<&str>,
    line: &Line,
    typed: Option<ModelChoice>,
) -> Result<(Configured, Option<Duration>), UsageError> {
    let Some((path, text)) = read_config(explicit).map_err(usage)? else {
        return Ok((Vec::new(), None));
    };
    let names = config_names(line);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let port = port_config(&text, &names).map_err(|e| usage(format!("{path}: {e}")))?;
    let mut targets = Vec::new();
    for spec in &port.meters {
        let role = spec.role.map_or("default role".to_string(), |r| r.to_string());
        let name = spec.name.as_deref().map_or(String::new(), |n| format!(" \"{n}\""));
        for (phase, address) in spec.addresses().enumerate() {
            let phase = if spec.phase_count() > 1 {
                format!(", L{}", phase + 1)
            } else {
                String::new()
            };
            let model = match spec.model {
                ModelChoice::Known(m) => m.to_string(),
                ModelChoice::Auto => "model found out".to_string(),
            };
            let note = format!("{path}: address {address}, {model}, {role}{name}{phase}");
            let target = Target {
                address,
                model: typed.unwrap_or(spec.model),
            };
            targets.push((target, note));
        }
    }
    let timeout = port.timeout.filter(|_| !targets.is_empty());
    Ok((targets, timeout))
}

/// Ask on the terminal before resetting the counter.
fn confirm(meter: &MeterReport) -> bool {
    let own = if meter.queried.is_general() {
        format!(" (own address {})", meter.stored_address())
    } else {
        String::new()
    };
    err(&format!(
        "Reset the energy counter of the {} at {}{own}, now {}? This cannot be undone. [y/N] ",
        text::model_label(meter.model),
        text::address_phrase(meter.queried),
        text::kwh(meter.reading.energy_wh())
    ));
    let mut answer = String::new();
    match io::stdin().lock().read_line(&mut answer) {
        Ok(n) if n > 0 => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        _ => false,
    }
}

/// Write to stdout, ignoring a closed pipe (`pzem-info ... | head`).
fn out(s: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes());
    let _ = stdout.flush();
}

/// Write to stderr, ignoring failures (a closed stderr is no reason to panic).
fn err(s: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(s.as_bytes());
    let _ = stderr.flush();
}

fn fail(cli: &Cli, exit: Exit, address: Option<u8>, message: &str) -> ExitCode {
    err(&format!("{PROGRAM}: {message}"));
    if cli.json {
        let doc = json::error_document(cli.action.name(), cli.line.place(), exit.code(), address, message);
        out(&doc.to_pretty());
    }
    ExitCode::from(exit.code())
}

fn run(cli: &Cli) -> ExitCode {
    // -t auto opens 8N2: a sender with two stop bits only adds idle time,
    // so 8N2 reaches both families.
    let stop_bits = match cli.configured.as_slice() {
        [] => StopBits::for_choices([cli.target.model]),
        meters => StopBits::for_choices(meters.iter().map(|(t, _)| t.model)),
    };
    let transport = match cli.line.open(stop_bits) {
        Ok(t) => t,
        Err(e) => return fail(cli, Exit::Io, None, &diagnose::io_message(&cli.line, &e)),
    };
    let mut client = Client::new(transport);
    client.transport_mut().set_timeout(cli.timeout);
    if !cli.configured.is_empty() {
        return show_configured(cli, &mut client, stop_bits);
    }
    let show_progress = matches!(cli.action, Action::Scan(_)) && io::stderr().is_terminal();
    let hooks = Hooks {
        confirm: |m: &MeterReport| cli.yes || confirm(m),
        progress: |a: Address| {
            if show_progress {
                err(&format!("\rscanning address {a:>3} ..."));
            }
        },
        scan_timeout: cli.scan_timeout,
    };
    let result = pzem::info::run(&mut client, cli.target, cli.action, hooks);
    if show_progress {
        err(&format!("\r{:24}\r", ""));
    }
    match result {
        Ok(report) => {
            if cli.json {
                out(&json::document(&report, cli.line.place()).to_pretty());
            } else {
                out(&text::render(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let message = diagnose::explain(&e, &cli.line, stop_bits, cli.timeout);
            fail(cli, e.exit(), e.address().map(Address::get), &message)
        }
    }
}

/// Show each configured meter in turn; the exit code is the first failure's.
fn show_configured<T: Transport>(cli: &Cli, client: &mut Client<T>, stop_bits: StopBits) -> ExitCode {
    let mut first_failure: Option<Exit> = None;
    let mut documents = Vec::new();
    for (n, (target, note)) in cli.configured.iter().enumerate() {
        let hooks = Hooks {
            confirm: |_: &MeterReport| false,
            progress: |_: Address| {},
            scan_timeout: cli.scan_timeout,
        };
        match pzem::info::run(client, *target, Action::Show, hooks) {
            Ok(report) if cli.json => documents.push(json::document(&report, cli.line.place())),
            Ok(report) => {
                let gap = if n == 0 { "" } else { "\n" };
                out(&format!("{gap}# {note}\n{}", text::render(&report)));
            }
            Err(e) => {
                let message = diagnose::explain(&e, &cli.line, stop_bits, cli.timeout);
                let exit = e.exit();
                first_failure.get_or_insert(exit);
                err(&format!("{PROGRAM}: {message}"));
                if cli.json {
                    let address = e.address().map(Address::get);
                    documents.push(json::error_document(
                        Action::Show.name(),
                        cli.line.place(),
                        exit.code(),
                        address,
                        &message,
                    ));
                } else {
                    let gap = if n == 0 { "" } else { "\n" };
                    out(&format!("{gap}# {note}\nfailed: see the error above\n"));
                }
            }
        }
    }
    if cli.json {
        out(&JsonValue::Array(documents).to_pretty());
    }
    first_failure.map_or(ExitCode::SUCCESS, |e| ExitCode::from(e.code()))
}

fn main() -> ExitCode {
    let parsed = utf8_args().map_err(usage).and_then(|args| parse(&args));
    match parsed {
        Ok(Parsed::Help) => {
            out(&help(&options()));
            ExitCode::SUCCESS
        }
        Ok(Parsed::Version) => {
            out(&format!("{PROGRAM} {}\n", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(cli)) => run(&cli),
        Err(e) => {
            err(&format!("{PROGRAM}: {e}\nTry '{PROGRAM} --help'.\n"));
            ExitCode::from(Exit::Usage.code())
        }
    }
}
