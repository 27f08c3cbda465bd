//! Energy state files: one small file per meter under the state directory
//! (default `/data/var/lib/pzem-venus`, which survives firmware updates).
//!
//! Writes go to a temporary file that is synced and renamed over the old
//! one, after the old one is kept as `.bak`; a damaged file is moved aside
//! as `.corrupt` (never overwritten) and the backup is used.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::energy::EnergyState;

/// Where the state of meter `id` lives.
pub fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.energy"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What loading found.
#[derive(Debug, PartialEq)]
pub struct Loaded {
    /// The state (default when nothing usable was found).
    pub state: EnergyState,
    /// Problems worth a log line (a corrupt file moved aside, a backup used).
    pub notes: Vec<String>,
}

/// Load the state of meter `id`: the file, else a complete temporary file
/// left by an interrupted save, else the backup, else a fresh
/// state. A corrupt file is renamed to `.corrupt` so nothing is lost.
pub fn load(dir: &Path, id: &str) -> Loaded {
    let main = state_path(dir, id);
    let mut notes = Vec::new();
    // After a crash between the two renames of `save`, `.tmp` holds the newest
    // complete state (its checksum tells a torn one) and `.bak` the one before.
    for candidate in [main.clone(), with_suffix(&main, ".tmp"), with_suffix(&main, ".bak")] {
        match fs::read_to_string(&candidate) {
            Ok(text) => match EnergyState::parse(&text) {
                Ok(state) => {
                    if candidate != main {
                        notes.push(format!("using {}", candidate.display()));
                    }
                    return Loaded { state, notes };
                }
                Err(e) => {
                    let aside = with_suffix(&candidate, ".corrupt");
                    let moved = fs::rename(&candidate, &aside).is_ok();
                    notes.push(format!(
                        "{}: {e}; {}",
                        candidate.display(),
                        if moved {
                            format!("kept as {}", aside.display())
                        } else {
                            "could not move it aside".into()
                        }
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => notes.push(format!("{}: {e}", candidate.display())),
        }
    }
    Loaded {
        state: EnergyState::default(),
        notes,
    }
}

/// Save the state of meter `id` durably.
pub fn save(dir: &Path, id: &str, state: &EnergyState) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let main = state_path(dir, id);
    let tmp = with_suffix(&main, ".tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(state.to_line().as_bytes())?;
        f.sync_all()?;
    }
    if main.exists() {
        fs::rename(&main, with_suffix(&main, ".bak"))?;
    }
    fs::rename(&tmp, &main)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                notes: vec![]
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
