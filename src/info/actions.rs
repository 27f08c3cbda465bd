//! What `pzem-info` does, over any [`Transport`]: identify and show a
//! meter, scan a line, change a setting and confirm it by reading back.
//!
//! Only reads are sent until the meter has been identified, so a write
//! never goes to a meter of the wrong family. Calibration (0x41) cannot be
//! sent: the library has no request for it.

use std::fmt;
use std::time::{Duration, Instant};

use crate::ac::AcParameters;
use crate::address::Address;
use crate::client::Client;
use crate::dc::{DcParameters, Shunt};
use crate::energy::max_plausible_increase_wh;
use crate::error::Error;
use crate::model::{Family, Model, ModelChoice};
use crate::reading::{Parameters, Reading};
use crate::transport::Transport;

use super::exit::Exit;
use super::options::{Action, ScanRange};
use super::report::{Change, ChangeReport, MeterReport, Report, ScanHit, ScanIssue, ScanReport};

/// Retries the client makes outside a scan's quick pass.
pub const RETRIES: u8 = 2;

/// Default reply timeout per address during a scan: a PZEM's turnaround
/// plus a 25-byte reply at 9600 baud fits, and 247 silent addresses take
/// about 30 s.
pub const SCAN_TIMEOUT: Duration = Duration::from_millis(100);

/// Wait after an energy reset before reading the counter back.
pub const RESET_SETTLE: Duration = Duration::from_millis(200);

/// How long a meter may take to show a reset counter (it refreshes its
/// registers about once a second).
const RESET_REFRESH: Duration = Duration::from_millis(1100);

/// The meter an action is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its address, or the general address 0xF8.
    pub address: Address,
    /// The model named with `-t`, or [`ModelChoice::Auto`].
    pub model: ModelChoice,
}

/// What an action was doing when a request failed; shown as text such as
/// `reading its parameters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reading the meter to tell AC from DC.
    Identify,
    /// Reading the meter's parameters.
    ReadParameters,
    /// Scanning the line.
    Scan,
    /// Making sure no meter answers at the new address yet.
    CheckNewAddress,
    /// Writing the new address and reading it back there.
    WriteAddress,
    /// Reading the meter at its new address after the change.
    ReadAtNewAddress,
    /// Sending the energy reset.
    ResetEnergy,
    /// Reading the energy counter after the reset.
    ReadEnergyBack,
    /// Writing the shunt range and reading it back.
    WriteShunt,
    /// Writing the power alarm threshold and reading it back.
    WritePowerAlarm,
    /// Writing the voltage alarm thresholds and reading them back.
    WriteVoltageAlarms,
    /// Reading the measurements after a parameter change.
    ReadAfterChange,
}

impl Step {
    /// Whether the step is part of moving the meter to a new address (so a
    /// silent meter may simply be answering elsewhere now).
    pub fn follows_address_change(self) -> bool {
        matches!(self, Step::WriteAddress | Step::ReadAtNewAddress)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Identify => "identifying the meter",
            Step::ReadParameters => "reading its parameters",
            Step::Scan => "scanning",
            Step::CheckNewAddress => "checking that the new address is free",
            Step::WriteAddress => "writing the new address and reading it back there",
            Step::ReadAtNewAddress => "reading the meter at its new address",
            Step::ResetEnergy => "resetting the energy counter",
            Step::ReadEnergyBack => "reading the energy counter back",
            Step::WriteShunt => "writing the shunt range and reading it back",
            Step::WritePowerAlarm => "writing the power alarm threshold and reading it back",
            Step::WriteVoltageAlarms => "writing the voltage alarm thresholds and reading them back",
            Step::ReadAfterChange => "reading the meter after the change",
        })
    }
}

/// Why an action failed.
#[derive(Debug)]
pub enum ActionError {
    /// A request failed.
    Device {
        /// Where it went.
        address: Address,
        /// What was being done.
        step: Step,
        /// Whether the meter had answered earlier in this run.
        answered_before: bool,
        /// The failure.
        error: Error,
    },
    /// The action is for the other family (nothing was written).
    WrongFamily {
        /// The meter's address.
        address: Address,
        /// What it is.
        model: Model,
        /// The action's name.
        action: &'static str,
        /// The family the action needs.
        needs: Family,
    },
    /// Another meter already answers at the new address (nothing was written).
    AddressTaken {
        /// The address asked for.
        address: Address,
        /// The meter answering there.
        model: Model,
    },
    /// A scan found nothing.
    NothingFound(ScanRange),
    /// The confirmation was declined.
    Cancelled,
}

impl ActionError {
    /// The exit this failure leads to.
    pub fn exit(&self) -> Exit {
        match self {
            ActionError::Device { error, .. } => Exit::of_error(error),
            ActionError::WrongFamily { .. } | ActionError::AddressTaken { .. } => Exit::Usage,
            ActionError::NothingFound(_) => Exit::NoAnswer,
            ActionError::Cancelled => Exit::Cancelled,
        }
    }

    /// The address concerned, if one.
    pub fn address(&self) -> Option<Address> {
        match self {
            ActionError::Device { address, .. }
            | ActionError::WrongFamily { address, .. }
            | ActionError::AddressTaken { address, .. } => Some(*address),
            ActionError::NothingFound(_) | ActionError::Cancelled => None,
        }
    }
}

fn failed(address: Address, step: Step, answered_before: bool) -> impl FnOnce(Error) -> ActionError {
    move |error| ActionError::Device {
        address,
        step,
        answered_before,
        error,
    }
}

/// Identify the meter and read its measurements and parameters.
pub fn show<T: Transport>(client: &mut Client<T>, target: Target) -> Result<MeterReport, ActionError> {
    let address = target.address;
    let reading = client
        .probe(address)
        .map_err(failed(address, Step::Identify, false))?
        .ok_or(ActionError::Device {
            address,
            step: Step::Identify,
            answered_before: false,
            error: Error::NoAnswer,
        })?;
    let parameters =
        client
            .read_parameters(address, reading.family())
            .map_err(failed(address, Step::ReadParameters, true))?;
    Ok(MeterReport {
        queried: address,
        model: target.model.resolve(Some(reading.family())),
        reading,
        parameters,
    })
}

/// The parameters of an AC meter, or (for a DC meter) the refusal of
/// `action`, which is for AC meters only.
fn ac_params(meter: &MeterReport, action: &Action) -> Result<AcParameters, ActionError> {
    match meter.parameters {
        Parameters::Ac(p) => Ok(p),
        Parameters::Dc(_) => Err(wrong_family(meter, action, Family::Ac)),
    }
}

/// The parameters of a DC meter, or (for an AC meter) the refusal of
/// `action`, which is for DC meters only.
fn dc_params(meter: &MeterReport, action: &Action) -> Result<DcParameters, ActionError> {
    match meter.parameters {
        Parameters::Dc(p) => Ok(p),
        Parameters::Ac(_) => Err(wrong_family(meter, action, Family::Dc)),
    }
}

fn wrong_family(meter: &MeterReport, action: &Action, needs: Family) -> ActionError {
    ActionError::WrongFamily {
        address: meter.queried,
        model: meter.model,
        action: action.name(),
        needs,
    }
}

/// Scan `range`: one quick read per address (`quick_timeout`, no
/// retries); an address whose reply was garbled or refused is checked
/// again with `timeout` and retries. `progress` is told each address
/// before it is tried. The client's timeout is `timeout` afterwards.
pub fn scan<T: Transport>(
    client: &mut Client<T>,
    range: ScanRange,
    choice: ModelChoice,
    quick_timeout: Duration,
    timeout: Duration,
    mut progress: impl FnMut(Address),
) -> Result<ScanReport, ActionError> {
    let start = Instant::now();
    let mut found = Vec::new();
    let mut issues = Vec::new();
    let hit = |address: Address, reading: Reading| ScanHit {
        address,
        model: choice.resolve(Some(reading.family())),
        reading,
    };
    for address in range.addresses() {
        progress(address);
        client.set_retries(0);
        client.transport_mut().set_timeout(quick_timeout);
        let first = client.probe(address);
        client.set_retries(RETRIES);
        client.transport_mut().set_timeout(timeout);
        let first_error = match first {
            Ok(Some(reading)) => {
                found.push(hit(address, reading));
                continue;
            }
            Ok(None) => continue,
            Err(e @ Error::Io(_)) => return Err(failed(address, Step::Scan, false)(e)),
            Err(e) => e,
        };
        match client.probe(address) {
            Ok(Some(reading)) => found.push(hit(address, reading)),
            Ok(None) => issues.push(ScanIssue {
                address,
                problem: format!("one bad reply ({first_error}), then silence: noise on the line?"),
                garbled: first_error.is_garbled(),
            }),
            Err(e @ Error::Io(_)) => return Err(failed(address, Step::Scan, false)(e)),
            Err(e) => issues.push(scan_issue(address, &e)),
        }
    }
    let elapsed = start.elapsed();
    if found.is_empty() && issues.is_empty() {
        return Err(ActionError::NothingFound(range));
    }
    Ok(ScanReport {
        from: range.from,
        to: range.to,
        found,
        issues,
        elapsed,
    })
}

fn scan_issue(address: Address, e: &Error) -> ScanIssue {
    let problem = if e.is_garbled() {
        format!("garbled replies ({e}): two meters may share this address, or noise or wrong stop bits")
    } else if let Some(code) = e.exception() {
        format!("answers but refused both the AC and the DC read: {code} (not a PZEM meter?)")
    } else {
        format!("answered once, then: {e}")
    };
    ScanIssue {
        address,
        problem,
        garbled: e.is_garbled(),
    }
}

/// Give the meter the address `new`, then read it back at `new`. Refuses
/// (writing nothing) when another meter already answers at `new`.
pub fn set_address<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    new: Address,
) -> Result<ChangeReport, ActionError> {
    let before = show(client, target)?;
    let from = before.stored_address();
    if from == new.get() {
        return Ok(ChangeReport {
            change: Change::Address {
                from,
                to: from,
                written: false,
            },
            meter: before,
        });
    }
    match client.probe(new) {
        Ok(None) => {}
        Ok(Some(reading)) => {
            return Err(ActionError::AddressTaken {
                address: new,
                model: target.model.resolve(Some(reading.family())),
            });
        }
        Err(e) => return Err(failed(new, Step::CheckNewAddress, false)(e)),
    }
    client
        .set_address(target.address, new)
        .map_err(failed(target.address, Step::WriteAddress, true))?;
    let after =
        show(client, Target { address: new, ..target }).map_err(|e| still_answered(e, Step::ReadAtNewAddress))?;
    Ok(ChangeReport {
        change: Change::Address {
            from,
            to: new.get(),
            written: true,
        },
        meter: after,
    })
}

fn still_answered(e: ActionError, step: Step) -> ActionError {
    match e {
        ActionError::Device { address, error, .. } => ActionError::Device {
            address,
            step,
            answered_before: true,
            error,
        },
        other => other,
    }
}

/// Reset the energy counter once `confirm` agrees (it sees the meter as it
/// is), then read the counter back: it must be no more than the meter can
/// have counted since the reset.
pub fn reset_energy<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    confirm: impl FnOnce(&MeterReport) -> bool,
) -> Result<ChangeReport, ActionError> {
    let before = show(client, target)?;
    if !confirm(&before) {
        return Err(ActionError::Cancelled);
    }
    let address = target.address;
    let family = before.family();
    let sent = Instant::now();
    client
        .reset_energy(address)
        .map_err(failed(address, Step::ResetEnergy, true))?;
    std::thread::sleep(RESET_SETTLE);
    let mut reading = client
        .read(address, family)
        .map_err(failed(address, Step::ReadEnergyBack, true))?;
    let allowed = |sent: Instant| max_plausible_increase_wh(family, sent.elapsed());
    if u64::from(reading.energy_wh()) > allowed(sent) {
        // The meter refreshes its registers about once a second.
        std::thread::sleep(RESET_REFRESH);
        reading = client
            .read(address, family)
            .map_err(failed(address, Step::ReadEnergyBack, true))?;
        if u64::from(reading.energy_wh()) > allowed(sent) {
            return Err(ActionError::Device {
                address,
                step: Step::ReadEnergyBack,
                answered_before: true,
                error: Error::Verify {
                    what: "energy counter (Wh)",
                    wrote: 0,
                    read: reading.energy_wh(),
                },
            });
        }
    }
    Ok(ChangeReport {
        change: Change::EnergyReset {
            before_wh: before.reading.energy_wh(),
            after_wh: reading.energy_wh(),
        },
        meter: MeterReport { reading, ..before },
    })
}

fn after_write<T: Transport>(
    client: &mut Client<T>,
    before: &MeterReport,
    parameters: Parameters,
) -> Result<MeterReport, ActionError> {
    let reading =
        client
            .read(before.queried, before.family())
            .map_err(failed(before.queried, Step::ReadAfterChange, true))?;
    Ok(MeterReport {
        reading,
        parameters,
        ..*before
    })
}

/// Set a PZEM-017's shunt range and read it back.
pub fn set_shunt<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    shunt: Shunt,
) -> Result<ChangeReport, ActionError> {
    let before = show(client, target)?;
    let old = dc_params(&before, &Action::SetShunt(shunt))?;
    let params = client
        .set_shunt(target.address, shunt)
        .map_err(failed(target.address, Step::WriteShunt, true))?;
    // Client::set_shunt fails when the meter reads back no shunt range;
    // should it ever not, say so rather than report the value asked for.
    let after = params.shunt.ok_or_else(|| {
        failed(target.address, Step::WriteShunt, true)(Error::UnexpectedValue(
            "the meter read back no shunt range".into(),
        ))
    })?;
    let meter = after_write(client, &before, Parameters::Dc(params))?;
    Ok(ChangeReport {
        change: Change::Shunt {
            before: old.shunt,
            after,
        },
        meter,
    })
}

/// Set an AC meter's power alarm threshold (W) and read it back.
pub fn set_power_alarm<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    watts: u16,
) -> Result<ChangeReport, ActionError> {
    let before = show(client, target)?;
    let old = ac_params(&before, &Action::SetPowerAlarm(watts))?;
    let params = client
        .set_power_alarm(target.address, u32::from(watts))
        .map_err(failed(target.address, Step::WritePowerAlarm, true))?;
    let meter = after_write(client, &before, Parameters::Ac(params))?;
    Ok(ChangeReport {
        change: Change::PowerAlarm {
            before_w: old.power_alarm_w,
            after_w: params.power_alarm_w,
        },
        meter,
    })
}

/// Set a DC meter's voltage alarm thresholds (0.01 V) and read them back.
pub fn set_voltage_alarms<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    high_cv: u16,
    low_cv: u16,
) -> Result<ChangeReport, ActionError> {
    let before = show(client, target)?;
    let old = dc_params(&before, &Action::SetVoltageAlarms { high_cv, low_cv })?;
    let params = client
        .set_voltage_alarms(target.address, f64::from(high_cv) / 100.0, f64::from(low_cv) / 100.0)
        .map_err(failed(target.address, Step::WriteVoltageAlarms, true))?;
    let meter = after_write(client, &before, Parameters::Dc(params))?;
    Ok(ChangeReport {
        change: Change::VoltageAlarms {
            before_cv: (old.high_voltage_alarm_cv, old.low_voltage_alarm_cv),
            after_cv: (params.high_voltage_alarm_cv, params.low_voltage_alarm_cv),
        },
        meter,
    })
}

/// How a run goes beyond the action itself.
pub struct Hooks<C, P> {
    /// Asked before the energy counter is reset.
    pub confirm: C,
    /// Told each address a scan tries.
    pub progress: P,
    /// Reply timeout per address in a scan's quick pass.
    pub scan_timeout: Duration,
}

/// Run `action` on `target` (the address is ignored by a scan).
pub fn run<T: Transport>(
    client: &mut Client<T>,
    target: Target,
    action: Action,
    hooks: Hooks<impl FnOnce(&MeterReport) -> bool, impl FnMut(Address)>,
) -> Result<Report, ActionError> {
    client.set_retries(RETRIES);
    match action {
        Action::Show => show(client, target).map(Report::Meter),
        Action::Scan(range) => {
            let timeout = client.transport().timeout();
            scan(client, range, target.model, hooks.scan_timeout, timeout, hooks.progress).map(Report::Scan)
        }
        Action::SetAddress(new) => set_address(client, target, new).map(Report::Change),
        Action::ResetEnergy => reset_energy(client, target, hooks.confirm).map(Report::Change),
        Action::SetShunt(s) => set_shunt(client, target, s).map(Report::Change),
        Action::SetPowerAlarm(w) => set_power_alarm(client, target, w).map(Report::Change),
        Action::SetVoltageAlarms { high_cv, low_cv } => {
            set_voltage_alarms(client, target, high_cv, low_cv).map(Report::Change)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::model::StopBits;
    use crate::sim::{SimBus, SimMeter};
    use crate::transport::{Port, RtuTransport};

    /// The simulated line in memory: no pty, no threads, no waiting.
    struct BusPort {
        bus: SimBus,
        pending: Vec<u8>,
    }

    impl Port for BusPort {
        fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.pending = self.bus.respond_rtu(bytes, Instant::now()).bytes;
            Ok(())
        }

        fn receive(&mut self, buf: &mut [u8], _timeout: Duration) -> io::Result<usize> {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }

        fn discard_input(&mut self) -> io::Result<()> {
            self.pending.clear();
            Ok(())
        }
    }

    type TestClient = Client<RtuTransport<BusPort>>;

    fn client(meters: Vec<SimMeter>) -> TestClient {
        let port = BusPort {
            bus: SimBus::new(meters, 3),
            pending: Vec::new(),
        };
        let mut c = Client::new(RtuTransport::new(port, StopBits::Two));
        c.set_settle_time(Duration::ZERO);
        c
    }

    fn bus(c: &mut TestClient) -> &mut SimBus {
        &mut c.transport_mut().port_mut().bus
    }

    fn mixed() -> TestClient {
        client(vec![
            SimMeter::new(Model::Pzem016, 1),
            SimMeter::new(Model::Pzem014, 2),
            SimMeter::new(Model::Pzem017, 3),
        ])
    }

    fn at(n: u32) -> Target {
        Target {
            address: Address::unit_or_general(n).unwrap(),
            model: ModelChoice::Auto,
        }
    }

    #[test]
    fn show_tells_ac_from_dc() {
        let mut c = mixed();
        let m = show(&mut c, at(1)).unwrap();
        assert_eq!(
            (m.family(), m.model, m.stored_address()),
            (Family::Ac, Model::GenericAc, 1)
        );
        let m = show(
            &mut c,
            Target {
                model: ModelChoice::Known(Model::Pzem017),
                ..at(3)
            },
        )
        .unwrap();
        assert_eq!((m.family(), m.model), (Family::Dc, Model::Pzem017));
        let Parameters::Dc(p) = m.parameters else { panic!() };
        assert_eq!(p.shunt, Some(Shunt::A100));
    }

    #[test]
    fn scan_finds_every_meter_and_flags_duplicates() {
        let mut c = mixed();
        bus(&mut c).meters.push(SimMeter::new(Model::Pzem016, 5));
        // Two meters at one address collide only where their replies differ: identical
        // new meters read quickly one after the other can send the same bytes (their
        // values drift with the time between reads), so give them different counters.
        let mut twin = SimMeter::new(Model::Pzem016, 5);
        twin.set_energy_wh(12_345);
        bus(&mut c).meters.push(twin);
        let mut tried = 0;
        let range = ScanRange { from: 1, to: 10 };
        let zero = Duration::from_millis(5);
        let s = scan(&mut c, range, ModelChoice::Auto, zero, zero, |_| tried += 1).unwrap();
        assert_eq!(tried, 10);
        let found: Vec<(u8, Family)> = s.found.iter().map(|h| (h.address.get(), h.reading.family())).collect();
        assert_eq!(found, vec![(1, Family::Ac), (2, Family::Ac), (3, Family::Dc)]);
        assert_eq!(s.issues.len(), 1);
        assert_eq!(s.issues[0].address.get(), 5);
        assert!(s.issues[0].garbled && s.issues[0].problem.contains("share this address"));
        let empty = ScanRange { from: 20, to: 30 };
        assert!(matches!(
            scan(&mut c, empty, ModelChoice::Auto, zero, zero, |_| {}),
            Err(ActionError::NothingFound(_))
        ));
    }

    #[test]
    fn writes_check_the_family_first() {
        let mut c = mixed();
        let before = bus(&mut c).requests();
        let err = set_shunt(&mut c, at(1), Shunt::A200).unwrap_err();
        assert!(
            matches!(err, ActionError::WrongFamily { needs: Family::Dc, .. }),
            "{err:?}"
        );
        assert_eq!(err.exit(), Exit::Usage);
        let err = set_power_alarm(&mut c, at(3), 100).unwrap_err();
        assert!(
            matches!(err, ActionError::WrongFamily { needs: Family::Ac, .. }),
            "{err:?}"
        );
        let err = set_voltage_alarms(&mut c, at(2), 1440, 1150).unwrap_err();
        assert!(
            matches!(err, ActionError::WrongFamily { needs: Family::Dc, .. }),
            "{err:?}"
        );
        // Only the reads that identified the meters: AC 2 (read, params)
        // twice, DC 3 (AC read refused, DC read, params).
        assert_eq!(bus(&mut c).requests() - before, 7);
    }

    #[test]
    fn changes_are_read_back() {
        let mut c = mixed();
        let r = set_shunt(&mut c, at(3), Shunt::A300).unwrap();
        assert_eq!(
            r.change,
            Change::Shunt {
                before: Some(Shunt::A100),
                after: Shunt::A300
            }
        );
        assert_eq!(bus(&mut c).meter_mut(3).unwrap().shunt(), Shunt::A300);
        let r = set_voltage_alarms(&mut c, at(3), 1440, 1150).unwrap();
        assert_eq!(
            r.change,
            Change::VoltageAlarms {
                before_cv: (30_000, 700),
                after_cv: (1440, 1150)
            }
        );
        let r = set_power_alarm(&mut c, at(2), 1500).unwrap();
        assert_eq!(
            r.change,
            Change::PowerAlarm {
                before_w: 23_000,
                after_w: 1500
            }
        );
        let r = set_address(&mut c, at(2), Address::unit(20).unwrap()).unwrap();
        assert_eq!(
            r.change,
            Change::Address {
                from: 2,
                to: 20,
                written: true
            }
        );
        assert_eq!(r.meter.stored_address(), 20);
        assert!(bus(&mut c).meter_mut(20).is_some());
    }

    #[test]
    fn set_address_refuses_a_taken_address() {
        let mut c = mixed();
        let err = set_address(&mut c, at(1), Address::unit(3).unwrap()).unwrap_err();
        assert!(matches!(err, ActionError::AddressTaken { .. }), "{err:?}");
        assert_eq!(bus(&mut c).meter_mut(1).unwrap().address, 1);
        let r = set_address(&mut c, at(1), Address::unit(1).unwrap()).unwrap();
        assert!(matches!(r.change, Change::Address { written: false, .. }));
    }

    #[test]
    fn reset_energy_asks_then_confirms() {
        let mut c = mixed();
        bus(&mut c).meter_mut(3).unwrap().set_energy_wh(50_000);
        let err = reset_energy(&mut c, at(3), |m| {
            assert_eq!(m.reading.energy_wh(), 50_000);
            false
        })
        .unwrap_err();
        assert!(matches!(err, ActionError::Cancelled));
        assert_eq!(bus(&mut c).meter_mut(3).unwrap().energy_wh(), 50_000);
        let r = reset_energy(&mut c, at(3), |_| true).unwrap();
        let Change::EnergyReset { before_wh, after_wh } = r.change else {
            panic!()
        };
        assert_eq!(before_wh, 50_000);
        assert!(after_wh < 10, "{after_wh}");
    }

    #[test]
    fn silence_and_refusals() {
        let mut c = mixed();
        c.transport_mut().set_timeout(Duration::from_millis(5));
        bus(&mut c).meter_mut(1).unwrap().silent = true;
        let err = show(&mut c, at(1)).unwrap_err();
        assert!(matches!(
            err,
            ActionError::Device {
                error: Error::NoAnswer,
                ..
            }
        ));
        assert_eq!(err.exit(), Exit::NoAnswer);
        let mut c = client(vec![SimMeter::new(Model::Pzem003, 4)]);
        let err = set_shunt(&mut c, at(4), Shunt::A50).unwrap_err();
        assert_eq!(err.exit(), Exit::Refused, "{err:?}");
        let mut c = mixed();
        let err = show(&mut c, at(0xF8)).unwrap_err();
        assert!(
            matches!(&err, ActionError::Device { error, .. } if error.is_garbled()),
            "{err:?}"
        );
    }
}
