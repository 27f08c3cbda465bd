//! Step math: stored samples and hourly roll-ups turned into one point per step (sans-IO).
//!
//! # Power
//! A step's value is the average of the samples whose interval starts in the step,
//! weighted by how many raw samples each stands for (a roll-up row counts its `n`).
//!
//! # Energy
//! A counter is known at **observations**: a raw sample starting at `t` gives the counter
//! at `t + interval`. Between two consecutive observations `(t1, c1)` and `(t2, c2)` the
//! energy `c2 − c1` flowed during `(t1, t2]`. That increase is booked to a step only when
//! the whole span lies in the step (`start ≤ t1` and `t2 ≤ end`): an increase across a gap
//! that straddles a step boundary is not known to belong to either side, so it is left out
//! rather than shifted. A decrease (a counter restarted) books nothing. A step's value is
//! the sum of its increases; a step without any has no point (never a 0 it did not see).
//!
//! With contiguous data this is exactly the counter's increase over the step. The hourly
//! roll-up keeps, per hour, the first and last observation and the increases between them,
//! so coarser steps computed from it are the same as from the raw samples.

use super::series::Quantity;
use super::time::{DAY, HOUR, Offset};
use std::fmt;

/// The step of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One local day.
    Day,
    /// Any whole number of seconds that divides a day (used by the page's lines).
    Seconds(u32),
}

impl Step {
    /// The step's length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Step::Minute => 60,
            Step::Hour => HOUR,
            Step::Day => DAY,
            Step::Seconds(s) => i64::from(s.max(1)),
        }
    }

    /// `minute`, `hour`, `day` (or the seconds).
    pub fn name(self) -> String {
        match self {
            Step::Minute => "minute".into(),
            Step::Hour => "hour".into(),
            Step::Day => "day".into(),
            Step::Seconds(s) => format!("{s}s"),
        }
    }

    /// Parses `minute`, `hour` or `day`.
    pub fn parse(text: &str) -> Option<Step> {
        match text {
            "minute" => Some(Step::Minute),
            "hour" => Some(Step::Hour),
            "day" => Some(Step::Day),
            _ => None,
        }
    }

    /// The start of the step containing `t`: steps are aligned to local midnight at
    /// `offset` (so hours follow the local clock too).
    pub fn floor(self, t: i64, offset: Offset) -> i64 {
        let o = i64::from(offset.seconds());
        let s = self.seconds();
        (t + o).div_euclid(s) * s - o
    }

    /// The longest range one query may cover with this step.
    pub fn max_range(self) -> i64 {
        match self {
            Step::Minute | Step::Seconds(_) => 31 * DAY,
            Step::Hour => 400 * DAY,
            Step::Day => 20 * 366 * DAY,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A raw stored sample: its interval's start and its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawSample {
    /// Interval start, Unix seconds.
    pub t: i64,
    /// Average power, or the counter at the interval's end.
    pub v: f64,
}

/// One hour of a series, rolled up from its raw samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HourRow {
    /// The hour's start (UTC hour), Unix seconds.
    pub t: i64,
    /// How many raw samples it was made of.
    pub n: i64,
    /// Power: their average. Energy: the sum of the increases between its first and last
    /// observation.
    pub v: f64,
    /// Energy only: the first observation in the hour (time, counter).
    pub first: Option<(i64, f64)>,
    /// Energy only: the last observation in the hour (time, counter).
    pub last: Option<(i64, f64)>,
}

/// A piece of a series in time order: a raw sample, or a rolled-up hour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Piece {
    /// A raw sample.
    Raw(RawSample),
    /// An hour roll-up.
    Hour(HourRow),
}

/// A known energy increase over `(from, to]`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Increase {
    from: i64,
    to: i64,
    kwh: f64,
}

/// Rolls up the raw samples of one hour (`samples` all start in `[hour, hour + 3600)`, in
/// time order) of a series sampled every `interval` seconds. `None` when there are none.
pub fn roll_up(quantity: Quantity, hour: i64, interval: i64, samples: &[RawSample]) -> Option<HourRow> {
    let n = samples.len() as i64;
    if n == 0 {
        return None;
    }
    Some(match quantity {
        Quantity::Power => HourRow {
            t: hour,
            n,
            v: samples.iter().map(|s| s.v).sum::<f64>() / n as f64,
            first: None,
            last: None,
        },
        Quantity::Energy => {
            let inc: f64 = samples.windows(2).map(|w| (w[1].v - w[0].v).max(0.0)).sum();
            let first = samples[0];
            let last = samples[samples.len() - 1];
            HourRow {
                t: hour,
                n,
                v: inc,
                first: Some((first.t + interval, first.v)),
                last: Some((last.t + interval, last.v)),
            }
        }
    })
}

/// One point per step in `[from, to)` that has data, in time order. `pieces` are in time
/// order; they may start before `from` (an earlier observation lets the first step's
/// increase be known) and are clipped to the range.
pub fn points(
    quantity: Quantity,
    interval: i64,
    pieces: &[Piece],
    step: Step,
    offset: Offset,
    from: i64,
    to: i64,
) -> Vec<(i64, f64)> {
    match quantity {
        Quantity::Power => power_points(pieces, step, offset, from, to),
        Quantity::Energy => energy_points(interval, pieces, step, offset, from, to),
    }
}

fn power_points(pieces: &[Piece], step: Step, offset: Offset, from: i64, to: i64) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let mut current: Option<(i64, f64, i64)> = None; // (step start, Σ v·n, Σ n)
    for piece in pieces {
        let (t, v, n) = match piece {
            Piece::Raw(s) => (s.t, s.v, 1),
            Piece::Hour(h) => (h.t, h.v, h.n.max(1)),
        };
        if t < from || t >= to {
            continue;
        }
        let key = step.floor(t, offset);
        match &mut current {
            Some((k, sum, count)) if *k == key => {
                *sum += v * n as f64;
                *count += n;
            }
            _ => {
                if let Some((k, sum, count)) = current.take() {
                    out.push((k, sum / count as f64));
                }
                current = Some((key, v * n as f64, n));
            }
        }
    }
    if let Some((k, sum, count)) = current {
        out.push((k, sum / count as f64));
    }
    out
}

/// Every known increase of an energy series, in time order.
fn increases(interval: i64, pieces: &[Piece], mut f: impl FnMut(Increase)) {
    let mut last_obs: Option<(i64, f64)> = None;
    let step_to = |obs: (i64, f64), last: &mut Option<(i64, f64)>, f: &mut dyn FnMut(Increase)| {
        if let Some((t0, c0)) = *last
            && obs.0 > t0
            && obs.1 >= c0
        {
            f(Increase {
                from: t0,
                to: obs.0,
                kwh: obs.1 - c0,
            });
        }
        *last = Some(obs);
    };
    for piece in pieces {
        match piece {
            Piece::Raw(s) => step_to((s.t + interval, s.v), &mut last_obs, &mut f),
            Piece::Hour(h) => {
                let (Some(first), Some(last)) = (h.first, h.last) else {
                    continue;
                };
                step_to(first, &mut last_obs, &mut f);
                if last.0 > first.0 {
                    f(Increase {
                        from: first.0,
                        to: last.0,
                        kwh: h.v.max(0.0),
                    });
                }
                last_obs = Some(last);
            }
        }
    }
}

fn energy_points(interval: i64, pieces: &[Piece], step: Step, offset: Offset, from: i64, to: i64) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    increases(interval, pieces, |inc| {
        if inc.from < from || inc.to > to {
            return;
        }
        let key = step.floor(inc.from, offset);
        if inc.to > key + step.seconds() {
            return; // straddles a step boundary
        }
        match out.last_mut() {
            Some((k, sum)) if *k == key => *sum += inc.kwh,
            _ => out.push((key, inc.kwh)),
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 1_767_225_600; // 2026-01-01T00:00Z

    fn raw(t: i64, v: f64) -> Piece {
        Piece::Raw(RawSample { t, v })
    }

    fn minute_counter(from_min: i64, to_min: i64, kwh_per_min: f64) -> Vec<Piece> {
        (from_min..to_min)
            .map(|m| raw(H + m * 60, (m + 1) as f64 * kwh_per_min))
            .collect()
    }

    #[test]
    fn contiguous_energy_is_the_counters_increase() {
        let p = minute_counter(-1, 180, 0.01);
        let hours = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + 3 * HOUR);
        assert_eq!(hours.len(), 3);
        for (i, (t, v)) in hours.iter().enumerate() {
            assert_eq!(*t, H + i as i64 * HOUR);
            assert!((v - 0.6).abs() < 1e-9, "{v}");
        }
        // The first hour without the observation before it: 59 minutes are known.
        let p = minute_counter(0, 60, 0.01);
        let hours = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + HOUR);
        assert!((hours[0].1 - 0.59).abs() < 1e-9);
    }

    #[test]
    fn an_increase_across_a_gap_on_a_step_boundary_is_left_out() {
        // Data until 00:50, then from 01:10: the 20-minute gap straddles 01:00.
        let mut p = minute_counter(-1, 50, 0.01);
        p.extend(minute_counter(70, 120, 0.01));
        let hours = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + 2 * HOUR);
        assert!((hours[0].1 - 0.50).abs() < 1e-9, "{hours:?}");
        // From the first observation after the gap (01:11) on: 49 minutes.
        assert!((hours[1].1 - 0.49).abs() < 1e-9, "{hours:?}");
        // Within the day, the increase over the gap is known: the day gets all of it.
        let days = points(Quantity::Energy, 60, &p, Step::Day, Offset::UTC, H, H + DAY);
        assert!((days[0].1 - 1.20).abs() < 1e-9, "{days:?}");
        // An hour with no samples at all has no point.
        let hours = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + 5 * HOUR);
        assert_eq!(hours.len(), 2);
    }

    #[test]
    fn a_counter_restart_books_nothing_negative() {
        let p = vec![raw(H, 5.0), raw(H + 60, 5.5), raw(H + 120, 0.1), raw(H + 180, 0.3)];
        let v = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + HOUR);
        assert!((v[0].1 - 0.7).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn roll_ups_give_the_same_steps_as_raw() {
        let mut p = minute_counter(-1, 50, 0.01);
        p.extend(minute_counter(70, 24 * 60 + 30, 0.02));
        let raw_days = points(Quantity::Energy, 60, &p, Step::Day, Offset::UTC, H, H + DAY);
        let raw_hours = points(Quantity::Energy, 60, &p, Step::Hour, Offset::UTC, H, H + DAY);
        let mut rolled = Vec::new();
        for h in -1..25 {
            let start = H + h * HOUR;
            let s: Vec<RawSample> = p
                .iter()
                .filter_map(|x| match x {
                    Piece::Raw(r) if r.t >= start && r.t < start + HOUR => Some(*r),
                    _ => None,
                })
                .collect();
            if let Some(row) = roll_up(Quantity::Energy, start, 60, &s) {
                rolled.push(Piece::Hour(row));
            }
        }
        let days = points(Quantity::Energy, 60, &rolled, Step::Day, Offset::UTC, H, H + DAY);
        let hours = points(Quantity::Energy, 60, &rolled, Step::Hour, Offset::UTC, H, H + DAY);
        assert_eq!(days.len(), raw_days.len());
        assert!((days[0].1 - raw_days[0].1).abs() < 1e-9);
        assert_eq!(hours.len(), raw_hours.len());
        for (a, b) in hours.iter().zip(&raw_hours) {
            assert_eq!(a.0, b.0);
            assert!((a.1 - b.1).abs() < 1e-9, "{a:?} {b:?}");
        }
        // Mixed: roll-ups first, then raw samples.
        let mut mixed: Vec<Piece> = rolled
            .iter()
            .copied()
            .filter(|x| matches!(x, Piece::Hour(h) if h.t < H + 12 * HOUR))
            .collect();
        mixed.extend(
            p.iter()
                .copied()
                .filter(|x| matches!(x, Piece::Raw(r) if r.t >= H + 12 * HOUR)),
        );
        let days = points(Quantity::Energy, 60, &mixed, Step::Day, Offset::UTC, H, H + DAY);
        assert!((days[0].1 - raw_days[0].1).abs() < 1e-9);
    }

    #[test]
    fn power_averages_weighted_by_sample_count() {
        let p = vec![
            Piece::Hour(HourRow {
                t: H,
                n: 60,
                v: 100.0,
                first: None,
                last: None,
            }),
            Piece::Hour(HourRow {
                t: H + HOUR,
                n: 30,
                v: 400.0,
                first: None,
                last: None,
            }),
            raw(H + 2 * HOUR, 1000.0),
        ];
        let d = points(Quantity::Power, 60, &p, Step::Day, Offset::UTC, H, H + DAY);
        assert_eq!(d, vec![(H, (6000.0 + 12_000.0 + 1000.0) / 91.0)]);
        let h = points(Quantity::Power, 60, &p, Step::Hour, Offset::UTC, H + HOUR, H + DAY);
        assert_eq!(h, vec![(H + HOUR, 400.0), (H + 2 * HOUR, 1000.0)]);
    }

    #[test]
    fn steps_follow_local_midnight() {
        let plus2 = Offset::from_seconds(7200).unwrap();
        assert_eq!(Step::Day.floor(H, plus2), H - 7200);
        assert_eq!(Step::Day.floor(H + 22 * HOUR, plus2), H + 22 * HOUR);
        assert_eq!(Step::Hour.floor(H + 59 * 60, plus2), H);
        assert_eq!(Step::parse("week"), None);
    }
}
