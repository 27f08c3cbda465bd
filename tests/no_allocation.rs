//! A steady-state poll allocates nothing: requests are built on the stack,
//! replies received into the client's buffer and decoded in place, and the
//! reading published into the meter's D-Bus tree and out as `ItemsChanged`.
//!
//! A counting global allocator counts allocations made by the polling
//! thread only (the simulator thread allocates freely).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    std::hint::black_box(Box::new(7u64));
    assert_eq!(allocations() - before, 1);
}

#[test]
fn frame_build_and_decode_allocates_nothing() {
    use pzem::frame::{Reply, Request};
    use pzem::{AcReading, Address};
    let addr = Address::FACTORY_DEFAULT;
    let reply: [u8; 25] = [
        0x01, 0x04, 0x14, 0x08, 0x98, 0x03, 0xE8, 0x00, 0x00, 0x08, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0xF4, 0x00, 0x64, 0x00, 0x00, 0x63, 0xCE,
    ];
    let before = allocations();
    let mut volts = 0.0;
    for _ in 0..10_000 {
        let req = Request::read_input_registers(0, 10).unwrap();
        std::hint::black_box(req.rtu_frame(addr));
        if let Ok(Reply::Registers(r)) = req.decode_rtu_reply(addr, &reply) {
            volts += AcReading::from_registers(&r).unwrap().voltage_v();
        }
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(volts, 2_200_000.0);
}

#[test]
#[cfg(feature = "serial")]
#[cfg_attr(any(target_arch = "arm", target_arch = "aarch64"), ignore = "no tty under qemu")]
fn polling_over_a_pty_allocates_nothing() {
    use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
    use pzem::{Address, Client, Model, StopBits};
    let sim = SimServer::pty(
        SimBus::new(
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem017, 2)],
            3,
        ),
        Pacing::NONE,
    )
    .unwrap();
    let mut client = Client::new(pzem::serial::open_rtu(sim.path().unwrap(), StopBits::Two).unwrap());
    let (ac, dc) = (Address::unit(1).unwrap(), Address::unit(2).unwrap());
    // Warm up: first use may initialise lazily.
    client.read_ac(ac).unwrap();
    client.read_dc(dc).unwrap();
    let before = allocations();
    for _ in 0..200 {
        std::hint::black_box(client.read_ac(ac).unwrap());
        std::hint::black_box(client.read_dc(dc).unwrap());
    }
    assert_eq!(allocations() - before, 0, "allocations in 400 steady-state polls");
}

/// The D-Bus side of a steady-state poll: a reading goes into the meter's tree and out as
/// one `ItemsChanged`. Keys come from the tree's NUL-terminated paths, texts from one reused
/// buffer and names from statics, so the Rust side allocates nothing per poll. libdbus's own
/// mallocs for the message do not go through the Rust allocator and are not counted.
#[test]
#[cfg(feature = "dbus")]
fn publishing_a_poll_allocates_nothing() {
    use pzem::dbus::{FIRST_SIGNAL_SERIAL, items_changed};
    use pzem::venus::Role;
    use pzem::venus::layout::{self, MeterIdentity, PhaseUpdate, Update};
    use pzem::{AcReading, DcReading, Model};

    fn polls(model: Model, role: Role, reading: fn(u32) -> Update, changed_per_poll: usize) {
        let identity = MeterIdentity {
            model,
            role,
            instance: 41,
            custom_name: String::new(),
            position: 1,
            connection: "Modbus RTU ttyUSB0:1".into(),
            serial: "pzem_ttyUSB0_1".into(),
            process_name: "pzem-dbus",
            process_version: "0.1.0",
            phases: 1,
        };
        let (mut tree, paths) = layout::build_tree(&identity).unwrap();
        let mut scratch = String::new();
        let mut signal = Vec::new();
        let mut poll = |n: u32| {
            assert!(layout::publish(&mut tree, &paths, &reading(n)));
            let changed = tree.changes().len();
            items_changed(
                &mut signal,
                FIRST_SIGNAL_SERIAL + n,
                &tree,
                tree.changes().iter().copied(),
                &mut scratch,
            );
            assert!(signal.len() > 100 * changed_per_poll / 2, "a signal with every change");
            tree.clear_changes();
            std::hint::black_box(&signal);
            changed
        };
        // Warm up: the first poll also sets /Connected and grows the buffers.
        poll(0);
        let before = allocations();
        let mut changed = 0;
        for n in 1..=300 {
            changed += poll(n);
        }
        let allocated = allocations() - before;
        // Every measurement path changed in every poll, so each signal carried them all.
        assert_eq!(changed, 300 * changed_per_poll, "{model}");
        assert_eq!(allocated, 0, "{model}: Rust allocations in 300 published polls");
    }

    polls(
        Model::Pzem016,
        Role::Grid,
        |n| {
            let mut phases = [PhaseUpdate::Unchanged; 3];
            phases[0] = PhaseUpdate::Fresh {
                reading: AcReading {
                    voltage_dv: 2300 + (n % 50) as u16,
                    current_ma: 1000 + n,
                    power_dw: 2000 + n,
                    energy_wh: n,
                    frequency_dhz: 499 + (n % 3) as u16,
                    power_factor_centi: 90 + (n % 10) as u16,
                    power_alarm: false,
                },
                energy_wh: u64::from(n),
            };
            Update::Ac { phases }
        },
        9,
    );
    polls(
        Model::Pzem017,
        Role::DcLoad,
        |n| Update::Dc {
            reading: DcReading {
                voltage_cv: 1200 + (n % 100) as u16,
                current_ca: 400 + n as u16,
                power_dw: 480 + n,
                energy_wh: n,
                high_voltage_alarm: n % 2 == 0,
                low_voltage_alarm: false,
            },
            energy_wh: u64::from(n),
        },
        5,
    );
}

/// The state machine behind pzem-dbus, in steady state: replies in, `Publish`
/// commands and the next request out. Only the machine's calls are counted; the
/// simulator that answers allocates freely.
#[test]
#[cfg(feature = "dbus")]
fn the_meter_line_in_steady_state_allocates_nothing() {
    use pzem::Address;
    use pzem::Framing;
    use pzem::sim::{SimBus, SimMeter};
    use pzem::venus::PortId;
    use pzem::venus::config::MeterSpec;
    use pzem::venus::meter_line::{Command, LineConfig, MeterLine};
    use pzem::{Model, ModelChoice, StopBits};
    use std::time::{Duration, Instant};

    let meters = [(1u8, Model::Pzem016), (2, Model::Pzem017)];
    let config = LineConfig {
        place: "/dev/ttyX".into(),
        meters: meters
            .iter()
            .map(|&(a, m)| MeterSpec::single(Address::unit(u32::from(a)).unwrap(), ModelChoice::Known(m), None))
            .collect(),
        port: PortId::serial("/dev/ttyX", None),
        framing: Framing::rtu_serial(StopBits::Two),
        timeout: Duration::from_millis(300),
        poll_interval: Duration::from_secs(1),
        startup_budget: Duration::from_secs(4),
        failures_to_vanish: 3,
        silent_exit: None,
        discovery: None,
    };
    let mut now = Instant::now();
    let mut bus = SimBus::new(meters.iter().map(|&(a, m)| SimMeter::new(m, a)).collect(), 5);
    let mut line = MeterLine::new(config, now);
    let mut counted = 0u64;
    let mut published = 0;
    let mut reply: Option<(Instant, Vec<u8>)> = None;
    let mut frames = Vec::with_capacity(8);
    for step in 0..4000 {
        let warm = step > 200;
        // The machine's own work, counted once warm.
        let before = allocations();
        while let Some(c) = line.poll_command() {
            match c {
                Command::Transmit(f) => frames.push(f),
                Command::Register { address, .. } => line.handle_record(now, address, None),
                Command::Publish { .. } => published += usize::from(warm),
                _ => {}
            }
        }
        let deadline = line.deadline();
        if warm {
            counted += allocations() - before;
        }
        for f in frames.drain(..) {
            let r = bus.respond_rtu(f.as_bytes(), now);
            reply = Some((now + Duration::from_millis(30), r.bytes));
        }
        let next = [deadline, reply.as_ref().map(|r| r.0)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        now = now.max(next);
        let before = allocations();
        match reply.take() {
            Some((at, bytes)) if at <= now => line.handle_input(now, &bytes),
            other => {
                reply = other;
                line.handle_timeout(now);
            }
        }
        if warm {
            counted += allocations() - before;
        }
    }
    assert!(published > 1000, "{published} readings published");
    assert_eq!(counted, 0, "allocations by the machine in {published} published polls");
}
