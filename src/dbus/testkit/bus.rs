//! A private `dbus-daemon` for tests and demos.

use crate::dbus::{Bus, BusError};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A `dbus-daemon --session --nofork` listening on a socket in its own temporary
/// directory. Dropping it kills exactly that process and removes the directory.
#[derive(Debug)]
pub struct PrivateBus {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    dir: PathBuf,
    address: String,
}

impl PrivateBus {
    /// Starts the daemon and waits until it prints its address (it is then accepting
    /// connections). Needs `dbus-daemon` on `PATH` (Debian package `dbus-daemon`).
    pub fn start() -> Result<PrivateBus, BusError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pzem-bus-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let socket = format!("unix:path={}", dir.join("bus").display());
        let spawned = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1", "--nopidfile"])
            .arg(format!("--address={socket}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(BusError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot run dbus-daemon ({e}); install the dbus-daemon package"),
                )));
            }
        };
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BusError::Io(std::io::Error::other("dbus-daemon stdout not captured")));
        };
        let mut bus = PrivateBus {
            _stdout: BufReader::new(stdout),
            child,
            dir,
            address: String::new(),
        };
        let mut line = String::new();
        bus._stdout.read_line(&mut line)?;
        let address = line.trim();
        if address.is_empty() {
            // Drop kills and reaps the daemon.
            return Err(BusError::Io(std::io::Error::other(
                "dbus-daemon exited without printing an address",
            )));
        }
        bus.address = address.to_owned();
        Ok(bus)
    }

    /// The address printed by the daemon (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The [`Bus`] to hand to services and clients.
    pub fn bus(&self) -> Bus {
        Bus::Address(self.address.clone())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this PID only; wait reaps it (no zombie).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
