//! Whether a meter is there: a few failed polls in a row and it is gone.
//!
//! An AC meter on a MultiPlus input goes silent whenever mains is absent;
//! that is normal and must show as "not connected, values unknown", never
//! as stale or zero values, and must not flood the log.

/// Consecutive failed polls after which a meter counts as gone.
pub const DEFAULT_FAILURES: u32 = 3;

/// What a poll result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// Nothing to tell.
    None,
    /// It answers again (or for the first time).
    Appeared,
    /// It stopped answering: invalidate its values.
    Vanished,
}

/// The presence of one meter.
#[derive(Clone, Copy, Debug)]
pub struct Presence {
    failures: u32,
    threshold: u32,
    present: bool,
}

impl Presence {
    /// Absent until the first good poll; gone after `threshold` failures in a row.
    pub fn new(threshold: u32) -> Presence {
        Presence {
            failures: 0,
            threshold: threshold.max(1),
            present: false,
        }
    }

    /// Whether it currently counts as present.
    pub fn is_present(&self) -> bool {
        self.present
    }

    /// A poll succeeded.
    pub fn ok(&mut self) -> PresenceChange {
        self.failures = 0;
        if self.present {
            PresenceChange::None
        } else {
            self.present = true;
            PresenceChange::Appeared
        }
    }

    /// A poll failed.
    pub fn failed(&mut self) -> PresenceChange {
        self.failures = self.failures.saturating_add(1);
        if self.present && self.failures >= self.threshold {
            self.present = false;
            PresenceChange::Vanished
        } else {
            PresenceChange::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanishes_after_threshold_and_comes_back() {
        let mut p = Presence::new(3);
        assert!(!p.is_present());
        assert_eq!(p.failed(), PresenceChange::None);
        assert_eq!(p.ok(), PresenceChange::Appeared);
        assert_eq!(p.ok(), PresenceChange::None);
        assert_eq!(p.failed(), PresenceChange::None);
        assert_eq!(p.failed(), PresenceChange::None);
        assert_eq!(p.failed(), PresenceChange::Vanished);
        assert_eq!(p.failed(), PresenceChange::None, "told once");
        assert_eq!(p.ok(), PresenceChange::Appeared);
        assert_eq!(p.failed(), PresenceChange::None, "the count starts again");
    }
}
