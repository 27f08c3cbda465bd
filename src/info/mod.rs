//! The logic of the `pzem-info` tool: inspect and configure meters from
//! the command line.
//!
//! - [`options`]: the command-line values, checked before anything is sent;
//! - [`actions`]: show, scan, set-address, reset-energy, set-shunt,
//!   set-power-alarm, set-voltage-alarms, written against any
//!   [`Transport`](crate::Transport);
//! - [`report`]: what was found, as plain data;
//! - [`text`] and [`json`]: the human and the `--json` output, both built
//!   from the same [`report::Field`]s; [`json_writer`] writes JSON without
//!   serde;
//! - [`diagnose`]: error messages naming the device, the address and what
//!   to check; [`exit`]: the exit codes.
//!
//! Nothing here opens a device: the binary wires a serial line or a TCP
//! gateway to a [`Client`](crate::Client) and hands it over.

/// The tool's name, as in its messages and its `--json` documents.
pub const PROGRAM: &str = "pzem-info";

pub mod actions;
pub mod diagnose;
pub mod exit;
pub mod json;
pub mod json_writer;
pub mod options;
pub mod report;
pub mod text;

pub use actions::{ActionError, Hooks, Target, run};
pub use exit::Exit;
pub use options::{Action, ScanRange, UsageError};
pub use report::Report;
