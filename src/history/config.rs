//! The `[logger]` and `[web]` sections of the shared config file (sans-IO).
//!
//! The shared file (`/data/conf/pzem.conf`) holds pzem-dbus's meter lines before any
//! section header, and sections such as `[energy]` for other services. This parser reads
//! only the two sections it owns and leaves every other line to its program, so the
//! services can share the file. Its sections are read with the shared grammar of
//! [`crate::venus::config::section_entries`]: each line is `key = value` (or
//! `key value`); `#` starts a comment:
//!
//! ```text
//! [logger]
//! db = /data/pzem/history.sqlite
//! interval = 60
//! services = com.victronenergy.*.pzem_* com.victronenergy.battery.*
//! raw_days = 366
//! hour_days = 3660
//!
//! [web]
//! db = /data/pzem/history.sqlite
//! listen = 0.0.0.0:8088
//! ```
//!
//! Command-line flags win over the file.

use std::fmt;
use std::ops::RangeInclusive;

/// What the `[logger]` section sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggerSection {
    /// `db`: the history file.
    pub db: Option<String>,
    /// `interval`: seconds (checked by [`logger_numbers`]).
    pub interval: Option<u64>,
    /// `services`: patterns, separated by white space.
    pub services: Option<Vec<String>>,
    /// `raw_days`: days of raw samples kept (checked by [`logger_numbers`]).
    pub raw_days: Option<u64>,
    /// `hour_days`: days of hourly roll-ups kept (checked by [`logger_numbers`]).
    pub hour_days: Option<u64>,
    /// The line of each key given, for error messages.
    pub lines: Vec<(&'static str, usize)>,
}

impl LoggerSection {
    /// The line `key` was given on.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.lines.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
    }
}

/// The history file when neither a flag nor the config file names one.
pub const DEFAULT_DB: &str = "/data/var/lib/pzem-venus/history.sqlite";

impl HistoryConfig {
    /// The history file pzem-web reads: `db` in `[web]`, else `db` in `[logger]` (the file
    /// the logger writes), else [`DEFAULT_DB`]. A `--db` flag wins over all of them.
    pub fn web_db(&self) -> &str {
        self.web
            .db
            .as_deref()
            .or(self.logger.db.as_deref())
            .unwrap_or(DEFAULT_DB)
    }
}

/// Days of raw samples or roll-ups that may be kept, whoever sets them.
pub const DAYS: RangeInclusive<u64> = 1..=36_600;

/// Seconds per sample that may be set (and the value must divide an hour).
pub const INTERVALS: RangeInclusive<u64> = 1..=3600;

/// The logger's numbers once the flags and the file are merged, each checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggerNumbers {
    /// Seconds per sample.
    pub interval: u32,
    /// Days of raw samples kept.
    pub raw_days: u32,
    /// Days of hourly roll-ups kept.
    pub hour_days: u32,
}

/// The numbers given on the command line (`None`: not given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumberFlags {
    /// `--interval`.
    pub interval: Option<u64>,
    /// `--raw-days`.
    pub raw_days: Option<u64>,
    /// `--hour-days`.
    pub hour_days: Option<u64>,
}

/// Merges the flags (which win), the `[logger]` section of `file_name` and the defaults,
/// and checks the result whatever its source: the interval in [`INTERVALS`] and dividing
/// an hour, both retentions in [`DAYS`], and `hour_days >= raw_days` (roll-ups are made
/// from the raw samples, and `hour_days = 0` would delete every roll-up). An error names
/// the flag or the key and its line, and the values accepted.
pub fn logger_numbers(flags: &NumberFlags, file: &LoggerSection, file_name: &str) -> Result<LoggerNumbers, String> {
    struct Picked {
        value: u64,
        source: String,
    }
    let pick =
        |flag: Option<u64>, flag_name: &str, from_file: Option<u64>, key: &str, default: u64| match (flag, from_file) {
            (Some(v), _) => Picked {
                value: v,
                source: format!("--{flag_name} {v}"),
            },
            (None, Some(v)) => Picked {
                value: v,
                source: match file.line(key) {
                    Some(n) => format!("{file_name}: line {n}: {key} = {v} in [logger]"),
                    None => format!("{file_name}: {key} = {v} in [logger]"),
                },
            },
            (None, None) => Picked {
                value: default,
                source: format!("the default {key} {default}"),
            },
        };
    let in_range = |p: &Picked, range: &RangeInclusive<u64>| -> Result<u32, String> {
        match u32::try_from(p.value) {
            Ok(v) if range.contains(&p.value) => Ok(v),
            _ => Err(format!(
                "{}: takes a whole number from {} to {}",
                p.source,
                range.start(),
                range.end()
            )),
        }
    };
    let interval = pick(flags.interval, "interval", file.interval, "interval", 60);
    let raw = pick(flags.raw_days, "raw-days", file.raw_days, "raw_days", 366);
    let hour = pick(flags.hour_days, "hour-days", file.hour_days, "hour_days", 3660);
    let numbers = LoggerNumbers {
        interval: in_range(&interval, &INTERVALS)?,
        raw_days: in_range(&raw, &DAYS)?,
        hour_days: in_range(&hour, &DAYS)?,
    };
    if 3600 % numbers.interval != 0 {
        return Err(format!(
            "{}: the interval must divide an hour (1, 2, 5, 10, 15, 30, 60, 300, 600 … 3600 s)",
            interval.source
        ));
    }
    if numbers.hour_days < numbers.raw_days {
        return Err(format!(
            "{}: hourly roll-ups must be kept at least as long as raw samples ({}), from {} to {}",
            hour.source,
            raw.source,
            numbers.raw_days,
            DAYS.end()
        ));
    }
    Ok(numbers)
}

/// What the `[web]` section sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebSection {
    /// `db`: the history file.
    pub db: Option<String>,
    /// `listen`: `ADDR:PORT`.
    pub listen: Option<String>,
}

/// Both sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryConfig {
    /// `[logger]`.
    pub logger: LoggerSection,
    /// `[web]`.
    pub web: WebSection,
}

/// A line of the owned sections that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The keys of `[logger]`.
pub const LOGGER_KEYS: [&str; 5] = ["db", "interval", "services", "raw_days", "hour_days"];

/// The keys of `[web]`.
pub const WEB_KEYS: [&str; 2] = ["db", "listen"];

/// Reads the `[logger]` and `[web]` sections of the config file's text with the shared
/// grammar ([`crate::venus::config::section_entries`]: `key = value` or `key value`, a
/// header that is not `[lower-case]` refused, a key given twice refused); errors name the
/// line. Other sections and lines outside sections are left to their programs.
pub fn parse(text: &str) -> Result<HistoryConfig, ConfigError> {
    use crate::venus::config::section_entries;
    let shared = |e: crate::venus::config::SpecError| ConfigError(e.0);
    let mut config = HistoryConfig::default();
    for entry in section_entries(text, "logger", &LOGGER_KEYS)
        .map_err(shared)?
        .unwrap_or_default()
    {
        let value = entry.value.as_str();
        let number = |range: RangeInclusive<u64>| -> Result<u64, ConfigError> {
            value.parse::<u64>().map_err(|_| {
                ConfigError(format!(
                    "line {}: {} = {value}: expected a whole number from {} to {}",
                    entry.line,
                    entry.key,
                    range.start(),
                    range.end()
                ))
            })
        };
        let logger = &mut config.logger;
        let key = match entry.key.as_str() {
            "db" => {
                logger.db = Some(value.to_owned());
                "db"
            }
            "interval" => {
                logger.interval = Some(number(INTERVALS)?);
                "interval"
            }
            "services" => {
                logger.services = Some(value.split_whitespace().map(str::to_owned).collect());
                "services"
            }
            "raw_days" => {
                logger.raw_days = Some(number(DAYS)?);
                "raw_days"
            }
            _ => {
                logger.hour_days = Some(number(DAYS)?);
                "hour_days"
            }
        };
        logger.lines.push((key, entry.line));
    }
    for entry in section_entries(text, "web", &WEB_KEYS)
        .map_err(shared)?
        .unwrap_or_default()
    {
        match entry.key.as_str() {
            "db" => config.web.db = Some(entry.value),
            _ => config.web.listen = Some(entry.value),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_sections_and_ignores_the_rest() {
        let text = "# meters for pzem-dbus\n1 016 grid\n2:016:acload\n\n[energy]\ninput = 1\nweird line\n\
                    [logger]\ndb = /data/h.sqlite # the file\ninterval=5\nservices = com.victronenergy.a.* com.victronenergy.b\n\
                    [web]\nlisten = 127.0.0.1:9000\n[other]\nx\n";
        let c = parse(text).unwrap();
        assert_eq!(c.logger.db.as_deref(), Some("/data/h.sqlite"));
        assert_eq!(c.logger.interval, Some(5));
        assert_eq!(c.logger.services.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.web.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.web.db, None);
        assert_eq!(parse("1 016 grid\n").unwrap(), HistoryConfig::default());
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("[logger]\ninterval = soon\n").unwrap_err().0,
            "line 2: interval = soon: expected a whole number from 1 to 3600"
        );
        assert!(
            parse("[web]\nport = 1\n")
                .unwrap_err()
                .0
                .starts_with("line 2: unknown key 'port'")
        );
        assert!(parse("[logger]\ndb\n").unwrap_err().0.contains("write db = VALUE"));
        assert!(parse("[logger]\ndb =\n").unwrap_err().0.contains("no value"));
    }

    #[test]
    fn the_grammar_is_the_shared_one() {
        // A header typo is an error, not a section silently ignored.
        assert!(
            parse("[Logger]\nraw_days = 1\n")
                .unwrap_err()
                .0
                .starts_with("line 1: '[Logger]' is not a section header")
        );
        // A key given twice is refused, not the last one kept.
        assert_eq!(
            parse("[logger]\nraw_days = 1\nraw_days = 2\n").unwrap_err().0,
            "line 3: 'raw_days' is given twice in [logger] (first on line 2); keep one"
        );
        // `key value` is accepted, as by the other programs.
        let c = parse("[web]\nlisten 127.0.0.1:9000\n[logger]\ninterval 30\n").unwrap();
        assert_eq!(c.web.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!((c.logger.interval, c.logger.line("interval")), (Some(30), Some(4)));
    }

    #[test]
    fn numbers_from_the_file_are_checked_like_flags() {
        let numbers = |text: &str, flags: NumberFlags| logger_numbers(&flags, &parse(text).unwrap().logger, "f.conf");
        let none = NumberFlags::default();
        assert_eq!(
            numbers("", none),
            Ok(LoggerNumbers {
                interval: 60,
                raw_days: 366,
                hour_days: 3660
            })
        );
        // hour_days = 0 would delete every hourly roll-up: refused, naming key, line, range.
        assert_eq!(
            numbers("[logger]\nraw_days = 1\nhour_days = 0\n", none).unwrap_err(),
            "f.conf: line 3: hour_days = 0 in [logger]: takes a whole number from 1 to 36600"
        );
        assert_eq!(
            numbers("[logger]\nraw_days = 99999999999\n", none).unwrap_err(),
            "f.conf: line 2: raw_days = 99999999999 in [logger]: takes a whole number from 1 to 36600"
        );
        assert_eq!(
            numbers("[logger]\ninterval = 0\n", none).unwrap_err(),
            "f.conf: line 2: interval = 0 in [logger]: takes a whole number from 1 to 3600"
        );
        assert!(
            numbers("[logger]\ninterval = 7\n", none)
                .unwrap_err()
                .starts_with("f.conf: line 2: interval = 7 in [logger]: the interval must divide an hour")
        );
        let e = numbers("[logger]\nhour_days = 100\n", none).unwrap_err();
        assert!(
            e.starts_with("f.conf: line 2: hour_days = 100 in [logger]: hourly roll-ups must be kept at least")
                && e.contains("the default raw_days 366")
                && e.contains("from 366 to 36600"),
            "{e}"
        );
        // A flag wins over the file, and is checked against the file's other value.
        let flags = NumberFlags {
            raw_days: Some(10),
            ..none
        };
        assert_eq!(numbers("[logger]\nhour_days = 100\n", flags).unwrap().hour_days, 100);
        let flags = NumberFlags {
            raw_days: Some(200),
            ..none
        };
        assert!(
            numbers("[logger]\nhour_days = 100\n", flags)
                .unwrap_err()
                .contains("(--raw-days 200)")
        );
    }

    #[test]
    fn the_web_reads_the_loggers_file_unless_told_otherwise() {
        assert_eq!(parse("").unwrap().web_db(), DEFAULT_DB);
        assert_eq!(parse("[logger]\ndb = /a.sqlite\n").unwrap().web_db(), "/a.sqlite");
        assert_eq!(
            parse("[logger]\ndb = /a.sqlite\n[web]\ndb = /b.sqlite\n")
                .unwrap()
                .web_db(),
            "/b.sqlite"
        );
    }
}
