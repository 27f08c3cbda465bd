//! Fuzz target `rtu_reply`: see `pzem::fuzzing::rtu_reply`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pzem::fuzzing::rtu_reply(data));
