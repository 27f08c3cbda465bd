//! Fuzz target `config`: see `pzem::fuzzing::config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pzem::fuzzing::config(data));
