//! Fuzz harnesses: one function per fuzz target of `fuzz/` (cargo-fuzz), kept in the
//! library so that `tests/fuzz_corpus.rs` feeds the saved corpus and every crash found
//! through exactly the code the fuzzer ran. Each function takes arbitrary bytes, must
//! never panic, and asserts the cheap properties of what it decodes.
//!
//! Not API: hidden from the docs, and it may change with the fuzz targets.

use crate::energy::EnergyState;
use crate::energy_flow::FlowState;
use crate::venus::config::{MeterSpec, port_config, split_sections};
use crate::venus::discovery::Memory;
use crate::{AcParameters, AcReading, Address, DcParameters, DcReading, Exchange, Framing, Reply, Request, StopBits};
use std::time::{Duration, Instant};

/// A harness: arbitrary bytes in, a panic when a property fails.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by name (the file names in `fuzz/fuzz_targets/` and the folders of
/// `fuzz/corpus/`), with their harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("rtu_reply", rtu_reply),
    ("config", config),
    ("state_files", state_files),
    #[cfg(feature = "dbus")]
    ("dbus_value", dbus_value),
    #[cfg(all(feature = "web", unix))]
    ("http_request", http_request),
];

/// The request an input starts with: 6 bytes choose the function (kind mod 4), the
/// registers (the count folded into 1..=125, the start moved down to fit) and the address
/// (0xF8 general, 1-247 a unit, anything else the factory default): every input makes a
/// valid request.
fn request_from(head: &[u8; 6]) -> (Request, Address) {
    let [kind, a_hi, a_lo, b_hi, b_lo, addr] = *head;
    let a = u16::from_be_bytes([a_hi, a_lo]);
    let b = u16::from_be_bytes([b_hi, b_lo]);
    // Counts folded into 1..=125 so that every input makes some request.
    let count = b % 125 + 1;
    let start = a.min(u16::MAX - (count - 1));
    let request = match kind % 4 {
        0 => Request::read_input_registers(start, count).expect("count and start in range"),
        1 => Request::read_holding_registers(start, count).expect("count and start in range"),
        2 => Request::write_register(a, b),
        _ => Request::reset_energy(),
    };
    let address = match addr {
        0xF8 => Address::GENERAL,
        a => Address::unit(u32::from(a)).unwrap_or(Address::FACTORY_DEFAULT),
    };
    (request, address)
}

/// Target `rtu_reply`: a reply to any request kind, decoded as RTU, as Modbus TCP and as a
/// bare PDU, and fed to an [`Exchange`] in chunks as a serial line delivers it. Input: 6
/// bytes of request (function, start, count, address), 1 byte of chunk size, then the reply.
pub fn rtu_reply(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let (request, address) = request_from(head);
    let Some((&chunk, frame)) = rest.split_first() else {
        return;
    };

    check_reply(&request, frame, request.decode_rtu_reply(address, frame));
    check_reply(&request, frame, request.decode_tcp_reply(0x1234, address, frame));
    check_reply(&request, frame, request.decode_pdu(frame));

    for framing in [Framing::rtu_serial(StopBits::One), Framing::Mbap] {
        let t0 = Instant::now();
        let mut exchange = Exchange::new(framing, Duration::from_millis(300));
        exchange.start(t0, address, request);
        let step = usize::from(chunk).max(1);
        let mut taken = 0;
        for piece in frame.chunks(step) {
            let input = exchange.handle_input(t0, piece);
            assert!(input.dropped <= piece.len());
            if input.ended.is_some() {
                taken += piece.len() - input.dropped;
                // Whatever it assembled can be judged without a panic.
                if let Ok(reply) = exchange.reply() {
                    check_decoded(&request, taken, reply);
                }
                break;
            }
            taken += piece.len();
            assert!(exchange.bytes_wanted() >= 1, "a waiting exchange always wants a byte");
        }
        let _ = exchange.handle_timeout(t0 + Duration::from_secs(10));
        assert!(!exchange.is_waiting(), "the timeout always ends the exchange");
    }
}

fn check_reply(request: &Request, frame: &[u8], decoded: Result<Reply<'_>, crate::FrameError>) {
    if let Ok(reply) = decoded {
        check_decoded(request, frame.len(), reply);
        // The error path formats without a panic as well.
    } else if let Err(e) = decoded {
        let _ = e.to_string();
    }
}

/// Properties of a reply decoded from `frame_len` bytes: never more register bytes than
/// the frame held, exactly the registers asked for, and the readings decode or refuse.
fn check_decoded(request: &Request, frame_len: usize, reply: Reply<'_>) {
    match reply {
        Reply::Registers(regs) => {
            let (start, count) = request.read_range().expect("registers answer only a read");
            assert_eq!(regs.start(), start);
            assert_eq!(regs.len(), usize::from(count));
            assert!(2 * regs.len() < frame_len, "decoded more than the frame held");
            assert_eq!(regs.iter().count(), regs.len());
            let _ = AcReading::from_registers(&regs).map(|r| (r.voltage_v(), r.power_factor(), r.energy_kwh()));
            let _ = DcReading::from_registers(&regs).map(|r| (r.voltage_v(), r.current_a()));
            let _ = AcParameters::from_registers(&regs);
            let _ = DcParameters::from_registers(&regs);
        }
        Reply::Written { register, value } => {
            assert_eq!(request.write_target(), Some((register, value)));
        }
        Reply::EnergyReset => {}
    }
}

/// Target `config`: the configuration file, as pzem-dbus reads it for a line with and
/// without a `[meters PORT]` section of its own, each line as a single meter spec, and its `[logger]` and `[web]`
/// sections as pzem-logger and pzem-web read them. A config that parses
/// names each meter address once.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every line's view: the general meters, and those of a `[meters ttyUSB0]` section.
    for names in [&[][..], &["ttyUSB0", "A10K3x9"][..]] {
        if let Ok(line) = port_config(text, names) {
            let mut seen = std::collections::HashSet::new();
            for m in &line.meters {
                for a in m.addresses() {
                    assert!(seen.insert(a.get()), "address {} configured twice", a.get());
                }
                assert!(m.phase_count() >= 1);
                assert!(m.name.as_deref().is_none_or(|n| !n.is_empty() && n.len() <= 64));
            }
        }
    }
    if let Ok(file) = split_sections(text) {
        let _ = file.unknown_sections().count();
    }
    for line in text.lines().take(64) {
        let _ = MeterSpec::parse(line).map_err(|e| e.to_string());
    }
    // pzem-logger's and pzem-web's sections of the same file.
    #[cfg(feature = "history")]
    let _ = crate::history::config::parse(text).map_err(|e| e.to_string());
}

/// Target `state_files`: the texts of pzem-dbus's energy state, pzem-energy's flow state
/// and the discovery memory. Whatever parses writes back to a text that parses to the
/// same state (a save never loses what a load found).
pub fn state_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(state) = EnergyState::parse(text) {
        assert_eq!(
            EnergyState::parse(&state.to_line()),
            Ok(state),
            "energy state round trip"
        );
    }
    if let Ok(state) = FlowState::parse(text) {
        assert_eq!(FlowState::parse(&state.to_line()), Ok(state), "flow state round trip");
    }
    if let Ok(memory) = Memory::parse(text) {
        assert_eq!(Memory::parse(&memory.to_text()), Ok(memory), "memory round trip");
    }
}

/// Target `dbus_value`: a marshalled D-Bus message, demarshalled by libdbus, whose first
/// argument goes through [`crate::dbus::Value::read_variant`] (or `read_plain`) and
/// [`crate::dbus::Value::coerce`] to each kind, as a `SetValue` to a path does.
/// A value coerced to a kind has that kind, or is invalid.
#[cfg(feature = "dbus")]
pub fn dbus_value(data: &[u8]) {
    use crate::dbus::{Kind, Value};
    let Ok(msg) = dbus::Message::demarshal(data) else {
        return;
    };
    let mut iter = msg.iter_init();
    let mut plain = iter;
    let read = [Value::read_variant(&mut iter), Value::read_plain(&mut plain)];
    for value in read.into_iter().flatten() {
        for kind in [Kind::Double, Kind::Int, Kind::Str, Kind::StrList] {
            if let Some(v) = value.clone().coerce(kind) {
                assert!(
                    v.is_invalid() || v.kind() == Some(kind),
                    "{value:?} coerced to {kind:?} gave {v:?}"
                );
            }
        }
        let _ = (value.as_f64(), value.as_i64(), value.as_str());
    }
}

/// Target `http_request`: a request head as pzem-web's server reads it (first byte: odd
/// when the buffer reached the size limit), then, when it is a request, its query parsed
/// and answered by the application on a database that does not exist (every handler runs
/// up to the store). A complete request is a GET or HEAD of a path; every answer is a
/// well-formed HTTP/1.1 response with a status from 200 to 599.
#[cfg(all(feature = "web", unix))]
pub fn http_request(data: &[u8]) {
    use crate::history::params::SamplesQuery;
    use crate::history::time::Offset;
    use crate::web::app::App;
    use crate::web::http::{Head, Response, parse_head};
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let full = flags & 1 == 1;
    let check = |r: &Response, head_only: bool| {
        assert!((200..600).contains(&r.status), "status {}", r.status);
        let bytes = r.to_bytes(head_only);
        assert!(bytes.starts_with(b"HTTP/1.1 "), "not an HTTP/1.1 response");
    };
    match parse_head(head, full) {
        Head::Partial => assert!(!full, "a full buffer is never partial"),
        Head::Refuse(r) => {
            assert!((400..500).contains(&r.status), "a refusal is a 4xx, not {}", r.status);
            check(&r, false);
        }
        Head::Complete(req) => {
            assert!(req.method == "GET" || req.method == "HEAD", "{}", req.method);
            assert!(req.path.starts_with('/'));
            let _ = SamplesQuery::parse(&req.query, Offset::UTC);
            let mut app = App::new(
                std::path::PathBuf::from("/nonexistent/pzem-fuzz/history.db"),
                Offset::UTC,
            );
            let r = app.handle(&req);
            check(&r, req.method == "HEAD");
        }
    }
}
