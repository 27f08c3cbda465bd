//! Fuzz target `state_files`: see `pzem::fuzzing::state_files`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pzem::fuzzing::state_files(data));
