//! `pzem-energy`: the MultiPlus energy-flow counters older units lack, derived from two AC
//! meters and the battery monitor, published as vebus `/Energy/*` counters.

use std::process::ExitCode;

use getopts::Options;
use pzem::cli::{self, Program};
use pzem::flow_service::machine::ExitReason;
use pzem::flow_service::options::{self, DEFAULT_STATE, Flags, KEYS};
use pzem::flow_service::service_loop;
use pzem::venus::config::DEFAULT_CONFIG;

const HELP_TAIL: &str = "\
Every option but -c, --dbus and --settings-wait can also be set in the [energy]
section of the config file pzem-dbus reads (one file configures both), as
KEY = VALUE with the option's long name as KEY; a flag wins over the file:

  [energy]
  ac-in  = com.victronenergy.grid.pzem_ttyUSB0_1
  ac-out = com.victronenergy.acload.pzem_ttyUSB0_2
  battery = com.victronenergy.battery.ttyO2

Publishes com.victronenergy.vebus.pzem_energy (--publish vebus) with a device
instance above every real VE.Bus device's, or com.victronenergy.pzem_energy.flows
(--publish own). docs/pzem-energy.md says what the GUI and VRM see.

The bus: the D-Bus system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured), or --dbus.
";

fn main() -> ExitCode {
    let program = Program {
        name: "pzem-energy",
        usage: "pzem-energy --ac-in SERVICE --ac-out SERVICE [--battery SERVICE] [options]",
        help_tail: HELP_TAIL,
        exit_codes: ExitReason::ALL.iter().map(|r| (r.code(), r.meaning())).collect(),
        usage_code: ExitReason::Usage.code(),
    };
    let usage_error = |message: &str| program.usage_error(message);
    let mut opts = Options::new();
    opts.optopt(
        "c",
        "config",
        &format!("options from this file's [energy] section (default {DEFAULT_CONFIG} if present)"),
        "FILE",
    );
    opts.optopt(
        "",
        "ac-in",
        "the meter on the Multi's AC input (its service)",
        "SERVICE",
    );
    opts.optopt(
        "",
        "ac-out",
        "the meter on the Multi's AC output (its service)",
        "SERVICE",
    );
    opts.optopt(
        "",
        "battery",
        "the battery monitor's service (default auto: the one com.victronenergy.system names)",
        "SERVICE",
    );
    opts.optopt(
        "",
        "publish",
        "vebus (default): a vebus service; own: com.victronenergy.pzem_energy.flows",
        "MODE",
    );
    opts.optopt(
        "",
        "state",
        &format!("the state file (default {DEFAULT_STATE})"),
        "FILE",
    );
    opts.optopt(
        "",
        "settle-ms",
        "a step books the changes of this long after the first one (default 2000)",
        "MS",
    );
    opts.optopt(
        "",
        "save-ms",
        "changes are saved, then published, within this long (default and most 60000)",
        "MS",
    );
    opts.optopt(
        "",
        "max-power-w",
        "a counter may gain at most this power x time; more is a replaced device (default 20000)",
        "W",
    );
    opts.optopt("", "dbus", "D-Bus address instead of the system bus", "ADDRESS");
    opts.optopt(
        "",
        "settings-wait",
        "seconds to wait for localsettings (default 10)",
        "S",
    );
    let matches = match program.start(opts) {
        Ok(m) => m,
        Err(code) => return code,
    };

    let flags = Flags {
        config: matches.opt_str("c"),
        values: KEYS.map(|k| matches.opt_str(k)),
        dbus: matches.opt_str("dbus"),
        settings_wait: matches.opt_str("settings-wait"),
    };
    let (config, warnings) = match options::resolve(&flags, &|p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    for w in warnings {
        log::warn!("{w}");
    }
    let stop = cli::install_stop_signals();
    ExitCode::from(service_loop::run(&config, stop).code())
}
