//! Property tests of the energy-flow core (`pzem::energy_flow`): exact
//! conservation and monotonic flows over arbitrary sequences of readings,
//! absences, invalid values, counter restarts, implausible jumps (held,
//! confirmed or dropped), forgotten sources, coarse battery rounding, time
//! gaps, flushes and restarts from the saved state with a known or unknown
//! downtime.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use pzem::energy_flow::{Flow, FlowConfig, FlowState, FlowTracker, Flows, HOLD_FOR, Output, Source, split};

const AC_IN: usize = 0;
const AC_OUT: usize = 1;
const BATTERY: usize = 2;

/// One thing that happens to the sources or to the service.
#[derive(Clone, Debug)]
enum Op {
    /// The source's true counter moves on by this many Wh and the source
    /// publishes it.
    Count(usize, u64),
    /// The counter moves on unseen (not published yet).
    Unseen(usize, u64),
    /// The source is absent.
    Absent(usize),
    /// The source publishes a value that is no energy counter.
    Invalid(usize, f64),
    /// The source's counter restarts from zero (reset, history cleared),
    /// unseen until its next reading.
    Reset(usize),
    /// Time passes (ms); the driver handles the timeout.
    Wait(u64),
    /// SIGTERM-style flush.
    Flush,
    /// Stop after a flush, stay down this many ms, and start again from the
    /// saved line, telling the tracker how long it was down.
    Restart(u64),
    /// Crash: start again from the last saved line (or from zero); whether
    /// the driver knows the downtime (zero) or not.
    Crash(bool),
    /// The source is a new device: the tracker forgets its counter.
    Forget(usize),
    /// The source publishes this many Wh above its true counter once (a
    /// glitch), then its true value again.
    Glitch(usize, u64),
}

fn source() -> impl Strategy<Value = usize> {
    0usize..3
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (source(), 0u64..400).prop_map(|(s, wh)| Op::Count(s, wh)),
        5 => (source(), 0u64..5000).prop_map(|(s, wh)| Op::Unseen(s, wh)),
        4 => source().prop_map(Op::Absent),
        2 => (source(), prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -1e6..-0.001])
            .prop_map(|(s, v)| Op::Invalid(s, v)),
        2 => source().prop_map(Op::Reset),
        20 => prop_oneof![0u64..3000, 0u64..200_000].prop_map(Op::Wait),
        2 => Just(Op::Flush),
        2 => (0u64..600_000).prop_map(Op::Restart),
        2 => any::<bool>().prop_map(Op::Crash),
        1 => source().prop_map(Op::Forget),
        1 => (source(), 1u64..2_000_000).prop_map(|(s, wh)| Op::Glitch(s, wh)),
    ]
}

/// The Wh a source shows for its true counter, and the kWh it publishes:
/// AC meters count whole Wh (published with a little float noise), the
/// battery monitor's history has 0.01 kWh resolution.
fn shown(source: usize, true_wh: u64, noise: bool) -> (u64, f64) {
    if source == BATTERY {
        let hundredths = (true_wh + 5) / 10;
        (hundredths * 10, hundredths as f64 / 100.0)
    } else {
        let jitter = if noise && true_wh % 3 == 1 { 1e-9 } else { 0.0 };
        (true_wh, true_wh as f64 / 1000.0 + jitter)
    }
}

/// The most a counter may plausibly gain in `elapsed`, stated here from the
/// documented rule: the maximum power for all that time, rounded up to a
/// whole Wh, plus the jitter tolerance and 2 Wh.
fn plausible(config: &FlowConfig, elapsed: Duration) -> u64 {
    let wh = u128::from(config.max_power_w)
        .checked_mul(elapsed.as_nanos())
        .map_or(u128::MAX, |e| e.div_ceil(3_600_000_000_000));
    u64::try_from(wh)
        .unwrap_or(u64::MAX)
        .saturating_add(config.backwards_tolerance_wh)
        .saturating_add(2)
}

/// An independent statement of what a source has counted: the energy since
/// the tracker's saved state, by the documented rule. A rise counts when it
/// is plausible for the time since the reference was last seen (any rise when
/// that time is unknown); an implausible rise is held, and replaces the
/// reference without counting when the next reading goes on plausibly from
/// it; a drop within the tolerance is jitter; a larger drop is a restart
/// whose new value counts when plausible, else it replaces the reference.
/// A held value that no reading contradicts for `HOLD_FOR` replaces the
/// reference (seen at the end of the hold) without counting.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    high: Option<u64>,
    /// When the reference was last seen, and the unseen time before that;
    /// `None`: unknown.
    at: Option<(Instant, Duration)>,
    held: Option<(u64, Instant)>,
    energy: u64,
}

impl Seen {
    /// Confirm a hold that ran its time by `now`.
    fn settle(&mut self, now: Instant) {
        if let Some((x, t)) = self.held
            && t + HOLD_FOR <= now
        {
            self.held = None;
            self.high = Some(x);
            self.at = Some((t + HOLD_FOR, Duration::ZERO));
        }
    }

    fn see(&mut self, now: Instant, wh: u64, config: &FlowConfig) {
        self.settle(now);
        let Some(h) = self.high else {
            self.high = Some(wh);
            self.at = Some((now, Duration::ZERO));
            return;
        };
        let bound = self
            .at
            .map(|(at, before)| plausible(config, now.saturating_duration_since(at).saturating_add(before)));
        let held = self.held.take();
        if wh >= h {
            if bound.is_none_or(|b| wh - h <= b) {
                self.energy += wh - h;
                self.high = Some(wh);
                self.at = Some((now, Duration::ZERO));
            } else if held
                .is_some_and(|(x, t)| wh >= x && wh - x <= plausible(config, now.saturating_duration_since(t)))
            {
                self.high = Some(wh);
                self.at = Some((now, Duration::ZERO));
            } else {
                self.held = Some((wh, now));
            }
        } else if h - wh <= config.backwards_tolerance_wh {
            self.at = Some((now, Duration::ZERO));
        } else {
            if bound.is_some_and(|b| wh <= b) {
                self.energy += wh;
            }
            self.high = Some(wh);
            self.at = Some((now, Duration::ZERO));
        }
    }

    fn forget(&mut self) {
        self.high = None;
        self.at = None;
        self.held = None;
    }
}

/// Every flow of `f` is at least that of `floor`.
fn assert_not_below(f: &Flows, floor: &Flows) {
    for flow in Flow::ALL {
        assert!(f.wh(flow) >= floor.wh(flow), "{f:?} < {floor:?}");
    }
}

struct World {
    config: FlowConfig,
    tracker: FlowTracker,
    now: Instant,
    truth: [u64; 3],
    seen: [Seen; 3],
    /// The flows when this tracker started, and the last saved (the flows a
    /// driver publishes): no flow may go below them, not even after a crash.
    floor: Flows,
    saved_line: Option<String>,
}

impl World {
    fn new(config: FlowConfig) -> World {
        World {
            config,
            tracker: FlowTracker::new(config, FlowState::default()),
            now: Instant::now(),
            truth: [0; 3],
            seen: [Seen::default(); 3],
            floor: Flows::default(),
            saved_line: None,
        }
    }

    /// Act on the tracker's outputs; check every published total.
    fn drain(&mut self) -> Option<FlowState> {
        let mut saved = None;
        while let Some(out) = self.tracker.poll() {
            match out {
                Output::Event(e) => {
                    let _ = e.to_string();
                }
                // What a driver publishes: the flows of each state saved.
                Output::Save(s) => {
                    assert_not_below(&s.flows, &self.floor);
                    self.floor = s.flows;
                    self.saved_line = Some(s.to_line());
                    saved = Some(s);
                }
            }
        }
        // Booked energy never exceeds what the sources counted.
        let f = self.tracker.flows();
        assert!(f.ac_in_wh() <= self.seen[AC_IN].energy);
        assert!(f.ac_out_wh() <= self.seen[AC_OUT].energy);
        saved
    }

    fn deliver(&mut self, s: usize) {
        let (wh, kwh) = shown(s, self.truth[s], true);
        self.show(s, wh, kwh);
    }

    fn show(&mut self, s: usize, wh: u64, kwh: f64) {
        self.seen[s].see(self.now, wh, &self.config);
        self.tracker.reading(self.now, Source::ALL[s], Some(kwh));
    }

    /// Flush and check that the saved state holds exactly what the sources
    /// counted: both sum relations and every counter.
    fn flush_and_check(&mut self) -> FlowState {
        for s in &mut self.seen {
            s.settle(self.now);
        }
        self.tracker.flush(self.now);
        let saved = self.drain().expect("flush asks to save");
        assert_eq!(saved, self.tracker.state());
        assert_eq!(saved.flows.ac_in_wh(), self.seen[AC_IN].energy, "AC-in conservation");
        assert_eq!(saved.flows.ac_out_wh(), self.seen[AC_OUT].energy, "AC-out conservation");
        for s in 0..3 {
            assert_eq!(saved.counter(Source::ALL[s]), self.seen[s].high, "{:?}", Source::ALL[s]);
        }
        saved
    }

    /// Start a new tracker from a saved line, `downtime` after the save
    /// (`None`: unknown); the sources' counted energy restarts from that
    /// state too.
    fn start_from(&mut self, line: Option<String>, downtime: Option<Duration>) {
        let state = match line {
            Some(l) => FlowState::parse(&l).expect("a saved line parses"),
            None => FlowState::default(),
        };
        self.tracker = FlowTracker::new(self.config, state);
        if let Some(d) = downtime {
            self.tracker.set_downtime(self.now, d);
        }
        assert_eq!(self.tracker.flows(), state.flows);
        assert_not_below(&state.flows, &self.floor);
        self.floor = state.flows;
        for s in 0..3 {
            let high = state.counter(Source::ALL[s]);
            self.seen[s] = Seen {
                high,
                at: high.and(downtime).map(|d| (self.now, d)),
                held: None,
                energy: 0,
            };
        }
        self.seen[AC_IN].energy = state.flows.ac_in_wh();
        self.seen[AC_OUT].energy = state.flows.ac_out_wh();
        self.seen[BATTERY].energy = 0;
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Count(s, wh) => {
                self.truth[s] += wh;
                self.deliver(s);
            }
            Op::Unseen(s, wh) => self.truth[s] += wh,
            Op::Absent(s) => self.tracker.reading(self.now, Source::ALL[s], None),
            Op::Invalid(s, v) => self.tracker.reading(self.now, Source::ALL[s], Some(v)),
            Op::Reset(s) => self.truth[s] = 0,
            Op::Wait(ms) => {
                self.now += Duration::from_millis(ms);
                if self.tracker.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.tracker.handle_timeout(self.now);
                }
            }
            Op::Flush => {
                self.flush_and_check();
            }
            Op::Restart(down_ms) => {
                let saved = self.flush_and_check();
                let down = Duration::from_millis(down_ms);
                self.now += down;
                self.start_from(Some(saved.to_line()), Some(down));
            }
            Op::Crash(known) => {
                let line = self.saved_line.clone();
                self.start_from(line, known.then_some(Duration::ZERO));
            }
            Op::Forget(s) => {
                self.seen[s].forget();
                self.tracker.forget(self.now, Source::ALL[s]);
            }
            Op::Glitch(s, extra) => {
                let (wh, _) = shown(s, self.truth[s], false);
                let wrong = wh + extra;
                self.show(s, wrong, wrong as f64 / 1000.0);
                self.deliver(s);
            }
        }
        self.drain();
    }
}

fn config() -> impl Strategy<Value = FlowConfig> {
    (
        0u64..5000,
        1u64..120_000,
        0u64..30,
        prop_oneof![1u64..5_000, 5_000u64..200_000, Just(u64::MAX)],
    )
        .prop_map(|(settle, save, tolerance, max_power_w)| FlowConfig {
            settle: Duration::from_millis(settle),
            save_within: Duration::from_millis(save),
            backwards_tolerance_wh: tolerance,
            max_power_w,
        })
}

/// Settings under which every rise is plausible: no jump is ever held.
fn unbounded_config() -> impl Strategy<Value = FlowConfig> {
    config().prop_map(|c| FlowConfig {
        max_power_w: u64::MAX,
        ..c
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The split of one step: exact sums, never negative, the passthrough as
    /// specified (computed here in signed arithmetic).
    #[test]
    fn split_is_exact(d_in in any::<u64>(), d_out in any::<u64>(), d_dis in any::<u64>()) {
        let f = split(d_in, d_out, d_dis);
        let p = (i128::from(d_out) - i128::from(d_dis)).clamp(0, i128::from(d_in.min(d_out)));
        prop_assert_eq!(i128::from(f.ac_in_to_ac_out_wh), p);
        prop_assert_eq!(f.ac_in_to_ac_out_wh + f.ac_in_to_inverter_wh, d_in);
        prop_assert_eq!(f.ac_in_to_ac_out_wh + f.inverter_to_ac_out_wh, d_out);
    }

    /// Conservation against the documented source rule, exactly, and
    /// monotonic flows, through absences, invalid values, restarts from zero,
    /// implausible jumps and glitches, forgotten sources, unseen counting,
    /// gaps, flushes, restarts and crashes.
    #[test]
    fn flows_conserve_energy_and_never_decrease(
        config in config(),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut w = World::new(config);
        for op in &ops {
            w.run(op);
        }
        for s in 0..3 {
            w.deliver(s);
        }
        w.drain();
        w.flush_and_check();
    }

    /// Without counter restarts, crashes, glitches or forgotten sources, and
    /// with no power bound, the flows add up to the true energy through each
    /// AC meter since its first reading, exactly, whatever the gaps,
    /// absences and battery rounding.
    #[test]
    fn flows_add_up_to_the_meters(
        config in unbounded_config(),
        ops in proptest::collection::vec(op().prop_filter("no restarts from zero, crashes, glitches or forgetting", |o| {
            !matches!(o, Op::Reset(_) | Op::Crash(_) | Op::Forget(_) | Op::Glitch(..))
        }), 0..200),
    ) {
        let mut w = World::new(config);
        let mut first: [Option<u64>; 3] = [None; 3];
        for op in &ops {
            if let Op::Count(s, wh) = *op {
                first[s].get_or_insert(w.truth[s] + wh);
                // A moment passes before each reading: with no power bound, any
                // rise over any time is then plausible.
                w.run(&Op::Wait(1));
            }
            w.run(op);
        }
        w.run(&Op::Wait(1));
        for (s, first) in first.iter_mut().enumerate() {
            first.get_or_insert(w.truth[s]);
            w.deliver(s);
        }
        let saved = w.flush_and_check();
        prop_assert_eq!(saved.flows.ac_in_wh(), w.truth[AC_IN] - first[AC_IN].unwrap_or(0));
        prop_assert_eq!(saved.flows.ac_out_wh(), w.truth[AC_OUT] - first[AC_OUT].unwrap_or(0));
    }

    /// Any value, any timing: no panic, flows never decrease.
    #[test]
    fn any_input_is_safe(
        config in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| FlowConfig {
            settle: Duration::from_nanos(a),
            save_within: Duration::from_nanos(b),
            backwards_tolerance_wh: c,
            max_power_w: d,
        }),
        inputs in proptest::collection::vec((source(), proptest::option::of(any::<f64>()), any::<u32>()), 0..100),
    ) {
        let mut t = FlowTracker::new(config, FlowState::default());
        let mut now = Instant::now();
        let mut last = t.flows();
        for (s, kwh, wait_ms) in inputs {
            now += Duration::from_millis(u64::from(wait_ms % 100_000));
            t.reading(now, Source::ALL[s], kwh);
            let _ = t.poll_timeout();
            t.handle_timeout(now);
            while let Some(out) = t.poll() {
                // What a driver publishes: the flows of each state saved.
                if let Output::Save(s) = out {
                    let f = s.flows;
                    prop_assert!(f.ac_in_to_ac_out_wh >= last.ac_in_to_ac_out_wh);
                    prop_assert!(f.ac_in_to_inverter_wh >= last.ac_in_to_inverter_wh);
                    prop_assert!(f.inverter_to_ac_out_wh >= last.inverter_to_ac_out_wh);
                    last = f;
                }
            }
        }
        t.flush(now);
        let Some(Output::Save(s)) = std::iter::from_fn(|| t.poll()).last() else {
            panic!("a flush asks to save");
        };
        prop_assert_eq!(s.flows, t.flows());
        prop_assert!(s.flows.ac_in_to_ac_out_wh >= last.ac_in_to_ac_out_wh);
        prop_assert!(s.flows.ac_in_to_inverter_wh >= last.ac_in_to_inverter_wh);
        prop_assert!(s.flows.inverter_to_ac_out_wh >= last.inverter_to_ac_out_wh);
    }

    /// Saved lines round-trip.
    #[test]
    fn state_lines_round_trip(
        flows in (any::<u64>(), any::<u64>(), any::<u64>()),
        counters in (any::<Option<u64>>(), any::<Option<u64>>(), any::<Option<u64>>(), any::<Option<u64>>()),
    ) {
        let s = FlowState {
            flows: Flows { ac_in_to_ac_out_wh: flows.0, ac_in_to_inverter_wh: flows.1, inverter_to_ac_out_wh: flows.2 },
            ac_in_wh: counters.0,
            ac_out_wh: counters.1,
            battery_wh: counters.2,
            saved_at_unix_s: counters.3,
        };
        prop_assert_eq!(FlowState::parse(&s.to_line()), Ok(s));
    }

    /// Parsing never panics, on any text or on a damaged saved line.
    #[test]
    fn parse_never_panics(text in ".*", flip in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let _ = FlowState::parse(&text);
        let mut line = FlowState::default().to_line().into_bytes();
        let i = flip % line.len();
        line[i] = byte;
        line.truncate(cut % (line.len() + 1));
        let _ = FlowState::parse(&String::from_utf8_lossy(&line));
    }
}
