//! A simulator of PZEM meters, used in place of hardware by the tests, the
//! demo and the benchmarks.
//!
//! [`SimMeter`] is one meter (sans-IO: registers in, registers out, energy
//! integrating over time); [`SimBus`] puts several on one line, answers
//! request frames as the line would (collisions at the general address,
//! silence for absent or unpowered meters) and injects faults at seeded
//! rates; [`SimServer`] serves a bus on a pseudo-terminal, a tty or TCP.

pub mod bus;
pub mod meter;
pub mod rng;
pub mod server;

pub use bus::{FaultCounts, Faults, LineReply, Served, SimBus};
pub use meter::SimMeter;
pub use rng::Rng;
pub use server::{Pacing, SimHandle, SimServer, TcpFraming};
