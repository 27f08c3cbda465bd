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
        match spawn(&dir) {
            Ok((child, stdout, address)) => Ok(PrivateBus {
                child,
                _stdout: stdout,
                dir,
                address,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Kills the daemon (SIGKILL, as a crash would) and starts a new one listening on the
    /// same socket path, as a supervisor restarts the system bus. Every connection to the
    /// old daemon is closed, and every name on it released. The new daemon has a new
    /// GUID: [`PrivateBus::address`] and [`PrivateBus::bus`] give the new address
    /// (clients that connect with the old one, GUID included, are refused by libdbus).
    pub fn restart(&mut self) -> Result<(), BusError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dbus-daemon replaces a stale socket file itself; removing it first makes sure
        // no client reaches the dead one's path in between.
        let _ = std::fs::remove_file(self.dir.join("bus"));
        let (child, stdout, address) = spawn(&self.dir)?;
        self.child = child;
        self._stdout = stdout;
        self.address = address;
        Ok(())
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

/// Starts `dbus-daemon` on `dir/bus` and reads the address it prints.
fn spawn(dir: &std::path::Path) -> Result<(Child, BufReader<ChildStdout>, String), BusError> {
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
            return Err(BusError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot run dbus-daemon ({e}); install the dbus-daemon package"),
            )));
        }
    };
    let kill = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let Some(stdout) = child.stdout.take() else {
        kill(&mut child);
        return Err(BusError::Io(std::io::Error::other("dbus-daemon stdout not captured")));
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    if let Err(e) = stdout.read_line(&mut line) {
        kill(&mut child);
        return Err(e.into());
    }
    let address = line.trim();
    if address.is_empty() {
        kill(&mut child);
        return Err(BusError::Io(std::io::Error::other(
            "dbus-daemon exited without printing an address",
        )));
    }
    Ok((child, stdout, address.to_owned()))
}
