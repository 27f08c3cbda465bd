//! A battery monitor for `scripts/demo`: the testkit's battery double
//! (`com.victronenergy.battery.demo`) whose `/History/DischargedEnergy` counts what a Multi
//! between the two AC meters would take from the battery: the AC output's power beyond the
//! AC input's, plus 40 W of losses. Read once a second from the meters' `/Ac/L1/Power`.
//!
//! Unlike a BMV (0.01 kWh steps) it publishes whole Wh, so that a short demo shows the
//! battery moving.
//!
//! `demo_battery --dbus ADDRESS --ac-in SERVICE --ac-out SERVICE` runs until killed.

use pzem::dbus::testkit::DeviceDouble;
use pzem::dbus::{Bus, BusClient, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const NAME: &str = "com.victronenergy.battery.demo";
const LOSSES_W: f64 = 40.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(address), Some(ac_in), Some(ac_out)) = (flag("--dbus"), flag("--ac-in"), flag("--ac-out")) else {
        eprintln!("usage: demo_battery --dbus ADDRESS --ac-in SERVICE --ac-out SERVICE");
        return ExitCode::from(2);
    };
    let bus = Bus::Address(address);
    let battery = match DeviceDouble::battery(&bus, NAME, 512, 0.0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("demo_battery: cannot publish {NAME}: {e}");
            return ExitCode::from(4);
        }
    };
    let mut client = match BusClient::new(&bus) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo_battery: {e}");
            return ExitCode::from(4);
        }
    };
    client.set_timeout(Duration::from_millis(500));
    let power = |client: &mut BusClient, service: &str| match client.get_value(service, "/Ac/L1/Power") {
        Ok(Value::Double(w)) => w,
        _ => 0.0,
    };
    let mut discharged_wh = 0.0_f64;
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        let dt_h = now.duration_since(last).as_secs_f64() / 3600.0;
        last = now;
        let (p_in, p_out) = (power(&mut client, &ac_in), power(&mut client, &ac_out));
        let watts = (p_out - p_in).max(0.0) + LOSSES_W;
        discharged_wh += watts * dt_h;
        let changes = [
            (
                "/History/DischargedEnergy",
                Value::Double(discharged_wh.floor() / 1000.0),
            ),
            ("/Dc/0/Power", Value::Double(-watts.round())),
            ("/Dc/0/Current", Value::Double(-(watts / 52.4 * 10.0).round() / 10.0)),
        ];
        if battery.set(&changes).is_err() {
            return ExitCode::from(4);
        }
    }
}
