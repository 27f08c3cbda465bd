//! pzem-logger's logic: what the followed services published, turned into one sample per
//! interval per series (sans-IO).
//!
//! [`Recorder`] is fed what happened on the bus, each with the wall-clock time it happened
//! (Unix milliseconds): a service's items at start-up or when it appears
//! ([`Recorder::handle_items`]), its later changes ([`Recorder::handle_changes`]), its
//! disappearance ([`Recorder::handle_gone`]) and the passing of time
//! ([`Recorder::handle_timeout`]). It says when it next needs waking
//! ([`Recorder::deadline`], the end of the current interval) and hands out one
//! [`Batch`] per finished interval ([`Recorder::poll_batch`]), which the loop writes in one
//! transaction: the flash sees at most one commit an interval.
//!
//! # What a sample is
//!
//! Intervals are aligned to the clock: `[k·I, (k+1)·I)` for the interval `I`, and a sample
//! carries its interval's start.
//!
//! - **Power** (`W`): the time-weighted average of the published value over the part of
//!   the interval where a valid value was known (Venus services publish changes only, so a
//!   value holds until the next one). A value becomes unknown when the service publishes
//!   the invalid marker or leaves the bus. When less than [`MIN_COVERAGE_PERCENT`] of the
//!   interval was known, there is no sample: a gap stays a gap.
//! - **Energy** (`kWh`): the counter's value at the end of the interval, when it is known
//!   then; otherwise no sample.
//!
//! # The clock
//!
//! A GX often sets its clock from the network after boot. When time runs backwards, or
//! jumps forward past the end of the next interval, the interval in progress is dropped
//! (it would mix two time scales) and recording starts again at the new time.

use std::collections::{BTreeMap, VecDeque};

use super::series::{Pattern, Quantity, recorded};

/// Below this share of the interval with a known power value, no power sample is written.
pub const MIN_COVERAGE_PERCENT: i64 = 50;

/// One stored sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The D-Bus service name.
    pub service: String,
    /// The D-Bus path.
    pub path: &'static str,
    /// Power or energy.
    pub quantity: Quantity,
    /// The start of its interval, Unix seconds.
    pub t: i64,
    /// The average power (W) or the counter at the interval's end (kWh).
    pub value: f64,
}

/// The samples of one finished interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The interval's start, Unix seconds.
    pub start: i64,
    /// Its samples (possibly none).
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
struct Track {
    quantity: Quantity,
    /// The value now, when valid.
    value: Option<f64>,
    /// Since when `value` holds (ms), within the current interval.
    since: i64,
    /// Σ value × ms over the current interval.
    weighted: f64,
    /// ms of the current interval with a known value.
    covered: i64,
}

impl Track {
    fn new(quantity: Quantity, now: i64) -> Track {
        Track {
            quantity,
            value: None,
            since: now,
            weighted: 0.0,
            covered: 0,
        }
    }

    /// Accounts for the held value from `since` to `until`.
    fn integrate(&mut self, until: i64) {
        if until > self.since {
            if let Some(v) = self.value {
                self.weighted += v * (until - self.since) as f64;
                self.covered += until - self.since;
            }
            self.since = until;
        }
    }

    fn set(&mut self, now: i64, value: Option<f64>) {
        self.integrate(now);
        self.value = value;
    }

    fn restart(&mut self, at: i64) {
        self.since = at;
        self.weighted = 0.0;
        self.covered = 0;
    }
}

/// The sans-IO recorder; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    interval_ms: i64,
    patterns: Vec<Pattern>,
    /// Start of the interval in progress (ms).
    start: i64,
    last_now: i64,
    tracks: BTreeMap<(String, &'static str), Track>,
    out: VecDeque<Batch>,
    dropped: u64,
}

impl Recorder {
    /// A recorder of `interval_s`-second intervals (at least 1) for the services matching
    /// one of `patterns`, starting at `now_ms`.
    pub fn new(interval_s: u32, patterns: Vec<Pattern>, now_ms: i64) -> Recorder {
        let interval_ms = i64::from(interval_s.max(1)) * 1000;
        Recorder {
            interval_ms,
            patterns,
            start: now_ms.div_euclid(interval_ms) * interval_ms,
            last_now: now_ms,
            tracks: BTreeMap::new(),
            out: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Whether a service with this name is recorded.
    pub fn follows(&self, service: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(service))
    }

    /// When the interval in progress ends (Unix ms): call [`Recorder::handle_timeout`] then.
    pub fn deadline(&self) -> i64 {
        self.start + self.interval_ms
    }

    /// How many intervals were dropped because the clock jumped.
    pub fn dropped_intervals(&self) -> u64 {
        self.dropped
    }

    /// A service's complete set of items (`GetItems` when it was found or appeared), each
    /// path with its number or `None` when invalid. Recorded paths it lacks become unknown.
    pub fn handle_items<'a>(
        &mut self,
        now: i64,
        service: &str,
        items: impl IntoIterator<Item = (&'a str, Option<f64>)>,
    ) {
        if !self.follows(service) {
            return;
        }
        self.advance(now);
        let mut seen: Vec<&'static str> = Vec::new();
        for (path, value) in items {
            if let Some((p, _)) = recorded(path) {
                seen.push(p);
                self.set(now, service, path, value);
            }
        }
        for ((s, p), track) in self.tracks.range_mut((service.to_owned(), "")..) {
            if s != service {
                break;
            }
            if !seen.contains(p) {
                track.set(now, None);
            }
        }
    }

    /// Some of a service's items changed (`ItemsChanged` or `PropertiesChanged`); `None`
    /// is the invalid marker.
    pub fn handle_changes<'a>(
        &mut self,
        now: i64,
        service: &str,
        changes: impl IntoIterator<Item = (&'a str, Option<f64>)>,
    ) {
        if !self.follows(service) {
            return;
        }
        self.advance(now);
        for (path, value) in changes {
            self.set(now, service, path, value);
        }
    }

    /// A service left the bus: its values are unknown from now on.
    pub fn handle_gone(&mut self, now: i64, service: &str) {
        self.advance(now);
        for ((s, _), track) in self.tracks.range_mut((service.to_owned(), "")..) {
            if s != service {
                break;
            }
            track.set(now, None);
        }
    }

    /// Time passed: closes the intervals that ended by `now`.
    pub fn handle_timeout(&mut self, now: i64) {
        self.advance(now);
    }

    /// The next finished interval's samples, oldest first.
    pub fn poll_batch(&mut self) -> Option<Batch> {
        self.out.pop_front()
    }

    fn set(&mut self, now: i64, service: &str, path: &str, value: Option<f64>) {
        let Some((path, quantity)) = recorded(path) else {
            return;
        };
        // Not a number, or a negative counter: not a reading.
        let number = value.filter(|v| v.is_finite() && (quantity == Quantity::Power || *v >= 0.0));
        let key = (service.to_owned(), path);
        let track = self.tracks.entry(key).or_insert_with(|| Track::new(quantity, now));
        track.set(now, number);
    }

    fn advance(&mut self, now: i64) {
        let end = self.deadline();
        if now < self.last_now || now >= end + self.interval_ms {
            // The clock jumped: the interval in progress is not trustworthy.
            if now >= end + self.interval_ms {
                // The interval that ended before the jump was complete if the jump came
                // after it, but nothing says when within the jump it ended: drop it too.
                self.dropped += 1 + ((now - end) / self.interval_ms).min(1_000_000) as u64;
            } else {
                self.dropped += 1;
            }
            self.start = now.div_euclid(self.interval_ms) * self.interval_ms;
            for track in self.tracks.values_mut() {
                track.restart(now);
            }
            self.last_now = now;
            return;
        }
        self.last_now = now;
        if now >= end {
            self.close(end);
        }
    }

    fn close(&mut self, end: i64) {
        let start_s = self.start.div_euclid(1000);
        let need = self.interval_ms * MIN_COVERAGE_PERCENT / 100;
        let mut samples = Vec::new();
        for ((service, path), track) in &mut self.tracks {
            track.integrate(end);
            let value = match track.quantity {
                Quantity::Power if track.covered > 0 && track.covered >= need => {
                    Some(track.weighted / track.covered as f64)
                }
                Quantity::Power => None,
                Quantity::Energy => track.value,
            };
            if let Some(value) = value {
                samples.push(Sample {
                    service: service.clone(),
                    path,
                    quantity: track.quantity,
                    t: start_s,
                    value,
                });
            }
            track.restart(end);
        }
        self.out.push_back(Batch {
            start: start_s,
            samples,
        });
        self.start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::series::default_patterns;

    const GRID: &str = "com.victronenergy.grid.pzem_ttyUSB0_1";
    const S: i64 = 1000;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a whole minute

    fn rec() -> Recorder {
        Recorder::new(60, default_patterns(), T0)
    }

    fn d(v: f64) -> Option<f64> {
        Some(v)
    }

    fn only(batch: &Batch, path: &str) -> Option<f64> {
        batch.samples.iter().find(|s| s.path == path).map(|s| s.value)
    }

    #[test]
    fn power_is_the_time_weighted_average_of_what_was_published() {
        let mut r = rec();
        r.handle_items(T0, GRID, [("/Ac/Power", d(100.0)), ("/Ac/Energy/Forward", d(5.0))]);
        r.handle_changes(T0 + 15 * S, GRID, [("/Ac/Power", d(400.0))]);
        r.handle_changes(
            T0 + 45 * S,
            GRID,
            [("/Ac/Power", d(100.0)), ("/Ac/Energy/Forward", d(5.004))],
        );
        assert_eq!(r.deadline(), T0 + 60 * S);
        assert!(r.poll_batch().is_none());
        r.handle_timeout(T0 + 60 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!(b.start, T0 / 1000);
        // 15 s × 100 + 30 s × 400 + 15 s × 100 over 60 s: 250 W, not the last reading.
        assert_eq!(only(&b, "/Ac/Power"), Some(250.0));
        assert_eq!(only(&b, "/Ac/Energy/Forward"), Some(5.004));
        // The next interval: nothing changed, the values hold.
        r.handle_timeout(T0 + 120 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!(only(&b, "/Ac/Power"), Some(100.0));
        assert_eq!(only(&b, "/Ac/Energy/Forward"), Some(5.004));
    }

    #[test]
    fn gaps_stay_gaps() {
        let mut r = rec();
        r.handle_items(T0, GRID, [("/Ac/Power", d(100.0)), ("/Ac/Energy/Forward", d(5.0))]);
        // Invalid after 20 s: 33 % of the interval known, below the minimum.
        r.handle_changes(T0 + 20 * S, GRID, [("/Ac/Power", None), ("/Ac/Energy/Forward", None)]);
        r.handle_timeout(T0 + 60 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!((only(&b, "/Ac/Power"), only(&b, "/Ac/Energy/Forward")), (None, None));
        // Back for 40 s of the next interval: the average of the known part.
        r.handle_changes(
            T0 + 80 * S,
            GRID,
            [("/Ac/Power", d(300.0)), ("/Ac/Energy/Forward", d(5.1))],
        );
        r.handle_timeout(T0 + 120 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!(only(&b, "/Ac/Power"), Some(300.0));
        assert_eq!(only(&b, "/Ac/Energy/Forward"), Some(5.1));
        // The service leaves: nothing is held over.
        r.handle_gone(T0 + 121 * S, GRID);
        r.handle_timeout(T0 + 180 * S);
        let b = r.poll_batch().unwrap();
        assert!(b.samples.is_empty(), "{b:?}");
        // It comes back with GetItems lacking the energy path.
        r.handle_items(T0 + 180 * S, GRID, [("/Ac/Power", d(50.0))]);
        r.handle_timeout(T0 + 240 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!(only(&b, "/Ac/Power"), Some(50.0));
        assert_eq!(only(&b, "/Ac/Energy/Forward"), None);
    }

    #[test]
    fn only_followed_services_and_recorded_paths() {
        let mut r = rec();
        r.handle_items(T0, "com.victronenergy.system", [("/Ac/Power", d(1.0))]);
        r.handle_items(T0, GRID, [("/Ac/L1/Power", d(1.0)), ("/Ac/Power", Some(f64::NAN))]);
        r.handle_changes(T0, GRID, [("/Ac/Energy/Forward", d(-1.0))]);
        r.handle_timeout(T0 + 60 * S);
        assert!(r.poll_batch().unwrap().samples.is_empty());
    }

    #[test]
    fn a_clock_jump_drops_the_interval_in_progress() {
        let mut r = rec();
        r.handle_items(T0 + 10 * S, GRID, [("/Ac/Power", d(100.0))]);
        // NTP sets the clock a year ahead.
        let later = T0 + 365 * 86_400 * S + 30 * S;
        r.handle_changes(later, GRID, [("/Ac/Power", d(200.0))]);
        assert!(r.poll_batch().is_none());
        assert!(r.dropped_intervals() > 1);
        assert_eq!(r.deadline(), later - 30 * S + 60 * S);
        r.handle_timeout(r.deadline());
        let b = r.poll_batch().unwrap();
        assert_eq!(b.start, (later - 30 * S) / 1000);
        // Only 30 s known: that is 50 %, enough.
        assert_eq!(only(&b, "/Ac/Power"), Some(200.0));
        // Backwards: the interval in progress is dropped, nothing shifted.
        r.handle_changes(r.deadline() - 10 * S, GRID, [("/Ac/Power", d(300.0))]);
        r.handle_changes(T0, GRID, [("/Ac/Power", d(400.0))]);
        assert!(r.poll_batch().is_none());
        assert_eq!(r.deadline(), T0 + 60 * S);
    }

    #[test]
    fn several_late_intervals_come_out_in_order_within_one_interval_late() {
        let mut r = rec();
        r.handle_items(T0, GRID, [("/Ac/Energy/Forward", d(1.0))]);
        // Woken 30 s late (a busy GX): the interval that ended is still closed.
        r.handle_timeout(T0 + 90 * S);
        let b = r.poll_batch().unwrap();
        assert_eq!((b.start, only(&b, "/Ac/Energy/Forward")), (T0 / 1000, Some(1.0)));
        assert_eq!(r.deadline(), T0 + 120 * S);
    }
}
