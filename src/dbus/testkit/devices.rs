//! Doubles of Victron devices that cannot be installed here, each a real service on the
//! bus, served from its own thread: a battery monitor, a real Multi's vebus service, the
//! system service, and a generic AC meter.
//!
//! They publish what venus-conventions.md describes for them (§3 mandatory paths, §4.3
//! battery, §4.4 vebus, §8 system outputs) and announce changes the way Victron's C++
//! drivers do through veutil: one `ItemsChanged` per batch, never `PropertiesChanged`
//! (§4.3), so a consumer that only listens to `PropertiesChanged` misses them, as it would
//! on a GX. Their paths are read-only (`SetValue` answers non-zero).

use crate::dbus::{Bus, BusError, Format, Kind, Service, TreeBuilder, Value, Waiter, Waker, Watchable, WriteOutcome};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

type Cmd = Box<dyn FnOnce(&mut Service) + Send>;

/// The instance of the real Multi in the measurements (`com.victronenergy.vebus.ttyS4`).
pub const MULTI_INSTANCE: i32 = 276;
/// Its `/Interfaces/Mk2/Connection`: an on-board port.
pub const MULTI_MK2_CONNECTION: &str = "/dev/ttyS4";
/// The system service's name.
pub const SYSTEM_SERVICE: &str = "com.victronenergy.system";

/// A device service served from its own thread until dropped (the name is then released
/// and the connection closed: the device is gone from the bus).
#[derive(Debug)]
pub struct DeviceDouble {
    name: String,
    tx: Option<mpsc::Sender<Cmd>>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

const KWH: Format = Format::number(2, "kWh");

fn mandatory(t: &mut TreeBuilder, process: &str, connection: &str, instance: i32, product_id: i64, product: &str) {
    t.add("/Mgmt/ProcessName", Kind::Str, Format::Plain).value(process);
    t.add("/Mgmt/ProcessVersion", Kind::Str, Format::Plain).value("double");
    t.add("/Mgmt/Connection", Kind::Str, Format::Plain).value(connection);
    t.add("/DeviceInstance", Kind::Int, Format::Plain)
        .value(i64::from(instance));
    t.add("/ProductId", Kind::Int, Format::Hex).value(product_id);
    t.add("/ProductName", Kind::Str, Format::Plain).value(product);
    t.add("/FirmwareVersion", Kind::Int, Format::Hex).value(0x0417i64);
    t.add("/HardwareVersion", Kind::Str, Format::Plain);
    t.add("/Connected", Kind::Int, Format::Plain).value(1i64);
    t.add("/CustomName", Kind::Str, Format::Plain).value("");
    t.add("/Serial", Kind::Str, Format::Plain).value("HQ00000TEST");
}

impl DeviceDouble {
    /// Serves `tree` as `name` on `bus` from a new thread; the name is claimed before this
    /// returns.
    pub fn start(bus: &Bus, name: &str, tree: TreeBuilder) -> Result<DeviceDouble, BusError> {
        let mut service = Service::new(bus, name, tree.build()?)?;
        let (mut waiter, waker) = Waiter::new()?;
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread = std::thread::Builder::new()
            .name("device-double".into())
            .spawn(move || {
                let mut refuse = |_: &str, _: &Value| WriteOutcome::Reject(1);
                loop {
                    let sources = [&service as &dyn Watchable];
                    if waiter.wait(sources, Some(Duration::from_secs(1))).is_err() {
                        return;
                    }
                    if service.process(&mut refuse).is_err() {
                        return; // bus gone
                    }
                    loop {
                        match rx.try_recv() {
                            Ok(cmd) => cmd(&mut service),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                let _ = service.release();
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(DeviceDouble {
            name: name.to_owned(),
            tx: Some(tx),
            waker,
            thread: Some(thread),
        })
    }

    /// A battery monitor (BMV/SmartShunt, §4.3): `/Dc/0/{Voltage,Current,Power,Temperature}`,
    /// `/Soc`, `/ConsumedAmphours`, `/TimeToGo` and `/History/{ChargedEnergy,DischargedEnergy}`
    /// (kWh, starting at `discharged_kwh` and 0), besides the mandatory paths.
    pub fn battery(bus: &Bus, name: &str, instance: i32, discharged_kwh: f64) -> Result<DeviceDouble, BusError> {
        let mut t = TreeBuilder::new();
        mandatory(
            &mut t,
            "/opt/victronenergy/vedirect-interface/vedirect-dbus",
            "VE.Direct port",
            instance,
            0xA389,
            "SmartShunt 500A/50mV",
        );
        t.add("/Dc/0/Voltage", Kind::Double, Format::number(2, "V")).value(52.4);
        t.add("/Dc/0/Current", Kind::Double, Format::number(1, "A")).value(0.0);
        t.add("/Dc/0/Power", Kind::Double, Format::number(0, "W")).value(0.0);
        t.add("/Dc/0/Temperature", Kind::Double, Format::number(1, "C"));
        t.add("/Soc", Kind::Double, Format::number(1, "%")).value(80.0);
        t.add("/ConsumedAmphours", Kind::Double, Format::number(1, "Ah"))
            .value(0.0);
        t.add("/TimeToGo", Kind::Double, Format::number(0, "s"));
        t.add("/History/ChargedEnergy", Kind::Double, KWH).value(0.0);
        t.add("/History/DischargedEnergy", Kind::Double, KWH)
            .value(discharged_kwh);
        DeviceDouble::start(bus, name, t)
    }

    /// A real Multi's vebus service as mk2-dbus publishes it for an older MultiPlus (§4.4):
    /// `/Interfaces/Mk2/Connection`, `/State`, `/Mode`, AC and DC measurements, and **no**
    /// `/Energy/*` counters.
    pub fn multi(bus: &Bus, name: &str, instance: i32, mk2_connection: &str) -> Result<DeviceDouble, BusError> {
        let mut t = TreeBuilder::new();
        mandatory(
            &mut t,
            "mk2-dbus",
            "VE.Bus",
            instance,
            0x2623,
            "MultiPlus 48/3000/35-50",
        );
        t.add("/Interfaces/Mk2/Connection", Kind::Str, Format::Plain)
            .value(mk2_connection);
        t.add("/State", Kind::Int, Format::Plain).value(3i64);
        t.add("/Mode", Kind::Int, Format::Plain).value(3i64);
        for p in ["/Ac/ActiveIn/L1/P", "/Ac/Out/L1/P"] {
            t.add(p, Kind::Double, Format::number(0, "W")).value(0.0);
        }
        for p in ["/Ac/ActiveIn/L1/I", "/Ac/Out/L1/I"] {
            t.add(p, Kind::Double, Format::number(1, "A")).value(0.0);
        }
        t.add("/Dc/0/Voltage", Kind::Double, Format::number(2, "V")).value(52.4);
        t.add("/Dc/0/Current", Kind::Double, Format::number(1, "A")).value(0.0);
        t.add("/Soc", Kind::Double, Format::number(1, "%")).value(80.0);
        DeviceDouble::start(bus, name, t)
    }

    /// `com.victronenergy.system` with the outputs a driver reads (§8):
    /// `/Dc/Battery/BatteryService` (`battery_service`, or invalid), `/ActiveBatteryService`
    /// and `/VebusService` (invalid until set).
    pub fn system(bus: &Bus, battery_service: Option<&str>) -> Result<DeviceDouble, BusError> {
        let mut t = TreeBuilder::new();
        t.add("/Mgmt/ProcessName", Kind::Str, Format::Plain)
            .value("dbus_systemcalc.py");
        t.add("/DeviceInstance", Kind::Int, Format::Plain).value(0i64);
        t.add("/Serial", Kind::Str, Format::Plain).value("02fc00000001");
        let service = t.add("/Dc/Battery/BatteryService", Kind::Str, Format::Plain);
        if let Some(s) = battery_service {
            service.value(s);
        }
        t.add("/ActiveBatteryService", Kind::Str, Format::Plain);
        t.add("/VebusService", Kind::Str, Format::Plain);
        DeviceDouble::start(bus, SYSTEM_SERVICE, t)
    }

    /// A single-phase AC meter of any class (§4.1): `/Ac/L1/Power`, `/Ac/Power` and
    /// `/Ac/Energy/Forward` (kWh, starting at `forward_kwh`).
    pub fn ac_meter(bus: &Bus, name: &str, instance: i32, forward_kwh: f64) -> Result<DeviceDouble, BusError> {
        let mut t = TreeBuilder::new();
        mandatory(&mut t, "meter-double", "double", instance, 0xFFFF, "AC meter");
        for p in ["/Ac/Power", "/Ac/L1/Power"] {
            t.add(p, Kind::Double, Format::number(0, "W")).value(0.0);
        }
        t.add("/Ac/Energy/Forward", Kind::Double, Format::number(3, "kWh"))
            .value(forward_kwh);
        DeviceDouble::start(bus, name, t)
    }

    /// The well-known name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the service's thread and returns its result (`None` if the thread is
    /// gone).
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Service) -> R + Send + 'static) -> Option<R> {
        let (rtx, rrx) = mpsc::channel();
        let cmd: Cmd = Box::new(move |s| {
            let _ = rtx.send(f(s));
        });
        self.tx.as_ref()?.send(cmd).ok()?;
        self.waker.wake();
        rrx.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// Sets these paths and announces the ones that changed in one `ItemsChanged`. An
    /// unknown path is an error and nothing is changed.
    pub fn set(&self, changes: &[(&str, Value)]) -> Result<(), BusError> {
        let changes: Vec<(String, Value)> = changes.iter().map(|(p, v)| ((*p).to_owned(), v.clone())).collect();
        self.with(move |s| {
            let mut ids = Vec::with_capacity(changes.len());
            for (path, _) in &changes {
                match s.tree().id(path) {
                    Some(id) => ids.push(id),
                    None => return Err(BusError::BadName(path.clone())),
                }
            }
            for (id, (_, value)) in ids.into_iter().zip(changes) {
                s.set(id, value);
            }
            s.flush().map(drop)
        })
        .ok_or(BusError::Disconnected)?
    }

    /// The current value of a path, as served.
    pub fn value(&self, path: &str) -> Option<Value> {
        let path = path.to_owned();
        self.with(move |s| s.tree().id(&path).map(|id| s.tree().value(id).clone()))
            .flatten()
    }
}

impl Drop for DeviceDouble {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
