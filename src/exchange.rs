//! One request and its reply over a byte stream, as a sans-IO state machine.
//!
//! [`Exchange`] knows the framing rules and the timing of a Modbus link and
//! nothing else: it never reads a clock, sleeps or touches a file descriptor.
//! The caller writes the frame [`Exchange::start`] returns, feeds whatever
//! bytes arrive to [`Exchange::handle_input`] and, when nothing arrives by
//! [`Exchange::deadline`], calls [`Exchange::handle_timeout`]. Both blocking
//! transports ([`crate::RtuTransport`], [`crate::tcp::ModbusTcp`]) and the
//! one-thread pzem-dbus loop are built on it, so the rules live here once:
//!
//! - RTU: a new request waits for the 3.5-character silence after the last
//!   activity on the line ([`Exchange::send_not_before`]); the reply length
//!   is known from its first two bytes; once a reply has started it may
//!   finish (its wire time plus a margin) even past the timeout.
//! - Modbus TCP: the reply length comes from its MBAP header; each request
//!   carries a new transaction id.
//! - Bytes that arrive while no request is waiting are stale (a late reply,
//!   line noise) and are dropped.

use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::Error;
use crate::frame::{MAX_RTU_FRAME, MAX_TCP_FRAME, MBAP_HEADER_LEN, Reply, Request, RequestFrame};

/// The reply buffer: the longer of the two framings' largest reply.
const MAX_REPLY: usize = if MAX_TCP_FRAME > MAX_RTU_FRAME {
    MAX_TCP_FRAME
} else {
    MAX_RTU_FRAME
};
use crate::model::{StopBits, frame_gap_us, wire_time_us};

/// How requests and replies are framed on the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Modbus-RTU (address, PDU, CRC), on a serial line or tunnelled through
    /// a TCP socket. `gap` is the silence required between frames.
    Rtu {
        /// Inter-frame silence (3.5 characters on a serial line).
        gap: Duration,
    },
    /// Modbus TCP: MBAP header, PDU, no CRC, no silence needed.
    Mbap,
}

impl Framing {
    /// Bytes of a reply's header, which tell its length.
    fn header_len(self) -> usize {
        match self {
            Framing::Rtu { .. } => 2,
            Framing::Mbap => MBAP_HEADER_LEN,
        }
    }

    /// RTU on a serial line whose characters have `stop_bits`.
    pub fn rtu_serial(stop_bits: StopBits) -> Framing {
        Framing::Rtu {
            gap: Duration::from_micros(frame_gap_us(stop_bits)),
        }
    }
}

/// Extra time a reply that has started gets beyond its wire time.
const REPLY_TAIL_MARGIN: Duration = Duration::from_millis(20);

/// What the exchange is waiting for.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    address: Address,
    request: Request,
    deadline: Instant,
    /// Bytes a complete reply has, once the header tells.
    expected: Option<usize>,
    /// Bytes still to drop of a late Modbus TCP reply to an earlier request.
    skip: usize,
}

/// How an exchange ended, with the reply bytes kept in the exchange until
/// the next [`Exchange::start`].
#[derive(Debug)]
pub enum Ended {
    /// A complete reply arrived; [`Exchange::reply`] validates and decodes it.
    Reply,
    /// The exchange failed (no answer, a truncated reply).
    Failed(Error),
}

/// One request at a time on a link, with its framing and timing.
///
/// Allocation-free: replies are assembled in a buffer the exchange owns.
#[derive(Debug)]
pub struct Exchange {
    framing: Framing,
    timeout: Duration,
    transaction: u16,
    waiting: Option<Waiting>,
    /// When the line was last busy (a frame sent or bytes received).
    last_activity: Option<Instant>,
    /// Room for the largest reply of either framing.
    buf: [u8; MAX_REPLY],
    len: usize,
    /// The request whose reply is in `buf` (for [`Exchange::reply`]).
    answered: Option<(Address, Request, u16)>,
}

impl Exchange {
    /// An idle exchange with `framing` and a reply `timeout`.
    pub fn new(framing: Framing, timeout: Duration) -> Exchange {
        Exchange {
            framing,
            timeout,
            transaction: 0,
            waiting: None,
            last_activity: None,
            buf: [0; MAX_REPLY],
            len: 0,
            answered: None,
        }
    }

    /// The reply timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change the reply timeout (applies from the next request).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether a request is waiting for its reply.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// The earliest instant the next request may be sent: after the
    /// inter-frame silence that follows the last activity. `None`: at once.
    pub fn send_not_before(&self) -> Option<Instant> {
        match (self.framing, self.last_activity) {
            (Framing::Rtu { gap }, Some(last)) => Some(last + gap),
            _ => None,
        }
    }

    /// When the waiting request times out, if one waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting.map(|w| w.deadline)
    }

    /// Start `request` to `address` at `now` and return the frame to write.
    /// A request still waiting is abandoned. The caller should respect
    /// [`Exchange::send_not_before`].
    pub fn start(&mut self, now: Instant, address: Address, request: Request) -> RequestFrame {
        self.len = 0;
        self.answered = None;
        self.transaction = self.transaction.wrapping_add(1);
        self.waiting = Some(Waiting {
            address,
            request,
            deadline: now + self.timeout,
            expected: None,
            skip: 0,
        });
        self.last_activity = Some(now);
        match self.framing {
            Framing::Rtu { .. } => request.rtu_frame(address),
            Framing::Mbap => request.tcp_frame(self.transaction, address),
        }
    }

    /// How many more bytes would complete the reply (at least 1 while a
    /// request waits; 0 when idle). Lets a blocking reader ask for exactly
    /// that much.
    pub fn bytes_wanted(&self) -> usize {
        match self.waiting {
            None => 0,
            Some(w) if w.skip > 0 => w.skip,
            Some(w) => w
                .expected
                .unwrap_or(self.framing.header_len())
                .saturating_sub(self.len)
                .max(1),
        }
    }

    /// Bytes arrived at `now`. Returns how the exchange ended, if this
    /// completed the reply; bytes beyond a complete reply, and bytes while
    /// nothing waits, are dropped (their count is in [`Input::dropped`]).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Input {
        self.last_activity = Some(now);
        let Some(mut w) = self.waiting else {
            return Input {
                ended: None,
                dropped: bytes.len(),
            };
        };
        let mut rest = bytes;
        let mut dropped = 0;
        loop {
            if w.skip > 0 {
                let n = w.skip.min(rest.len());
                w.skip -= n;
                dropped += n;
                rest = &rest[n..];
                if w.skip > 0 {
                    self.waiting = Some(w);
                    return Input { ended: None, dropped };
                }
            }
            let target = w.expected.unwrap_or(self.framing.header_len());
            let take = target.saturating_sub(self.len).min(rest.len());
            self.buf[self.len..self.len + take].copy_from_slice(&rest[..take]);
            self.len += take;
            rest = &rest[take..];
            if self.len < target {
                self.waiting = Some(w);
                return Input { ended: None, dropped };
            }
            if w.expected.is_some() {
                break;
            }
            // The header is in: how long is the whole reply?
            let expected = match self.framing {
                Framing::Rtu { .. } => w.request.rtu_reply_len_after_header(self.buf[1]),
                Framing::Mbap => {
                    let mut header = [0u8; MBAP_HEADER_LEN];
                    header.copy_from_slice(&self.buf[..MBAP_HEADER_LEN]);
                    let got = u16::from_be_bytes([header[0], header[1]]);
                    match w.request.tcp_reply_remaining(got, &header) {
                        // A well-formed reply to an earlier request, come late (a gateway
                        // that waits longer than we do): drop it and keep waiting.
                        Ok(n) if got != self.transaction => {
                            w.skip = n;
                            // Its header's bytes in this input (earlier inputs' were
                            // counted as taken then).
                            dropped += take;
                            self.len = 0;
                            continue;
                        }
                        Ok(n) => MBAP_HEADER_LEN + n,
                        Err(e) => {
                            self.waiting = None;
                            return Input {
                                ended: Some(Ended::Failed(Error::Frame(e))),
                                dropped: dropped + rest.len(),
                            };
                        }
                    }
                }
            };
            w.expected = Some(expected);
            if let Framing::Rtu { .. } = self.framing {
                // The timeout bounds the wait for an answer; once one has started, let
                // it finish, or a slow meter's tail would be lost.
                let tail = Duration::from_micros(wire_time_us(expected, StopBits::Two)) + REPLY_TAIL_MARGIN;
                w.deadline = w.deadline.max(now + tail);
            }
        }
        self.waiting = None;
        self.answered = Some((w.address, w.request, self.transaction));
        Input {
            ended: Some(Ended::Reply),
            dropped: dropped + rest.len(),
        }
    }

    /// Time passed: at or after the deadline, the waiting request failed
    /// (no answer, or a truncated reply).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Ended> {
        let w = self.waiting?;
        if now < w.deadline {
            return None;
        }
        self.waiting = None;
        let expected = w.expected.unwrap_or_else(|| match self.framing {
            Framing::Rtu { .. } => w.request.rtu_reply_len(),
            Framing::Mbap => self.framing.header_len(),
        });
        Some(Ended::Failed(if self.len == 0 {
            Error::NoAnswer
        } else {
            Error::Incomplete {
                expected,
                got: self.len,
            }
        }))
    }

    /// The reply of the last exchange that ended with [`Ended::Reply`],
    /// validated (CRC or MBAP header, address, function, length) and decoded.
    pub fn reply(&self) -> Result<Reply<'_>, Error> {
        let Some((address, request, transaction)) = self.answered else {
            return Err(Error::NoAnswer);
        };
        let frame = &self.buf[..self.len];
        Ok(match self.framing {
            Framing::Rtu { .. } => request.decode_rtu_reply(address, frame)?,
            Framing::Mbap => request.decode_tcp_reply(transaction, address, frame)?,
        })
    }
}

/// What [`Exchange::handle_input`] made of some bytes.
#[derive(Debug)]
pub struct Input {
    /// How the exchange ended, if these bytes ended it.
    pub ended: Option<Ended>,
    /// Bytes of this input dropped (never more than it held): stale input
    /// while nothing waited, bytes beyond the reply, and a late reply to
    /// another Modbus TCP transaction.
    pub dropped: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Reply;

    /// Found by the fuzzer (fuzz/artifacts/rtu_reply): an MBAP header announcing the
    /// longest PDU overran the reply buffer, sized for RTU. A 125-register read over
    /// Modbus TCP is that long, and must be received whole.
    #[test]
    fn the_longest_modbus_tcp_reply_fits() {
        let read = Request::read_holding_registers(0, 125).unwrap();
        let mut exchange = Exchange::new(Framing::Mbap, Duration::from_millis(300));
        let t0 = Instant::now();
        let frame = exchange.start(t0, addr(1), read);
        let transaction = frame.as_bytes()[..2].to_vec();
        let mut reply = transaction;
        reply.extend([0, 0, 0, 253, 1, 0x03, 250]);
        reply.extend((0..250).map(|i| i as u8));
        assert_eq!(reply.len(), MAX_TCP_FRAME);
        for b in &reply {
            exchange.handle_input(t0, std::slice::from_ref(b));
        }
        match exchange.reply().unwrap() {
            Reply::Registers(r) => assert_eq!((r.len(), r.get(124)), (125, Some(0xF8F9))),
            other => panic!("{other:?}"),
        }
        // The same header before a short, wrong PDU: refused at the timeout, no overrun.
        let mut exchange = Exchange::new(Framing::Mbap, Duration::from_millis(300));
        let frame = exchange.start(t0, addr(1), AC);
        let mut bad = frame.as_bytes()[..2].to_vec();
        bad.extend([0, 0, 0, 253, 1]);
        bad.extend([0xC1; 300]);
        let input = exchange.handle_input(t0, &bad);
        assert!(matches!(input.ended, Some(Ended::Reply)));
        assert_eq!(input.dropped, 300 + 7 - MAX_TCP_FRAME);
        assert!(exchange.reply().is_err());
    }

    const AC: Request = match Request::read_input_registers(0, 10) {
        Ok(r) => r,
        Err(_) => panic!(),
    };

    fn addr(n: u32) -> Address {
        Address::unit(n).unwrap()
    }

    /// A valid AC reply from `a` (function 4, 20 data bytes, CRC).
    fn ac_reply(a: u8) -> Vec<u8> {
        let mut f = vec![a, 0x04, 20];
        f.extend((0..20).map(|i| i as u8));
        let crc = crate::crc::crc16(&f);
        f.extend(crc.to_le_bytes());
        f
    }

    fn rtu() -> Exchange {
        Exchange::new(Framing::rtu_serial(StopBits::Two), Duration::from_millis(300))
    }

    #[test]
    fn a_reply_in_pieces_completes_once() {
        let t0 = Instant::now();
        let mut x = rtu();
        assert_eq!(x.send_not_before(), None);
        let frame = x.start(t0, addr(1), AC);
        assert_eq!(frame.as_bytes().len(), 8);
        assert_eq!(x.deadline(), Some(t0 + Duration::from_millis(300)));
        assert_eq!(x.bytes_wanted(), 2);
        let reply = ac_reply(1);
        let t1 = t0 + Duration::from_millis(290);
        assert!(x.handle_input(t1, &reply[..1]).ended.is_none());
        assert!(x.handle_input(t1, &reply[1..5]).ended.is_none());
        // Started replies may finish past the timeout.
        assert!(x.deadline().unwrap() > t0 + Duration::from_millis(300));
        assert_eq!(x.bytes_wanted(), 20);
        let t2 = t0 + Duration::from_millis(320);
        assert!(x.handle_timeout(t2).is_none());
        let input = x.handle_input(t2, &reply[5..]);
        assert!(matches!(input.ended, Some(Ended::Reply)));
        assert_eq!(input.dropped, 0);
        let Ok(Reply::Registers(regs)) = x.reply() else {
            panic!("not registers")
        };
        assert_eq!(regs.len(), 10);
        assert!(!x.is_waiting());
        // The next request waits for the silence after the last byte.
        let gap = Duration::from_micros(frame_gap_us(StopBits::Two));
        assert_eq!(x.send_not_before(), Some(t2 + gap));
    }

    #[test]
    fn silence_and_truncation_fail_at_the_deadline() {
        let t0 = Instant::now();
        let mut x = rtu();
        x.start(t0, addr(2), AC);
        assert!(x.handle_timeout(t0 + Duration::from_millis(299)).is_none());
        assert!(matches!(
            x.handle_timeout(t0 + Duration::from_millis(300)),
            Some(Ended::Failed(Error::NoAnswer))
        ));
        assert!(x.handle_timeout(t0 + Duration::from_secs(9)).is_none(), "ended once");

        x.start(t0, addr(2), AC);
        x.handle_input(t0, &ac_reply(2)[..7]);
        let late = x.deadline().unwrap();
        assert!(matches!(
            x.handle_timeout(late),
            Some(Ended::Failed(Error::Incomplete { expected: 25, got: 7 }))
        ));
    }

    #[test]
    fn stale_and_extra_bytes_are_dropped() {
        let t0 = Instant::now();
        let mut x = rtu();
        let stale = x.handle_input(t0, &[1, 2, 3]);
        assert!(stale.ended.is_none());
        assert_eq!(stale.dropped, 3);
        x.start(t0, addr(1), AC);
        let mut bytes = ac_reply(1);
        bytes.extend([9, 9]);
        let input = x.handle_input(t0, &bytes);
        assert!(matches!(input.ended, Some(Ended::Reply)));
        assert_eq!(input.dropped, 2);
        assert!(x.reply().is_ok());
    }

    #[test]
    fn exceptions_and_bad_crcs_are_judged_by_reply() {
        let t0 = Instant::now();
        let mut x = rtu();
        x.start(t0, addr(3), AC);
        let mut exc = vec![3, 0x84, 0x02];
        let crc = crate::crc::crc16(&exc);
        exc.extend(crc.to_le_bytes());
        assert!(matches!(x.handle_input(t0, &exc).ended, Some(Ended::Reply)));
        assert_eq!(
            x.reply().unwrap_err().exception(),
            Some(crate::frame::ExceptionCode::IllegalDataAddress)
        );
        x.start(t0, addr(1), AC);
        let mut bad = ac_reply(1);
        bad[10] ^= 0xFF;
        assert!(matches!(x.handle_input(t0, &bad).ended, Some(Ended::Reply)));
        assert!(x.reply().unwrap_err().is_garbled());
    }

    #[test]
    fn mbap_uses_the_header_length_and_a_new_transaction() {
        let t0 = Instant::now();
        let mut x = Exchange::new(Framing::Mbap, Duration::from_millis(300));
        let f1 = x.start(t0, addr(1), AC);
        let tid = u16::from_be_bytes([f1.as_bytes()[0], f1.as_bytes()[1]]);
        let mut reply = tid.to_be_bytes().to_vec();
        reply.extend([0, 0, 0, 23, 1, 0x04, 20]);
        reply.extend([0u8; 20]);
        assert!(x.handle_input(t0, &reply[..9]).ended.is_none());
        assert_eq!(x.bytes_wanted(), 20);
        assert!(matches!(x.handle_input(t0, &reply[9..]).ended, Some(Ended::Reply)));
        assert!(matches!(x.reply(), Ok(Reply::Registers(_))));
        assert_eq!(x.send_not_before(), None);
        let f2 = x.start(t0, addr(1), AC);
        assert_ne!(f1.as_bytes()[..2], f2.as_bytes()[..2]);
        // The first reply, come late, belongs to another transaction: it is dropped, in
        // pieces, and the reply to this request still counts.
        let late = x.handle_input(t0, &reply[..9]);
        assert!(late.ended.is_none());
        assert_eq!(late.dropped, 9);
        assert_eq!(x.bytes_wanted(), 20, "the rest of the late reply");
        assert_eq!(x.handle_input(t0, &reply[9..]).dropped, 20);
        // A late header that comes in two inputs: each drops at most what it held (the
        // first input's bytes were taken as a header when they came).
        let late = x.handle_input(t0, &reply[..4]);
        assert_eq!((late.ended.is_none(), late.dropped), (true, 0));
        assert_eq!(x.handle_input(t0, &reply[4..]).dropped, reply.len() - 4);
        let tid2 = u16::from_be_bytes([f2.as_bytes()[0], f2.as_bytes()[1]]);
        let mut now_reply = tid2.to_be_bytes().to_vec();
        now_reply.extend_from_slice(&reply[2..]);
        assert!(matches!(x.handle_input(t0, &now_reply).ended, Some(Ended::Reply)));
        assert!(matches!(x.reply(), Ok(Reply::Registers(_))));
        // A header that is not Modbus at all still ends the exchange at once.
        x.start(t0, addr(1), AC);
        assert!(matches!(
            x.handle_input(t0, &[0, 9, 1, 1, 0, 23, 1]).ended,
            Some(Ended::Failed(Error::Frame(_)))
        ));
    }
}
