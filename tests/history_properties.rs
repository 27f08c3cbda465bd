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
