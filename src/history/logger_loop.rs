//! pzem-logger's I/O: one thread around one `ppoll(2)`.
//!
//! The wait covers the D-Bus connection and the [`Recorder`]'s next deadline (the end of
//! the interval in progress). What arrives is handed to the recorder with the wall-clock
//! time it arrived; the batches it hands out are written with [`Writer::write`], all that
//! are pending in one transaction, so the flash sees at most one commit an interval.
//!
//! When the file cannot be written (a full file system, a lock held by another program),
//! the intervals wait in memory, at most [`MAX_PENDING`], and the write is tried again
//! once an interval (when the next one ends), not at every wake-up: one attempt and one
//! log line an interval. The first failure is logged as an error, with the file and the
//! reason. What waits is lost when the logger is killed; at a stop it is tried once more.
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
    let mut backlog = Backlog::default();
    // Ends with the stop (`Ok`) or a failed bus; either way the intervals waiting get one
    // last write below.
    let ended: Result<(), BusError> = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        poll.clear();
        let w = client.watch();
        poll.push(w.fd, 0, w.read, w.write);
        let timeout = if client.has_backlog() {
            Duration::ZERO
        } else {
            Duration::from_millis(u64::try_from(recorder.deadline() - now_ms()).unwrap_or(0))
        };
        if let Err(e) = poll.wait(Some(timeout)) {
            break Err(BusError::Io(e));
        }
        events.clear();
        if let Err(e) = client.poll_events(&mut events) {
            break Err(e);
        }
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
        let mut finished = false;
        while let Some(batch) = recorder.poll_batch() {
            backlog.push(batch);
            finished = true;
        }
        // Once an interval: a file that cannot be written is not retried at every event.
        if finished {
            let outcome = backlog.write(|b| writer.write(b));
            report(&outcome, writer.path());
        }
    };
    match &ended {
        Ok(()) => log::info!("stopping"),
        // The caller logs the error itself.
        Err(_) => log::info!("stopping: the bus failed"),
    }
    if backlog.waiting() > 0 {
        match backlog.write(|b| writer.write(b)) {
            Written::Failed { error, waiting, .. } => {
                log::error!(
                    "{waiting} interval(s) not written at the stop, lost: cannot write {}: {error} ({FIX})",
                    writer.path().display()
                );
            }
            outcome => report(&outcome, writer.path()),
        }
    }
    ended
}

/// Finished intervals not written yet (see the module documentation).
#[derive(Debug, Default)]
struct Backlog {
    batches: Vec<Batch>,
    /// The last write failed.
    failing: bool,
}

/// What [`Backlog::write`] did.
#[derive(Debug)]
enum Written {
    /// Nothing to write (the intervals waiting had no samples: they are forgotten).
    Nothing,
    /// This many intervals written in one transaction; `recovered` after failed writes.
    Wrote { intervals: usize, recovered: bool },
    /// The write failed: `waiting` intervals wait (after dropping the `dropped` oldest
    /// beyond [`MAX_PENDING`]); `first` of a spell of failures.
    Failed {
        error: StoreError,
        waiting: usize,
        dropped: usize,
        first: bool,
    },
}

impl Backlog {
    fn push(&mut self, batch: Batch) {
        self.batches.push(batch);
    }

    /// Intervals waiting.
    fn waiting(&self) -> usize {
        self.batches.len()
    }

    /// Writes every interval waiting with `write`, in one call.
    fn write(&mut self, write: impl FnOnce(&[Batch]) -> Result<(), StoreError>) -> Written {
        if self.batches.iter().all(|b| b.samples.is_empty()) {
            // Nothing of the failed spell is left to write: it is over.
            self.batches.clear();
            self.failing = false;
            return Written::Nothing;
        }
        match write(&self.batches) {
            Ok(()) => {
                let intervals = self.batches.len();
                self.batches.clear();
                let recovered = std::mem::take(&mut self.failing);
                Written::Wrote { intervals, recovered }
            }
            Err(error) => {
                let dropped = self.batches.len().saturating_sub(MAX_PENDING);
                self.batches.drain(..dropped);
                let first = !std::mem::replace(&mut self.failing, true);
                Written::Failed {
                    error,
                    waiting: self.batches.len(),
                    dropped,
                    first,
                }
            }
        }
    }
}

/// What to do when the history cannot be written.
const FIX: &str = "free space on its file system (df -h /data), or stop the program that holds the file";

/// Logs what a write of the backlog did to `path`.
fn report(outcome: &Written, path: &std::path::Path) {
    match outcome {
        Written::Nothing | Written::Wrote { recovered: false, .. } => {}
        Written::Wrote {
            intervals,
            recovered: true,
        } => log::info!(
            "{} can be written again: {intervals} interval(s) that waited written",
            path.display()
        ),
        Written::Failed {
            error,
            waiting,
            dropped,
            first,
        } => {
            if *first {
                log::error!(
                    "cannot write the history to {}: {error}; the intervals wait in memory (at most {MAX_PENDING}) \
                     until it can be written, and are lost if pzem-logger is killed before ({FIX})",
                    path.display()
                );
            } else {
                log::warn!("cannot write {waiting} interval(s) yet: {error}");
            }
            if *dropped > 0 {
                log::error!("dropping the {dropped} oldest interval(s) not written");
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::recorder::Sample;
    use crate::history::series::Quantity;

    fn batch(start: i64, samples: usize) -> Batch {
        Batch {
            start,
            samples: (0..samples)
                .map(|_| Sample {
                    service: "com.victronenergy.grid.x".into(),
                    path: "/Ac/Power",
                    quantity: Quantity::Power,
                    t: start,
                    value: 1.0,
                })
                .collect(),
        }
    }

    fn full() -> StoreError {
        StoreError::Sql("database or disk is full".into())
    }

    #[test]
    fn intervals_wait_while_writes_fail_and_go_in_one_write_after() {
        let mut b = Backlog::default();
        b.push(batch(0, 2));
        let first = b.write(|_| Err(full()));
        assert!(
            matches!(
                first,
                Written::Failed {
                    waiting: 1,
                    dropped: 0,
                    first: true,
                    ..
                }
            ),
            "{first:?}"
        );
        b.push(batch(60, 1));
        let again = b.write(|_| Err(full()));
        assert!(
            matches!(
                again,
                Written::Failed {
                    waiting: 2,
                    first: false,
                    ..
                }
            ),
            "{again:?}"
        );
        b.push(batch(120, 3));
        let mut seen = Vec::new();
        let wrote = b.write(|batches| {
            seen = batches.iter().map(|x| x.start).collect();
            Ok(())
        });
        assert!(
            matches!(
                wrote,
                Written::Wrote {
                    intervals: 3,
                    recovered: true
                }
            ),
            "{wrote:?}"
        );
        assert_eq!(seen, [0, 60, 120], "every interval that waited, in order, in one write");
        assert_eq!(b.waiting(), 0);
        b.push(batch(180, 1));
        assert!(matches!(
            b.write(|_| Ok(())),
            Written::Wrote {
                intervals: 1,
                recovered: false
            }
        ));
        // A failure after a recovery is a first one again.
        b.push(batch(240, 1));
        assert!(matches!(b.write(|_| Err(full())), Written::Failed { first: true, .. }));
    }

    #[test]
    fn at_most_max_pending_wait_and_the_oldest_go_first() {
        let mut b = Backlog::default();
        for k in 0..MAX_PENDING as i64 {
            b.push(batch(k * 60, 1));
        }
        assert!(matches!(b.write(|_| Err(full())), Written::Failed { dropped: 0, .. }));
        b.push(batch(MAX_PENDING as i64 * 60, 1));
        b.push(batch(MAX_PENDING as i64 * 60 + 60, 1));
        let out = b.write(|_| Err(full()));
        assert!(
            matches!(
                out,
                Written::Failed {
                    waiting: MAX_PENDING,
                    dropped: 2,
                    ..
                }
            ),
            "{out:?}"
        );
        let mut first = None;
        b.write(|batches| {
            first = batches.first().map(|x| x.start);
            Ok(())
        });
        assert_eq!(first, Some(120), "the two oldest dropped");
    }

    #[test]
    fn intervals_without_samples_are_not_written() {
        let mut b = Backlog::default();
        b.push(batch(0, 0));
        let mut called = false;
        let out = b.write(|_| {
            called = true;
            Ok(())
        });
        assert!(matches!(out, Written::Nothing) && !called);
        assert_eq!(b.waiting(), 0);
        // A failed spell whose waiting intervals turn out empty is over: the next write
        // is not reported as a recovery.
        b.push(batch(60, 1));
        assert!(matches!(b.write(|_| Err(full())), Written::Failed { first: true, .. }));
        b.batches[0].samples.clear();
        assert!(matches!(b.write(|_| Ok(())), Written::Nothing));
        b.push(batch(120, 1));
        assert!(matches!(
            b.write(|_| Ok(())),
            Written::Wrote {
                intervals: 1,
                recovered: false
            }
        ));
    }
}
