//! Fuzz target `http_request`: see `pzem::fuzzing::http_request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pzem::fuzzing::http_request(data));
