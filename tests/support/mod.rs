//! Helpers shared by the D-Bus integration tests (`mod support;`).
#![allow(dead_code)] // each test file uses a different subset

use pzem::dbus::{Bus, Format, Kind, Service, TreeBuilder, Value, Waiter, Watchable, WriteHandler, WriteOutcome};
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The service name used by the tests.
pub const NAME: &str = "com.victronenergy.grid.pzem_test";

/// A small tree with one leaf of every kind, an invalid one, and two writable paths.
pub fn test_tree() -> TreeBuilder {
    let mut b = TreeBuilder::new();
    b.add("/DeviceInstance", Kind::Int, Format::Plain).value(40);
    b.add("/ProductId", Kind::Int, Format::Hex).value(0xFFFF);
    b.add("/ProductName", Kind::Str, Format::Plain).value("PZEM-016");
    b.add("/Ac/Power", Kind::Double, Format::number(1, "W")).value(1.5);
    b.add("/Ac/L1/Power", Kind::Double, Format::number(1, "W"));
    b.add("/Ac/L1/Voltage", Kind::Double, Format::number(1, "V"))
        .value(230.14);
    b.add("/AllowedRoles", Kind::StrList, Format::Plain)
        .value(vec!["grid".to_owned(), "acload".to_owned()]);
    b.add("/CustomName", Kind::Str, Format::Plain).value("").writable();
    b.add("/Position", Kind::Int, Format::Plain).value(0).writable();
    b
}

/// The owner's write policy for the test tree: trims `/CustomName` (max 32 bytes), accepts
/// `/Position` 0..=2 and answers 3 otherwise.
pub fn test_handler(path: &str, value: &Value) -> WriteOutcome {
    match (path, value) {
        ("/CustomName", Value::Str(s)) if s.len() <= 32 => WriteOutcome::AcceptAs(s.trim().into()),
        ("/Position", Value::Int(0..=2)) => WriteOutcome::Accept,
        ("/Position", _) => WriteOutcome::Reject(3),
        _ => WriteOutcome::Reject(2),
    }
}

type Cmd = Box<dyn FnOnce(&mut Service) + Send>;

/// A service served by its own thread (the app's D-Bus thread), driven by commands.
pub struct Running {
    tx: Option<mpsc::Sender<Cmd>>,
    waker: pzem::dbus::Waker,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Claims `name` with `tree` on `bus` (before returning) and serves it.
    pub fn start(bus: &Bus, name: &str, tree: TreeBuilder, mut handler: impl WriteHandler + Send + 'static) -> Running {
        let mut service = Service::new(bus, name, tree.build().unwrap()).unwrap();
        let (mut waiter, waker) = Waiter::new().unwrap();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread = std::thread::spawn(move || {
            loop {
                // A long timeout: answers must come from the fd and the waker, not polling.
                let sources = [&service as &dyn Watchable];
                waiter.wait(sources, Some(Duration::from_secs(30))).unwrap();
                service.process(&mut handler).unwrap();
                loop {
                    match rx.try_recv() {
                        Ok(cmd) => cmd(&mut service),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
        });
        Running {
            tx: Some(tx),
            waker,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the service thread and returns its result.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Service) -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::channel();
        let cmd: Cmd = Box::new(move |s| {
            let _ = rtx.send(f(s));
        });
        self.tx.as_ref().unwrap().send(cmd).unwrap();
        self.waker.wake();
        rrx.recv_timeout(Duration::from_secs(10))
            .expect("service thread answers")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Output of an external command.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run(cmd: &str, args: &[&str]) -> Out {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `busctl --address=ADDR ARGS…`
pub fn busctl(address: &str, args: &[&str]) -> Out {
    let a = format!("--address={address}");
    let mut all = vec![a.as_str()];
    all.extend_from_slice(args);
    run("busctl", &all)
}

/// `dbus-send --bus=ADDR --print-reply --dest=NAME PATH IFACE.MEMBER ARGS…`
pub fn dbus_send(address: &str, path: &str, method: &str, args: &[&str]) -> Out {
    let bus = format!("--bus={address}");
    let dest = format!("--dest={NAME}");
    let mut all = vec![bus.as_str(), "--print-reply", dest.as_str(), path, method];
    all.extend_from_slice(args);
    run("dbus-send", &all)
}

/// An application-shaped pair of threads: a D-Bus thread blocking in [`Waiter::wait`] with a
/// 30 s timeout, and a "serial" thread that is stuck for `serial_busy` per reading (as in a
/// Modbus timeout), then sends the reading number over a channel and wakes the D-Bus thread.
/// The D-Bus thread publishes reading `n` as `/Ac/Power = n` in one `ItemsChanged`.
pub struct App {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: pzem::dbus::Waker,
    threads: Vec<JoinHandle<()>>,
    /// When reading `n` (1-based) was sent: `sent[n - 1]`.
    pub sent: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
}

impl App {
    /// Starts both threads; the service `NAME` is claimed before this returns.
    pub fn start(bus: &Bus, serial_busy: Duration) -> App {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let mut service = Service::new(bus, NAME, test_tree().build().unwrap()).unwrap();
        let power = service.tree().id("/Ac/Power").unwrap();
        let (mut waiter, waker) = Waiter::new().unwrap();
        let (tx, rx) = mpsc::channel::<u32>();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let dbus_thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut handler = test_handler;
                while !stop.load(Ordering::Acquire) {
                    let sources = [&service as &dyn Watchable];
                    waiter.wait(sources, Some(Duration::from_secs(30))).unwrap();
                    service.process(&mut handler).unwrap();
                    for n in rx.try_iter() {
                        service.set(power, f64::from(n));
                    }
                    service.flush().unwrap();
                }
            })
        };
        let serial_thread = {
            let (stop, sent, waker) = (Arc::clone(&stop), Arc::clone(&sent), waker.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(serial_busy); // stuck on the serial line
                    n += 1;
                    sent.lock().unwrap().push(std::time::Instant::now());
                    if tx.send(n).is_err() {
                        break;
                    }
                    waker.wake();
                }
            })
        };
        App {
            stop,
            waker,
            threads: vec![dbus_thread, serial_thread],
            sent,
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sorted durations → (p50, p99, max).
pub fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration, Duration) {
    d.sort_unstable();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}
