//! Properties of the history's sans-IO core: no input makes the parsers panic, and the
//! step math never invents or shifts energy.
#![cfg(feature = "web")]

use proptest::prelude::*;
use pzem::history::params::SamplesQuery;
use pzem::history::query::{Piece, RawSample, Step, points, roll_up};
use pzem::history::series::Quantity;
use pzem::history::time::{Offset, parse_time};
use pzem::web::http::{Head, parse_head};

const T0: i64 = 1_767_225_600;

proptest! {
    #[test]
    fn time_parsing_never_panics(text in "\\PC{0,40}", digits in "[0-9T:+\\-Z ]{0,30}") {
        let _ = parse_time(&text, Offset::UTC);
        let _ = parse_time(&digits, Offset::UTC);
        let _ = Offset::parse(&text);
    }

    #[test]
    fn request_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), full in any::<bool>()) {
        let _ = parse_head(&bytes, full);
        let mut req = b"GET /".to_vec();
        req.extend_from_slice(&bytes);
        req.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        if let Head::Complete(r) = parse_head(&req, false) {
            let _ = SamplesQuery::parse(&r.query, Offset::UTC);
        }
    }

    #[test]
    fn energy_steps_sum_to_at_most_the_increase_and_exactly_without_gaps(
        rates in proptest::collection::vec(0.0f64..0.05, 300),
        gaps in proptest::collection::vec(any::<bool>(), 300),
        step in prop_oneof![Just(Step::Minute), Just(Step::Hour), Just(Step::Seconds(300))],
        gappy in any::<bool>(),
    ) {
        let mut counter = 100.0;
        let mut pieces = Vec::new();
        for (i, rate) in rates.iter().enumerate() {
            counter += rate;
            if !(gappy && gaps[i]) {
                pieces.push(Piece::Raw(RawSample { t: T0 + i as i64 * 60, v: counter }));
            }
        }
        let first = match pieces.first() { Some(Piece::Raw(s)) => s.v, _ => return Ok(()) };
        let last = match pieces.last() { Some(Piece::Raw(s)) => s.v, _ => return Ok(()) };
        let pts = points(Quantity::Energy, 60, &pieces, step, Offset::UTC, T0, T0 + 300 * 60);
        let sum: f64 = pts.iter().map(|p| p.1).sum();
        prop_assert!(sum <= last - first + 1e-9, "more than the counter rose: {sum} > {}", last - first);
        prop_assert!(pts.iter().all(|p| p.1 >= 0.0));
        prop_assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        if !gappy {
            prop_assert!((sum - (last - first)).abs() < 1e-9);
        }
        // Roll-ups give the same hours as raw samples.
        if step == Step::Hour {
            let raw: Vec<RawSample> = pieces.iter().map(|p| match p { Piece::Raw(s) => *s, Piece::Hour(_) => unreachable!() }).collect();
            let rolled: Vec<Piece> = raw
                .chunk_by(|a, b| a.t.div_euclid(3600) == b.t.div_euclid(3600))
                .filter_map(|h| roll_up(Quantity::Energy, h[0].t.div_euclid(3600) * 3600, 60, h))
                .map(Piece::Hour)
                .collect();
            let from_rolled = points(Quantity::Energy, 60, &rolled, step, Offset::UTC, T0, T0 + 300 * 60);
            prop_assert_eq!(from_rolled.len(), pts.len());
            for (a, b) in from_rolled.iter().zip(&pts) {
                prop_assert!(a.0 == b.0 && (a.1 - b.1).abs() < 1e-9);
            }
        }
    }
}

/// A scratch file for one property case, removed afterwards.
struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("sqlite-wal"));
        let _ = std::fs::remove_file(self.0.with_extension("sqlite-shm"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Through the file: hours and days of an energy counter written every minute for two
    /// days are its whole increase at any UTC offset, also those that are not whole hours
    /// (+05:30, +09:30, +05:45, -03:30), where the UTC-hour roll-ups cannot be used.
    #[test]
    fn stored_energy_steps_are_the_increase_at_any_offset(
        rates in proptest::collection::vec(0.0f64..0.05, 48),
        offset in prop_oneof![Just(0), Just(7200), Just(19_800), Just(34_200), Just(20_700), Just(-12_600)],
        step in prop_oneof![Just(Step::Hour), Just(Step::Day)],
        case in any::<u64>(),
    ) {
        use pzem::history::recorder::{Batch, Sample};
        use pzem::history::store::{Reader, Retention, Writer};
        let file = Scratch(std::env::temp_dir().join(format!("pzem-prop-{}-{case}.sqlite", std::process::id())));
        let offset = Offset::from_seconds(offset).unwrap();
        let minutes = 48 * 60;
        let mut counter = 100.0;
        let batches: Vec<Batch> = (0..minutes)
            .map(|m| {
                counter += rates[m as usize / 60];
                Batch {
                    start: T0 + m * 60,
                    samples: vec![Sample {
                        service: "com.victronenergy.grid.x".into(),
                        path: "/Ac/Energy/Forward",
                        quantity: Quantity::Energy,
                        t: T0 + m * 60,
                        value: counter,
                    }],
                }
            })
            .collect();
        let mut w = Writer::create_new(&file.0, 60, Retention::default()).unwrap();
        for chunk in batches.chunks(600) {
            w.write(chunk).unwrap();
        }
        w.finish().unwrap();
        let r = Reader::open(&file.0).unwrap();
        let series = r.series().unwrap().remove(0);
        // Local steps wholly inside the data: the first observation is at T0 + 60.
        let from = step.floor(T0 + 60, offset) + step.seconds();
        let to = step.floor(T0 + minutes * 60, offset);
        let pts = r.points(&series, step, offset, from, to).unwrap();
        let counter_at = |t: i64| {
            // The counter observed at t (the sample starting at t - 60).
            let m = (t - 60 - T0) / 60;
            100.0 + (0..=m).map(|k| rates[k as usize / 60]).sum::<f64>()
        };
        let want = counter_at(to) - counter_at(from);
        let sum: f64 = pts.iter().map(|p| p.1).sum();
        prop_assert!((sum - want).abs() < 1e-6, "offset {offset}, {step}: {sum} kWh, want {want} kWh ({} points)", pts.len());
        prop_assert_eq!(pts.len() as i64, (to - from) / step.seconds());
    }
}
