//! A steady-state poll allocates nothing: requests are built on the stack,
//! replies received into the client's buffer and decoded in place.
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
