//! Small state files that survive crashes, power cuts and damage: one home
//! for the rules every persisted state in this crate follows.
//!
//! * **Save** ([`save`]) writes `NAME.tmp`, syncs it, keeps the current
//!   `NAME` as `NAME.bak`, renames `NAME.tmp` to `NAME` and syncs the
//!   directory. At every moment one complete copy exists under one of the
//!   three names.
//! * **Load** ([`load`]) takes `NAME`, else a complete `NAME.tmp` left by an
//!   interrupted save (it is newer than the backup), else `NAME.bak`. A file
//!   that is corrupt (its parser refuses it) or unreadable is reported and
//!   moved aside as `NAME.corrupt` (or `NAME.corrupt.1` … when that name is
//!   taken), never overwritten, so the evidence stays. Only when no copy can
//!   be used does the caller start from zero, and [`Loaded::notes`] then
//!   ends with a note saying so.
//!
//! The format of the text is the caller's: it passes a parse function that
//! must recognise a torn or damaged text (a checksum, as in
//! [`crate::energy::EnergyState::to_line`]).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of the file a save writes before renaming it into place.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of the previous good copy, kept beside the current one.
pub(crate) const BAK_SUFFIX: &str = ".bak";
/// Suffix a corrupt or unreadable file is moved aside to.
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";

/// How many numbered `.corrupt.N` names are tried before giving up on
/// moving a damaged file aside (it is then left where it is).
const MAX_CORRUPT_COPIES: u32 = 100;

/// `path` with `suffix` appended to its file name (`a/b.energy` + `.tmp`
/// gives `a/b.energy.tmp`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What [`load`] found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Loaded<T> {
    /// The state read, or `None` when no copy could be used (start from
    /// zero).
    pub value: Option<T>,
    /// Problems worth a log line each: a corrupt or unreadable file moved
    /// aside, a fallback copy used, and last, when nothing could be used
    /// although files were there, that the state starts from zero.
    pub notes: Vec<String>,
}

impl<T> Loaded<T> {
    /// Whether files were there but none could be used, so the caller
    /// starts from zero after damage: worth an error-level log line, not
    /// just a warning. (A first start, with no file at all, is not.)
    pub(crate) fn starts_from_zero_after_damage(&self) -> bool {
        self.value.is_none() && !self.notes.is_empty()
    }
}

/// Load the state kept at `path` with `parse` (see the module
/// documentation for the order and what happens to damaged files).
pub(crate) fn load<T, E: fmt::Display>(path: &Path, parse: impl Fn(&str) -> Result<T, E>) -> Loaded<T> {
    let mut notes = Vec::new();
    // After a crash between the two renames of `save`, `.tmp` holds the newest
    // complete state (its checksum tells a torn one) and `.bak` the one before.
    for candidate in [
        path.to_path_buf(),
        with_suffix(path, TMP_SUFFIX),
        with_suffix(path, BAK_SUFFIX),
    ] {
        let problem = match fs::read(&candidate) {
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => match parse(text) {
                    Ok(value) => {
                        if candidate != path {
                            notes.push(format!("using {}", candidate.display()));
                        }
                        return Loaded {
                            value: Some(value),
                            notes,
                        };
                    }
                    Err(e) => e.to_string(),
                },
                Err(_) => "not text (corrupt)".to_string(),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => format!("unreadable: {e}"),
        };
        let fate = match move_aside(&candidate) {
            Ok(aside) => format!("kept as {}", aside.display()),
            Err(e) => format!("could not move it aside: {e}"),
        };
        notes.push(format!("{}: {problem}; {fate}", candidate.display()));
    }
    if !notes.is_empty() {
        notes.push(format!(
            "NO USABLE STATE: neither {} nor its {TMP_SUFFIX} or {BAK_SUFFIX} copy could be used; starting from zero",
            path.display()
        ));
    }
    Loaded { value: None, notes }
}

/// Rename a damaged file to the first free `.corrupt` name.
fn move_aside(path: &Path) -> io::Result<PathBuf> {
    for n in 0..MAX_CORRUPT_COPIES {
        let aside = if n == 0 {
            with_suffix(path, CORRUPT_SUFFIX)
        } else {
            with_suffix(path, &format!("{CORRUPT_SUFFIX}.{n}"))
        };
        // `symlink_metadata` so a dangling link also counts as taken.
        match fs::symlink_metadata(&aside) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(path, &aside)?;
                return Ok(aside);
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{MAX_CORRUPT_COPIES} {CORRUPT_SUFFIX} copies exist already"
    )))
}

/// Remove the state at `path` with its backup and any temporary copy.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    for suffix in ["", BAK_SUFFIX, TMP_SUFFIX] {
        match fs::remove_file(with_suffix(path, suffix)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Save `text` at `path` durably (see the module documentation). The
/// parent directory is created when missing.
pub(crate) fn save(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = with_suffix(path, TMP_SUFFIX);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if path.exists() {
        fs::rename(path, with_suffix(path, BAK_SUFFIX))?;
    }
    fs::rename(&tmp, path)?;
    // Make the renames durable too; a file system that cannot sync a
    // directory still has the data, so a failure here is not an error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test format: `ok:<text>` with nothing after it is valid.
    fn parse(text: &str) -> Result<String, String> {
        text.strip_prefix("ok:")
            .map(str::to_string)
            .ok_or_else(|| "bad format".to_string())
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pzem-state-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn nothing_there_is_a_quiet_fresh_start() {
        let dir = temp_dir("fresh");
        let loaded = load(&dir.join("s"), parse);
        assert_eq!(
            loaded,
            Loaded {
                value: None,
                notes: vec![]
            }
        );
        assert!(!loaded.starts_from_zero_after_damage());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_rotates_the_backup_and_leaves_no_temporary_file() {
        let dir = temp_dir("save");
        let path = dir.join("sub/s");
        save(&path, "ok:1").unwrap();
        save(&path, "ok:2").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "ok:2");
        assert_eq!(fs::read_to_string(with_suffix(&path, BAK_SUFFIX)).unwrap(), "ok:1");
        assert!(!with_suffix(&path, TMP_SUFFIX).exists());
        assert_eq!(load(&path, parse).value.as_deref(), Some("2"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_complete_tmp_wins_over_the_backup_and_a_torn_one_is_set_aside() {
        let dir = temp_dir("tmp");
        let path = dir.join("s");
        // Crash after `main -> .bak`, before `.tmp -> main`.
        fs::write(with_suffix(&path, BAK_SUFFIX), "ok:old").unwrap();
        fs::write(with_suffix(&path, TMP_SUFFIX), "ok:new").unwrap();
        let loaded = load(&path, parse);
        assert_eq!(loaded.value.as_deref(), Some("new"));
        assert_eq!(loaded.notes.len(), 1, "{:?}", loaded.notes);
        assert!(loaded.notes[0].starts_with("using "), "{:?}", loaded.notes);
        // Torn: the write stopped half way.
        fs::write(with_suffix(&path, TMP_SUFFIX), "o").unwrap();
        let loaded = load(&path, parse);
        assert_eq!(loaded.value.as_deref(), Some("old"));
        assert!(loaded.notes[0].contains("kept as"), "{:?}", loaded.notes);
        assert_eq!(
            fs::read_to_string(with_suffix(&path, ".tmp.corrupt")).unwrap(),
            "o",
            "the torn copy is kept for inspection"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_main_falls_back_to_the_backup_and_is_kept() {
        let dir = temp_dir("corrupt-main");
        let path = dir.join("s");
        save(&path, "ok:good").unwrap();
        save(&path, "ok:newer").unwrap();
        fs::write(&path, "garbage").unwrap();
        let loaded = load(&path, parse);
        assert_eq!(loaded.value.as_deref(), Some("good"));
        assert!(!loaded.starts_from_zero_after_damage());
        assert!(loaded.notes[0].contains("bad format; kept as"), "{:?}", loaded.notes);
        assert_eq!(
            fs::read_to_string(with_suffix(&path, CORRUPT_SUFFIX)).unwrap(),
            "garbage"
        );
        // A second damaged main does not overwrite the first one set aside.
        fs::write(&path, "garbage 2").unwrap();
        assert_eq!(load(&path, parse).value.as_deref(), Some("good"));
        assert_eq!(
            fs::read_to_string(with_suffix(&path, CORRUPT_SUFFIX)).unwrap(),
            "garbage"
        );
        assert_eq!(
            fs::read_to_string(with_suffix(&path, ".corrupt.1")).unwrap(),
            "garbage 2"
        );
        // The next save keeps the good backup: the main name is free.
        save(&path, "ok:3").unwrap();
        assert_eq!(fs::read_to_string(with_suffix(&path, BAK_SUFFIX)).unwrap(), "ok:good");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn all_copies_corrupt_starts_from_zero_loudly() {
        let dir = temp_dir("all-corrupt");
        let path = dir.join("s");
        fs::write(&path, "bad main").unwrap();
        fs::write(with_suffix(&path, TMP_SUFFIX), [0xff, 0xfe, 0x00]).unwrap();
        fs::write(with_suffix(&path, BAK_SUFFIX), "bad bak").unwrap();
        let loaded = load(&path, parse);
        assert_eq!(loaded.value, None);
        assert!(loaded.starts_from_zero_after_damage());
        assert_eq!(loaded.notes.len(), 4, "{:?}", loaded.notes);
        assert!(loaded.notes[1].contains("not text"), "{:?}", loaded.notes);
        assert!(loaded.notes[3].contains("starting from zero"), "{:?}", loaded.notes);
        for name in ["s.corrupt", "s.tmp.corrupt", "s.bak.corrupt"] {
            assert!(dir.join(name).exists(), "{name} kept");
        }
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_reported_and_set_aside() {
        let dir = temp_dir("unreadable");
        let path = dir.join("s");
        // A directory where the file should be: reading it fails with an
        // error other than NotFound (as a permission or I/O error would).
        fs::create_dir(&path).unwrap();
        fs::write(with_suffix(&path, BAK_SUFFIX), "ok:bak").unwrap();
        let loaded = load(&path, parse);
        assert_eq!(loaded.value.as_deref(), Some("bak"));
        assert!(loaded.notes[0].contains("unreadable"), "{:?}", loaded.notes);
        assert!(loaded.notes[0].contains("kept as"), "{:?}", loaded.notes);
        assert!(with_suffix(&path, CORRUPT_SUFFIX).is_dir());
        // Nothing usable at all: unreadable main, no other copy.
        fs::remove_file(with_suffix(&path, BAK_SUFFIX)).unwrap();
        fs::create_dir(&path).unwrap();
        let loaded = load(&path, parse);
        assert!(loaded.starts_from_zero_after_damage(), "{:?}", loaded.notes);
        fs::remove_dir_all(&dir).unwrap();
    }
}
