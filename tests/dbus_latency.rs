//! The wake design: calls are answered and readings published promptly although the
//! D-Bus thread waits with a 30 s timeout and the serial thread spends its time stuck.
//! Bounds are loose (1 s against ~1 ms typical); a broken design misses them by seconds.
//! `cargo bench --bench dbus_latency` prints the actual figures.

mod support;
use pzem::dbus::testkit::PrivateBus;
use pzem::dbus::{BusClient, Event, Value, Waiter, Watchable};
use std::time::{Duration, Instant};
use support::*;

const BOUND: Duration = Duration::from_secs(1);

#[test]
fn calls_and_readings_are_prompt_while_serial_is_stuck() {
    let bus = PrivateBus::start().unwrap();
    let app = App::start(&bus.bus(), Duration::from_millis(150));
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&[]).unwrap();

    let mut calls = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        client.get_value(NAME, "/DeviceInstance").unwrap();
        calls.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(7));
    }
    let (p50, _, max) = percentiles(calls);
    assert!(max < BOUND, "GetValue took {max:?} (p50 {p50:?})");

    // Readings: from the serial thread's send to the client's ItemsChanged.
    let (mut waiter, _w) = Waiter::new().unwrap();
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while lags.len() < 4 && Instant::now() < deadline {
        waiter
            .wait([&client as &dyn Watchable], Some(Duration::from_secs(1)))
            .unwrap();
        let now = Instant::now();
        events.clear();
        client.poll_events(&mut events).unwrap();
        for e in &events {
            if let Event::ItemsChanged { changes, .. } = e {
                for (path, value) in changes {
                    if let (true, Value::Double(n)) = (path == "/Ac/Power", value) {
                        let sent = app.sent.lock().unwrap()[*n as usize - 1];
                        lags.push(now - sent);
                    }
                }
            }
        }
    }
    assert!(lags.len() >= 4, "only {} readings arrived", lags.len());
    let (_, _, max) = percentiles(lags);
    assert!(max < BOUND, "reading took {max:?} to be published");
}
