//! Time to build a request and validate + decode its reply, per AC and DC
//! reading: the per-meter CPU cost of the protocol core in a poll.

use criterion::{Criterion, criterion_group, criterion_main};
use pzem::frame::{Reply, Request};
use pzem::{AcReading, Address, DcReading};
use std::hint::black_box;

const AC_REPLY: [u8; 25] = [
    0x01, 0x04, 0x14, 0x04, 0xD1, 0x61, 0x9C, 0x00, 0x01, 0x97, 0xEF, 0x00, 0x00, 0x1E, 0x40, 0x00, 0x02, 0x02, 0x57,
    0x00, 0x23, 0x00, 0x00, 0x8D, 0x59,
];
const DC_REPLY: [u8; 21] = [
    0x01, 0x04, 0x10, 0x04, 0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x21, 0x40,
];

fn poll_ac(addr: Address, reply: &[u8]) -> Option<AcReading> {
    let req = Request::read_input_registers(0, 10).ok()?;
    black_box(req.rtu_frame(addr));
    match req.decode_rtu_reply(addr, reply) {
        Ok(Reply::Registers(r)) => AcReading::from_registers(&r).ok(),
        _ => None,
    }
}

fn poll_dc(addr: Address, reply: &[u8]) -> Option<DcReading> {
    let req = Request::read_input_registers(0, 8).ok()?;
    black_box(req.rtu_frame(addr));
    match req.decode_rtu_reply(addr, reply) {
        Ok(Reply::Registers(r)) => DcReading::from_registers(&r).ok(),
        _ => None,
    }
}

fn frames(c: &mut Criterion) {
    let addr = Address::FACTORY_DEFAULT;
    assert!(poll_ac(addr, &AC_REPLY).is_some() && poll_dc(addr, &DC_REPLY).is_some());
    c.bench_function("ac: build request + validate + decode reply", |b| {
        b.iter(|| poll_ac(black_box(addr), black_box(&AC_REPLY)))
    });
    c.bench_function("dc: build request + validate + decode reply", |b| {
        b.iter(|| poll_dc(black_box(addr), black_box(&DC_REPLY)))
    });
    let mut corrupt = AC_REPLY;
    corrupt[10] ^= 0x40;
    c.bench_function("ac: reject a reply with a bad CRC", |b| {
        b.iter(|| poll_ac(black_box(addr), black_box(&corrupt)))
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
