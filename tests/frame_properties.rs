//! Property tests of the frame layer, and a cross-check against rmodbus,
//! an independent Modbus implementation.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use pzem::frame::{FrameError, MAX_READ_REGISTERS, RTU_EXCEPTION_LEN, Registers, Reply, Request};
use pzem::{AcReading, Address, DcReading};

fn any_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), 1..=MAX_READ_REGISTERS)
            .prop_filter_map("range fits", |(s, c)| Request::read_input_registers(s, c).ok()),
        (any::<u16>(), 1..=MAX_READ_REGISTERS)
            .prop_filter_map("range fits", |(s, c)| Request::read_holding_registers(s, c).ok()),
        (any::<u16>(), any::<u16>()).prop_map(|(r, v)| Request::write_register(r, v)),
        Just(Request::reset_energy()),
    ]
}

fn any_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (1u32..=247).prop_map(|n| Address::unit(n).unwrap()),
        Just(Address::GENERAL)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the decoder, for any request.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(req in any_request(), addr in any_address(),
                                             bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = req.decode_rtu_reply(addr, &bytes);
        let _ = req.decode_tcp_reply(1, addr, &bytes);
        let _ = req.decode_pdu(&bytes);
        if bytes.len() >= 2 {
            prop_assert!(req.rtu_reply_len_after_header(bytes[1]) <= 255);
        }
    }

    /// No request this crate can build is calibration (0x41) or any
    /// function other than the four PZEM functions, at any address.
    #[test]
    fn no_frame_is_calibration(req in any_request(), addr in any_address(), tid in any::<u16>()) {
        let rtu = req.rtu_frame(addr);
        prop_assert!(matches!(rtu.as_bytes()[1], 0x03 | 0x04 | 0x06 | 0x42));
        prop_assert_ne!(rtu.as_bytes()[1], 0x41);
        prop_assert!(pzem::frame_crc_ok(rtu.as_bytes()));
        prop_assert_ne!(rtu.as_bytes()[0], 0, "never broadcast");
        let tcp = req.tcp_frame(tid, addr);
        prop_assert_ne!(tcp.as_bytes()[7], 0x41);
    }

    /// A reply built from registers decodes back to them (AC and DC).
    #[test]
    fn readings_round_trip(v in any::<u16>(), i in any::<u32>(), p in any::<u32>(), e in any::<u32>(),
                           f in any::<u16>(), pf in any::<u16>(), alarm in any::<bool>(), addr in 1u8..=247) {
        let ac = AcReading { voltage_dv: v, current_ma: i, power_dw: p, energy_wh: e, frequency_dhz: f,
                             power_factor_centi: pf, power_alarm: alarm };
        let dc = DcReading { voltage_cv: v, current_ca: pf, power_dw: p, energy_wh: e,
                             high_voltage_alarm: alarm, low_voltage_alarm: !alarm };
        let address = Address::unit(u32::from(addr)).unwrap();
        let ac_req = Request::read_input_registers(0, 10).unwrap();
        let frame = reply_frame(addr, 4, &ac.to_registers());
        let Ok(Reply::Registers(regs)) = ac_req.decode_rtu_reply(address, &frame) else { panic!("AC reply rejected") };
        prop_assert_eq!(AcReading::from_registers(&regs).unwrap(), ac);
        let dc_req = Request::read_input_registers(0, 8).unwrap();
        let frame = reply_frame(addr, 4, &dc.to_registers());
        let Ok(Reply::Registers(regs)) = dc_req.decode_rtu_reply(address, &frame) else { panic!("DC reply rejected") };
        prop_assert_eq!(DcReading::from_registers(&regs).unwrap(), dc);
    }

    /// Our request frames equal rmodbus's for the standard functions, and
    /// rmodbus reads the same registers out of replies we accept.
    #[test]
    fn agrees_with_rmodbus(unit in 1u8..=247, start in 0u16..1000, count in 1u16..=MAX_READ_REGISTERS,
                           value in any::<u16>(), words in proptest::collection::vec(any::<u16>(), 125)) {
        use rmodbus::{ModbusProto, client::ModbusRequest};
        let address = Address::unit(u32::from(unit)).unwrap();
        let mut mreq = ModbusRequest::new(unit, ModbusProto::Rtu);
        let mut theirs = Vec::new();
        mreq.generate_get_inputs(start, count, &mut theirs).unwrap();
        let ours = Request::read_input_registers(start, count).unwrap();
        let frame = ours.rtu_frame(address);
        prop_assert_eq!(frame.as_bytes(), &theirs[..]);

        let mut theirs = Vec::new();
        mreq.generate_get_holdings(start, count, &mut theirs).unwrap();
        let frame = Request::read_holding_registers(start, count).unwrap().rtu_frame(address);
        prop_assert_eq!(frame.as_bytes(), &theirs[..]);

        let mut theirs = Vec::new();
        mreq.generate_set_holding(start, value, &mut theirs).unwrap();
        let frame = Request::write_register(start, value).rtu_frame(address);
        prop_assert_eq!(frame.as_bytes(), &theirs[..]);

        let mut theirs = Vec::new();
        mreq.generate_get_inputs(start, count, &mut theirs).unwrap();
        let reply = reply_frame(unit, 4, &words[..usize::from(count)]);
        let Ok(Reply::Registers(regs)) = ours.decode_rtu_reply(address, &reply) else { panic!("reply rejected") };
        let mut parsed = Vec::new();
        mreq.parse_u16(&reply, &mut parsed).unwrap();
        prop_assert_eq!(regs.iter().collect::<Vec<_>>(), parsed);
    }
}

fn reply_frame(addr: u8, function: u8, words: &[u16]) -> Vec<u8> {
    let mut frame = vec![addr, function, (words.len() * 2) as u8];
    for w in words {
        frame.extend_from_slice(&w.to_be_bytes());
    }
    frame.extend_from_slice(&pzem::crc_bytes(&frame));
    frame
}

#[test]
fn registers_view_is_bounded() {
    let r = Registers::new(0, &[1, 2, 3]);
    assert_eq!(r.len(), 1);
    assert_eq!(r.get(1), None);
    assert_eq!(r.get_u32_low_word_first(0), None);
}

/// One change to a valid RTU reply. `d` values are XOR masks, never 0, so the field
/// really changes. Unless the mutation is about the CRC, the CRC is recomputed
/// afterwards, so that the change reaches the check of the field it touches.
#[derive(Clone, Debug)]
enum Mutation {
    /// The valid reply itself.
    None,
    /// The address byte.
    Address(u8),
    /// The function byte.
    Function(u8),
    /// The byte count of a read reply.
    ByteCount(u8),
    /// One byte after the function (and after the byte count of a read).
    Data(Index, u8),
    /// One of the two CRC bytes.
    Crc(bool, u8),
    /// Any byte before the CRC, with the CRC left as it was.
    StaleCrc(Index, u8),
    /// The last byte before the CRC removed.
    Drop,
    /// One byte added before the CRC.
    Extra(u8),
}

impl Mutation {
    fn kind(&self) -> &'static str {
        match self {
            Mutation::None => "none",
            Mutation::Address(_) => "address",
            Mutation::Function(_) => "function",
            Mutation::ByteCount(_) => "byte count",
            Mutation::Data(..) => "data",
            Mutation::Crc(..) => "crc",
            Mutation::StaleCrc(..) => "stale crc",
            Mutation::Drop => "drop",
            Mutation::Extra(_) => "extra",
        }
    }
}

/// The mutations that make sense for `req`: a reset reply has no byte count and no data,
/// a write reply has no byte count.
fn mutations_for(req: &Request) -> BoxedStrategy<Mutation> {
    let mask = 1u8..=255;
    let common = prop_oneof![
        Just(Mutation::None),
        mask.clone().prop_map(Mutation::Address),
        mask.clone().prop_map(Mutation::Function),
        (any::<bool>(), mask.clone()).prop_map(|(hi, d)| Mutation::Crc(hi, d)),
        (any::<Index>(), mask.clone()).prop_map(|(i, d)| Mutation::StaleCrc(i, d)),
        Just(Mutation::Drop),
        any::<u8>().prop_map(Mutation::Extra),
    ];
    let data = (any::<Index>(), mask.clone()).prop_map(|(i, d)| Mutation::Data(i, d));
    if req.read_range().is_some() {
        prop_oneof![common, mask.prop_map(Mutation::ByteCount), data].boxed()
    } else if req.write_target().is_some() {
        prop_oneof![common, data].boxed()
    } else {
        common.boxed()
    }
}

/// A request, the address it went to, the address a valid reply comes from (any unit, or
/// 0xF8 itself, for a request to the general address), register values for a read reply,
/// and one mutation.
fn reply_case() -> impl Strategy<Value = (Request, Address, u8, Vec<u16>, Mutation)> {
    (any_request(), any_address(), prop_oneof![1u8..=247, Just(0xF8u8)]).prop_flat_map(|(req, address, from)| {
        let from = if address.is_general() { from } else { address.get() };
        (
            Just(req),
            Just(address),
            Just(from),
            proptest::collection::vec(any::<u16>(), usize::from(MAX_READ_REGISTERS)),
            mutations_for(&req),
        )
    })
}

/// The valid RTU reply to `req` from `from`, without its CRC: address, function, and the
/// registers' byte count and values (read), the echo (write) or nothing (reset).
fn valid_reply_without_crc(req: &Request, from: u8, words: &[u16]) -> Vec<u8> {
    let mut frame = vec![from, req.function().code()];
    if let Some((_, count)) = req.read_range() {
        let words = &words[..usize::from(count)];
        frame.push((words.len() * 2) as u8);
        frame.extend(words.iter().flat_map(|w| w.to_be_bytes()));
    } else if let Some((register, value)) = req.write_target() {
        frame.extend_from_slice(&register.to_be_bytes());
        frame.extend_from_slice(&value.to_be_bytes());
    }
    frame
}

/// Whether a reply from `from` answers a request sent to `to`.
fn address_answers(to: Address, from: u8) -> bool {
    from == to.get() || (to.is_general() && (from == 0xF8 || (1..=247).contains(&from)))
}

/// Valid replies with one field changed are accepted or rejected exactly as that field
/// demands, with the specific error of its check. The success branch runs for the
/// unchanged reply, for a changed data byte of a read (the decoder does not judge values),
/// and for another answering address when the request went to the general address.
#[test]
fn one_field_changed_in_a_valid_reply_is_judged_exactly() {
    let seen: RefCell<BTreeMap<&'static str, (u32, u32)>> = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&reply_case(), |(req, address, from, words, mutation)| {
        let mut frame = valid_reply_without_crc(&req, from, &words);
        let fc = req.function().code();
        // Index of the first byte after the function (and the byte count of a read).
        let data_at = if req.read_range().is_some() { 3 } else { 2 };
        let mut fix_crc = true;
        match &mutation {
            Mutation::None | Mutation::Crc(..) => {}
            Mutation::Address(d) => frame[0] ^= d,
            Mutation::Function(d) => frame[1] ^= d,
            Mutation::ByteCount(d) => frame[2] ^= d,
            Mutation::Data(i, d) => {
                let at = data_at + i.index(frame.len() - data_at);
                frame[at] ^= d;
            }
            Mutation::StaleCrc(i, d) => {
                let crc = pzem::crc_bytes(&frame);
                let at = i.index(frame.len());
                frame[at] ^= d;
                frame.extend_from_slice(&crc);
                fix_crc = false;
            }
            Mutation::Drop => {
                frame.pop();
            }
            Mutation::Extra(b) => frame.push(*b),
        }
        if fix_crc {
            let crc = pzem::crc_bytes(&frame);
            frame.extend_from_slice(&crc);
        }
        if let Mutation::Crc(hi, d) = &mutation {
            let at = frame.len() - if *hi { 2 } else { 1 };
            frame[at] ^= d;
        }

        let got = req.decode_rtu_reply(address, &frame);
        let valid = match (req.read_range(), req.write_target()) {
            (Some((start, _)), _) => Reply::Registers(Registers::new(start, &frame[data_at..frame.len() - 2])),
            (None, Some((register, value))) => Reply::Written { register, value },
            (None, None) => Reply::EnergyReset,
        };
        let reply_len = req.rtu_reply_len();
        let expected = match &mutation {
            Mutation::None => Ok(valid),
            Mutation::Address(d) if address_answers(address, from ^ d) => Ok(valid),
            Mutation::Address(d) => Err(FrameError::WrongAddress {
                expected: address.get(),
                got: from ^ d,
            }),
            Mutation::Function(d) if fc ^ d == fc | 0x80 => Err(FrameError::WrongLength {
                expected: RTU_EXCEPTION_LEN,
                got: frame.len(),
            }),
            Mutation::Function(d) => Err(FrameError::UnexpectedFunction {
                expected: fc,
                got: fc ^ d,
            }),
            Mutation::ByteCount(d) => {
                let bytes = (reply_len - 5) as u8;
                Err(FrameError::ByteCount {
                    expected: bytes,
                    got: bytes ^ d,
                })
            }
            // A read's values are not the decoder's to judge; a write's reply must echo it.
            Mutation::Data(..) if req.read_range().is_some() => Ok(valid),
            Mutation::Data(..) => Err(FrameError::EchoMismatch),
            Mutation::Crc(..) | Mutation::StaleCrc(..) => Err(FrameError::Crc),
            Mutation::Drop | Mutation::Extra(_) if req.write_target().is_some() => Err(FrameError::EchoMismatch),
            Mutation::Drop if frame.len() < 4 => Err(FrameError::TooShort { len: frame.len() }),
            Mutation::Drop | Mutation::Extra(_) => Err(FrameError::WrongLength {
                expected: reply_len,
                got: frame.len(),
            }),
        };
        {
            let mut seen = seen.borrow_mut();
            let counts = seen.entry(mutation.kind()).or_default();
            if got.is_ok() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        prop_assert_eq!(got, expected, "frame {:02x?}", frame);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    // The property ran on both sides of the decoder, for every kind of change.
    let seen = seen.into_inner();
    for kind in [
        "none",
        "address",
        "function",
        "byte count",
        "data",
        "crc",
        "stale crc",
        "drop",
        "extra",
    ] {
        assert!(seen.contains_key(kind), "no case changed the {kind}: {seen:?}");
    }
    let (accepted, rejected) = seen.values().fold((0, 0), |(a, r), (ok, err)| (a + ok, r + err));
    assert!(
        accepted >= 100 && rejected >= 1000,
        "accepted {accepted}, rejected {rejected}: {seen:?}"
    );
    assert!(
        seen["data"].0 > 0,
        "no read reply with a changed value was accepted: {seen:?}"
    );
    assert!(
        seen["address"].0 > 0,
        "no other answering address was accepted: {seen:?}"
    );
}
