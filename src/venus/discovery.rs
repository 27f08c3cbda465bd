//! Discovery that remembers: which meters a scan of a line found, kept per
//! port in the state directory, so that a meter silent at the next start
//! (an AC-input meter without mains at boot) is still published.
//!
//! Sans-IO: [`Memory`] is the remembered list with its text form; the
//! service loop reads and writes the file (atomically, with a backup, like
//! every state file) and gives the wall-clock time.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::address::Address;
use crate::model::Family;

/// The addresses scanned when no meter is configured.
pub const DEFAULT_RANGE: RangeInclusive<u8> = 1..=32;

/// How long a remembered meter may stay silent before it is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reply timeout while scanning: long enough for a PZEM's turnaround at 9600
/// baud (peers use 100 ms), short enough that 32 empty addresses take
/// about 3.3 s with the inter-frame silences.
pub const SCAN_TIMEOUT: Duration = Duration::from_millis(100);

const TAG: &str = "pzem-discovered-v1";

/// One remembered meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Its address.
    pub address: Address,
    /// AC or DC.
    pub family: Family,
    /// When it last answered, in seconds since the Unix epoch.
    pub last_seen: u64,
}

/// The meters remembered for one port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    meters: Vec<Remembered>,
}

/// A memory file that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryError(pub String);

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt discovery memory: {}", self.0)
    }
}

impl std::error::Error for MemoryError {}

impl Memory {
    /// The remembered meters, in address order.
    pub fn meters(&self) -> &[Remembered] {
        &self.meters
    }

    /// Note that the meter at `address` answered at `now` (Unix seconds).
    /// Returns true when the memory changed.
    pub fn seen(&mut self, address: Address, family: Family, now: u64) -> bool {
        match self.meters.iter_mut().find(|m| m.address == address) {
            Some(m) if m.family == family && m.last_seen >= now => false,
            Some(m) => {
                m.family = family;
                m.last_seen = m.last_seen.max(now);
                true
            }
            None => {
                self.meters.push(Remembered {
                    address,
                    family,
                    last_seen: now,
                });
                self.meters.sort_by_key(|m| m.address);
                true
            }
        }
    }

    /// Forget the meters that have not answered for [`FORGET_AFTER`] at
    /// `now` (Unix seconds), and return them.
    pub fn forget_stale(&mut self, now: u64) -> Vec<Remembered> {
        let limit = FORGET_AFTER.as_secs();
        let (stale, kept) = self
            .meters
            .iter()
            .partition(|m| now.saturating_sub(m.last_seen) > limit);
        self.meters = kept;
        stale
    }

    /// The text form: a tag line, one `ADDRESS ac|dc LAST_SEEN` line per meter,
    /// and a checksum line, so that a torn write is detected.
    pub fn to_text(&self) -> String {
        let mut body = format!("{TAG}\n");
        for m in &self.meters {
            let family = match m.family {
                Family::Ac => "ac",
                Family::Dc => "dc",
            };
            body.push_str(&format!("{} {family} {}\n", m.address.get(), m.last_seen));
        }
        let sum = crate::crc::crc16(body.as_bytes());
        format!("{body}crc={sum:04x}\n")
    }

    /// Parse what [`Memory::to_text`] wrote.
    pub fn parse(text: &str) -> Result<Memory, MemoryError> {
        let err = |why: &str| MemoryError(why.to_owned());
        let trimmed = text.strip_suffix('\n').ok_or_else(|| err("no final newline"))?;
        let (body, sum) = trimmed.rsplit_once("crc=").ok_or_else(|| err("no checksum"))?;
        let sum = u16::from_str_radix(sum, 16).map_err(|_| err("checksum is not hex"))?;
        if crate::crc::crc16(body.as_bytes()) != sum {
            return Err(err("checksum does not match (torn or edited file)"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(TAG) {
            return Err(err("unknown format tag"));
        }
        let mut memory = Memory::default();
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let [address, family, last_seen] = fields.as_slice() else {
                return Err(err("a line is not ADDRESS FAMILY LAST_SEEN"));
            };
            let address = address
                .parse::<u32>()
                .ok()
                .and_then(|a| Address::unit(a).ok())
                .ok_or_else(|| err("an address is not 1-247"))?;
            let family = match *family {
                "ac" => Family::Ac,
                "dc" => Family::Dc,
                _ => return Err(err("a family is not ac or dc")),
            };
            let last_seen = last_seen.parse().map_err(|_| err("a time is not a number"))?;
            if memory.meters.iter().any(|m| m.address == address) {
                return Err(err("an address is listed twice"));
            }
            memory.meters.push(Remembered {
                address,
                family,
                last_seen,
            });
        }
        memory.meters.sort_by_key(|m| m.address);
        Ok(memory)
    }
}

/// Parse a `--discover FROM-TO` range of unit addresses.
pub fn parse_range(text: &str) -> Result<RangeInclusive<u8>, String> {
    let bad = || format!("--discover takes FROM-TO, two addresses 1-247 with FROM <= TO, not '{text}'");
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let address = |t: &str| {
        t.trim()
            .parse::<u32>()
            .ok()
            .and_then(|n| Address::unit(n).ok())
            .map(Address::get)
    };
    match (address(from), address(to)) {
        (Some(from), Some(to)) if from <= to => Ok(from..=to),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u32) -> Address {
        Address::unit(n).unwrap()
    }

    #[test]
    fn the_memory_round_trips_and_detects_damage() {
        let mut m = Memory::default();
        assert!(m.seen(a(7), Family::Dc, 1_000));
        assert!(m.seen(a(3), Family::Ac, 2_000));
        assert!(!m.seen(a(3), Family::Ac, 2_000), "nothing new");
        assert!(m.seen(a(3), Family::Ac, 3_000));
        let text = m.to_text();
        assert_eq!(
            text,
            format!(
                "{}\ncrc={:04x}\n",
                "pzem-discovered-v1\n3 ac 3000\n7 dc 1000",
                crate::crc::crc16(b"pzem-discovered-v1\n3 ac 3000\n7 dc 1000\n")
            )
        );
        assert_eq!(Memory::parse(&text), Ok(m.clone()));
        assert_eq!(m.meters()[0].address, a(3), "in address order");
        for bad in [
            text.replace("3 ac", "4 ac"),
            text[..text.len() - 3].to_owned(),
            String::new(),
            "x\ncrc=zz\n".to_owned(),
        ] {
            assert!(Memory::parse(&bad).is_err(), "{bad:?}");
        }
        let forged = |body: &str| format!("{body}crc={:04x}\n", crate::crc::crc16(body.as_bytes()));
        for body in [
            "pzem-discovered-v2\n",
            "pzem-discovered-v1\n0 ac 1\n",
            "pzem-discovered-v1\n1 xx 1\n",
            "pzem-discovered-v1\n1 ac -1\n",
            "pzem-discovered-v1\n1 ac 1\n1 dc 2\n",
            "pzem-discovered-v1\n1 ac\n",
        ] {
            assert!(Memory::parse(&forged(body)).is_err(), "{body:?}");
        }
        assert_eq!(Memory::parse(&forged("pzem-discovered-v1\n")), Ok(Memory::default()));
    }

    #[test]
    fn meters_silent_for_thirty_days_are_forgotten() {
        let mut m = Memory::default();
        let day = 24 * 3600;
        m.seen(a(1), Family::Ac, 100 * day);
        m.seen(a(2), Family::Dc, 69 * day);
        m.seen(a(3), Family::Ac, 71 * day);
        let gone = m.forget_stale(100 * day + 1);
        assert_eq!(gone.iter().map(|r| r.address).collect::<Vec<_>>(), vec![a(2)]);
        assert_eq!(m.meters().len(), 2);
        assert!(m.forget_stale(0).is_empty(), "a clock set back forgets nothing");
    }

    #[test]
    fn discover_ranges() {
        assert_eq!(parse_range("1-32"), Ok(1..=32));
        assert_eq!(parse_range("10 - 20"), Ok(10..=20));
        assert_eq!(parse_range("5-5"), Ok(5..=5));
        for bad in ["", "1", "0-3", "3-1", "1-248", "a-b", "1-2-3"] {
            assert!(parse_range(bad).unwrap_err().contains("FROM-TO"), "{bad}");
        }
    }
}
