//! pzem-logger's I/O: one thread around one `ppoll(2)`.
//!
//! The wait covers the D-Bus connection and the [`Recorder`]'s next deadline (the end of
//! the interval in progress). What arrives is handed to the recorder with the wall-clock
//! time it arrived; the batches it hands out are written with [`Writer::write`], all that
//! are pending in one transaction, so the flash sees at most one commit an interval.
//!
//! Services are followed the way Venus clients do: `GetItems` on each matching service at
//! start-up and whenever one appears (`NameOwnerChanged`), then `ItemsChanged` and
//! `PropertiesChanged`; a service that leaves the bus makes its values unknown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dbus::{Bus, BusClient, BusError, Event, Watchable};
use crate::poll_set::PollSet;

use super::recorder::{Batch, Recorder};
use super::series::Pattern;
use super::store::{Retention, StoreError, Writer};

/// Batches kept in memory while the file cannot be written (e.g. locked by another
/// program); older ones are dropped, with a log line.
pub const MAX_PENDING: usize = 60;

/// Everything the logger needs.
#[derive(Clone, Debug)]
pub struct LoggerConfig {
    /// The bus to follow.
    pub bus: Bus,
    /// The history file.
    pub db: PathBuf,
    /// Seconds per sample (divides 3600).
    pub interval: u32,
    /// The services to follow.
    pub patterns: Vec<Pattern>,
    /// How long data is kept.
    pub retention: Retention,
}

/// Why the logger stopped.
#[derive(Debug)]
pub enum LoggerExit {
    /// Asked to stop.
    Stopped,
    /// The history file cannot be used (left untouched).
    Store(StoreError),
    /// The bus connection failed.
    Bus(BusError),
}

impl LoggerExit {
    /// The process exit code: 0 stopped, 3 the file, 4 the bus.
    pub fn code(&self) -> u8 {
        match self {
            LoggerExit::Stopped => 0,
            LoggerExit::Store(_) => 3,
            LoggerExit::Bus(_) => 4,
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The prefixes to subscribe with: the literal start of each pattern.
fn prefixes(patterns: &[Pattern]) -> Vec<String> {
    let mut out: Vec<String> = patterns.iter().map(|p| p.literal_prefix().to_owned()).collect();
    out.sort();
    out.dedup();
    out
}

/// Runs until `stop` is set (by a signal handler) or something fails. SIGTERM and SIGINT
/// are blocked in this thread except while it waits, so a stop request is never missed
/// between the check of the flag and the wait (which may last a whole interval); the mask
/// is restored on return.
pub fn run(config: &LoggerConfig, stop: &AtomicBool) -> LoggerExit {
    let wait_mask = crate::poll_set::block_stop_signals();
    let exit = run_blocked(config, stop, wait_mask);
    crate::poll_set::restore_signals(wait_mask);
    exit
}

fn run_blocked(config: &LoggerConfig, stop: &AtomicBool, wait_mask: Option<libc::sigset_t>) -> LoggerExit {
    let mut writer = match Writer::open(&config.db, config.interval, config.retention) {
        Ok(w) => w,
        Err(e) => return LoggerExit::Store(e),
    };
    log::info!(
        "recording every {} s into {} (raw samples kept {} days, hourly {} days)",
        config.interval,
        config.db.display(),
        config.retention.raw_days,
        config.retention.hour_days
    );
    match follow(config, &mut writer, stop, wait_mask) {
        Ok(()) => LoggerExit::Stopped,
        Err(e) => LoggerExit::Bus(e),
    }
}

fn follow(
    config: &LoggerConfig,
    writer: &mut Writer,
    stop: &AtomicBool,
    wait_mask: Option<libc::sigset_t>,
) -> Result<(), BusError> {
    let mut client = BusClient::new(&config.bus)?;
    let prefixes = prefixes(&config.patterns);
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    client.subscribe(&refs)?;
    let mut recorder = Recorder::new(config.interval, config.patterns.clone(), now_ms());
    for service in client.list_services()? {
        if recorder.follows(&service) {
            items(&mut client, &mut recorder, &service);
        }
    }
    let mut poll = PollSet::new().map_err(BusError::Io)?;
    poll.set_wait_mask(wait_mask);
    let mut events = Vec::new();
    let mut pending: Vec<Batch> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        poll.clear();
        let w = client.watch();
        poll.push(w.fd, 0, w.read, w.write);
        let timeout = if client.has_backlog() {
            Duration::ZERO
        } else {
            Duration::from_millis(u64::try_from(recorder.deadline() - now_ms()).unwrap_or(0))
        };
        if let Err(e) = poll.wait(Some(timeout)) {
            return Err(BusError::Io(e));
        }
        events.clear();
        client.poll_events(&mut events)?;
        for event in events.drain(..) {
            let now = now_ms();
            match event {
                Event::ItemsChanged { service, changes } => {
                    recorder.handle_changes(now, &service, changes.iter().map(|(p, v)| (p.as_str(), v.as_f64())));
                }
                Event::PropertiesChanged { service, path, value } => {
                    recorder.handle_changes(now, &service, [(path.as_str(), value.as_f64())]);
                }
                Event::NameOwnerChanged { name, new_owner, .. } => {
                    if !recorder.follows(&name) {
                        continue;
                    }
                    recorder.handle_gone(now, &name);
                    if new_owner.is_some() {
                        log::info!("{name} appeared");
                        items(&mut client, &mut recorder, &name);
                    } else {
                        log::info!("{name} left the bus");
                    }
                }
            }
        }
        let dropped = recorder.dropped_intervals();
        recorder.handle_timeout(now_ms());
        if recorder.dropped_intervals() > dropped {
            log::warn!(
                "the clock jumped: {} interval(s) left without samples (check the GX's time source)",
                recorder.dropped_intervals() - dropped
            );
        }
        while let Some(batch) = recorder.poll_batch() {
            pending.push(batch);
        }
        if pending.iter().any(|b| !b.samples.is_empty()) {
            match writer.write(&pending) {
                Ok(()) => pending.clear(),
                Err(e) => {
                    log::warn!("cannot write {} interval(s) yet: {e}", pending.len());
                    if pending.len() > MAX_PENDING {
                        let drop = pending.len() - MAX_PENDING;
                        log::error!("dropping the {drop} oldest interval(s) not written");
                        pending.drain(..drop);
                    }
                }
            }
        } else {
            pending.clear();
        }
    }
    log::info!("stopping");
    Ok(())
}

/// `GetItems` of a service into the recorder; a service that does not answer is logged
/// and stays unknown until its next change.
fn items(client: &mut BusClient, recorder: &mut Recorder, service: &str) {
    match client.get_items(service) {
        Ok(items) => {
            recorder.handle_items(now_ms(), service, items.iter().map(|(p, v)| (p.as_str(), v.as_f64())));
        }
        Err(e) => log::warn!("{service}: GetItems failed: {e}"),
    }
}
