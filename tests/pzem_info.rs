//! The `pzem-info` binary against the simulator: over a pseudo-terminal
//! (as a USB dongle would be) and through TCP gateways.
#![cfg(feature = "cli")]

use std::process::{Command, Stdio};

use pzem::sim::{Pacing, SimBus, SimMeter, SimServer, TcpFraming};
use pzem::{Model, Reading};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pzem-info");

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn pzem_info(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running pzem-info");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Two AC meters and one DC meter, as in the "done when".
fn line() -> SimBus {
    SimBus::new(
        vec![
            SimMeter::new(Model::Pzem016, 1),
            SimMeter::new(Model::Pzem014, 7),
            SimMeter::new(Model::Pzem017, 12),
        ],
        11,
    )
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The JSON reading equals the last reading the simulator served there.
fn assert_json_reading_is_served(sim: &SimServer, address: u8, reading: &Value) {
    let bus = sim.bus();
    let served = bus
        .served()
        .filter(|s| s.address == address)
        .last()
        .expect("a served reading")
        .reading;
    match served {
        Reading::Ac(r) => {
            assert!(close(num(&reading["voltage_v"]), r.voltage_v()), "{reading}");
            assert!(close(num(&reading["current_a"]), r.current_a()), "{reading}");
            assert!(close(num(&reading["power_w"]), r.power_w()), "{reading}");
            assert!(close(num(&reading["energy_kwh"]), r.energy_kwh()), "{reading}");
            assert!(close(num(&reading["frequency_hz"]), r.frequency_hz()), "{reading}");
            assert!(close(num(&reading["power_factor"]), r.power_factor()), "{reading}");
            assert_eq!(reading["power_alarm"], Value::Bool(r.power_alarm));
        }
        Reading::Dc(r) => {
            assert!(close(num(&reading["voltage_v"]), r.voltage_v()), "{reading}");
            assert!(close(num(&reading["current_a"]), r.current_a()), "{reading}");
            assert!(close(num(&reading["power_w"]), r.power_w()), "{reading}");
            assert!(close(num(&reading["energy_kwh"]), r.energy_kwh()), "{reading}");
            assert_eq!(reading["high_voltage_alarm"], Value::Bool(r.high_voltage_alarm));
            assert_eq!(reading["low_voltage_alarm"], Value::Bool(r.low_voltage_alarm));
        }
    }
}

#[test]
fn help_and_version() {
    let out = pzem_info(&["--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    for needle in [
        "Exit codes:",
        "  0  ok",
        "  2  usage",
        "  3  no valid answer",
        "  4  the meter refused",
        "  5  verification failed",
        "  6  I/O error",
        "Examples:",
        "--scan",
        "-t ac opens 8N1",
        "8N2",
        "--yes",
    ] {
        assert!(out.stdout.contains(needle), "help lacks {needle:?}:\n{}", out.stdout);
    }
    let out = pzem_info(&["--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, format!("pzem-info {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors() {
    for args in [
        &[][..],
        &["-d", "/dev/null", "--tcp", "x:1"],
        &["--tcp", "127.0.0.1:1", "--bogus"],
        &["-d", "/dev/null", "extra"],
    ] {
        let out = pzem_info(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("pzem-info: "), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn cannot_open_the_device() {
    let out = pzem_info(&["-d", "/dev/does-not-exist-pzem"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("/dev/does-not-exist-pzem"), "{out:?}");
    assert!(out.stderr.contains("dialout"), "{out:?}");
    let out = pzem_info(&["-d", "/dev/does-not-exist-pzem", "--json"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(out.json()["error"]["exit_code"], 6);
}

#[test]
fn through_tcp_gateways() {
    let rtu = SimServer::tcp("127.0.0.1:0", TcpFraming::Rtu, line(), Pacing::NONE).expect("an RTU gateway");
    let addr = rtu.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let out = pzem_info(&["--tcp", &addr, "-a", "12", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["device"], addr.as_str());
    assert_eq!(doc["meter"]["family"], "DC");
    assert_json_reading_is_served(&rtu, 12, &doc["meter"]["reading"]);
    let out = pzem_info(&["--tcp", &addr, "--scan", "1-15", "--timeout", "40"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(": 3 meters found."), "{out:?}");

    let mbap = SimServer::tcp("127.0.0.1:0", TcpFraming::Mbap, line(), Pacing::NONE).expect("a Modbus TCP gateway");
    let addr = mbap.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let out = pzem_info(&["--tcp", &addr, "--modbus-tcp", "-a", "1", "--set-power-alarm", "1500"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(mbap.bus().meter_mut(1).map(|m| m.power_alarm_w()), Some(1500));
    let out = pzem_info(&["--tcp", &addr, "--modbus-tcp", "-a", "99", "--timeout", "30"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("Modbus TCP gateway"), "{out:?}");

    let out = pzem_info(&["--tcp", "127.0.0.1:1", "-a", "1"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("gateway 127.0.0.1:1"), "{out:?}");
}

/// Tests over a pseudo-terminal (not available under qemu).
#[cfg(feature = "serial")]
mod over_a_pty {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use pzem::sim::Faults;
    use pzem::{AcReading, DcReading, Shunt, StopBits};

    use super::*;

    /// Run on the simulator's pty with `args` after `-d PATH`.
    fn on(sim: &SimServer, args: &[&str]) -> Output {
        let mut all = vec!["-d", sim.path().expect("a pty path")];
        all.extend_from_slice(args);
        pzem_info(&all)
    }

    fn pty(bus: SimBus) -> SimServer {
        SimServer::pty(bus, Pacing::NONE).expect("a simulator on a pty")
    }

    /// Hold a meter's values still (no wandering, no power, so no energy
    /// counted) so they can be compared exactly.
    fn still(sim: &SimServer, address: u8) {
        let mut bus = sim.bus();
        let m = bus.meter_mut(address).expect("a meter at that address");
        m.frozen = true;
        let (ac, dc) = (m.ac(), m.dc());
        m.set_ac(AcReading { power_dw: 0, ..ac });
        m.set_dc(DcReading { power_dw: 0, ..dc });
    }

    /// The value on the line labelled `label` in a meter's text, checking
    /// that every value in the text starts in the same column.
    fn row<'a>(text: &'a str, label: &str) -> &'a str {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
        let column = |l: &str| {
            let rest = l.trim_start();
            let gap = rest
                .find("  ")
                .map_or(0, |i| i + rest[i..].len() - rest[i..].trim_start().len());
            l.len() - rest.len() + gap
        };
        let first = rows.first().map(|l| column(l)).unwrap_or(0);
        assert!(rows.iter().all(|l| column(l) == first), "values not aligned:\n{text}");
        rows.iter()
            .find(|l| l.trim_start().starts_with(label) && l.trim_start()[label.len()..].starts_with("  "))
            .map(|l| l[first..].trim_end())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
    }

    #[test]
    fn refused_values_send_nothing() {
        let sim = pty(line());
        let cases: &[&[&str]] = &[
            &["--set-address", "0"],
            &["--set-address", "248"],
            &["--set-address", "0xF8"],
            &["--set-address", "ten"],
            &["-a", "1", "--set-shunt", "150"],
            &["-a", "1", "--set-power-alarm", "0"],
            &["-a", "1", "--set-power-alarm", "25001"],
            &["-a", "1", "--set-voltage-alarms", "400,10"],
            &["-a", "1", "--set-voltage-alarms", "10,20"],
            &["-a", "1", "--set-voltage-alarms", "4,1"],
            &["-a", "1", "--set-voltage-alarms", "14.4"],
            &["-a", "0"],
            &["-a", "300"],
            &["-t", "018"],
            &["--timeout", "1"],
            &["--scan", "9-3"],
            &["--scan=0-5"],
            &["-a", "1", "--scan"],
            &["-a", "1", "--set-shunt", "100", "--set-power-alarm", "100"],
            &["-a", "1", "--reset-energy"],
        ];
        for args in cases {
            let out = on(&sim, args);
            assert_eq!(out.code, 2, "{args:?}: {out:?}");
            assert!(out.stderr.starts_with("pzem-info: "), "{args:?}: {out:?}");
            assert!(out.stderr.contains("--help"), "{args:?}: {out:?}");
        }
        assert_eq!(sim.bus().requests(), 0, "a refused value must not reach the line");
        let out = on(&sim, &["-a", "1", "--reset-energy"]);
        assert!(out.stderr.contains("--yes"), "{out:?}");
    }

    #[test]
    fn show_ac_and_dc_as_text() {
        let sim = pty(line());
        let out = on(&sim, &["-a", "1"]);
        assert_eq!(out.code, 0, "{out:?}");
        let text = &out.stdout;
        assert!(
            text.starts_with("PZEM AC meter at address 1\nMeasurements\n"),
            "{out:?}"
        );
        for (label, unit) in [
            ("Voltage", " V"),
            ("Current", " A"),
            ("Power", " W"),
            ("Energy", " kWh"),
            ("Frequency", " Hz"),
        ] {
            assert!(row(text, label).ends_with(unit), "{label}: {text}");
        }
        assert!(row(text, "Power factor").starts_with("0."), "{text}");
        assert_eq!(row(text, "Power alarm"), "off");
        assert!(text.contains("Parameters\n"), "{text}");
        assert_eq!(row(text, "Address"), "1");
        assert_eq!(row(text, "Power alarm threshold"), "23000 W");
        let out = on(&sim, &["-a", "12", "-t", "017"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("PZEM-017 (DC) at address 12\n"), "{out:?}");
        let text = &out.stdout;
        assert_eq!(row(text, "High-voltage alarm"), "off");
        assert_eq!(row(text, "Low-voltage alarm"), "off");
        assert_eq!(row(text, "Address"), "12");
        assert_eq!(row(text, "High-voltage alarm threshold"), "300.00 V");
        assert_eq!(row(text, "Low-voltage alarm threshold"), "7.00 V");
        assert_eq!(row(text, "Shunt range"), "100 A");
        // -t names the model only when it fits what answers.
        let out = on(&sim, &["-a", "1", "-t", "017"]);
        assert!(out.stdout.starts_with("PZEM AC meter at address 1\n"), "{out:?}");
    }

    #[test]
    fn show_json_matches_the_simulator() {
        let sim = pty(line());
        sim.bus().meter_mut(7).expect("meter 7").set_energy_wh(123_456);
        let out = on(&sim, &["-a", "7", "--json", "-t", "014"]);
        assert_eq!(out.code, 0, "{out:?}");
        let doc = out.json();
        assert_eq!(doc["tool"], "pzem-info");
        assert_eq!(doc["action"], "show");
        assert_eq!(doc["ok"], true);
        assert_eq!(doc["device"], sim.path().unwrap_or_default());
        let m = &doc["meter"];
        assert_eq!(m["family"], "AC");
        assert_eq!(m["model"], "PZEM-014");
        assert_eq!(m["address"], 7);
        assert_eq!(m["queried_address"], 7);
        assert_eq!(m["general_address"], false);
        assert_json_reading_is_served(&sim, 7, &m["reading"]);
        assert_eq!(m["parameters"]["power_alarm_w"], 23_000);
        assert_eq!(m["parameters"]["address"], 7);

        let out = on(&sim, &["-a", "12", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let m = &out.json()["meter"];
        assert_eq!(m["family"], "DC");
        assert_eq!(m["model"], Value::Null);
        assert_json_reading_is_served(&sim, 12, &m["reading"]);
        let p = &m["parameters"];
        assert!(close(num(&p["high_voltage_alarm_v"]), 300.0));
        assert!(close(num(&p["low_voltage_alarm_v"]), 7.0));
        assert_eq!(p["shunt_a"], 100);
    }

    #[test]
    fn scan_a_mixed_line() {
        let sim = pty(line());
        // Both ways of giving the range.
        for args in [
            &["--scan", "1-20", "--timeout", "40"][..],
            &["--scan=1-20", "--timeout=40"],
        ] {
            let out = on(&sim, args);
            assert_eq!(out.code, 0, "{out:?}");
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert!(lines[0].starts_with("Scanned addresses 1-20 in "), "{out:?}");
            assert!(lines[0].ends_with(" s: 3 meters found."), "{out:?}");
            assert!(lines[2].starts_with("      1  PZEM AC meter  "), "{out:?}");
            assert!(lines[3].starts_with("      7  PZEM AC meter  "), "{out:?}");
            assert!(lines[4].starts_with("     12  PZEM DC meter  "), "{out:?}");
            assert_eq!(lines.len(), 5, "{out:?}");
        }
        let out = on(&sim, &["--scan", "1-20", "--timeout", "40", "--json", "-t", "016"]);
        assert_eq!(out.code, 0, "{out:?}");
        let scan = &out.json()["scan"];
        assert_eq!((scan["from"].as_u64(), scan["to"].as_u64()), (Some(1), Some(20)));
        assert!(num(&scan["elapsed_s"]) > 0.0);
        let meters = scan["meters"].as_array().expect("a list of meters");
        let found: Vec<(u64, &str, &Value)> = meters
            .iter()
            .map(|m| {
                (
                    m["address"].as_u64().unwrap_or(0),
                    m["family"].as_str().unwrap_or(""),
                    &m["model"],
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (1, "AC", &Value::from("PZEM-016")),
                (7, "AC", &Value::from("PZEM-016")),
                (12, "DC", &Value::Null)
            ]
        );
        for m in meters {
            let address = m["address"].as_u64().unwrap_or(0) as u8;
            let bus = sim.bus();
            let served = bus.served().filter(|s| s.address == address).count();
            assert!(served > 0, "meter {address} was read");
        }
        assert_eq!(scan["problems"].as_array().map(Vec::len), Some(0));

        // Nothing in the range: exit 3 with what to check.
        let out = on(&sim, &["--scan", "100-105", "--timeout", "20"]);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains("no meter answered at addresses 100-105"), "{out:?}");
        assert!(out.stderr.contains("A to A"), "{out:?}");
    }

    #[test]
    fn scan_reports_two_meters_sharing_an_address() {
        let mut bus = line();
        bus.meters.push(SimMeter::new(Model::Pzem016, 3));
        bus.meters.push(SimMeter::new(Model::Pzem016, 3));
        let sim = pty(bus);
        let out = on(&sim, &["--scan", "1-5", "--timeout", "40", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let scan = &out.json()["scan"];
        let problems = scan["problems"].as_array().expect("problems");
        assert_eq!(problems.len(), 1, "{out:?}");
        assert_eq!(problems[0]["address"], 3);
        assert_eq!(problems[0]["garbled"], true);
        assert!(
            problems[0]["problem"]
                .as_str()
                .unwrap_or("")
                .contains("share this address")
        );
    }

    /// A full 1-247 scan at real 9600-baud pacing with the default per-address
    /// timeout finishes well under a minute and finds every meter.
    #[test]
    fn full_scan_at_wire_speed() {
        let mut bus = line();
        bus.meters.push(SimMeter::new(Model::Pzem017, 247));
        let sim = SimServer::pty(bus, Pacing::real(StopBits::Two)).expect("a simulator");
        let out = on(&sim, &["--scan", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let scan = &out.json()["scan"];
        let addresses: Vec<u64> = scan["meters"]
            .as_array()
            .expect("meters")
            .iter()
            .filter_map(|m| m["address"].as_u64())
            .collect();
        assert_eq!(addresses, vec![1, 7, 12, 247]);
        assert!(num(&scan["elapsed_s"]) < 60.0, "{}", scan["elapsed_s"]);
    }

    #[test]
    fn general_address_with_one_meter() {
        let sim = pty(SimBus::new(vec![SimMeter::new(Model::Pzem017, 9)], 2));
        let out = on(&sim, &[]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout
                .starts_with("PZEM DC meter at the general address 0xF8; its own address is 9\n"),
            "{out:?}"
        );
        let out = on(&sim, &["--json"]);
        let m = &out.json()["meter"];
        assert_eq!(
            (m["queried_address"].as_u64(), m["address"].as_u64()),
            (Some(248), Some(9))
        );
        assert_eq!(m["general_address"], true);

        // Readdress the lone meter without knowing its address.
        let out = on(&sim, &["--set-address", "4"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("Address changed: 9 -> 4 (read back"), "{out:?}");
        assert!(out.stdout.contains("PZEM DC meter at address 4\n"), "{out:?}");
        assert!(sim.bus().meter_mut(4).is_some());
        let out = on(&sim, &["--set-address", "4"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("The meter already has address 4"), "{out:?}");
    }

    #[test]
    fn general_address_with_two_meters_collides() {
        let sim = pty(line());
        let out = on(&sim, &[]);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let e = &out.stderr;
        assert!(e.contains(sim.path().unwrap_or("?")), "names the device: {e}");
        assert!(e.contains("0xF8"), "{e}");
        assert!(e.contains("More than one meter may be answering"), "{e}");
        assert!(e.contains("--scan") && e.contains("-a ADDR"), "{e}");
        let out = on(&sim, &["--set-address", "5", "--json"]);
        assert_eq!(out.code, 3, "{out:?}");
        let doc = out.json();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["action"], "set-address");
        assert_eq!(doc["error"]["exit_code"], 3);
        assert_eq!(doc["error"]["address"], 248);
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("More than one meter")
        );
        let bus = sim.bus();
        let addresses: Vec<u8> = bus.meters.iter().map(|m| m.address).collect();
        assert_eq!(addresses, vec![1, 7, 12], "nothing was readdressed");
    }

    #[test]
    fn set_address_ac_and_dc() {
        let sim = pty(line());
        let out = on(&sim, &["-a", "7", "--set-address", "20"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("Address changed: 7 -> 20 (read back"), "{out:?}");
        assert_eq!(sim.bus().meter_mut(20).map(|m| m.model()), Some(Model::Pzem014));
        let out = on(&sim, &["-a", "12", "--set-address", "0x15", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let doc = out.json();
        let r = &doc["result"];
        assert_eq!(r["confirmed"], true);
        assert_eq!(r["change"]["address_before"], 12);
        assert_eq!(r["change"]["address_after"], 21);
        assert_eq!(r["change"]["written"], true);
        assert_eq!(r["meter"]["address"], 21);
        assert_eq!(r["meter"]["family"], "DC");
        assert_eq!(sim.bus().meter_mut(21).map(|m| m.model()), Some(Model::Pzem017));

        // An address in use is refused before anything is written.
        let out = on(&sim, &["-a", "1", "--set-address", "21"]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("address 21 is already used"), "{out:?}");
        let bus = sim.bus();
        let addresses: Vec<u8> = bus.meters.iter().map(|m| m.address).collect();
        assert_eq!(addresses, vec![1, 20, 21]);
    }

    #[test]
    fn reset_energy_ac_and_dc() {
        let sim = pty(line());
        for a in [1, 12] {
            still(&sim, a);
            sim.bus().meter_mut(a).expect("meter").set_energy_wh(12_345);
        }
        let out = on(&sim, &["-a", "1", "--reset-energy", "--yes"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout
                .starts_with("Energy counter reset: 12.345 kWh -> 0.000 kWh (read back).\n"),
            "{out:?}"
        );
        assert_eq!(sim.bus().meter_mut(1).map(|m| m.energy_wh()), Some(0));
        let out = on(&sim, &["-a", "12", "--reset-energy", "-y", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let r = &out.json()["result"];
        assert!(close(num(&r["change"]["energy_kwh_before"]), 12.345), "{out:?}");
        assert!(close(num(&r["change"]["energy_kwh_after"]), 0.0), "{out:?}");
        assert!(close(num(&r["meter"]["reading"]["energy_kwh"]), 0.0), "{out:?}");
        assert_eq!(sim.bus().meter_mut(12).map(|m| m.energy_wh()), Some(0));
    }

    /// Run `pzem-info` with a pseudo-terminal as stdin; `answer` sees the
    /// meter line and what stderr held when the prompt appeared, and gives
    /// what to type.
    fn with_prompt(sim: &SimServer, args: &[&str], answer: impl FnOnce(&str) -> &'static str) -> Output {
        let terminal = pzem::serial::PtyPair::new().expect("a pty for stdin");
        let stdin = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&terminal.path)
            .expect("opening the terminal");
        let mut all = vec!["-d", sim.path().unwrap_or_default()];
        all.extend_from_slice(args);
        let mut child = Command::new(BIN)
            .args(&all)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running pzem-info");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let prompt = loop {
            let s = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if s.contains("[y/N]") {
                break s;
            }
            assert!(Instant::now() < deadline, "no prompt; stderr so far: {s}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut controller = terminal.controller;
        controller
            .write_all(answer(&prompt).as_bytes())
            .expect("typing the answer");
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("reading stdout");
        let status = child.wait().expect("waiting for pzem-info");
        let _ = reader.join();
        let stderr = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    #[test]
    fn reset_energy_asks_on_a_terminal() {
        let sim = pty(line());
        still(&sim, 7);
        sim.bus().meter_mut(7).expect("meter 7").set_energy_wh(5_000);
        let out = with_prompt(&sim, &["-a", "7", "--reset-energy"], |prompt| {
            assert!(prompt.contains("PZEM AC meter at address 7, now 5.000 kWh"), "{prompt}");
            "n\n"
        });
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("cancelled; nothing was changed"), "{out:?}");
        assert_eq!(sim.bus().meter_mut(7).map(|m| m.energy_wh()), Some(5_000));
        let out = with_prompt(&sim, &["-a", "7", "--reset-energy"], |_| "y\n");
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(sim.bus().meter_mut(7).map(|m| m.energy_wh()), Some(0));
    }

    #[test]
    fn a_meter_that_stops_answering_mid_way() {
        let sim = pty(line());
        sim.bus().meter_mut(12).expect("meter 12").set_energy_wh(777);
        // The meter answers the reads before the prompt, then goes silent
        // before the reset is sent.
        let out = with_prompt(&sim, &["-a", "12", "--reset-energy"], |_| {
            sim.bus().meter_mut(12).expect("meter 12").silent = true;
            "yes\n"
        });
        assert_eq!(out.code, 3, "{out:?}");
        let e = &out.stderr;
        assert!(e.contains("address 12"), "{e}");
        assert!(e.contains(sim.path().unwrap_or("?")), "{e}");
        assert!(
            e.contains("answered at first, then stopped answering while resetting the energy counter"),
            "{e}"
        );
        assert!(e.contains("A to A") && e.contains("mains"), "{e}");
        assert!(sim.bus().meter_mut(12).map(|m| m.energy_wh() >= 777) == Some(true));
    }

    #[test]
    fn a_silent_meter() {
        let sim = pty(line());
        sim.bus().meter_mut(1).expect("meter 1").silent = true;
        let out = on(&sim, &["-a", "1", "--timeout", "50"]);
        assert_eq!(out.code, 3, "{out:?}");
        let e = &out.stderr;
        assert!(e.starts_with("pzem-info: no answer from address 1 on "), "{e}");
        assert!(e.contains("(9600 8N2)"), "{e}");
        for needle in ["--scan", "A to A", "120 ohm", "8N1", "mains"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let out = on(
            &sim,
            &["-a", "1", "--set-power-alarm", "100", "--timeout", "50", "-t", "ac"],
        );
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains("(9600 8N1)"), "{out:?}");
    }

    #[test]
    fn set_shunt_and_refusals() {
        let mut bus = line();
        bus.meters.push(SimMeter::new(Model::Pzem003, 30));
        let sim = pty(bus);
        let out = on(&sim, &["-a", "12", "--set-shunt", "200"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.starts_with("Shunt range set: 100 A -> 200 A (read back).\n"),
            "{out:?}"
        );
        assert_eq!(row(&out.stdout, "Shunt range"), "200 A");
        assert_eq!(sim.bus().meter_mut(12).map(|m| m.shunt()), Some(Shunt::A200));
        let out = on(&sim, &["-a", "12", "--set-shunt", "50", "--json"]);
        let r = &out.json()["result"];
        assert_eq!(
            (
                r["change"]["shunt_a_before"].as_u64(),
                r["change"]["shunt_a_after"].as_u64()
            ),
            (Some(200), Some(50))
        );
        assert_eq!(r["meter"]["parameters"]["shunt_a"], 50);
        assert_eq!(sim.bus().meter_mut(12).map(|m| m.shunt()), Some(Shunt::A50));

        // An AC meter: refused before anything is written.
        let out = on(&sim, &["-a", "1", "--set-shunt", "200"]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--set-shunt is for DC meters"), "{out:?}");
        assert!(out.stderr.contains("Nothing was written"), "{out:?}");

        // A PZEM-003 has no shunt register: the meter refuses, the code is named.
        let out = on(&sim, &["-a", "30", "--set-shunt", "50"]);
        assert_eq!(out.code, 4, "{out:?}");
        assert!(out.stderr.contains("refused"), "{out:?}");
        assert!(out.stderr.contains("illegal data address (0x02)"), "{out:?}");
        let out = on(&sim, &["-a", "30"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("none (no shunt register"), "{out:?}");
    }

    #[test]
    fn set_power_alarm_ac() {
        let sim = pty(line());
        let out = on(&sim, &["-a", "7", "--set-power-alarm", "2300"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout
                .starts_with("Power alarm threshold set: 23000 W -> 2300 W (read back).\n"),
            "{out:?}"
        );
        assert_eq!(sim.bus().meter_mut(7).map(|m| m.power_alarm_w()), Some(2300));
        let out = on(&sim, &["-a", "1", "--set-power-alarm", "25000", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let r = &out.json()["result"];
        assert_eq!(r["change"]["power_alarm_w_after"], 25_000);
        assert_eq!(r["meter"]["parameters"]["power_alarm_w"], 25_000);
        assert_eq!(sim.bus().meter_mut(1).map(|m| m.power_alarm_w()), Some(25_000));
        let out = on(&sim, &["-a", "12", "--set-power-alarm", "100"]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--set-power-alarm is for AC meters"), "{out:?}");
    }

    #[test]
    fn set_voltage_alarms_dc() {
        let sim = pty(line());
        let out = on(&sim, &["-a", "12", "--set-voltage-alarms", "14.4,11.5"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.starts_with(
                "Voltage alarm thresholds set: high 300.00 V -> 14.40 V, low 7.00 V -> 11.50 V (read back).\n"
            ),
            "{out:?}"
        );
        assert_eq!(
            sim.bus().meter_mut(12).map(|m| m.voltage_alarms_cv()),
            Some((1440, 1150))
        );
        let out = on(&sim, &["-a", "12", "--set-voltage-alarms", "58.4V,44V", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let c = &out.json()["result"]["change"];
        assert!(close(num(&c["high_voltage_alarm_v_after"]), 58.4));
        assert!(close(num(&c["low_voltage_alarm_v_after"]), 44.0));
        assert!(close(num(&c["low_voltage_alarm_v_before"]), 11.5));
        assert_eq!(
            sim.bus().meter_mut(12).map(|m| m.voltage_alarms_cv()),
            Some((5840, 4400))
        );
        let out = on(&sim, &["-a", "1", "--set-voltage-alarms", "14.4,11.5"]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("is for DC meters"), "{out:?}");
    }

    #[test]
    fn a_device_exception_is_exit_4_with_its_code() {
        let mut bus = line();
        bus.faults = Faults::parse("exception=1").expect("a fault spec");
        let sim = pty(bus);
        let out = on(&sim, &["-a", "1"]);
        assert_eq!(out.code, 4, "{out:?}");
        assert!(out.stderr.contains("refused the request"), "{out:?}");
        assert!(out.stderr.contains("slave device failure (0x04)"), "{out:?}");
    }

    /// The "done when": on a line of two AC and one DC meter, find all
    /// three, readdress one, set the DC shunt, reset a counter, and read
    /// everything back, as text and as JSON.
    #[test]
    fn done_when_a_new_user_sets_up_a_line() {
        let sim = pty(line());
        sim.bus().meter_mut(1).expect("meter 1").set_energy_wh(4_321);
        let out = on(&sim, &["--scan", "1-20", "--timeout", "40"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("3 meters found"), "{out:?}");

        assert_eq!(on(&sim, &["-a", "7", "--set-address", "2"]).code, 0);
        assert_eq!(on(&sim, &["-a", "12", "--set-shunt", "300"]).code, 0);
        assert_eq!(on(&sim, &["-a", "1", "--reset-energy", "--yes"]).code, 0);

        let out = on(&sim, &["--scan", "1-20", "--timeout", "40", "--json"]);
        let meters = out.json()["scan"]["meters"].clone();
        let addresses: Vec<u64> = meters
            .as_array()
            .expect("meters")
            .iter()
            .filter_map(|m| m["address"].as_u64())
            .collect();
        assert_eq!(addresses, vec![1, 2, 12]);
        for (a, family) in [("1", "AC"), ("2", "AC"), ("12", "DC")] {
            let text = on(&sim, &["-a", a]);
            assert_eq!(text.code, 0, "{text:?}");
            assert!(text.stdout.contains(&format!(" at address {a}\n")), "{text:?}");
            let json = on(&sim, &["-a", a, "--json"]);
            let m = &json.json()["meter"];
            assert_eq!(m["family"], family);
            assert_json_reading_is_served(&sim, a.parse().unwrap_or(0), &m["reading"]);
        }
        let json = on(&sim, &["-a", "12", "--json"]).json();
        assert_eq!(json["meter"]["parameters"]["shunt_a"], 300);
        let json = on(&sim, &["-a", "1", "--json"]).json();
        assert!(num(&json["meter"]["reading"]["energy_kwh"]) < 0.01, "{json}");
    }
}

/// Without -a, the meters the config file gives this line are shown in turn (as pzem-dbus
/// reads the file: a `[meters PORT]` section of the line replaces the general lines); a
/// missing one makes the exit code 3 while the others are still shown; a bad file is a
/// usage error naming the line; -a does not read the file.
#[test]
fn without_an_address_the_configured_meters_are_shown() {
    let sim = SimServer::pty(line(), Pacing::NONE).unwrap();
    let tty = sim.path().unwrap().to_owned();
    let port = tty.rsplit('/').next().unwrap();
    let dir = std::env::temp_dir().join(format!("pzem-info-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("pzem.conf");
    std::fs::write(
        &conf,
        format!("2 016 grid\n[meters {port}]\n1 016 grid Mains\n12:017:dcsystem\n[meters ttyOTHER]\n3 016\n"),
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let out = pzem_info(&["-d", &tty, "-c", conf_arg]);
    assert_eq!(out.code, 0, "{out:?}");
    let a1 = out
        .stdout
        .find("address 1, PZEM-016, grid \"Mains\"")
        .expect("meter 1 noted");
    let a12 = out
        .stdout
        .find("address 12, PZEM-017, dcsystem")
        .expect("meter 12 noted");
    assert!(a1 < a12, "{out:?}");
    assert!(out.stdout.contains("PZEM-016 (AC) at address 1") && out.stdout.contains("PZEM-017 (DC) at address 12"));
    assert!(
        !out.stdout.contains("address 2") && !out.stdout.contains("address 3"),
        "{out:?}"
    );

    let out = pzem_info(&["-d", &tty, "-c", conf_arg, "--json"]);
    let docs = out.json();
    let docs = docs.as_array().expect("an array, one document per configured meter");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["meter"]["address"], 1);
    assert_eq!(docs[1]["meter"]["address"], 12);
    assert_json_reading_is_served(&sim, 12, &docs[1]["meter"]["reading"]);

    // A configured meter that does not answer: the others are shown, exit 3.
    std::fs::write(
        &conf,
        format!("[meters {port}]\ntimeout-ms = 50\n1 016 grid\n9 016 acload\n7 014 acload\n"),
    )
    .unwrap();
    // (With the section's reply timeout.)
    let out = pzem_info(&["-d", &tty, "-c", conf_arg, "--json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let docs = out.json();
    let oks: Vec<bool> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(oks, [true, false, true]);
    assert_eq!(docs[1]["error"]["address"], 9);
    assert!(
        out.stderr.contains("no answer from address 9") && out.stderr.contains("within 50 ms"),
        "{out:?}"
    );

    std::fs::write(&conf, "1 016 grid\n2 016 grod\n").unwrap();
    let out = pzem_info(&["-d", &tty, "-c", conf_arg]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("line 2:") && out.stderr.contains("unknown role 'grod'"),
        "{out:?}"
    );
    let out = pzem_info(&["-d", &tty, "-c", conf_arg, "-a", "7"]);
    assert_eq!(out.code, 0, "-a does not need the file: {out:?}");
    assert!(out.stdout.contains("at address 7"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
