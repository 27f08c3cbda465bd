//! Modbus requests and replies for the function codes PZEM meters speak.
//!
//! Sans-IO: requests encode into small stack buffers, replies are validated
//! in full (length, CRC, address, function, byte count, echo) before any
//! register is read, and no byte sequence makes the decoder panic.
//!
//! Only four functions can be built: read holding registers (0x03), read
//! input registers (0x04), write single register (0x06) and the PZEM reset
//! of the energy counter (0x42). The factory calibration function 0x41 has no
//! representation here on purpose: sent by accident it can ruin a meter's
//! accuracy for good (`pzem-protocol.md` §7).
//!
//! ```
//! use pzem::{Address, Request};
//! let request = Request::read_input_registers(0, 10).unwrap();
//! let frame = request.rtu_frame(Address::FACTORY_DEFAULT);
//! assert_eq!(frame.as_bytes(), &[0x01, 0x04, 0x00, 0x00, 0x00, 0x0A, 0x70, 0x0D]);
//! ```

use std::fmt;

use crate::address::Address;
use crate::crc::{crc_bytes, frame_crc_ok};

/// Most registers one read may ask for (the Modbus limit; PZEMs have ten).
pub const MAX_READ_REGISTERS: u16 = 125;

/// Size of the largest RTU reply this crate can receive (a full Modbus ADU).
pub const MAX_RTU_FRAME: usize = 256;

/// Length of an exception reply in RTU framing: address, function|0x80, code, CRC.
pub const RTU_EXCEPTION_LEN: usize = 5;

/// Length of the MBAP header that starts every Modbus TCP frame.
pub const MBAP_HEADER_LEN: usize = 7;

/// Size of the largest Modbus TCP reply: the MBAP header and a PDU of up to 253 bytes
/// (the header's length field, at most `MAX_RTU_FRAME - 3`, counts the unit id byte and
/// the PDU). A 125-register read needs all of it: 7 + 2 + 250 = 259 bytes.
pub const MAX_TCP_FRAME: usize = MBAP_HEADER_LEN + MAX_RTU_FRAME - 3 - 1;

/// A Modbus function code this crate can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// 0x03: read holding registers (the meter's parameters).
    ReadHoldingRegisters,
    /// 0x04: read input registers (the measurements).
    ReadInputRegisters,
    /// 0x06: write one holding register; the reply echoes the request.
    WriteSingleRegister,
    /// 0x42: PZEM-specific reset of the energy counter.
    ResetEnergy,
}

impl Function {
    /// The function code byte.
    pub fn code(self) -> u8 {
        match self {
            Function::ReadHoldingRegisters => 0x03,
            Function::ReadInputRegisters => 0x04,
            Function::WriteSingleRegister => 0x06,
            Function::ResetEnergy => 0x42,
        }
    }

    /// The function byte of this function's exception reply.
    pub fn exception_code(self) -> u8 {
        self.code() | 0x80
    }
}

/// A request to one meter. Construct it with the functions below; the
/// values they accept are the only ones that can reach the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    function: Function,
    a: u16,
    b: u16,
}

/// Why a request could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// A read must ask for 1..=125 registers.
    RegisterCount(u16),
    /// The start register plus the count passes 0xFFFF.
    RegisterRange {
        /// First register.
        start: u16,
        /// How many registers.
        count: u16,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::RegisterCount(n) => {
                write!(f, "cannot read {n} registers: a read takes 1 to {MAX_READ_REGISTERS}")
            }
            RequestError::RegisterRange { start, count } => {
                write!(f, "registers {start:#06x}+{count} run past 0xFFFF")
            }
        }
    }
}

impl std::error::Error for RequestError {}

impl Request {
    const fn read(function: Function, start: u16, count: u16) -> Result<Request, RequestError> {
        if count == 0 || count > MAX_READ_REGISTERS {
            return Err(RequestError::RegisterCount(count));
        }
        if start.checked_add(count - 1).is_none() {
            return Err(RequestError::RegisterRange { start, count });
        }
        Ok(Request {
            function,
            a: start,
            b: count,
        })
    }

    /// Read `count` input registers (0x04) from `start`.
    pub const fn read_input_registers(start: u16, count: u16) -> Result<Request, RequestError> {
        Self::read(Function::ReadInputRegisters, start, count)
    }

    /// Read `count` holding registers (0x03) from `start`.
    pub const fn read_holding_registers(start: u16, count: u16) -> Result<Request, RequestError> {
        Self::read(Function::ReadHoldingRegisters, start, count)
    }

    /// Write `value` to holding register `register` (0x06).
    pub fn write_register(register: u16, value: u16) -> Request {
        Request {
            function: Function::WriteSingleRegister,
            a: register,
            b: value,
        }
    }

    /// Reset the meter's energy counter (0x42).
    pub fn reset_energy() -> Request {
        Request {
            function: Function::ResetEnergy,
            a: 0,
            b: 0,
        }
    }

    /// The function this request uses.
    pub fn function(&self) -> Function {
        self.function
    }

    /// For reads, the first register and the count.
    pub fn read_range(&self) -> Option<(u16, u16)> {
        match self.function {
            Function::ReadHoldingRegisters | Function::ReadInputRegisters => Some((self.a, self.b)),
            _ => None,
        }
    }

    /// For writes, the register and the value.
    pub fn write_target(&self) -> Option<(u16, u16)> {
        match self.function {
            Function::WriteSingleRegister => Some((self.a, self.b)),
            _ => None,
        }
    }

    /// The protocol data unit: function code and its data, no address or CRC.
    fn pdu(&self) -> ([u8; 5], usize) {
        let [a_hi, a_lo] = self.a.to_be_bytes();
        let [b_hi, b_lo] = self.b.to_be_bytes();
        match self.function {
            Function::ResetEnergy => ([self.function.code(), 0, 0, 0, 0], 1),
            _ => ([self.function.code(), a_hi, a_lo, b_hi, b_lo], 5),
        }
    }

    /// The request in RTU framing (address, PDU, CRC), ready to send.
    pub fn rtu_frame(&self, address: Address) -> RequestFrame {
        let (pdu, n) = self.pdu();
        let mut frame = RequestFrame { bytes: [0; 12], len: 0 };
        frame.bytes[0] = address.get();
        frame.bytes[1..=n].copy_from_slice(&pdu[..n]);
        let crc = crc_bytes(&frame.bytes[..=n]);
        frame.bytes[n + 1..n + 3].copy_from_slice(&crc);
        frame.len = n + 3;
        frame
    }

    /// The request in Modbus TCP framing (MBAP header with `transaction`,
    /// unit id = `address`, PDU; no CRC).
    pub fn tcp_frame(&self, transaction: u16, address: Address) -> RequestFrame {
        let (pdu, n) = self.pdu();
        let mut frame = RequestFrame {
            bytes: [0; 12],
            len: MBAP_HEADER_LEN + n,
        };
        frame.bytes[..2].copy_from_slice(&transaction.to_be_bytes());
        // bytes 2..4: protocol id 0
        frame.bytes[4..6].copy_from_slice(&(1 + n as u16).to_be_bytes());
        frame.bytes[6] = address.get();
        frame.bytes[MBAP_HEADER_LEN..MBAP_HEADER_LEN + n].copy_from_slice(&pdu[..n]);
        frame
    }

    /// Length of the normal (non-exception) RTU reply to this request.
    pub fn rtu_reply_len(&self) -> usize {
        match self.function {
            Function::ReadHoldingRegisters | Function::ReadInputRegisters => 5 + 2 * usize::from(self.b),
            Function::WriteSingleRegister => 8,
            Function::ResetEnergy => 4,
        }
    }

    /// Length of the RTU reply once its first two bytes are known: an
    /// exception reply is 5 bytes, anything else is read at the normal
    /// length and left to [`Request::decode_rtu_reply`] to judge.
    pub fn rtu_reply_len_after_header(&self, function_byte: u8) -> usize {
        if function_byte == self.function.exception_code() {
            RTU_EXCEPTION_LEN
        } else {
            self.rtu_reply_len()
        }
    }

    /// Validate an RTU reply from `address` and decode it.
    ///
    /// Checks the CRC, then the address (a request to the general address
    /// accepts 0xF8 or any unit address in the reply), then the PDU as
    /// [`Request::decode_pdu`] does.
    pub fn decode_rtu_reply<'a>(&self, address: Address, frame: &'a [u8]) -> Result<Reply<'a>, FrameError> {
        if frame.len() < 4 {
            return Err(FrameError::TooShort { len: frame.len() });
        }
        if !frame_crc_ok(frame) {
            return Err(FrameError::Crc);
        }
        let from = frame[0];
        let address_ok = if address.is_general() {
            from == address.get() || Address::unit(u32::from(from)).is_ok()
        } else {
            from == address.get()
        };
        if !address_ok {
            return Err(FrameError::WrongAddress {
                expected: address.get(),
                got: from,
            });
        }
        self.decode_pdu(&frame[1..frame.len() - 2])
    }

    /// Remaining bytes of a Modbus TCP reply after its 7-byte MBAP header,
    /// or an error when the header cannot belong to a reply to this request.
    pub fn tcp_reply_remaining(&self, transaction: u16, header: &[u8; MBAP_HEADER_LEN]) -> Result<usize, FrameError> {
        let got_transaction = u16::from_be_bytes([header[0], header[1]]);
        if got_transaction != transaction {
            return Err(FrameError::Mbap("transaction id does not match the request"));
        }
        if header[2] != 0 || header[3] != 0 {
            return Err(FrameError::Mbap("protocol id is not 0 (not Modbus)"));
        }
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if !(2..=MAX_RTU_FRAME - 3).contains(&len) {
            return Err(FrameError::Mbap("length field out of range"));
        }
        Ok(len - 1)
    }

    /// Validate a whole Modbus TCP reply (MBAP header + PDU) and decode it.
    pub fn decode_tcp_reply<'a>(
        &self,
        transaction: u16,
        address: Address,
        frame: &'a [u8],
    ) -> Result<Reply<'a>, FrameError> {
        let Some((header, pdu)) = frame.split_first_chunk::<MBAP_HEADER_LEN>() else {
            return Err(FrameError::TooShort { len: frame.len() });
        };
        let remaining = self.tcp_reply_remaining(transaction, header)?;
        if pdu.len() != remaining {
            return Err(FrameError::WrongLength {
                expected: MBAP_HEADER_LEN + remaining,
                got: frame.len(),
            });
        }
        if header[6] != address.get() {
            return Err(FrameError::WrongAddress {
                expected: address.get(),
                got: header[6],
            });
        }
        self.decode_pdu(pdu)
    }

    /// Validate a reply PDU (function code and data, without address and
    /// CRC) against this request and decode it.
    pub fn decode_pdu<'a>(&self, pdu: &'a [u8]) -> Result<Reply<'a>, FrameError> {
        let Some(&function) = pdu.first() else {
            return Err(FrameError::TooShort { len: 0 });
        };
        if function == self.function.exception_code() {
            return match pdu {
                [_, code] => Err(FrameError::Exception {
                    function: self.function,
                    code: ExceptionCode::from_byte(*code),
                }),
                _ => Err(FrameError::WrongLength {
                    expected: RTU_EXCEPTION_LEN,
                    got: pdu.len() + 3,
                }),
            };
        }
        if function != self.function.code() {
            return Err(FrameError::UnexpectedFunction {
                expected: self.function.code(),
                got: function,
            });
        }
        match self.function {
            Function::ReadHoldingRegisters | Function::ReadInputRegisters => {
                let expected_bytes = 2 * usize::from(self.b);
                let Some(&count) = pdu.get(1) else {
                    return Err(FrameError::TooShort { len: pdu.len() + 3 });
                };
                if usize::from(count) != expected_bytes {
                    return Err(FrameError::ByteCount {
                        expected: expected_bytes as u8,
                        got: count,
                    });
                }
                let data = &pdu[2..];
                if data.len() != expected_bytes {
                    return Err(FrameError::WrongLength {
                        expected: expected_bytes + 5,
                        got: pdu.len() + 3,
                    });
                }
                Ok(Reply::Registers(Registers {
                    start: self.a,
                    bytes: data,
                }))
            }
            Function::WriteSingleRegister => {
                let (expected, n) = self.pdu();
                if pdu != &expected[..n] {
                    return Err(FrameError::EchoMismatch);
                }
                Ok(Reply::Written {
                    register: self.a,
                    value: self.b,
                })
            }
            Function::ResetEnergy => {
                if pdu.len() != 1 {
                    return Err(FrameError::WrongLength {
                        expected: 4,
                        got: pdu.len() + 3,
                    });
                }
                Ok(Reply::EnergyReset)
            }
        }
    }
}

/// An encoded request: at most 12 bytes on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    bytes: [u8; 12],
    len: usize,
}

impl RequestFrame {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A validated reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Register values from a 0x03 or 0x04 read.
    Registers(Registers<'a>),
    /// A 0x06 write was echoed: the meter took the value.
    Written {
        /// Register written.
        register: u16,
        /// Value written.
        value: u16,
    },
    /// A 0x42 reset was echoed.
    EnergyReset,
}

impl Reply<'_> {
    /// The same reply, with its register bytes copied into `buf` (which is
    /// large enough for any reply).
    pub fn copy_into(self, buf: &mut [u8; MAX_RTU_FRAME]) -> Reply<'_> {
        match self {
            Reply::Registers(r) => {
                let n = r.bytes.len();
                buf[..n].copy_from_slice(r.bytes);
                Reply::Registers(Registers {
                    start: r.start,
                    bytes: &buf[..n],
                })
            }
            Reply::Written { register, value } => Reply::Written { register, value },
            Reply::EnergyReset => Reply::EnergyReset,
        }
    }
}

/// Register values of a validated read reply, borrowed from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers<'a> {
    start: u16,
    bytes: &'a [u8],
}

impl<'a> Registers<'a> {
    /// Wrap big-endian register bytes (two per register) read from `start`.
    /// A trailing odd byte is ignored.
    pub fn new(start: u16, bytes: &'a [u8]) -> Registers<'a> {
        Registers {
            start,
            bytes: &bytes[..bytes.len() & !1],
        }
    }

    /// Address of the first register.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// How many registers.
    pub fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The `i`-th register (0 = `start`).
    pub fn get(&self, i: usize) -> Option<u16> {
        let b = self.bytes.get(2 * i..2 * i + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A 32-bit value held low word first in registers `i` (low) and `i + 1`
    /// (high), as PZEM meters store them.
    pub fn get_u32_low_word_first(&self, i: usize) -> Option<u32> {
        let lo = self.get(i)?;
        let hi = self.get(i + 1)?;
        Some(u32::from(hi) << 16 | u32::from(lo))
    }

    /// All registers in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.bytes.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A Modbus exception code from an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// 0x01: the meter does not support the function.
    IllegalFunction,
    /// 0x02: the register address (or range) does not exist.
    IllegalDataAddress,
    /// 0x03: the value is not acceptable.
    IllegalDataValue,
    /// 0x04: the meter failed to carry out the request.
    SlaveDeviceFailure,
    /// Any other code.
    Other(u8),
}

impl ExceptionCode {
    /// Decode the code byte.
    pub fn from_byte(b: u8) -> ExceptionCode {
        match b {
            1 => ExceptionCode::IllegalFunction,
            2 => ExceptionCode::IllegalDataAddress,
            3 => ExceptionCode::IllegalDataValue,
            4 => ExceptionCode::SlaveDeviceFailure,
            other => ExceptionCode::Other(other),
        }
    }

    /// The code byte.
    pub fn byte(self) -> u8 {
        match self {
            ExceptionCode::IllegalFunction => 1,
            ExceptionCode::IllegalDataAddress => 2,
            ExceptionCode::IllegalDataValue => 3,
            ExceptionCode::SlaveDeviceFailure => 4,
            ExceptionCode::Other(b) => b,
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExceptionCode::IllegalFunction => f.write_str("illegal function (0x01)"),
            ExceptionCode::IllegalDataAddress => f.write_str("illegal data address (0x02)"),
            ExceptionCode::IllegalDataValue => f.write_str("illegal data value (0x03)"),
            ExceptionCode::SlaveDeviceFailure => f.write_str("slave device failure (0x04)"),
            ExceptionCode::Other(b) => write!(f, "exception code {b:#04x}"),
        }
    }
}

/// Why a reply was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than any valid reply.
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The length does not fit the request.
    WrongLength {
        /// Bytes a valid reply has.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The CRC does not match: noise, a collision, or wrong serial settings.
    Crc,
    /// The reply names another slave.
    WrongAddress {
        /// Address the request went to.
        expected: u8,
        /// Address in the reply.
        got: u8,
    },
    /// The reply is for another function.
    UnexpectedFunction {
        /// Function code sent.
        expected: u8,
        /// Function code received.
        got: u8,
    },
    /// The byte count of a read reply does not match the registers asked for.
    ByteCount {
        /// Bytes asked for.
        expected: u8,
        /// Byte count in the reply.
        got: u8,
    },
    /// A write or reset reply is not an exact echo of the request.
    EchoMismatch,
    /// The MBAP header of a Modbus TCP reply is wrong.
    Mbap(&'static str),
    /// The meter refused the request.
    Exception {
        /// The function refused.
        function: Function,
        /// Why.
        code: ExceptionCode,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort { len } => write!(f, "reply too short ({len} bytes)"),
            FrameError::WrongLength { expected, got } => {
                write!(f, "reply has {got} bytes, expected {expected}")
            }
            FrameError::Crc => f.write_str("reply failed its CRC check (noise, a collision, or wrong serial settings)"),
            FrameError::WrongAddress { expected, got } => {
                write!(f, "reply came from address {got}, expected {expected}")
            }
            FrameError::UnexpectedFunction { expected, got } => {
                write!(f, "reply has function {got:#04x}, expected {expected:#04x}")
            }
            FrameError::ByteCount { expected, got } => {
                write!(f, "reply byte count {got}, expected {expected}")
            }
            FrameError::EchoMismatch => f.write_str("reply is not an echo of the request"),
            FrameError::Mbap(why) => write!(f, "bad Modbus TCP header: {why}"),
            FrameError::Exception { function, code } => {
                write!(f, "meter refused function {:#04x}: {code}", function.code())
            }
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u32) -> Address {
        Address::unit_or_general(n).unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn manual_request_frames() {
        let cases: &[(Request, u32, &str)] = &[
            (
                Request::read_input_registers(0, 10).unwrap(),
                1,
                "01 04 00 00 00 0A 70 0D",
            ),
            (
                Request::read_input_registers(0, 8).unwrap(),
                1,
                "01 04 00 00 00 08 F1 CC",
            ),
            (
                Request::read_input_registers(0, 9).unwrap(),
                1,
                "01 04 00 00 00 09 30 0C",
            ),
            (
                Request::read_input_registers(0, 1).unwrap(),
                1,
                "01 04 00 00 00 01 31 CA",
            ),
            (Request::write_register(2, 5), 1, "01 06 00 02 00 05 E8 09"),
            (Request::write_register(2, 1), 0xF8, "F8 06 00 02 00 01 FD A3"),
            (Request::reset_energy(), 1, "01 42 80 11"),
            (Request::reset_energy(), 0xF8, "F8 42 C2 41"),
            (Request::write_register(1, 2300), 1, "01 06 00 01 08 FC DF 8B"),
            (Request::write_register(0, 20000), 1, "01 06 00 00 4E 20 BD B2"),
            (Request::write_register(1, 1000), 1, "01 06 00 01 03 E8 D8 B4"),
            (Request::write_register(3, 3), 1, "01 06 00 03 00 03 39 CB"),
            (
                Request::read_holding_registers(0, 4).unwrap(),
                1,
                "01 03 00 00 00 04 44 09",
            ),
            (
                Request::read_holding_registers(1, 2).unwrap(),
                1,
                "01 03 00 01 00 02 95 CB",
            ),
            (
                Request::read_holding_registers(2, 1).unwrap(),
                0xF8,
                "F8 03 00 02 00 01 31 A3",
            ),
        ];
        for (request, addr, expected) in cases {
            assert_eq!(
                request.rtu_frame(a(*addr)).as_bytes(),
                &hex(expected)[..],
                "{request:?}"
            );
        }
    }

    #[test]
    fn manual_ac_reply_decodes() {
        let req = Request::read_input_registers(0, 10).unwrap();
        let frame = hex("01 04 14 08 98 03 E8 00 00 08 98 00 00 00 00 00 00 01 F4 00 64 00 00 63 CE");
        let Reply::Registers(regs) = req.decode_rtu_reply(a(1), &frame).unwrap() else {
            panic!()
        };
        assert_eq!(regs.len(), 10);
        assert_eq!(regs.get(0), Some(0x0898));
        assert_eq!(regs.get_u32_low_word_first(1), Some(1000));
        assert_eq!(regs.get(10), None);
    }

    #[test]
    fn exception_reply_is_typed() {
        let req = Request::read_input_registers(0, 9).unwrap();
        let frame = hex("01 84 02 C2 C1");
        assert_eq!(req.rtu_reply_len_after_header(frame[1]), 5);
        assert_eq!(
            req.decode_rtu_reply(a(1), &frame),
            Err(FrameError::Exception {
                function: Function::ReadInputRegisters,
                code: ExceptionCode::IllegalDataAddress
            })
        );
    }

    #[test]
    fn reset_echo_and_exception() {
        let req = Request::reset_energy();
        assert_eq!(req.decode_rtu_reply(a(1), &hex("01 42 80 11")), Ok(Reply::EnergyReset));
        let mut exc = vec![0x01, 0xC2, 0x01];
        exc.extend_from_slice(&crc_bytes(&exc));
        assert_eq!(exc, hex("01 C2 01 B0 A0"));
        assert!(matches!(
            req.decode_rtu_reply(a(1), &exc),
            Err(FrameError::Exception {
                function: Function::ResetEnergy,
                code: ExceptionCode::IllegalFunction
            })
        ));
        assert_eq!(req.rtu_reply_len_after_header(0xC2), 5);
        assert_eq!(req.rtu_reply_len_after_header(0x42), 4);
    }

    #[test]
    fn write_reply_must_echo() {
        let req = Request::write_register(2, 5);
        let echo = hex("01 06 00 02 00 05 E8 09");
        assert_eq!(
            req.decode_rtu_reply(a(1), &echo),
            Ok(Reply::Written { register: 2, value: 5 })
        );
        let mut other = hex("01 06 00 02 00 06");
        other.extend_from_slice(&crc_bytes(&other.clone()));
        assert_eq!(req.decode_rtu_reply(a(1), &other), Err(FrameError::EchoMismatch));
    }

    #[test]
    fn general_address_accepts_echo_of_f8_or_unit() {
        let req = Request::write_register(2, 1);
        let echo = hex("F8 06 00 02 00 01 FD A3");
        assert!(req.decode_rtu_reply(Address::GENERAL, &echo).is_ok());
        let unit_reply = Request::write_register(2, 1).rtu_frame(a(7));
        assert!(req.decode_rtu_reply(Address::GENERAL, unit_reply.as_bytes()).is_ok());
        assert_eq!(
            req.decode_rtu_reply(a(7), &echo),
            Err(FrameError::WrongAddress { expected: 7, got: 0xF8 })
        );
    }

    #[test]
    fn short_reply_with_valid_crc_is_rejected() {
        // rmodbus accepts this (2 registers when 10 were asked for).
        let req = Request::read_input_registers(0, 10).unwrap();
        let mut frame = vec![0x01, 0x04, 0x04, 0x08, 0x98, 0x00, 0x00];
        frame.extend_from_slice(&crc_bytes(&frame.clone()));
        assert_eq!(
            req.decode_rtu_reply(a(1), &frame),
            Err(FrameError::ByteCount { expected: 20, got: 4 })
        );
        // rmodbus panics on this (byte count 0, valid CRC).
        let mut empty = vec![0x01, 0x04, 0x00];
        empty.extend_from_slice(&crc_bytes(&empty.clone()));
        assert_eq!(
            req.decode_rtu_reply(a(1), &empty),
            Err(FrameError::ByteCount { expected: 20, got: 0 })
        );
    }

    #[test]
    fn crc_and_function_errors() {
        let req = Request::read_input_registers(0, 8).unwrap();
        let mut frame = hex("01 04 10 04 95 00 00 00 00 00 00 00 02 00 00 00 00 00 00 21 40");
        assert!(req.decode_rtu_reply(a(1), &frame).is_ok());
        frame[5] ^= 1;
        assert_eq!(req.decode_rtu_reply(a(1), &frame), Err(FrameError::Crc));
        let holding = Request::read_holding_registers(0, 8).unwrap();
        frame[5] ^= 1;
        assert_eq!(
            holding.decode_rtu_reply(a(1), &frame),
            Err(FrameError::UnexpectedFunction { expected: 3, got: 4 })
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(Request::read_input_registers(0, 0), Err(RequestError::RegisterCount(0)));
        assert_eq!(
            Request::read_input_registers(0, 126),
            Err(RequestError::RegisterCount(126))
        );
        assert!(Request::read_input_registers(0xFFFF, 2).is_err());
        assert!(Request::read_input_registers(0xFFFF, 1).is_ok());
    }

    #[test]
    fn tcp_frames_round_trip() {
        let req = Request::read_input_registers(0, 10).unwrap();
        let frame = req.tcp_frame(0x1234, a(3));
        assert_eq!(frame.as_bytes(), &[0x12, 0x34, 0, 0, 0, 6, 3, 4, 0, 0, 0, 10]);
        let mut reply = vec![0x12, 0x34, 0, 0, 0, 23, 3, 4, 20];
        reply.extend_from_slice(&[0u8; 20]);
        assert!(matches!(req.decode_tcp_reply(0x1234, a(3), &reply), Ok(Reply::Registers(r)) if r.len() == 10));
        assert!(req.decode_tcp_reply(0x1235, a(3), &reply).is_err());
        assert!(req.decode_tcp_reply(0x1234, a(4), &reply).is_err());
        reply.pop();
        assert!(req.decode_tcp_reply(0x1234, a(3), &reply).is_err());
        let reset = Request::reset_energy().tcp_frame(1, a(1));
        assert_eq!(reset.as_bytes(), &[0, 1, 0, 0, 0, 2, 1, 0x42]);
    }
}
