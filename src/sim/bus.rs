//! Several simulated meters sharing one line, with fault injection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crc::{crc_bytes, frame_crc_ok};
use crate::frame::{ExceptionCode, RTU_EXCEPTION_LEN};
use crate::model::Family;
use crate::reading::Reading;

use super::meter::{MeterReply, SimMeter};
use super::rng::Rng;

/// Rates (0.0..=1.0) of injected faults, drawn per reply from a seeded
/// generator. A reply gets at most one fault.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// No reply at all.
    pub no_reply: f64,
    /// One CRC byte altered.
    pub bad_crc: f64,
    /// Reply cut short.
    pub truncated: f64,
    /// Random bytes in place of the reply.
    pub garbage: f64,
    /// An exception (0x04 slave failure) in place of the reply.
    pub exception: f64,
    /// Probability of an extra delay before the reply.
    pub delay: f64,
    /// How long an extra delay is.
    pub delay_by: Duration,
}

/// A fault-spec text that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpecError(pub String);

impl std::fmt::Display for FaultSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad fault spec '{}': use NAME=RATE,… with NAME one of no-reply bad-crc truncated garbage exception delay, RATE 0..1, and delay-ms=N",
            self.0
        )
    }
}

impl std::error::Error for FaultSpecError {}

impl Faults {
    /// Parse `no-reply=0.05,bad-crc=0.01,delay=0.1,delay-ms=300`.
    pub fn parse(spec: &str) -> Result<Faults, FaultSpecError> {
        let mut f = Faults {
            delay_by: Duration::from_millis(150),
            ..Faults::default()
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let err = || FaultSpecError(part.to_string());
            let (name, value) = part.split_once('=').ok_or_else(err)?;
            let x: f64 = value.trim().parse().map_err(|_| err())?;
            if name.trim() == "delay-ms" {
                if !(0.0..=60_000.0).contains(&x) {
                    return Err(err());
                }
                f.delay_by = Duration::from_millis(x as u64);
                continue;
            }
            if !(0.0..=1.0).contains(&x) {
                return Err(err());
            }
            match name.trim() {
                "no-reply" => f.no_reply = x,
                "bad-crc" => f.bad_crc = x,
                "truncated" => f.truncated = x,
                "garbage" => f.garbage = x,
                "exception" => f.exception = x,
                "delay" => f.delay = x,
                _ => return Err(err()),
            }
        }
        Ok(f)
    }
}

/// What the line carries back after a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineReply {
    /// Bytes to send (empty: silence).
    pub bytes: Vec<u8>,
    /// Extra wait before sending them.
    pub delay: Duration,
}

/// A reading the simulator served, as the meter held it at that moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Address it was served from.
    pub address: u8,
    /// The values.
    pub reading: Reading,
    /// When it was served (the time the request was answered).
    pub at: Instant,
}

/// How many faults of each kind were injected so far (replies that got one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Replies dropped.
    pub no_reply: u64,
    /// Replies sent with a CRC byte altered.
    pub bad_crc: u64,
    /// Replies cut short.
    pub truncated: u64,
    /// Replies replaced by random bytes.
    pub garbage: u64,
    /// Replies replaced by a slave-failure exception.
    pub exception: u64,
    /// Replies delayed (a delayed reply can get one of the faults above too).
    pub delayed: u64,
}

impl FaultCounts {
    /// Replies that were not the meter's true answer: every fault except a delay.
    pub fn altered(&self) -> u64 {
        self.no_reply + self.bad_crc + self.truncated + self.garbage + self.exception
    }
}

/// How many served readings are remembered.
pub const SERVED_HISTORY: usize = 100_000;

/// Meters on one line. Feed it request frames, get line replies.
#[derive(Debug)]
pub struct SimBus {
    /// The meters.
    pub meters: Vec<SimMeter>,
    /// Fault rates.
    pub faults: Faults,
    rng: Rng,
    last_advance: Option<Instant>,
    served: VecDeque<Served>,
    requests: u64,
    injected: FaultCounts,
}

impl SimBus {
    /// A line with these meters, no faults, and `seed` for values and faults.
    pub fn new(meters: Vec<SimMeter>, seed: u64) -> SimBus {
        SimBus {
            meters,
            faults: Faults::default(),
            rng: Rng::new(seed),
            last_advance: None,
            served: VecDeque::new(),
            requests: 0,
            injected: FaultCounts::default(),
        }
    }

    /// The meter that answers at `address`, if one does.
    pub fn meter_mut(&mut self, address: u8) -> Option<&mut SimMeter> {
        self.meters.iter_mut().find(|m| m.address == address)
    }

    /// Readings served so far (most recent last), at most [`SERVED_HISTORY`].
    pub fn served(&self) -> impl Iterator<Item = &Served> {
        self.served.iter()
    }

    /// Requests received with a valid CRC.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Faults injected so far, by kind: lets a test show that its faults really happened.
    pub fn injected(&self) -> FaultCounts {
        self.injected
    }

    /// Let time pass for every meter (values move, energy integrates).
    pub fn advance_to(&mut self, now: Instant) {
        if let Some(last) = self.last_advance {
            let dt = now.saturating_duration_since(last);
            for m in &mut self.meters {
                m.advance(dt, &mut self.rng);
            }
        }
        self.last_advance = Some(now);
    }

    /// Answer one RTU request frame as the line would: silence for a bad
    /// CRC, a broadcast or an absent address; one reply from one meter;
    /// colliding garbage when several meters answer (the general address
    /// 0xF8 with more than one meter on the line).
    pub fn respond_rtu(&mut self, frame: &[u8], now: Instant) -> LineReply {
        if frame.len() < 4 || !frame_crc_ok(frame) {
            return LineReply::default();
        }
        self.requests += 1;
        self.advance_to(now);
        let address = frame[0];
        let pdu = &frame[1..frame.len() - 2];
        let replies = self.dispatch(address, pdu);
        let mut bytes = match replies.len() {
            0 => return LineReply::default(),
            1 => replies.into_iter().next().unwrap_or_default(),
            _ => collide(&replies),
        };
        let mut delay = Duration::ZERO;
        self.inject(&mut bytes, &mut delay, address, pdu.first().copied().unwrap_or(0));
        LineReply { bytes, delay }
    }

    /// Answer one Modbus TCP request PDU for `unit`: the PDU of the reply
    /// (no CRC) or `None` for silence. Faults other than CRC apply.
    pub fn respond_pdu(&mut self, unit: u8, pdu: &[u8], now: Instant) -> (Option<Vec<u8>>, Duration) {
        self.requests += 1;
        self.advance_to(now);
        let replies = self.dispatch(unit, pdu);
        let Some(frame) = replies.into_iter().next() else {
            return (None, Duration::ZERO);
        };
        let mut bytes = frame;
        let mut delay = Duration::ZERO;
        self.inject(&mut bytes, &mut delay, unit, pdu.first().copied().unwrap_or(0));
        if bytes.len() < 3 {
            return (None, delay);
        }
        // Strip address and CRC: the gateway speaks PDU.
        (Some(bytes[1..bytes.len() - 2].to_vec()), delay)
    }

    /// RTU frames of every meter that answers `address`.
    fn dispatch(&mut self, address: u8, pdu: &[u8]) -> Vec<Vec<u8>> {
        let general = address == 0xF8;
        let broadcast = address == 0;
        let function = pdu.first().copied().unwrap_or(0);
        let mut out = Vec::new();
        for i in 0..self.meters.len() {
            let m = &mut self.meters[i];
            if m.silent || !(general || broadcast || m.address == address) {
                continue;
            }
            let reply = m.handle(pdu);
            if broadcast {
                continue;
            }
            let mut frame = vec![address];
            match reply {
                MeterReply::Pdu(p) => {
                    if function == 0x04 {
                        let reading = match m.family() {
                            Family::Ac => Reading::Ac(m.ac()),
                            Family::Dc => Reading::Dc(m.dc()),
                        };
                        if self.served.len() == SERVED_HISTORY {
                            self.served.pop_front();
                        }
                        let at = self.last_advance.unwrap_or_else(Instant::now);
                        self.served.push_back(Served { address, reading, at });
                    }
                    frame.extend_from_slice(&p);
                }
                MeterReply::Exception(code) => frame.extend_from_slice(&[function | 0x80, code.byte()]),
            }
            let crc = crc_bytes(&frame);
            frame.extend_from_slice(&crc);
            out.push(frame);
        }
        out
    }

    fn inject(&mut self, bytes: &mut Vec<u8>, delay: &mut Duration, address: u8, function: u8) {
        let f = self.faults;
        if self.rng.chance(f.delay) {
            *delay = f.delay_by;
            self.injected.delayed += 1;
        }
        let x = self.rng.unit();
        let mut edge = 0.0;
        let mut hit = |rate: f64| {
            edge += rate;
            x < edge
        };
        if hit(f.no_reply) {
            bytes.clear();
            self.injected.no_reply += 1;
        } else if hit(f.bad_crc) {
            if let Some(last) = bytes.last_mut() {
                *last ^= 0x5A;
            }
            self.injected.bad_crc += 1;
        } else if hit(f.truncated) {
            let keep = 1 + self.rng.below(bytes.len().saturating_sub(1).max(1));
            bytes.truncate(keep);
            self.injected.truncated += 1;
        } else if hit(f.garbage) {
            for b in bytes.iter_mut() {
                *b = self.rng.next_u64() as u8;
            }
            self.injected.garbage += 1;
        } else if hit(f.exception) {
            self.injected.exception += 1;
            let mut e = vec![address, function | 0x80, ExceptionCode::SlaveDeviceFailure.byte()];
            let crc = crc_bytes(&e);
            e.extend_from_slice(&crc);
            debug_assert_eq!(e.len(), RTU_EXCEPTION_LEN);
            *bytes = e;
        }
    }
}

/// What several transmitters at once leave on an RS-485 line: the longest
/// reply, with the bits of the others mixed in (a driven 0 wins).
fn collide(replies: &[Vec<u8>]) -> Vec<u8> {
    let len = replies.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            replies
                .iter()
                .map(|r| r.get(i).copied().unwrap_or(0xFF))
                .fold(0xFF, |a, b| a & b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Reply, Request};
    use crate::{Address, Model};

    fn bus() -> SimBus {
        SimBus::new(
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem017, 2)],
            42,
        )
    }

    #[test]
    fn each_meter_answers_its_address() {
        let mut b = bus();
        let now = Instant::now();
        let req = Request::read_input_registers(0, 10).unwrap();
        let r = b.respond_rtu(req.rtu_frame(Address::unit(1).unwrap()).as_bytes(), now);
        assert!(matches!(
            req.decode_rtu_reply(Address::unit(1).unwrap(), &r.bytes),
            Ok(Reply::Registers(_))
        ));
        let r = b.respond_rtu(req.rtu_frame(Address::unit(2).unwrap()).as_bytes(), now);
        assert_eq!(r.bytes.len(), 5, "DC meter refuses a 10-register read");
        assert!(
            b.respond_rtu(req.rtu_frame(Address::unit(3).unwrap()).as_bytes(), now)
                .bytes
                .is_empty()
        );
        assert_eq!(b.served().count(), 1);
        assert_eq!(
            b.served().next().map(|s| s.at),
            Some(now),
            "served at the request's time"
        );
    }

    #[test]
    fn general_address_collides_with_two_meters() {
        let mut b = bus();
        let req = Request::read_holding_registers(2, 1).unwrap();
        let r = b.respond_rtu(req.rtu_frame(Address::GENERAL).as_bytes(), Instant::now());
        assert!(req.decode_rtu_reply(Address::GENERAL, &r.bytes).is_err());
        b.meters.truncate(1);
        let r = b.respond_rtu(req.rtu_frame(Address::GENERAL).as_bytes(), Instant::now());
        assert_eq!(r.bytes[0], 0xF8);
        assert!(req.decode_rtu_reply(Address::GENERAL, &r.bytes).is_ok());
    }

    #[test]
    fn bad_crc_and_silent_meters_get_no_reply() {
        let mut b = bus();
        let req = Request::read_input_registers(0, 10).unwrap();
        let mut frame = req.rtu_frame(Address::unit(1).unwrap()).as_bytes().to_vec();
        frame[7] ^= 1;
        assert!(b.respond_rtu(&frame, Instant::now()).bytes.is_empty());
        b.meters[0].silent = true;
        assert!(
            b.respond_rtu(req.rtu_frame(Address::unit(1).unwrap()).as_bytes(), Instant::now())
                .bytes
                .is_empty()
        );
    }

    #[test]
    fn faults_follow_their_rates() {
        let mut b = bus();
        b.faults = Faults::parse("no-reply=0.5").unwrap();
        let req = Request::read_input_registers(0, 10).unwrap();
        let frame = req.rtu_frame(Address::unit(1).unwrap());
        let silent = (0..1000)
            .filter(|_| b.respond_rtu(frame.as_bytes(), Instant::now()).bytes.is_empty())
            .count();
        assert!((400..600).contains(&silent), "{silent}");
        let counted = FaultCounts {
            no_reply: silent as u64,
            ..FaultCounts::default()
        };
        assert_eq!(b.injected(), counted);
        b.faults = Faults::parse("bad-crc=1").unwrap();
        let r = b.respond_rtu(frame.as_bytes(), Instant::now());
        assert_eq!(r.bytes.len(), 25);
        assert!(!crate::crc::frame_crc_ok(&r.bytes));
        assert_eq!((b.injected().bad_crc, b.injected().altered()), (1, silent as u64 + 1));
    }

    #[test]
    fn fault_spec_errors() {
        assert!(Faults::parse("no-reply=2").is_err());
        assert!(Faults::parse("bogus=0.1").is_err());
        assert!(Faults::parse("no-reply").is_err());
        let f = Faults::parse("delay=0.5,delay-ms=300, garbage=0.1").unwrap();
        assert_eq!((f.delay, f.delay_by, f.garbage), (0.5, Duration::from_millis(300), 0.1));
    }
}
