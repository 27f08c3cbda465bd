//! Property tests of the frame layer, and a cross-check against rmodbus,
//! an independent Modbus implementation.

use proptest::prelude::*;
use pzem::frame::{MAX_READ_REGISTERS, Registers, Reply, Request};
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

    /// Arbitrary bytes with a valid CRC appended never panic either, and
    /// are accepted only when they are exactly a well-formed reply.
    #[test]
    fn valid_crc_garbage_is_judged_exactly(req in any_request(), addr in 1u8..=247,
                                           body in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut frame = vec![addr];
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&pzem::crc::crc_bytes(&frame));
        let address = Address::unit(u32::from(addr)).unwrap();
        if let Ok(reply) = req.decode_rtu_reply(address, &frame) {
            prop_assert_eq!(frame.len(), req.rtu_reply_len());
            if let Reply::Registers(r) = reply {
                prop_assert_eq!(Some(r.len() as u16), req.read_range().map(|(_, c)| c));
            }
        }
    }

    /// No request this crate can build is calibration (0x41) or any
    /// function other than the four PZEM functions, at any address.
    #[test]
    fn no_frame_is_calibration(req in any_request(), addr in any_address(), tid in any::<u16>()) {
        let rtu = req.rtu_frame(addr);
        prop_assert!(matches!(rtu.as_bytes()[1], 0x03 | 0x04 | 0x06 | 0x42));
        prop_assert_ne!(rtu.as_bytes()[1], 0x41);
        prop_assert!(pzem::crc::frame_crc_ok(rtu.as_bytes()));
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
    frame.extend_from_slice(&pzem::crc::crc_bytes(&frame));
    frame
}

#[test]
fn registers_view_is_bounded() {
    let r = Registers::new(0, &[1, 2, 3]);
    assert_eq!(r.len(), 1);
    assert_eq!(r.get(1), None);
    assert_eq!(r.get_u32_low_word_first(0), None);
}
