//! The fuzz corpus and every crash the fuzzer found, replayed as regression tests.
//!
//! Each file of `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` goes through the
//! target's harness in `pzem::fuzzing` (the code `cargo fuzz` ran), which panics when a
//! property fails. The seeds the corpus started from are built here, so they stay
//! reproducible: `PZEM_FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_corpus` writes any that
//! are missing (named by content, as libFuzzer names its corpus files).

use pzem::energy::EnergyState;
use pzem::energy_flow::{FlowState, Flows};
use pzem::fuzzing::TARGETS;
use pzem::{Address, Request, crc_bytes};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `fuzz/<kind>/<target>/`, sorted (none when the folder is absent).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// An RTU reply seed: request head (see `pzem::fuzzing::rtu_reply`), chunk size, frame.
fn rtu_seed(kind: u8, a: u16, b: u16, addr: u8, chunk: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend(a.to_be_bytes());
    v.extend(b.to_be_bytes());
    v.push(addr);
    v.push(chunk);
    let mut frame = vec![addr];
    frame.extend(pdu);
    frame.extend(crc_bytes(&frame));
    v.extend(frame);
    v
}

fn seeds() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut s: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();

    // A good reply to each request kind, an exception, and the AC/DC readings.
    let mut ac = vec![0x04, 20];
    ac.extend([
        0x08, 0x98, 0x01, 0xF4, 0, 0, 0x04, 0x4C, 0, 0, 0x03, 0xE8, 0, 0, 0x01, 0xF4, 0, 0x5F, 0, 0,
    ]);
    let mut dc = vec![0x04, 16];
    dc.extend([0x05, 0x14, 0x00, 0x64, 0x01, 0x2C, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0]);
    s.insert(
        "rtu_reply",
        vec![
            rtu_seed(0, 0, 9, 1, 255, &ac),
            rtu_seed(0, 0, 7, 2, 3, &dc),
            rtu_seed(1, 1, 1, 1, 1, &[0x03, 4, 0x00, 0x64, 0x00, 0x02]),
            rtu_seed(2, 1, 2300, 1, 8, &[0x06, 0x00, 0x01, 0x08, 0xFC]),
            rtu_seed(3, 0, 0, 1, 2, &[0x42]),
            rtu_seed(0, 0, 9, 1, 5, &[0x84, 0x02]),
            rtu_seed(0, 0, 9, 0xF8, 255, &ac),
        ],
    );
    s.insert(
        "config",
        [
            "# address  model  role\n1          016    grid\n2:016:acload\n3          017    dcsource\n",
            "1+2+3:016:grid\n4 auto\n",
            "1 016 grid\n2 016 acload\n\n[energy]\nac-in  = com.victronenergy.grid.pzem_ttyUSB0_1\nac-out = com.victronenergy.acload.pzem_ttyUSB0_2\n",
            "[meters]\n5 017 dcload\n[logger]\ninterval 60\n",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
    );
    let flow = FlowState {
        flows: Flows::default(),
        ac_in_wh: Some(123_456),
        ac_out_wh: Some(654_321),
        battery_wh: None,
        saved_at_unix_s: Some(1_700_000_000),
    };
    s.insert(
        "state_files",
        vec![
            EnergyState {
                offset_wh: 42,
                last_raw_wh: Some(99_999),
            }
            .to_line()
            .into_bytes(),
            EnergyState::default().to_line().into_bytes(),
            flow.to_line().into_bytes(),
            FlowState::default().to_line().into_bytes(),
            memory_seed().into_bytes(),
        ],
    );
    s.insert("dbus_value", dbus_seeds());
    s.insert(
        "http_request",
        [
            "\0GET / HTTP/1.1\r\nHost: venus.local\r\n\r\n",
            "\0GET /?date=2025-12-31&view=month HTTP/1.1\r\n\r\n",
            "\0GET /api/series HTTP/1.1\r\n\r\n",
            "\0HEAD /api/samples?series=1&from=2025-12-31&to=2026-01-01&step=hour HTTP/1.1\r\n\r\n",
            "\0GET /api/samples?series=1%202&from=2025-12-31T10:00&to=x&step=day&step=hour HTTP/1.0\r\n\r\n",
            "\0POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "\u{1}GET / HTTP/1.1\r\nX-Big: aaaaaaaaaaaa",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
    );
    s
}

fn memory_seed() -> String {
    let mut m = pzem::venus::discovery::Memory::default();
    m.seen(Address::unit(3).unwrap(), pzem::Family::Ac, 1_700_000_000);
    m.seen(Address::unit(7).unwrap(), pzem::Family::Dc, 1_700_000_100);
    m.to_text()
}

/// Marshalled `SetValue` calls carrying each D-Bus type a client might send.
fn dbus_seeds() -> Vec<Vec<u8>> {
    use dbus::arg::Variant;
    let call = || {
        dbus::Message::new_method_call(
            "com.victronenergy.grid.x",
            "/Ac/Power",
            "com.victronenergy.BusItem",
            "SetValue",
        )
        .unwrap()
    };
    let mut msgs = [
        call().append1(Variant(1.5f64)),
        call().append1(Variant(7i32)),
        call().append1(Variant(i64::MAX)),
        call().append1(Variant(u64::MAX)),
        call().append1(Variant(3u32)),
        call().append1(Variant(true)),
        call().append1(Variant(9u8)),
        call().append1(Variant("grid".to_string())),
        call().append1(Variant(vec!["a".to_string(), "b".to_string()])),
        call().append1(Variant(Vec::<i32>::new())),
        call().append1(Variant((1i32, 2i32))),
        call().append1(Variant(Variant(2.0f64))),
        call().append1(1.5f64),
        call(),
    ];
    msgs.iter_mut()
        .map(|m| {
            m.set_serial(1);
            let mut out = Vec::new();
            m.marshal(|b| {
                out.extend_from_slice(b);
                Ok::<_, ()>(())
            })
            .unwrap();
            out
        })
        .collect()
}

/// FNV-1a, hex: a stable content name for seed files.
fn content_name(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("seed-{h:016x}")
}

#[test]
fn every_target_has_a_corpus_with_its_seeds() {
    let write = std::env::var_os("PZEM_FUZZ_WRITE_SEEDS").is_some();
    for (target, seeds) in seeds() {
        assert!(
            TARGETS.iter().any(|(name, _)| *name == target),
            "{target} is not a fuzz target"
        );
        let dir = fuzz_dir().join("corpus").join(target);
        for seed in seeds {
            let path = dir.join(content_name(&seed));
            if write && !path.exists() {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, &seed).unwrap();
            }
            assert_eq!(
                fs::read(&path).ok(),
                Some(seed),
                "{} missing or changed",
                path.display()
            );
        }
    }
    for (target, _) in TARGETS {
        assert!(
            fuzz_dir().join("fuzz_targets").join(format!("{target}.rs")).is_file(),
            "no fuzz target file for {target}"
        );
    }
}

#[test]
fn the_seeds_are_what_the_services_accept() {
    // A seed that the code refuses only exercises the error paths: check that the good
    // ones decode, so the corpus starts from deep inside each format.
    let s = seeds();
    for seed in &s["state_files"][..2] {
        EnergyState::parse(std::str::from_utf8(seed).unwrap()).unwrap();
    }
    FlowState::parse(std::str::from_utf8(&s["state_files"][2]).unwrap()).unwrap();
    pzem::venus::discovery::Memory::parse(std::str::from_utf8(&s["state_files"][4]).unwrap()).unwrap();
    for seed in &s["config"] {
        pzem::venus::config::parse_config(std::str::from_utf8(seed).unwrap()).unwrap();
    }
    let ac = &s["rtu_reply"][0];
    let req = Request::read_input_registers(0, 10).unwrap();
    let reply = req.decode_rtu_reply(Address::FACTORY_DEFAULT, &ac[7..]).unwrap();
    assert!(matches!(reply, pzem::Reply::Registers(r) if r.len() == 10));
}

/// Replays every corpus and artifact file; the count of each is printed, and a target
/// with an empty corpus fails (a misnamed folder would otherwise pass silently).
#[test]
fn corpus_and_crashes_replay_without_a_panic() {
    for (target, harness) in TARGETS {
        let corpus = inputs("corpus", target);
        let artifacts = inputs("artifacts", target);
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty");
        for path in corpus.iter().chain(&artifacts) {
            let data = fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{target}: {} panics", path.display());
        }
        println!(
            "{target}: {} corpus files, {} crash files replayed",
            corpus.len(),
            artifacts.len()
        );
    }
}
