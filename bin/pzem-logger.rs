//! `pzem-logger`: record the energy history of the PZEM meters, the energy-flow service and
//! the battery monitors into an SQLite file; export it as CSV; fill a file with synthetic
//! history.

use std::path::PathBuf;
use std::process::ExitCode;

use getopts::Options;
use pzem::cli::{self, Program};
use pzem::dbus::Bus;
use pzem::history::config::{self, DEFAULT_DB, HistoryConfig};
use pzem::history::logger_loop::{self, LoggerConfig};
use pzem::history::params::{SamplesQuery, check_step};
use pzem::history::series::{DEFAULT_PATTERNS, Pattern};
use pzem::history::store::{Reader, Retention, Writer};
use pzem::history::synth::{self, Synth};
use pzem::history::time::{Offset, local_offset, unix_now};
use pzem::history::{csv, recorder::Batch};
use pzem::venus::config::{DEFAULT_CONFIG, read_config};

const USAGE_CODE: u8 = 2;

const HELP_TAIL: &str = "\
Commands:
  pzem-logger [--db FILE] [--interval SECONDS] [--services PATTERN...]   record (default)
  pzem-logger export --db FILE --series ID --from T --to T [--step minute|hour|day]
  pzem-logger synth --db FILE --days N [--meters K]

Recording follows, by default, com.victronenergy.*.pzem_* (the meters),
com.victronenergy.vebus.pzem_energy (the energy flows) and
com.victronenergy.battery.* (battery monitors); --services replaces that list
(repeat it, or separate patterns with commas; * matches anything). One sample
per interval per series: energy counters (kWh) at the interval's end, power (W)
as the average of what was published. Options not given come from the [logger]
section of the config file (db, interval, services, raw_days, hour_days).

Times (export): Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM];
without a zone they are local time. export writes CSV to standard output.
";

/// The shared CLI front for one command (its usage line in `--help`).
fn program(usage: &'static str) -> Program {
    Program {
        name: "pzem-logger",
        usage,
        help_tail: HELP_TAIL,
        exit_codes: vec![
            (0, "stopped"),
            (USAGE_CODE, "usage or config error"),
            (3, "the history file cannot be used (it is left untouched)"),
            (4, "D-Bus failed"),
        ],
        usage_code: USAGE_CODE,
    }
}

fn main() -> ExitCode {
    let args = match pzem::utf8_args() {
        Ok(a) => a,
        Err(e) => return program("pzem-logger [COMMAND] [options]").usage_error(&e),
    };
    let (command, rest) = match args.first().map(String::as_str) {
        Some("export") => ("export", &args[1..]),
        Some("synth") => ("synth", &args[1..]),
        Some("record") => ("record", &args[1..]),
        _ => ("record", &args[..]),
    };
    let program = program(match command {
        "export" => "pzem-logger export [options]",
        "synth" => "pzem-logger synth [options]",
        _ => "pzem-logger [record] [options]",
    });
    let mut opts = Options::new();
    // export reads the file it is given; record and synth say what they default to.
    let db_help = match command {
        "export" => "the history file (required)".to_owned(),
        "synth" => "the new history file (required)".to_owned(),
        _ => format!("the history file (default {DEFAULT_DB})"),
    };
    opts.optopt("", "db", &db_help, "FILE");
    match command {
        "record" => {
            opts.optopt(
                "i",
                "interval",
                "seconds per sample, dividing 3600 (default 60)",
                "SECONDS",
            );
            opts.optmulti("s", "services", "services to follow (repeatable)", "PATTERN");
            opts.optopt(
                "c",
                "config",
                &format!("config file (default {DEFAULT_CONFIG} if present)"),
                "FILE",
            );
            opts.optopt("", "dbus", "D-Bus address instead of the system bus", "ADDRESS");
            opts.optopt("", "raw-days", "days of raw samples kept (default 366)", "N");
            opts.optopt("", "hour-days", "days of hourly roll-ups kept (default 3660)", "N");
        }
        "export" => {
            opts.optopt("", "series", "series id (see pzem-web's /api/series)", "ID");
            opts.optopt("", "from", "start", "T");
            opts.optopt("", "to", "end (exclusive)", "T");
            opts.optopt("", "step", "minute, hour or day (default minute)", "STEP");
            opts.optopt(
                "",
                "utc-offset",
                "local time offset (default: this machine's)",
                "+HH:MM",
            );
        }
        _ => {
            opts.optopt("", "days", "days of history", "N");
            opts.optopt("", "meters", "meters (default 4)", "K");
            opts.optopt("", "seed", "random seed (default 1)", "N");
        }
    }
    let matches = match program.start_with(opts, rest) {
        Ok(m) => m,
        Err(code) => return code,
    };
    match command {
        "record" => record(&program, &matches),
        "export" => export(&program, &matches),
        _ => synthesize(&program, &matches),
    }
}

/// `--NAME N` as a whole number within `range`.
fn number(matches: &getopts::Matches, name: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>, String> {
    match matches.opt_str(name) {
        None => Ok(None),
        Some(t) => match t.parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(format!(
                "--{name} takes a whole number from {} to {}, not '{t}'",
                range.start(),
                range.end()
            )),
        },
    }
}

/// The config file's name and what it sets.
fn file_config(matches: &getopts::Matches) -> Result<(String, HistoryConfig), String> {
    match read_config(matches.opt_str("c").as_deref())? {
        Some((path, text)) => {
            let config = config::parse(&text).map_err(|e| format!("{path}: {e}"))?;
            Ok((path, config))
        }
        None => Ok((DEFAULT_CONFIG.to_owned(), HistoryConfig::default())),
    }
}

fn record(program: &Program, matches: &getopts::Matches) -> ExitCode {
    let parsed = (|| -> Result<LoggerConfig, String> {
        let (file_name, file) = file_config(matches)?;
        let file = file.logger;
        // The flags' ranges are checked as they are read, the merged values again below.
        let flags = config::NumberFlags {
            interval: number(matches, "interval", config::INTERVALS)?,
            raw_days: number(matches, "raw-days", config::DAYS)?,
            hour_days: number(matches, "hour-days", config::DAYS)?,
        };
        let numbers = config::logger_numbers(&flags, &file, &file_name)?;
        let flags = matches.opt_strs("s");
        let texts: Vec<String> = if !flags.is_empty() {
            flags
                .iter()
                .flat_map(|f| {
                    f.split([',', ' '])
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect()
        } else if let Some(s) = file.services {
            s
        } else {
            DEFAULT_PATTERNS.iter().map(|p| (*p).to_owned()).collect()
        };
        let patterns = texts
            .iter()
            .map(|t| Pattern::new(t).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("--services: no pattern given".into());
        }
        Ok(LoggerConfig {
            bus: Bus::from_flag(matches.opt_str("dbus").as_deref()),
            db: PathBuf::from(
                matches
                    .opt_str("db")
                    .or(file.db)
                    .unwrap_or_else(|| DEFAULT_DB.to_owned()),
            ),
            interval: numbers.interval,
            patterns,
            retention: Retention {
                raw_days: numbers.raw_days,
                hour_days: numbers.hour_days,
            },
        })
    })();
    let config = match parsed {
        Ok(c) => c,
        Err(e) => return program.usage_error(&e),
    };
    let stop = cli::install_stop_signals();
    let exit = logger_loop::run(&config, stop);
    match &exit {
        logger_loop::LoggerExit::Stopped => {}
        logger_loop::LoggerExit::Store(e) => log::error!("{e}"),
        logger_loop::LoggerExit::Bus(e) => log::error!("D-Bus: {e}"),
    }
    ExitCode::from(exit.code())
}

fn export(program: &Program, matches: &getopts::Matches) -> ExitCode {
    let offset = match matches.opt_str("utc-offset") {
        Some(t) => match Offset::parse(&t) {
            Ok(o) => o,
            Err(e) => return program.usage_error(&format!("--utc-offset: {e}")),
        },
        None => local_offset(),
    };
    let mut query: Vec<(String, String)> = Vec::new();
    for name in ["series", "from", "to", "step"] {
        if let Some(v) = matches.opt_str(name) {
            query.push((name.to_owned(), v));
        }
    }
    let Some(db) = matches.opt_str("db") else {
        return program.usage_error("export needs --db FILE");
    };
    let q = match SamplesQuery::parse(&query, offset) {
        Ok(q) => q,
        Err(e) => return program.usage_error(&e),
    };
    let reader = match Reader::open(std::path::Path::new(&db)) {
        Ok(r) => r,
        Err(e) => return fail(3, &e.to_string()),
    };
    if let Err(e) = check_step(q.step, reader.interval()) {
        return program.usage_error(&format!("--{e}"));
    }
    let series = match reader.series_by_id(q.series) {
        Ok(Some(s)) => s,
        Ok(None) => return program.usage_error(&format!("no series {} in {db}", q.series)),
        Err(e) => return fail(3, &e.to_string()),
    };
    match reader.points(&series, q.step, offset, q.from, q.to) {
        Ok(points) => {
            use std::io::Write;
            let text = csv::write(&points, series.quantity.unit(), offset);
            if std::io::stdout().write_all(text.as_bytes()).is_err() {
                return fail(1, "cannot write to standard output");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(3, &e.to_string()),
    }
}

fn synthesize(program: &Program, matches: &getopts::Matches) -> ExitCode {
    let parsed = (|| -> Result<(String, u32, u32, u64), String> {
        let db = matches.opt_str("db").ok_or("synth needs --db FILE (a new file)")?;
        let days = number(matches, "days", 1..=3660)?.ok_or("synth needs --days N")? as u32;
        let meters = number(matches, "meters", 1..=16)?.unwrap_or(4) as u32;
        let seed = number(matches, "seed", 0..=u64::MAX)?.unwrap_or(1);
        Ok((db, days, meters, seed))
    })();
    let (db, days, meters, seed) = match parsed {
        Ok(p) => p,
        Err(e) => return program.usage_error(&e),
    };
    let t0 = std::time::Instant::now();
    let mut writer = match Writer::create_new(std::path::Path::new(&db), synth::INTERVAL, Retention::default()) {
        Ok(w) => w,
        Err(e) => return fail(3, &e.to_string()),
    };
    let synth = Synth::new(days, meters, unix_now(), local_offset(), seed);
    let series = synth.series_count();
    let mut batch: Vec<Batch> = Vec::with_capacity(1440);
    let mut samples = 0usize;
    for b in synth {
        samples += b.samples.len();
        batch.push(b);
        if batch.len() == 1440 {
            if let Err(e) = writer.write(&batch) {
                return fail(3, &e.to_string());
            }
            batch.clear();
        }
    }
    if let Err(e) = writer.write(&batch).and_then(|()| writer.finish()) {
        return fail(3, &e.to_string());
    }
    let size = std::fs::metadata(&db).map_or(0, |m| m.len());
    eprintln!(
        "pzem-logger synth: {days} days, {meters} meters, {series} series, {samples} samples into {db} ({:.1} MB) in {:.1} s",
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("pzem-logger: {message}");
    ExitCode::from(code)
}
