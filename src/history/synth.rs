//! Plausible synthetic history for demos and benchmarks (sans-IO).
//!
//! [`Synth`] yields one [`Batch`] per minute, as pzem-logger would have written them, for a
//! small off-grid-capable system:
//!
//! | meter | service | what it sees |
//! |---|---|---|
//! | 1 | `grid.pzem_ttyUSB0_1` | the grid input: loads on grid plus night charging |
//! | 2 | `acload.pzem_ttyUSB0_2` | the AC loads: a base load, morning, noon and evening peaks, a kettle now and then |
//! | 3 | `dcsource.pzem_ttyUSB0_3` | a DC wind charger: gusty, stronger in winter |
//! | 4 | `dcload.pzem_ttyUSB0_4` | a 12 V fridge cycling on and off |
//! | 5… | `acload.pzem_ttyUSB0_N` | further AC loads, a share of the main one |
//!
//! With two meters or more there are also the battery monitor (`battery.ttyO1`) and the
//! energy-flow service (`vebus.pzem_energy`): the battery charges from the grid from 01:00
//! to 05:00 and carries the loads in the evening and during outages. A **grid outage**
//! (10:00–16:00 local on the day a third into the range) silences the grid meter, and the
//! logger itself is **down** from 03:00 to 05:30 on the day two thirds in: both are gaps.
//! Everything is deterministic for a seed.

use super::recorder::{Batch, Sample};
use super::series::Quantity;
use super::time::{DAY, Offset};
use crate::sim::rng::Rng;

/// The interval of synthetic data, seconds.
pub const INTERVAL: u32 = 60;

struct Meter {
    service: String,
    power: &'static str,
    energy: &'static str,
    kind: Kind,
    kwh: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Grid,
    Load,
    Wind,
    Fridge,
    SubLoad(u32),
}

/// The generator: an iterator of minute batches from `start` for `days` days.
pub struct Synth {
    rng: Rng,
    offset: Offset,
    start: i64,
    end: i64,
    t: i64,
    meters: Vec<Meter>,
    flows: bool,
    soc_wh: f64,
    charged_kwh: f64,
    discharged_kwh: f64,
    grid_to_loads_kwh: f64,
    grid_to_battery_kwh: f64,
    battery_to_loads_kwh: f64,
    wind_w: f64,
    kettle_left: u32,
    outage_day: i64,
    down_day: i64,
}

impl Synth {
    /// History for `meters` meters (at least 1) over the `days` days ending at the local
    /// midnight after `now`, with local time at `offset`.
    pub fn new(days: u32, meters: u32, now: i64, offset: Offset, seed: u64) -> Synth {
        let o = i64::from(offset.seconds());
        let end = ((now + o).div_euclid(DAY) + 1) * DAY - o;
        let start = end - i64::from(days) * DAY;
        let flows = meters >= 2;
        let kinds = (1..=meters.max(1)).map(|n| match n {
            1 => Kind::Grid,
            2 => Kind::Load,
            3 => Kind::Wind,
            4 => Kind::Fridge,
            n => Kind::SubLoad(n),
        });
        let meters = kinds
            .enumerate()
            .map(|(i, kind)| {
                let (class, power, energy) = match kind {
                    Kind::Grid => ("grid", "/Ac/Power", "/Ac/Energy/Forward"),
                    Kind::Load | Kind::SubLoad(_) => ("acload", "/Ac/Power", "/Ac/Energy/Forward"),
                    Kind::Wind => ("dcsource", "/Dc/0/Power", "/History/EnergyOut"),
                    Kind::Fridge => ("dcload", "/Dc/0/Power", "/History/EnergyIn"),
                };
                Meter {
                    service: format!("com.victronenergy.{class}.pzem_ttyUSB0_{}", i + 1),
                    power,
                    energy,
                    kind,
                    kwh: 100.0 * (i + 1) as f64 + 0.123,
                }
            })
            .collect();
        Synth {
            rng: Rng::new(seed),
            offset,
            start,
            end,
            t: start,
            meters,
            flows,
            soc_wh: 6000.0,
            charged_kwh: 812.4,
            discharged_kwh: 790.1,
            grid_to_loads_kwh: 2150.0,
            grid_to_battery_kwh: 640.0,
            battery_to_loads_kwh: 705.0,
            wind_w: 150.0,
            kettle_left: 0,
            outage_day: i64::from(days) / 3,
            down_day: i64::from(days) * 2 / 3,
        }
    }

    /// The first interval's start.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The end of the generated range (exclusive).
    pub fn end(&self) -> i64 {
        self.end
    }

    /// How many series the batches hold.
    pub fn series_count(&self) -> usize {
        self.meters.len() * 2 + if self.flows { 6 } else { 0 }
    }
}

/// A smooth bump: 1 inside `[a, b]` hours with half-hour ramps, 0 outside.
fn bump(h: f64, a: f64, b: f64) -> f64 {
    let ramp = 0.5;
    if h < a - ramp || h > b + ramp {
        0.0
    } else if h < a {
        (h - (a - ramp)) / ramp
    } else if h > b {
        ((b + ramp) - h) / ramp
    } else {
        1.0
    }
}

impl Iterator for Synth {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.t >= self.end {
            return None;
        }
        let t = self.t;
        self.t += i64::from(INTERVAL);
        let local = t + i64::from(self.offset.seconds());
        let day = (t - self.start).div_euclid(DAY);
        let h = local.rem_euclid(DAY) as f64 / 3600.0;
        let year_phase = (local.div_euclid(DAY) as f64 / 365.25 * std::f64::consts::TAU).cos(); // 1 in January
        let minutes = f64::from(INTERVAL) / 60.0;

        // AC loads.
        if self.kettle_left == 0 && self.rng.chance(if (6.0..23.0).contains(&h) { 0.004 } else { 0.0005 }) {
            self.kettle_left = 3;
        }
        let kettle = if self.kettle_left > 0 {
            self.kettle_left -= 1;
            1900.0
        } else {
            0.0
        };
        let load = 110.0
            + 30.0 * self.rng.unit()
            + 650.0 * bump(h, 6.5, 8.0)
            + 350.0 * bump(h, 12.0, 13.0)
            + 1100.0 * bump(h, 18.0, 21.5)
            + 200.0 * bump(h, 21.5, 22.5)
            + kettle;
        let outage = day == self.outage_day && (10.0..16.0).contains(&h);
        let logger_down = day == self.down_day && (3.0..5.5).contains(&h);

        // The battery.
        let soc = self.soc_wh / 10_000.0;
        let grid_to_battery = if !outage && (1.0..5.0).contains(&h) && soc < 0.9 {
            900.0
        } else {
            0.0
        };
        let evening = (17.5..23.0).contains(&h);
        let battery_to_loads = if outage || (evening && soc > 0.25) {
            if soc > 0.05 { load.min(3000.0) } else { 0.0 }
        } else {
            0.0
        };
        let grid_to_loads = if outage { 0.0 } else { load - battery_to_loads };

        // DC side.
        self.wind_w += 40.0 * self.rng.signed() + (180.0 + 120.0 * year_phase - self.wind_w) * 0.02;
        self.wind_w = self.wind_w.clamp(0.0, 800.0);
        let wind = (self.wind_w - 40.0).max(0.0);
        let fridge = if (local.rem_euclid(2700)) < 1200 { 45.0 } else { 0.0 };

        let battery_w = grid_to_battery * 0.92 + wind - fridge - battery_to_loads / 0.9;
        self.soc_wh = (self.soc_wh + battery_w * minutes / 60.0).clamp(0.0, 10_000.0);
        let kwh = |w: f64| w * minutes / 60.0 / 1000.0;
        if battery_w >= 0.0 {
            self.charged_kwh += kwh(battery_w);
        } else {
            self.discharged_kwh += kwh(-battery_w);
        }
        self.grid_to_loads_kwh += kwh(grid_to_loads);
        self.grid_to_battery_kwh += kwh(grid_to_battery);
        self.battery_to_loads_kwh += kwh(battery_to_loads);

        let mut samples = Vec::with_capacity(self.series_count());
        let mut push = |service: &str, path: &'static str, quantity: Quantity, value: f64| {
            samples.push(Sample {
                service: service.to_owned(),
                path,
                quantity,
                t,
                value: (value * 1000.0).round() / 1000.0,
            });
        };
        for m in &mut self.meters {
            let w = match m.kind {
                Kind::Grid => grid_to_loads + grid_to_battery,
                Kind::Load => load,
                Kind::Wind => wind,
                Kind::Fridge => fridge,
                Kind::SubLoad(n) => load * 0.1 * f64::from(n % 4 + 1),
            };
            m.kwh += kwh(w);
            if logger_down || (outage && m.kind == Kind::Grid) {
                continue;
            }
            push(&m.service, m.power, Quantity::Power, w);
            push(&m.service, m.energy, Quantity::Energy, m.kwh);
        }
        if self.flows && !logger_down {
            let vebus = "com.victronenergy.vebus.pzem_energy";
            push(vebus, "/Energy/AcIn1ToAcOut", Quantity::Energy, self.grid_to_loads_kwh);
            push(
                vebus,
                "/Energy/AcIn1ToInverter",
                Quantity::Energy,
                self.grid_to_battery_kwh,
            );
            push(
                vebus,
                "/Energy/InverterToAcOut",
                Quantity::Energy,
                self.battery_to_loads_kwh,
            );
            let battery = "com.victronenergy.battery.ttyO1";
            push(battery, "/Dc/0/Power", Quantity::Power, battery_w);
            push(battery, "/History/ChargedEnergy", Quantity::Energy, self.charged_kwh);
            push(
                battery,
                "/History/DischargedEnergy",
                Quantity::Energy,
                self.discharged_kwh,
            );
        }
        Some(Batch { start: t, samples })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plausible_week() {
        let now = 1_767_225_600 + 3600;
        let batches: Vec<Batch> = Synth::new(7, 4, now, Offset::UTC, 1).collect();
        assert_eq!(batches.len(), 7 * 1440);
        assert_eq!(batches.last().unwrap().start + 60, 1_767_225_600 + DAY);
        let series = |b: &Batch, p: &str, s: &str| {
            b.samples
                .iter()
                .find(|x| x.path == p && x.service.contains(s))
                .map(|x| x.value)
        };
        // Day 2 (7/3) 12:00: the outage, no grid sample; the loads come from the battery.
        let noon = &batches[2 * 1440 + 12 * 60];
        assert_eq!(series(noon, "/Ac/Power", "grid"), None);
        assert!(series(noon, "/Ac/Power", "acload").is_some());
        // Day 4 (14/3) 04:00: the logger was down.
        assert!(batches[4 * 1440 + 4 * 60].samples.is_empty());
        // Counters never go down.
        let mut last = std::collections::HashMap::new();
        for b in &batches {
            for s in b.samples.iter().filter(|s| s.quantity == Quantity::Energy) {
                let before = last.insert((s.service.clone(), s.path), s.value).unwrap_or(0.0);
                assert!(s.value >= before, "{} {} went down", s.service, s.path);
            }
        }
        // Evening loads are higher than night loads.
        let at = |d: usize, h: usize| series(&batches[d * 1440 + h * 60], "/Ac/Power", "acload").unwrap();
        assert!(at(1, 19) > at(1, 3) + 500.0);
    }
}
