//! The client against the simulator over real transports: a pseudo-terminal
//! pair (as a USB dongle would be), RTU over TCP and Modbus TCP.

use std::time::Duration;

#[cfg(feature = "serial")]
use pzem::sim::Faults;
use pzem::sim::{Pacing, SimBus, SimMeter, SimServer, TcpFraming};
use pzem::tcp::{ModbusTcp, connect_rtu};
use pzem::{Address, Client, Error, Family, Model, Reading, Transport};
#[cfg(feature = "serial")]
use pzem::{ExceptionCode, Shunt, StopBits};

fn a(n: u32) -> Address {
    Address::unit_or_general(n).unwrap()
}

fn mixed_line() -> SimBus {
    SimBus::new(
        vec![
            SimMeter::new(Model::Pzem016, 1),
            SimMeter::new(Model::Pzem017, 2),
            SimMeter::new(Model::Pzem014, 3),
        ],
        7,
    )
}

#[cfg(feature = "serial")]
fn pty_client(sim: &SimServer) -> Client<pzem::RtuTransport<pzem::serial::SerialLine>> {
    let transport = pzem::serial::open_rtu(sim.path().unwrap(), StopBits::Two).unwrap();
    Client::new(transport)
}

/// Every value a client decodes equals what the simulated meter held.
fn assert_reading_matches(sim: &SimServer, address: u8, reading: &Reading) {
    let bus = sim.bus();
    let served = bus
        .served()
        .filter(|s| s.address == address)
        .last()
        .expect("a served reading");
    assert_eq!(&served.reading, reading);
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn mixed_line_over_a_pty() {
    let sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    let ac = client.read_ac(a(1)).unwrap();
    assert_reading_matches(&sim, 1, &Reading::Ac(ac));
    assert!((220.0..=245.0).contains(&ac.voltage_v()));
    let dc = client.read_dc(a(2)).unwrap();
    assert_reading_matches(&sim, 2, &Reading::Dc(dc));
    assert_eq!(client.probe(a(1)).unwrap().map(|r| r.family()), Some(Family::Ac));
    assert_eq!(client.probe(a(2)).unwrap().map(|r| r.family()), Some(Family::Dc));
    assert_eq!(client.probe(a(3)).unwrap().map(|r| r.family()), Some(Family::Ac));
    client.transport_mut().set_timeout(Duration::from_millis(60));
    assert_eq!(client.probe(a(4)).unwrap().map(|r| r.family()), None);
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn parameters_are_written_and_read_back() {
    let sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    client.set_settle_time(Duration::ZERO);
    let p = client.set_power_alarm(a(1), 2300).unwrap();
    assert_eq!(p.power_alarm_w, 2300);
    assert_eq!(sim.bus().meter_mut(1).unwrap().power_alarm_w(), 2300);
    let p = client.set_voltage_alarms(a(2), 14.4, 11.5).unwrap();
    assert_eq!((p.high_voltage_alarm_v(), p.low_voltage_alarm_v()), (14.4, 11.5));
    let p = client.set_shunt(a(2), Shunt::A300).unwrap();
    assert_eq!(p.shunt, Some(Shunt::A300));
    client.set_address(a(3), a(10)).unwrap();
    assert!(sim.bus().meter_mut(10).is_some());
    assert!(client.read_ac(a(10)).is_ok());
    assert!(matches!(client.set_power_alarm(a(1), 0), Err(Error::Argument(_))));
    assert!(matches!(
        client.set_address(a(10), Address::GENERAL),
        Err(Error::Argument(_))
    ));
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn energy_reset() {
    let sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    sim.bus().meter_mut(1).unwrap().set_energy_wh(12_345);
    let mut client = pty_client(&sim);
    assert_eq!(client.read_ac(a(1)).unwrap().energy_wh, 12_345);
    client.reset_energy(a(1)).unwrap();
    assert!(client.read_ac(a(1)).unwrap().energy_wh < 10);
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn refusals_are_typed_and_not_retried() {
    let sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    let before = sim.bus().requests();
    let err = client.read_ac(a(2)).unwrap_err();
    assert_eq!(err.exception(), Some(ExceptionCode::IllegalDataAddress));
    assert_eq!(sim.bus().requests() - before, 1, "a refusal is final");
    let err = client.set_shunt(a(1), Shunt::A50).unwrap_err();
    assert_eq!(err.exception(), Some(ExceptionCode::IllegalDataAddress));
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn general_address_with_one_and_two_meters() {
    let single = SimServer::pty(SimBus::new(vec![SimMeter::new(Model::Pzem017, 9)], 1), Pacing::NONE).unwrap();
    let mut client = pty_client(&single);
    assert_eq!(client.read_address(Address::GENERAL).unwrap(), 9);
    assert_eq!(
        client.probe(Address::GENERAL).unwrap().map(|r| r.family()),
        Some(Family::Dc)
    );

    let double = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    let mut client = pty_client(&double);
    let err = client.read_address(Address::GENERAL).unwrap_err();
    assert!(err.is_garbled(), "collision must look garbled, got {err}");
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn injected_faults_never_produce_a_wrong_value() {
    let mut bus = mixed_line();
    bus.faults = Faults::parse("no-reply=0.1,bad-crc=0.1,truncated=0.1,garbage=0.1,exception=0.05").unwrap();
    let sim = SimServer::pty(bus, Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    client.transport_mut().set_timeout(Duration::from_millis(40));
    client.set_retries(0);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..300 {
        match client.read_ac(a(1)) {
            Ok(r) => {
                ok += 1;
                let bus = sim.bus();
                assert!(
                    bus.served().any(|s| s.reading == Reading::Ac(r)),
                    "decoded a reading the simulator never held: {r:?}"
                );
            }
            Err(e) => {
                failed += 1;
                assert!(
                    e.is_transient() || e.exception() == Some(ExceptionCode::SlaveDeviceFailure),
                    "{e}"
                );
            }
        }
    }
    assert!(ok > 150 && failed > 60, "ok {ok}, failed {failed}");
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn retries_recover_from_transient_faults() {
    let mut bus = mixed_line();
    bus.faults = Faults::parse("bad-crc=0.3").unwrap();
    let sim = SimServer::pty(bus, Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    client.set_retries(5);
    let before = sim.bus().requests();
    for _ in 0..50 {
        client.read_ac(a(1)).unwrap();
    }
    // The faults really happened (about 0.3 of ~70 replies), and each cost one retry:
    // every read succeeded, so the line carried the 50 good requests plus one per bad CRC.
    let bus = sim.bus();
    let injected = bus.injected();
    assert!(
        injected.bad_crc >= 5,
        "too few faults to show retries work: {injected:?}"
    );
    assert_eq!(injected.altered(), injected.bad_crc, "{injected:?}");
    assert_eq!(bus.requests() - before, 50 + injected.bad_crc, "{injected:?}");
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn paced_line_takes_wire_time() {
    let sim = SimServer::pty(mixed_line(), Pacing::real(StopBits::Two)).unwrap();
    let mut client = pty_client(&sim);
    let start = std::time::Instant::now();
    client.read_ac(a(1)).unwrap();
    // 8 + 25 bytes at 9600 8N2 is 37.8 ms, plus 10 ms turnaround.
    assert!(start.elapsed() >= Duration::from_millis(45), "{:?}", start.elapsed());
}

#[test]
fn rtu_over_tcp() {
    let sim = SimServer::tcp("127.0.0.1:0", TcpFraming::Rtu, mixed_line(), Pacing::NONE).unwrap();
    let mut client = Client::new(connect_rtu(&sim.local_addr().unwrap().to_string()).unwrap());
    let r = client.read_ac(a(1)).unwrap();
    assert_reading_matches(&sim, 1, &Reading::Ac(r));
    assert_eq!(client.probe(a(2)).unwrap().map(|r| r.family()), Some(Family::Dc));
    client.reset_energy(a(2)).unwrap();
}

#[test]
fn modbus_tcp() {
    let sim = SimServer::tcp("127.0.0.1:0", TcpFraming::Mbap, mixed_line(), Pacing::NONE).unwrap();
    let mut client = Client::new(ModbusTcp::connect(&sim.local_addr().unwrap().to_string()).unwrap());
    let r = client.read_dc(a(2)).unwrap();
    assert_reading_matches(&sim, 2, &Reading::Dc(r));
    assert_eq!(client.probe(a(1)).unwrap().map(|r| r.family()), Some(Family::Ac));
    client.set_settle_time(Duration::ZERO);
    assert_eq!(client.set_power_alarm(a(3), 1500).unwrap().power_alarm_w, 1500);
    client.transport_mut().set_timeout(Duration::from_millis(50));
    assert!(matches!(client.read_ac(a(9)), Err(Error::NoAnswer)));
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn a_hung_up_line_is_an_io_error() {
    let mut sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    let mut client = pty_client(&sim);
    client.read_ac(a(1)).unwrap();
    sim.hang_up();
    let err = client.read_ac(a(1)).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

/// A hung-up line served again on a new pty (`pty_shared`): a new pty, the same meters,
/// whose energy counters go on from where they were.
#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn a_hung_up_line_reopened_on_a_new_pty_keeps_its_meters() {
    let mut sim = SimServer::pty(mixed_line(), Pacing::NONE).unwrap();
    sim.bus().meter_mut(1).unwrap().set_energy_wh(5_000);
    let before = pty_client(&sim).read_ac(a(1)).unwrap();
    sim.hang_up();
    let requests = sim.bus().requests();
    let again = SimServer::pty_shared(sim.handle(), Pacing::NONE).unwrap();
    // A new pty (the kernel may give it the number the closed one had).
    assert!(again.path().is_some_and(|p| p.starts_with("/dev/pts/")));
    std::thread::sleep(Duration::from_millis(20));
    let after = pty_client(&again).read_ac(a(1)).unwrap();
    assert_reading_matches(&again, 1, &Reading::Ac(after));
    assert!(after.energy_wh >= before.energy_wh && before.energy_wh >= 5_000);
    // One line: the counts of the first server go on.
    assert_eq!(again.bus().requests(), requests + 1);
    assert_eq!(sim.bus().requests(), requests + 1, "the same shared line");
}
