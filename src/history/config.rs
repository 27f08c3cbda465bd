//! The `[logger]` and `[web]` sections of the shared config file (sans-IO).
//!
//! The shared file (`/data/conf/pzem.conf`) holds pzem-dbus's meter lines before any
//! section header, and sections such as `[energy]` for other services. This parser reads
//! only the two sections it owns and ignores every other line, so the services can share
//! the file. In its sections, each line is `key = value`; `#` starts a comment:
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

/// What the `[logger]` section sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggerSection {
    /// `db`: the history file.
    pub db: Option<String>,
    /// `interval`: seconds.
    pub interval: Option<u32>,
    /// `services`: patterns, separated by white space.
    pub services: Option<Vec<String>>,
    /// `raw_days`: days of raw samples kept.
    pub raw_days: Option<u32>,
    /// `hour_days`: days of hourly roll-ups kept.
    pub hour_days: Option<u32>,
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

/// Reads the `[logger]` and `[web]` sections of the config file's text; errors name the
/// line. Other sections and lines outside sections are ignored.
pub fn parse(text: &str) -> Result<HistoryConfig, ConfigError> {
    #[derive(PartialEq)]
    enum In {
        Other,
        Logger,
        Web,
    }
    let mut config = HistoryConfig::default();
    let mut section = In::Other;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = match line[1..line.len() - 1].trim() {
                "logger" => In::Logger,
                "web" => In::Web,
                _ => In::Other,
            };
            continue;
        }
        if section == In::Other {
            continue;
        }
        let err = |m: String| ConfigError(format!("line {}: {m}", n + 1));
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!("'{line}': expected key = value")));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(err(format!("'{key}' has no value")));
        }
        let number = |v: &str| -> Result<u32, ConfigError> {
            v.parse::<u32>()
                .map_err(|_| err(format!("{key} = {v}: expected a whole number")))
        };
        match (&section, key) {
            (In::Logger, "db") => config.logger.db = Some(value.to_owned()),
            (In::Logger, "interval") => config.logger.interval = Some(number(value)?),
            (In::Logger, "services") => {
                config.logger.services = Some(value.split_whitespace().map(str::to_owned).collect());
            }
            (In::Logger, "raw_days") => config.logger.raw_days = Some(number(value)?),
            (In::Logger, "hour_days") => config.logger.hour_days = Some(number(value)?),
            (In::Web, "db") => config.web.db = Some(value.to_owned()),
            (In::Web, "listen") => config.web.listen = Some(value.to_owned()),
            (In::Logger, _) => {
                return Err(err(format!(
                    "unknown key '{key}' in [logger] (db, interval, services, raw_days, hour_days)"
                )));
            }
            (In::Web, _) => return Err(err(format!("unknown key '{key}' in [web] (db, listen)"))),
            (In::Other, _) => {}
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
            "line 2: interval = soon: expected a whole number"
        );
        assert!(
            parse("[web]\nport = 1\n")
                .unwrap_err()
                .0
                .starts_with("line 2: unknown key 'port'")
        );
        assert!(parse("[logger]\ndb\n").unwrap_err().0.contains("key = value"));
        assert!(parse("[logger]\ndb =\n").unwrap_err().0.contains("no value"));
    }
}
