//! Energy state files: one small file per meter under the state directory
//! (default `/data/var/lib/pzem-venus`, which survives firmware updates).
//!
//! The file rules (atomic save with a `.bak` copy, fallback on load, damaged
//! files moved aside as `.corrupt`) live in the crate's state-file module; this
//! module names the files and reads and writes [`EnergyState`] lines.

use std::io;
use std::path::{Path, PathBuf};

use crate::energy::EnergyState;
use crate::state_file;

/// Where the state of meter `id` lives.
pub fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.energy"))
}

/// What loading found.
#[derive(Debug, PartialEq)]
pub struct Loaded {
    /// The state (default when nothing usable was found).
    pub state: EnergyState,
    /// Problems worth a log line (a corrupt file moved aside, a backup used,
    /// and last, when files were there but none could be used, that the
    /// totals start from zero).
    pub notes: Vec<String>,
    /// Files were there but none could be used: the meter starts from zero
    /// after damage, which deserves an error in the log, not a warning.
    pub from_zero_after_damage: bool,
}

/// Load the state of meter `id`: the file, else a complete temporary file
/// left by an interrupted save, else the backup, else a fresh
/// state. A corrupt file is renamed to `.corrupt` so nothing is lost.
pub fn load(dir: &Path, id: &str) -> Loaded {
    let loaded = state_file::load(&state_path(dir, id), EnergyState::parse);
    let from_zero_after_damage = loaded.starts_from_zero_after_damage();
    Loaded {
        state: loaded.value.unwrap_or_default(),
        notes: loaded.notes,
        from_zero_after_damage,
    }
}

/// Save the state of meter `id` durably.
pub fn save(dir: &Path, id: &str, state: &EnergyState) -> io::Result<()> {
    state_file::save(&state_path(dir, id), &state.to_line())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_file::with_suffix;
    use std::fs;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pzem-energy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_and_recover_from_damage() {
        let dir = temp_dir("store");
        assert_eq!(load(&dir, "m").state, EnergyState::default());
        let a = EnergyState {
            offset_wh: 10,
            last_raw_wh: Some(5),
        };
        let b = EnergyState {
            offset_wh: 10,
            last_raw_wh: Some(9),
        };
        save(&dir, "m", &a).unwrap();
        save(&dir, "m", &b).unwrap();
        assert_eq!(
            load(&dir, "m"),
            Loaded {
                state: b,
                notes: vec![],
                from_zero_after_damage: false,
            }
        );
        fs::write(
            state_path(&dir, "m"),
            "pzem-energy-v1 offset_wh=99 last_raw_wh=9 crc=0000\n",
        )
        .unwrap();
        let loaded = load(&dir, "m");
        assert_eq!(loaded.state, a, "falls back to the backup");
        assert!(loaded.notes.iter().any(|n| n.contains("kept as")), "{:?}", loaded.notes);
        assert!(
            with_suffix(&state_path(&dir, "m"), ".corrupt").exists(),
            "damaged file kept"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_interrupted_save_loses_nothing() {
        let dir = temp_dir("interrupted");
        let old = EnergyState {
            offset_wh: 1,
            last_raw_wh: Some(10),
        };
        let new = EnergyState {
            offset_wh: 1,
            last_raw_wh: Some(20),
        };
        save(&dir, "m", &old).unwrap();
        save(&dir, "m", &old).unwrap();
        // Crash after `main -> .bak`, before `.tmp -> main`.
        let main = state_path(&dir, "m");
        fs::write(with_suffix(&main, ".tmp"), new.to_line()).unwrap();
        fs::rename(&main, with_suffix(&main, ".bak")).unwrap();
        assert_eq!(load(&dir, "m").state, new);
        // A torn temporary file falls back to the backup.
        fs::write(with_suffix(&main, ".tmp"), &new.to_line()[..10]).unwrap();
        assert_eq!(load(&dir, "m").state, old);
        fs::remove_dir_all(&dir).unwrap();
    }
}
