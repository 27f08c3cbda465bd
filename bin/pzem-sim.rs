//! `pzem-sim`: simulated PZEM meters on a pseudo-terminal, a tty or TCP.

use std::process::ExitCode;

use getopts::Options;
use pzem::sim::{Faults, Pacing, SimBus, SimMeter, SimServer, TcpFraming};
use pzem::venus::config::parse_address_and_model;
use pzem::{Address, ModelChoice, StopBits};

const USAGE_TAIL: &str = "\
Meters (-m, repeatable): ADDR:MODEL, MODEL one of 016 014 004t 017 003 ac dc.
  Default: -m 1:016 -m 2:017.
Where (one of):
  --pty            create a pseudo-terminal pair and serve it (default);
                   the device path is printed on stdout
  --tty PATH       serve an existing serial device
  --tcp HOST:PORT  listen on TCP (RTU frames; add --modbus-tcp for Modbus TCP)

Examples:
  pzem-sim -m 1:016 -m 2:016 -m 3:017
  pzem-sim --tcp 127.0.0.1:5020 --modbus-tcp -m 1:ac
  pzem-sim --pace --faults no-reply=0.05,bad-crc=0.02 --seed 7

Runs until interrupted. Exit codes: 0 ok, 2 usage error, 1 cannot serve.";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match pzem::utf8_args() {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    let mut opts = Options::new();
    opts.optmulti("m", "meter", "a simulated meter", "ADDR:MODEL");
    opts.optflag("", "pty", "serve a new pseudo-terminal (default)");
    opts.optopt("", "tty", "serve an existing serial device", "PATH");
    opts.optopt("", "tcp", "listen on TCP", "HOST:PORT");
    opts.optflag("", "modbus-tcp", "with --tcp: speak Modbus TCP instead of RTU frames");
    opts.optflag("", "pace", "take real 9600-baud wire time and a 10 ms turnaround");
    opts.optopt("", "seed", "seed for values and faults (default 1)", "N");
    opts.optopt(
        "",
        "faults",
        "fault rates, e.g. no-reply=0.05,bad-crc=0.01,delay=0.1,delay-ms=300",
        "SPEC",
    );
    opts.optmulti(
        "",
        "silent",
        "this meter does not answer (AC meter without mains)",
        "ADDR",
    );
    opts.optflag("h", "help", "show this help");
    opts.optflag("V", "version", "show the version");
    let usage = |opts: &Options| format!("{}\n{USAGE_TAIL}", opts.usage("Usage: pzem-sim [options]"));
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return usage_error(&e.to_string()),
    };
    if m.opt_present("h") {
        println!("{}", usage(&opts));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("V") {
        println!("pzem-sim {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let specs = m.opt_strs("m");
    let specs = if specs.is_empty() {
        vec!["1:016".to_string(), "2:017".to_string()]
    } else {
        specs
    };
    let mut meters = Vec::new();
    for spec in &specs {
        match parse_meter(spec) {
            Ok(meter) => meters.push(meter),
            Err(e) => return usage_error(&e),
        }
    }
    for text in m.opt_strs("silent") {
        match Address::parse(&text) {
            Ok(a) => match meters.iter_mut().find(|x| x.address == a.get()) {
                Some(meter) => meter.silent = true,
                None => return usage_error(&format!("--silent {text}: no meter at that address")),
            },
            Err(e) => return usage_error(&format!("--silent {text}: {e}")),
        }
    }
    let seed = match m.opt_str("seed").map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage_error("--seed takes a whole number"),
    };
    let mut bus = SimBus::new(meters, seed);
    if let Some(spec) = m.opt_str("faults") {
        match Faults::parse(&spec) {
            Ok(f) => bus.faults = f,
            Err(e) => return usage_error(&e.to_string()),
        }
    }
    let stop_bits = StopBits::for_line(bus.meters.iter().map(|x| x.family()));
    let pacing = if m.opt_present("pace") {
        Pacing::real(stop_bits)
    } else {
        Pacing::NONE
    };
    let count = bus.meters.len();
    let served = match (m.opt_str("tty"), m.opt_str("tcp")) {
        (Some(_), Some(_)) => return usage_error("give one of --pty, --tty, --tcp"),
        (Some(path), None) => SimServer::tty(&path, stop_bits, bus, pacing),
        (None, Some(addr)) => {
            let framing = if m.opt_present("modbus-tcp") {
                TcpFraming::Mbap
            } else {
                TcpFraming::Rtu
            };
            SimServer::tcp(&addr, framing, bus, pacing)
        }
        (None, None) => SimServer::pty(bus, pacing),
    };
    let server = match served {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "pzem-sim: cannot serve on {}: {e}",
                m.opt_str("tty")
                    .or(m.opt_str("tcp"))
                    .unwrap_or_else(|| "a new pty".into())
            );
            return ExitCode::from(1);
        }
    };
    let place = match (server.path(), server.local_addr()) {
        (Some(p), _) => p.to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => String::new(),
    };
    println!("{place}");
    log::info!("serving {count} simulated meter(s) on {place} ({specs:?}); interrupt to stop");
    loop {
        std::thread::park();
    }
}

/// One `-m ADDR:MODEL` flag: the address and model rules are pzem-dbus's
/// ([`parse_address_and_model`]); a simulated meter also needs a known model.
fn parse_meter(spec: &str) -> Result<SimMeter, String> {
    let (addr, model) = spec
        .split_once(':')
        .ok_or_else(|| format!("-m {spec}: expected ADDR:MODEL, e.g. 1:016"))?;
    match parse_address_and_model(addr, model) {
        Ok((address, ModelChoice::Known(model))) => Ok(SimMeter::new(model, address.get())),
        Ok((_, ModelChoice::Auto)) => Err(format!("-m {spec}: a simulated meter needs a model, not auto")),
        Err(e) => Err(format!("-m {spec}: {e}")),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("pzem-sim: {message}\nTry 'pzem-sim --help'.");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pzem::{Family, Model};

    #[test]
    fn meter_flags() {
        let m = parse_meter("1:016").unwrap();
        assert_eq!((m.address, m.model(), m.family()), (1, Model::Pzem016, Family::Ac));
        let m = parse_meter("0x0A:pzem-017").unwrap();
        assert_eq!((m.address, m.model()), (10, Model::Pzem017));
        assert_eq!(parse_meter("247:dc").unwrap().family(), Family::Dc);
    }

    #[test]
    fn meter_flag_errors_name_the_flag() {
        let err = |spec: &str| parse_meter(spec).unwrap_err();
        assert_eq!(err("1"), "-m 1: expected ADDR:MODEL, e.g. 1:016");
        assert!(err("0:016").starts_with("-m 0:016: invalid Modbus address 0"));
        assert!(err("0xF8:016").contains("general address 0xF8"), "{}", err("0xF8:016"));
        assert!(err("1:018").starts_with("-m 1:018: unknown meter model '018'"));
        assert!(err("1:016:grid").contains("unknown meter model"));
        assert_eq!(err("1:auto"), "-m 1:auto: a simulated meter needs a model, not auto");
    }
}
