//! A small tmpfs mounted for one test, to run a service on a full file system.
//!
//! Included with `#[path]` by tests/crash.rs, tests/pzem_energy.rs and
//! tests/history_logger.rs. Mounting needs root (or CAP_SYS_ADMIN); where it is refused the
//! caller skips through `require::require_or_skip` (a failure in CI).
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};

/// A tmpfs mounted on a new directory; unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB on a new directory `tmpfs` in `dir`; `None` when this
    /// machine does not let the test mount (not root, no CAP_SYS_ADMIN).
    pub fn mount(dir: &Path, kib: u32) -> Option<Tmpfs> {
        let at = dir.join("tmpfs");
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Fills it up: one file takes every free block.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.0.join("filler"))
            .unwrap();
        let block = [0xAAu8; 4096];
        while f.write_all(&block).is_ok() {}
        // What is left is less than a block: take it byte by byte.
        while f.write_all(&[0xAA]).is_ok() {}
        let _ = f.sync_all();
    }

    /// Makes room again: the filler goes.
    pub fn unfill(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
