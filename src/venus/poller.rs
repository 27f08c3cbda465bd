//! The serial side of pzem-dbus: one thread polls every meter round-robin
//! and hands results to the D-Bus thread through a channel, waking it.
//!
//! The D-Bus thread never touches the line, so calls are answered at once
//! even while a poll waits out a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::client::{Client, Reading};
use crate::dbus::wait::Waker;
use crate::error::Error;
use crate::frame::ExceptionCode;
use crate::model::Family;
use crate::transport::Transport;

/// A meter to poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollTarget {
    /// Its address.
    pub address: Address,
    /// Its family; `None` until a probe tells.
    pub family: Option<Family>,
}

/// Why a poll failed, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollFailure {
    /// No answer.
    NoAnswer,
    /// A garbled or truncated answer.
    Garbled,
    /// The meter refused.
    Refused(ExceptionCode),
    /// Anything else (a verification or argument error cannot happen here).
    Other,
}

/// The result of one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reading.
    Reading(Reading),
    /// A probe told the family of a meter configured as `auto`.
    Identified(Family),
    /// The poll failed.
    Failed(PollFailure),
}

/// What the poller sends.
#[derive(Clone, Debug, PartialEq)]
pub enum PollMessage {
    /// The result of polling meter `meter` (index into the targets).
    Polled {
        /// Index of the meter.
        meter: usize,
        /// What happened.
        outcome: Outcome,
    },
    /// The line failed for good (USB dongle pulled, gateway gone); the
    /// poller has stopped.
    LineGone(String),
}

fn failure(e: &Error) -> PollFailure {
    match e {
        Error::NoAnswer => PollFailure::NoAnswer,
        e if e.is_garbled() => PollFailure::Garbled,
        e => e.exception().map_or(PollFailure::Other, PollFailure::Refused),
    }
}

/// Poll `target` once: read it when its family is known, else probe it
/// (and record the family found). `Err` only when the line itself failed.
pub fn poll_once<T: Transport>(client: &mut Client<T>, target: &mut PollTarget) -> Result<Outcome, std::io::Error> {
    let result = match target.family {
        Some(family) => client.read(target.address, family).map(Outcome::Reading),
        None => client.probe(target.address).map(|found| match found {
            Some(reading) => {
                let f = reading.family();
                target.family = Some(f);
                Outcome::Identified(f)
            }
            None => Outcome::Failed(PollFailure::NoAnswer),
        }),
    };
    match result {
        Ok(o) => Ok(o),
        Err(Error::Io(e)) => Err(e),
        Err(e) => Ok(Outcome::Failed(failure(&e))),
    }
}

/// The polling thread.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Start polling `targets` every `interval` (a cycle visits each meter
    /// once; a slow cycle is followed at once by the next).
    pub fn spawn<T: Transport + Send + 'static>(
        mut client: Client<T>,
        mut targets: Vec<PollTarget>,
        interval: Duration,
        tx: Sender<PollMessage>,
        waker: Waker,
    ) -> std::io::Result<Poller> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pzem-poll".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let send = |m: PollMessage| {
                    let ok = tx.send(m).is_ok();
                    waker.wake();
                    ok
                };
                while !flag.load(Ordering::Relaxed) {
                    let cycle = Instant::now();
                    for (meter, target) in targets.iter_mut().enumerate() {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        let outcome = match poll_once(&mut client, target) {
                            Ok(o) => o,
                            Err(e) => {
                                send(PollMessage::LineGone(e.to_string()));
                                return;
                            }
                        };
                        if !send(PollMessage::Polled { meter, outcome }) {
                            return;
                        }
                    }
                    while !flag.load(Ordering::Relaxed) {
                        let left = interval.saturating_sub(cycle.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(Duration::from_millis(100)));
                    }
                }
            })?;
        Ok(Poller {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and wait for the thread (at most one request timeout).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
}
