//! Fuzz target `dbus_value`: see `pzem::fuzzing::dbus_value`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pzem::fuzzing::dbus_value(data));
