//! Energy totals that never go backwards, whatever the meter's counter does.
//!
//! A PZEM's counter drops to zero when it is reset (function 0x42), when
//! the meter is replaced, or (undocumented) when it wraps. Venus OS and VRM
//! book the *differences* between samples, so a published total must only
//! go up. [`MonotonicEnergy`] keeps an offset that absorbs every drop, and
//! holds back a sudden implausible jump until a second reading confirms it
//! (meters are known to glitch: `pzem-protocol.md` §9).
//!
//! The state is small ([`EnergyState`]) and has a one-line text format for
//! persistence ([`EnergyState::to_line`], [`EnergyState::parse`]).
//!
//! What counts as plausible is [`max_increase_for_power_wh`], the one power × time
//! bound: [`max_plausible_increase_wh`] applies it to a meter family (the service's jump
//! check, pzem-info's check after a reset), the flow tracker to its configured power.

use std::fmt;
use std::time::Duration;

use crate::model::Family;

/// Wh added to the power × time bound of [`max_plausible_increase_wh`].
///
/// The counter counts whole Wh, so the difference of two readings can exceed the
/// energy counted between them by up to (not including) 1 Wh, whether the meter
/// truncates or rounds, and also right after a reset that left the meter's fraction
/// of a Wh in place. The second Wh is slack for timing: the meter refreshes its
/// registers about once a second, so a reading can be a little older than the moment
/// it was read, and the time the meter counted over a little longer than the time
/// between the reads. (The bound assumes the family's maximum power, far above what
/// real loads draw for long, which covers the rest.)
pub const PLAUSIBILITY_MARGIN_WH: u64 = 2;

/// The largest increase of an energy counter, Wh, that is plausible after `elapsed` at
/// up to `power_w`: that power for all of that time, rounded up to a whole Wh, plus
/// [`PLAUSIBILITY_MARGIN_WH`]. The one power × time bound; [`max_plausible_increase_wh`]
/// and the flow tracker's bound are built on it.
///
/// Integer arithmetic (nanoseconds), no overflow: it saturates at `u64::MAX`.
///
/// ```
/// use std::time::Duration;
/// use pzem::energy::max_increase_for_power_wh;
/// // 3.6 kW for one second: 1 Wh, plus the margin.
/// assert_eq!(max_increase_for_power_wh(3_600, Duration::from_secs(1)), 3);
/// assert_eq!(max_increase_for_power_wh(u64::MAX, Duration::MAX), u64::MAX);
/// ```
pub fn max_increase_for_power_wh(power_w: u64, elapsed: Duration) -> u64 {
    const NANOS_PER_HOUR: u128 = 3_600 * 1_000_000_000;
    let max_wh = u128::from(power_w)
        .checked_mul(elapsed.as_nanos())
        .map_or(u128::MAX, |e| e.div_ceil(NANOS_PER_HOUR));
    u64::try_from(max_wh)
        .unwrap_or(u64::MAX)
        .saturating_add(PLAUSIBILITY_MARGIN_WH)
}

/// The largest increase of a meter's energy counter, Wh, that is plausible after
/// `elapsed`: [`max_increase_for_power_wh`] at the family's maximum power
/// ([`Family::max_power_w`]).
///
/// ```
/// use std::time::Duration;
/// use pzem::Family;
/// use pzem::energy::max_plausible_increase_wh;
/// // A DC meter (90 kW) in one second: 25 Wh, plus the margin.
/// assert_eq!(max_plausible_increase_wh(Family::Dc, Duration::from_secs(1)), 27);
/// ```
pub fn max_plausible_increase_wh(family: Family, elapsed: Duration) -> u64 {
    max_increase_for_power_wh(u64::from(family.max_power_w()), elapsed)
}

/// What must survive a restart: the offset and the last raw counter seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnergyState {
    /// Wh added to the meter's counter to make the published total.
    pub offset_wh: u64,
    /// The meter's counter at the last accepted reading.
    pub last_raw_wh: Option<u32>,
}

/// A state line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnergyStateError(pub String);

impl fmt::Display for EnergyStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt energy state: {}", self.0)
    }
}

impl std::error::Error for EnergyStateError {}

const STATE_TAG: &str = "pzem-energy-v1";

impl EnergyState {
    /// The state as one line: `pzem-energy-v1 offset_wh=N last_raw_wh=N|-`
    /// followed by a checksum of the line, so a torn write is detected.
    pub fn to_line(&self) -> String {
        let last = self.last_raw_wh.map_or_else(|| "-".to_string(), |v| v.to_string());
        let body = format!("{STATE_TAG} offset_wh={} last_raw_wh={last}", self.offset_wh);
        let sum = crate::crc::crc16(body.as_bytes());
        format!("{body} crc={sum:04x}\n")
    }

    /// Parse a line written by [`EnergyState::to_line`].
    pub fn parse(text: &str) -> Result<EnergyState, EnergyStateError> {
        let line = text.trim_end_matches(['\n', '\r']);
        let err = |why: &str| EnergyStateError(why.to_string());
        let (body, sum) = line.rsplit_once(" crc=").ok_or_else(|| err("no checksum"))?;
        let sum = u16::from_str_radix(sum, 16).map_err(|_| err("checksum is not hex"))?;
        if crate::crc::crc16(body.as_bytes()) != sum {
            return Err(err("checksum does not match (torn or edited file)"));
        }
        let mut words = body.split(' ');
        if words.next() != Some(STATE_TAG) {
            return Err(err("unknown format tag"));
        }
        let mut state = EnergyState::default();
        let (mut offset_seen, mut last_seen) = (false, false);
        for word in words {
            match word.split_once('=') {
                Some(("offset_wh", v)) => {
                    state.offset_wh = v.parse().map_err(|_| err("offset_wh is not a number"))?;
                    offset_seen = true;
                }
                Some(("last_raw_wh", "-")) => last_seen = true,
                Some(("last_raw_wh", v)) => {
                    state.last_raw_wh = Some(v.parse().map_err(|_| err("last_raw_wh is not a number"))?);
                    last_seen = true;
                }
                _ => return Err(err("unknown field")),
            }
        }
        if !(offset_seen && last_seen) {
            return Err(err("missing field"));
        }
        Ok(state)
    }
}

/// Something the log should tell about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergyEvent {
    /// The counter went down (reset, replacement or wrap); the drop is
    /// absorbed into the offset, nothing is booked as negative energy.
    CounterDropped {
        /// Counter before, Wh.
        from: u32,
        /// Counter now, Wh.
        to: u32,
    },
    /// The counter jumped up more than is plausible; the jump is held back
    /// until a second reading confirms it.
    JumpHeld {
        /// Counter before, Wh.
        from: u32,
        /// Counter read, Wh.
        to: u32,
    },
    /// A held jump was confirmed by the next reading and accepted.
    JumpConfirmed {
        /// Counter before, Wh.
        from: u32,
        /// Counter now, Wh.
        to: u32,
    },
}

/// A published energy total that only goes up.
#[derive(Clone, Debug, Default)]
pub struct MonotonicEnergy {
    state: EnergyState,
    held: Option<u32>,
}

impl MonotonicEnergy {
    /// Continue from a persisted state.
    pub fn new(state: EnergyState) -> MonotonicEnergy {
        MonotonicEnergy { state, held: None }
    }

    /// The state to persist.
    pub fn state(&self) -> EnergyState {
        self.state
    }

    /// The published total in Wh, if any reading was accepted yet.
    pub fn total_wh(&self) -> Option<u64> {
        self.state.last_raw_wh.map(|raw| self.state.offset_wh + u64::from(raw))
    }

    /// Take a counter reading. `max_step_wh` is the largest increase that is
    /// plausible since the previous reading (e.g. the meter's maximum power
    /// times the time passed); `None` accepts any increase.
    ///
    /// Returns the published total and what happened, if anything notable.
    pub fn update(&mut self, raw_wh: u32, max_step_wh: Option<u64>) -> (u64, Option<EnergyEvent>) {
        let Some(last) = self.state.last_raw_wh else {
            self.state.last_raw_wh = Some(raw_wh);
            return (self.state.offset_wh + u64::from(raw_wh), None);
        };
        let mut event = None;
        if raw_wh < last {
            self.held = None;
            self.state.offset_wh += u64::from(last);
            event = Some(EnergyEvent::CounterDropped { from: last, to: raw_wh });
        } else if max_step_wh.is_some_and(|max| u64::from(raw_wh - last) > max) {
            match self.held {
                Some(h) if raw_wh >= h && max_step_wh.is_some_and(|max| u64::from(raw_wh - h) <= max) => {
                    self.held = None;
                    event = Some(EnergyEvent::JumpConfirmed { from: last, to: raw_wh });
                }
                _ => {
                    self.held = Some(raw_wh);
                    let total = self.state.offset_wh + u64::from(last);
                    return (total, Some(EnergyEvent::JumpHeld { from: last, to: raw_wh }));
                }
            }
        } else {
            self.held = None;
        }
        self.state.last_raw_wh = Some(raw_wh);
        (self.state.offset_wh + u64::from(raw_wh), event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_increase_is_max_power_times_time_rounded_up_plus_margin() {
        let bound = max_plausible_increase_wh;
        let ms = Duration::from_millis;
        // No time, no energy: the margin alone.
        assert_eq!(bound(Family::Ac, Duration::ZERO), PLAUSIBILITY_MARGIN_WH);
        // One hour at the family's maximum power.
        assert_eq!(bound(Family::Ac, Duration::from_secs(3600)), 26_000 + 2);
        assert_eq!(bound(Family::Dc, Duration::from_secs(3600)), 90_000 + 2);
        // Exact: 90 kW for 1 s is 25 Wh; one nanosecond more rounds up to 26.
        assert_eq!(bound(Family::Dc, Duration::from_secs(1)), 25 + 2);
        assert_eq!(bound(Family::Dc, Duration::new(1, 1)), 26 + 2);
        // Any time at all counts as (up to) one more Wh: 26 kW for 1 ms is 0.007 Wh.
        assert_eq!(bound(Family::Ac, ms(1)), 1 + 2);
        assert_eq!(bound(Family::Ac, Duration::from_nanos(1)), 1 + 2);
        // A poll interval: 26 kW for 1.5 s is 10.83 Wh.
        assert_eq!(bound(Family::Ac, ms(1500)), 11 + 2);
        // Never overflows.
        assert_eq!(bound(Family::Dc, Duration::MAX), u64::MAX);
    }

    #[test]
    fn plausible_increase_agrees_with_the_float_formula_and_only_grows() {
        // The service used (max_power_w * secs / 3600).ceil() + 2 in floating point. The
        // same, except where the product is a whole Wh that float error pushes up by one
        // (90 kW for 0.28 s is exactly 7 Wh; in f64 it comes out above 7 and rounds to 8).
        let mut last = 0;
        for n in 0..20_000u64 {
            let elapsed = Duration::from_millis(n * 7);
            for family in [Family::Ac, Family::Dc] {
                let float = (f64::from(family.max_power_w()) * elapsed.as_secs_f64() / 3600.0).ceil() as u64 + 2;
                let int = max_plausible_increase_wh(family, elapsed);
                let whole = u64::from(family.max_power_w()) * (n * 7) % 3_600_000 == 0;
                if !(whole && int + 1 == float) {
                    assert_eq!(int, float, "{family} {elapsed:?}");
                }
            }
            let dc = max_plausible_increase_wh(Family::Dc, elapsed);
            assert!(dc >= last && dc >= max_plausible_increase_wh(Family::Ac, elapsed));
            last = dc;
        }
    }

    #[test]
    fn normal_counting_passes_through() {
        let mut e = MonotonicEnergy::default();
        assert_eq!(e.total_wh(), None);
        assert_eq!(e.update(100, Some(10)), (100, None));
        assert_eq!(e.update(105, Some(10)), (105, None));
    }

    #[test]
    fn a_reset_is_absorbed() {
        let mut e = MonotonicEnergy::new(EnergyState {
            offset_wh: 0,
            last_raw_wh: Some(5000),
        });
        assert_eq!(e.update(5010, None), (5010, None));
        assert_eq!(
            e.update(0, None),
            (5010, Some(EnergyEvent::CounterDropped { from: 5010, to: 0 }))
        );
        assert_eq!(e.update(7, None), (5017, None));
        assert_eq!(
            e.state(),
            EnergyState {
                offset_wh: 5010,
                last_raw_wh: Some(7)
            }
        );
    }

    #[test]
    fn a_reset_while_stopped_is_absorbed() {
        let mut e = MonotonicEnergy::new(EnergyState {
            offset_wh: 200,
            last_raw_wh: Some(900),
        });
        assert_eq!(e.update(3, Some(10)).0, 1103);
    }

    #[test]
    fn a_glitch_is_held_and_forgotten() {
        let mut e = MonotonicEnergy::default();
        e.update(1000, Some(5));
        assert_eq!(
            e.update(900_000, Some(5)),
            (
                1000,
                Some(EnergyEvent::JumpHeld {
                    from: 1000,
                    to: 900_000
                })
            )
        );
        // Back to normal: the glitch was never published and is no drop.
        assert_eq!(e.update(1001, Some(5)), (1001, None));
    }

    #[test]
    fn a_confirmed_jump_is_accepted() {
        let mut e = MonotonicEnergy::default();
        e.update(1000, Some(5));
        e.update(2000, Some(5));
        assert_eq!(
            e.update(2002, Some(5)),
            (2002, Some(EnergyEvent::JumpConfirmed { from: 1000, to: 2002 }))
        );
    }

    #[test]
    fn total_never_decreases() {
        let mut rng = crate::sim::Rng::new(9);
        let mut e = MonotonicEnergy::default();
        let mut published = 0;
        let mut raw: u32 = 0;
        for _ in 0..100_000 {
            raw = match rng.below(20) {
                0 => 0,
                1 => raw.wrapping_add(rng.below(1_000_000) as u32),
                2 => raw.saturating_sub(rng.below(100) as u32),
                _ => raw.saturating_add(rng.below(5) as u32),
            };
            let (total, _) = e.update(raw, Some(10));
            assert!(total >= published, "{total} < {published}");
            published = total;
        }
    }

    #[test]
    fn state_lines_round_trip_and_detect_damage() {
        for s in [
            EnergyState::default(),
            EnergyState {
                offset_wh: 12_345_678_901,
                last_raw_wh: Some(u32::MAX),
            },
        ] {
            assert_eq!(EnergyState::parse(&s.to_line()), Ok(s));
        }
        let line = EnergyState {
            offset_wh: 10,
            last_raw_wh: Some(5),
        }
        .to_line();
        assert!(EnergyState::parse(&line.replace("=10", "=11")).is_err());
        assert!(EnergyState::parse(&line[..line.len() / 2]).is_err());
        assert!(EnergyState::parse("").is_err());
        assert!(EnergyState::parse("garbage crc=zz").is_err());
    }
}
