//! CRC-16/MODBUS, the checksum every PZEM frame ends with.
//!
//! The checksum covers every byte before it and is sent **low byte first**
//! (the manuals' "high byte + low byte" wording is wrong; see
//! `pzem-protocol.md` §14 E3).

use crc::{CRC_16_MODBUS, Crc};

const MODBUS: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes` (poly 0xA001 reflected, init 0xFFFF).
pub fn crc16(bytes: &[u8]) -> u16 {
    MODBUS.checksum(bytes)
}

/// The two CRC bytes for `bytes`, in wire order (low byte first).
pub fn crc_bytes(bytes: &[u8]) -> [u8; 2] {
    crc16(bytes).to_le_bytes()
}

/// Whether `frame` ends with the correct CRC of everything before it.
///
/// Frames shorter than three bytes never pass.
pub fn frame_crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(body) if body > 0 => crc_bytes(&frame[..body]) == [frame[body], frame[body + 1]],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn read_request_crc_is_low_byte_first() {
        assert_eq!(crc16(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x0A]), 0x0D70);
        assert_eq!(crc_bytes(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x0A]), [0x70, 0x0D]);
    }

    #[test]
    fn frame_check() {
        assert!(frame_crc_ok(&[0x01, 0x42, 0x80, 0x11]));
        assert!(!frame_crc_ok(&[0x01, 0x42, 0x11, 0x80]));
        assert!(!frame_crc_ok(&[0x01, 0x42]));
        assert!(!frame_crc_ok(&[]));
    }
}
