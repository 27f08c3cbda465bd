//! Energy history on the GX: pzem-logger's recording and the queries pzem-web answers.
//!
//! Sans-IO core, unit-tested alone:
//! - [`time`]: dates, the API's time formats, local-day arithmetic with a fixed offset;
//! - [`series`]: which services and paths are recorded, in which unit;
//! - [`recorder`]: what the followed services published → one sample per interval per
//!   series (average power, counters at the interval's end, gaps left as gaps);
//! - [`query`]: samples and hourly roll-ups → one point per minute, hour or day;
//! - [`params`]: the parameters of a samples query (API and export);
//! - [`synth`]: plausible history for demos and benchmarks;
//! - [`csv`]: the CSV text of exports;
//! - [`config`]: the `[logger]` and `[web]` sections of the shared config file.
//!
//! I/O at the edges (feature `history`): `store` (the SQLite file) and, with feature
//! `dbus` too, `logger_loop` (one thread around one `ppoll(2)` over the D-Bus connection,
//! with the recorder's next interval end as timeout).

pub mod config;
pub mod csv;
#[cfg(all(feature = "history", feature = "dbus", unix))]
pub mod logger_loop;
pub mod params;
pub mod query;
pub mod recorder;
pub mod series;
#[cfg(feature = "history")]
pub mod store;
pub mod synth;
pub mod time;
