//! Crash tests: `kill -9` at random moments while the energy counters move, many times, and
//! the same on a full file system. After every kill the state files on disk must be
//! readable, no persisted counter may have gone down, and a restart must publish at least
//! what was persisted. pzem-energy's share of the kills, also on a full file system, is in
//! tests/pzem_energy.rs (it needs that file's doubles), pzem-logger's in
//! tests/history_logger.rs; the figures are in docs/reliability.md.
//!
//! Every child process is killed by PID when its guard drops, also when a test fails.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/require.rs"]
mod require;
#[path = "support/rig.rs"]
mod rig;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use pzem::AcReading;
use pzem::energy::EnergyState;
use pzem::sim::rng::Rng;
use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use pzem::{DcReading, Model};
use rig::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tmpfs::Tmpfs;

const BIN: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const SECOND: Duration = Duration::from_secs(1);

/// Kills of pzem-dbus in [`kill_9_pzem_dbus_while_counters_move`]; with the 80 of
/// pzem-energy's test that makes 200.
const DBUS_KILLS: u32 = 120;

/// Two meters counting fast: an AC one at 20 kW (5.6 Wh/s) and a DC one at 2.4 kW.
fn line() -> SimServer {
    let mut ac = SimMeter::new(Model::Pzem016, 1);
    ac.frozen = true;
    ac.set_ac(AcReading {
        voltage_dv: 2300,
        current_ma: 87_000,
        power_dw: 200_000,
        energy_wh: 10_000,
        frequency_dhz: 500,
        power_factor_centi: 100,
        power_alarm: false,
    });
    let mut dc = SimMeter::new(Model::Pzem017, 2);
    dc.frozen = true;
    dc.set_dc(DcReading {
        voltage_cv: 2400,
        current_ca: 10_000,
        power_dw: 24_000,
        energy_wh: 20_000,
        high_voltage_alarm: false,
        low_voltage_alarm: false,
    });
    SimServer::pty(SimBus::new(vec![ac, dc], 7), Pacing::NONE).unwrap()
}

/// What the state directory holds after a kill.
#[derive(Default, Debug)]
struct Disk {
    /// Persisted total (offset + last counter, Wh) of each `*.energy` file.
    totals: BTreeMap<String, u64>,
    /// `.tmp` files left by a save the kill interrupted (allowed: load skips a torn one).
    tmp_left: usize,
}

/// Reads every state file in `dir`; panics on a `NAME` or `NAME.bak` that does not parse
/// and on any `.corrupt` file (the service found damage).
fn read_disk(dir: &Path) -> Disk {
    let mut disk = Disk::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return disk;
    };
    let mut names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(!name.contains(".corrupt"), "damage found: {name}");
        if name.ends_with(".tmp") {
            disk.tmp_left += 1;
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let state = EnergyState::parse(&text).unwrap_or_else(|e| panic!("{name} is unreadable ({e}): {text:?}"));
        if let Some(id) = name.strip_suffix(".energy") {
            let total = state.offset_wh + u64::from(state.last_raw_wh.unwrap_or(0));
            disk.totals.insert(id.to_owned(), total);
        }
    }
    disk
}

/// Checks that no persisted total went down from `before` to `now`; returns how many
/// changed (a save happened between the two kills).
fn check_monotonic(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>, kill: u32) -> usize {
    let mut changed = 0;
    for (id, was) in before {
        let is = now
            .get(id)
            .unwrap_or_else(|| panic!("kill {kill}: {id}.energy disappeared"));
        assert!(
            is >= was,
            "kill {kill}: {id} persisted total went back from {was} to {is} Wh"
        );
        changed += usize::from(is != was);
    }
    changed + now.keys().filter(|k| !before.contains_key(*k)).count()
}

fn published_wh(mon: &Monitor, service: &str, path: &str) -> Option<u64> {
    match mon.get(service, path) {
        Some(pzem::dbus::Value::Double(kwh)) => Some((kwh * 1000.0).round() as u64),
        _ => None,
    }
}

/// A first run of pzem-dbus, ended cleanly: it leaves a state file per meter (a save at
/// exit).
fn first_run(sim: &SimServer, rig: &mut Rig, args: &[String]) {
    let tty = sim.path().unwrap().to_owned();
    let mut p = rig.start(BIN, "pzem-0", args);
    for service in [service_name("grid", &tty, 1), service_name("dcsource", &tty, 2)] {
        rig.monitor.wait_connected(&service, 10 * SECOND);
    }
    rig.monitor.pump_for(SECOND / 2);
    assert_eq!(p.terminate(), Some(0), "{}", p.log_text());
}

/// Kills pzem-dbus `kills` times at a random moment 0-700 ms after its start, resetting a
/// meter's counter in between in one run of two (pzem-dbus saves at once after a reset, so saves and
/// kills overlap). Returns (kills, saves seen, .tmp files seen).
fn kill_loop(
    sim: &SimServer,
    rig: &mut Rig,
    args: &[String],
    state_dir: &Path,
    kills: u32,
    seed: u64,
) -> (u32, usize, usize) {
    let tty = sim.path().unwrap().to_owned();
    let services = [
        (service_name("grid", &tty, 1), "/Ac/Energy/Forward"),
        (service_name("dcsource", &tty, 2), "/History/EnergyOut"),
    ];
    let mut rng = Rng::new(seed);
    let mut persisted = read_disk(state_dir).totals;
    assert_eq!(persisted.len(), 2, "a state file per meter to start from");
    let (mut saves, mut tmp_seen) = (0, 0);
    for kill in 1..=kills {
        if kill % 10 == 0 {
            // The killed run's services must be gone, or their last values would pass
            // for this run's below.
            rig.monitor.until(5 * SECOND, "the killed services gone", |m| {
                services.iter().all(|(s, _)| !m.view.contains_key(s))
            });
        }
        let mut p = rig.start(BIN, &format!("pzem-{kill}"), args);
        // Every tenth run: wait until it publishes, and check that what it publishes is
        // at least what was persisted (the restart lost nothing that was saved).
        if kill % 10 == 0 {
            for (service, path) in &services {
                rig.monitor.wait_connected(service, 10 * SECOND);
                rig.monitor.until(5 * SECOND, "energy published", |m| {
                    published_wh(m, service, path).is_some()
                });
            }
            let on_disk: u64 = persisted.values().sum();
            let shown: u64 = services
                .iter()
                .map(|(s, p)| published_wh(&rig.monitor, s, p).unwrap())
                .sum();
            assert!(
                shown + 2 >= on_disk,
                "kill {kill}: published {shown} Wh in all, less than the {on_disk} Wh persisted\n{}",
                p.log_text()
            );
        }
        // Up to 350 ms, a counter reset in one run of two, up to 350 ms, kill.
        rig.monitor.pump_for(Duration::from_millis(rng.below(350) as u64));
        if rng.below(2) == 0 {
            let address = 1 + rng.below(2) as u8;
            sim.bus()
                .meter_mut(address)
                .unwrap()
                .set_energy_wh(rng.below(500) as u32);
        }
        rig.monitor.pump_for(Duration::from_millis(rng.below(350) as u64));
        let code = p.kill9();
        assert_eq!(
            code,
            Some(128 + 9),
            "kill {kill}: not killed by the signal\n{}",
            p.log_text()
        );
        let log = p.log_text();
        assert!(!log.contains("panicked"), "kill {kill}: {log}");
        let disk = read_disk(state_dir);
        saves += check_monotonic(&persisted, &disk.totals, kill);
        tmp_seen += disk.tmp_left;
        persisted = disk.totals;
    }
    (kills, saves, tmp_seen)
}

#[test]
fn kill_9_pzem_dbus_while_counters_move() {
    let sim = line();
    let tty = sim.path().unwrap().to_owned();
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcsource"], &["-i", "100"]);
    let t0 = Instant::now();
    let state_dir = rig.dir.path().join("energy");
    first_run(&sim, &mut rig, &args);
    let (kills, saves, tmp) = kill_loop(&sim, &mut rig, &args, &state_dir, DBUS_KILLS, 1);
    println!(
        "pzem-dbus: {kills} kills -9 in {:.0} s, {saves} persisted totals changed between kills, \
         {tmp} interrupted saves (.tmp) found, 0 unreadable files, 0 decreases",
        t0.elapsed().as_secs_f64()
    );
    // The test saw saves between kills, or it proved nothing about them.
    assert!(saves >= 10, "only {saves} saves between {kills} kills");
}

/// The state directory on a small tmpfs that is full: every save fails with a clear error
/// in the log, kills -9 in the middle leave the previous files intact, and once there is
/// room again the saves resume.
#[test]
fn kill_9_pzem_dbus_on_a_full_file_system() {
    let sim = line();
    let tty = sim.path().unwrap().to_owned();
    let mut rig = Rig::new(true);
    let Some(fs) = Tmpfs::mount(rig.dir.path(), 64) else {
        require::require_or_skip(
            "cannot mount a tmpfs here: the full-disk crash test did not run",
            "run as root; scripts/test in CI does",
        );
        return;
    };
    let state_dir = fs.path().join("energy");
    let args = rig.args(
        &["-d", &tty],
        &["1:016:grid", "2:017:dcsource"],
        &["-i", "100", "--state-dir", state_dir.to_str().unwrap()],
    );
    first_run(&sim, &mut rig, &args);
    let before = read_disk(&state_dir).totals;
    fs.fill();
    let (kills, saves, _) = kill_loop(&sim, &mut rig, &args, &state_dir, 20, 2);
    assert_eq!(saves, 0, "a save succeeded on a full file system");
    assert_eq!(read_disk(&state_dir).totals, before, "the state files changed");
    let logs: String = (1..=kills)
        .map(|k| std::fs::read_to_string(rig.dir.path().join(format!("pzem-{k}.log"))).unwrap_or_default())
        .collect();
    let errors = logs.matches("cannot save energy state").count();
    assert!(errors >= 3, "the failed saves are not logged:\n{logs}");
    assert!(
        logs.contains("No space left on device"),
        "the log does not say why:\n{logs}"
    );
    // Room again: a counter reset is saved at once.
    fs.unfill();
    let mut p = rig.start(BIN, "pzem-room", &args);
    rig.monitor.wait_connected(&service_name("grid", &tty, 1), 10 * SECOND);
    rig.monitor.pump_for(SECOND / 2);
    sim.bus().meter_mut(1).unwrap().set_energy_wh(0);
    let deadline = Instant::now() + 5 * SECOND;
    while read_disk(&state_dir).totals == before {
        assert!(
            Instant::now() < deadline,
            "no save once there is room\n{}",
            p.log_text()
        );
        rig.monitor.pump_for(SECOND / 10);
    }
    check_monotonic(&before, &read_disk(&state_dir).totals, 0);
    assert_eq!(p.terminate(), Some(0));
    println!("pzem-dbus on a full tmpfs: {kills} kills -9, {errors} failed saves logged, files intact, saves resume");
}
