//! How fast a service answers while its serial side is stuck, on a private dbus-daemon.
//!
//! `cargo bench --bench dbus_latency` (add `-- --quick` for a short run). The D-Bus thread
//! waits with a 30 s timeout; a "serial" thread is stuck 1 s per reading, then sends it and
//! wakes the D-Bus thread. Prints GetValue round-trip and reading→ItemsChanged latencies.

#[path = "../tests/support/mod.rs"]
mod support;

use pzem::dbus::testkit::PrivateBus;
use pzem::dbus::{BusClient, Event, Waiter, Watchable};
use std::time::{Duration, Instant};
use support::{App, NAME, percentiles};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (calls, readings) = if quick { (200, 2) } else { (5000, 5) };
    let bus = PrivateBus::start().expect("dbus-daemon");
    let app = App::start(&bus.bus(), Duration::from_secs(1));
    let mut client = BusClient::new(&bus.bus()).expect("client");
    client.subscribe(&[]).expect("subscribe");

    let mut rtt = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        client.get_value(NAME, "/Ac/L1/Voltage").expect("GetValue");
        rtt.push(t.elapsed());
    }
    let total = start.elapsed();
    let (p50, p99, max) = percentiles(rtt);
    println!(
        "GetValue x{calls} while serial is stuck: p50 {p50:?}  p99 {p99:?}  max {max:?}  ({:.0} calls/s)",
        calls as f64 / total.as_secs_f64()
    );

    let (mut waiter, _w) = Waiter::new().expect("waiter");
    let mut lags = Vec::new();
    let mut events = Vec::new();
    let mut seen = 0usize;
    while lags.len() < readings {
        waiter
            .wait([&client as &dyn Watchable], Some(Duration::from_secs(5)))
            .expect("wait");
        let now = Instant::now();
        events.clear();
        client.poll_events(&mut events).expect("events");
        for e in &events {
            if let Event::ItemsChanged { changes, .. } = e {
                for (path, value) in changes {
                    if path == "/Ac/Power" {
                        let n = value.as_i64().unwrap_or(0) as usize;
                        if n > seen {
                            seen = n;
                            lags.push(now - app.sent.lock().expect("lock")[n - 1]);
                        }
                    }
                }
            }
        }
    }
    let (p50, _, max) = percentiles(lags);
    println!("reading -> ItemsChanged x{readings}: p50 {p50:?}  max {max:?}");
}
