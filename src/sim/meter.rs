//! One simulated meter: its registers, parameters and behaviour.

use std::time::Duration;

use crate::ac::{self, AcReading};
use crate::dc::{self, DcReading, Shunt};
use crate::frame::ExceptionCode;
use crate::model::{Family, Model};

use super::rng::Rng;

/// A simulated PZEM meter. Values move plausibly over time unless frozen,
/// and the energy counter integrates power over time as a real meter does.
#[derive(Clone, Debug)]
pub struct SimMeter {
    model: Model,
    /// The address it answers at (changes when a client writes register 0x0002).
    pub address: u8,
    /// When set, the meter does not answer at all (an AC meter without mains).
    pub silent: bool,
    /// When set, measurements stay where they are (energy still integrates).
    pub frozen: bool,
    ac: AcReading,
    dc: DcReading,
    energy_acc_wh: f64,
    power_alarm_w: u16,
    high_alarm_cv: u16,
    low_alarm_cv: u16,
    shunt: Shunt,
    target_w: f64,
}

/// What the meter does with a request PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeterReply {
    /// Reply with this PDU (function code and data).
    Pdu(Vec<u8>),
    /// Reply with an exception for the request's function.
    Exception(ExceptionCode),
}

impl SimMeter {
    /// A meter of `model` at `address`, with typical starting values.
    pub fn new(model: Model, address: u8) -> SimMeter {
        let mut m = SimMeter {
            model,
            address,
            silent: false,
            frozen: false,
            ac: AcReading {
                voltage_dv: 2300,
                current_ma: 0,
                power_dw: 0,
                energy_wh: 0,
                frequency_dhz: 500,
                power_factor_centi: 95,
                power_alarm: false,
            },
            dc: DcReading {
                voltage_cv: 1320,
                ..Default::default()
            },
            energy_acc_wh: 0.0,
            power_alarm_w: 23_000,
            high_alarm_cv: 30_000,
            low_alarm_cv: 700,
            shunt: Shunt::A100,
            target_w: 0.0,
        };
        m.target_w = match model.family() {
            Family::Ac => 400.0 + 150.0 * f64::from(address % 7),
            Family::Dc => 60.0 + 25.0 * f64::from(address % 5),
        };
        m.set_power(m.target_w);
        m
    }

    /// The model.
    pub fn model(&self) -> Model {
        self.model
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.model.family()
    }

    /// The current AC registers (meaningful for AC meters).
    pub fn ac(&self) -> AcReading {
        self.ac
    }

    /// The current DC registers (meaningful for DC meters).
    pub fn dc(&self) -> DcReading {
        self.dc
    }

    /// The energy counter in Wh.
    pub fn energy_wh(&self) -> u32 {
        match self.family() {
            Family::Ac => self.ac.energy_wh,
            Family::Dc => self.dc.energy_wh,
        }
    }

    /// Set the energy counter (e.g. to start near a wrap, or to simulate a
    /// replaced meter).
    pub fn set_energy_wh(&mut self, wh: u32) {
        self.energy_acc_wh = f64::from(wh);
        self.ac.energy_wh = wh;
        self.dc.energy_wh = wh;
    }

    /// Set the AC measurements directly (energy is kept from `reading` too).
    pub fn set_ac(&mut self, reading: AcReading) {
        self.ac = reading;
        self.energy_acc_wh = f64::from(reading.energy_wh);
    }

    /// Set the DC measurements directly (energy is kept from `reading` too).
    pub fn set_dc(&mut self, reading: DcReading) {
        self.dc = reading;
        self.energy_acc_wh = f64::from(reading.energy_wh);
    }

    /// Power alarm threshold, W (AC).
    pub fn power_alarm_w(&self) -> u16 {
        self.power_alarm_w
    }

    /// Voltage alarm thresholds (high, low), 0.01 V (DC).
    pub fn voltage_alarms_cv(&self) -> (u16, u16) {
        (self.high_alarm_cv, self.low_alarm_cv)
    }

    /// Shunt range (PZEM-017).
    pub fn shunt(&self) -> Shunt {
        self.shunt
    }

    fn set_power(&mut self, watts: f64) {
        let watts = watts.max(0.0);
        match self.family() {
            Family::Ac => {
                let v = self.ac.voltage_v().max(1.0);
                let pf = f64::from(self.ac.power_factor_centi.max(1)) / 100.0;
                self.ac.power_dw = (watts * 10.0).round() as u32;
                self.ac.current_ma = (watts / (v * pf) * 1000.0).round() as u32;
            }
            Family::Dc => {
                let v = self.dc.voltage_v().max(0.01);
                let amps = (watts / v).min(f64::from(self.shunt.amps()));
                self.dc.current_ca = (amps * 100.0).round() as u16;
                self.dc.power_dw = (amps * v * 10.0).round() as u32;
            }
        }
    }

    /// Let `dt` pass: values wander (unless frozen), energy integrates.
    pub fn advance(&mut self, dt: Duration, rng: &mut Rng) {
        let power = match self.family() {
            Family::Ac => self.ac.power_w(),
            Family::Dc => self.dc.power_w(),
        };
        self.energy_acc_wh += power * dt.as_secs_f64() / 3600.0;
        let energy = self.energy_acc_wh.min(f64::from(u32::MAX)) as u32;
        self.ac.energy_wh = energy;
        self.dc.energy_wh = energy;
        if !self.frozen {
            let step = dt.as_secs_f64().min(5.0);
            match self.family() {
                Family::Ac => {
                    let v = (f64::from(self.ac.voltage_dv) + rng.signed() * 15.0 * step).clamp(2200.0, 2450.0);
                    self.ac.voltage_dv = v as u16;
                    let f = (f64::from(self.ac.frequency_dhz) + rng.signed() * 1.5 * step).clamp(498.0, 502.0);
                    self.ac.frequency_dhz = f.round() as u16;
                    let pf = (f64::from(self.ac.power_factor_centi) + rng.signed() * 2.0 * step).clamp(85.0, 100.0);
                    self.ac.power_factor_centi = pf.round() as u16;
                }
                Family::Dc => {
                    let v = (f64::from(self.dc.voltage_cv) + rng.signed() * 8.0 * step).clamp(1180.0, 1460.0);
                    self.dc.voltage_cv = v as u16;
                }
            }
            let watts = (power + rng.signed() * self.target_w * 0.05 * step + (self.target_w - power) * 0.1 * step)
                .clamp(0.0, self.target_w * 3.0);
            self.set_power(watts);
        }
        self.ac.power_alarm = self.ac.power_w() > f64::from(self.power_alarm_w);
        self.dc.high_voltage_alarm = self.dc.voltage_cv > self.high_alarm_cv;
        self.dc.low_voltage_alarm = self.dc.voltage_cv < self.low_alarm_cv;
    }

    fn input_registers(&self) -> ([u16; 10], usize) {
        let mut regs = [0u16; 10];
        match self.family() {
            Family::Ac => {
                regs = self.ac.to_registers();
                (regs, 10)
            }
            Family::Dc => {
                regs[..8].copy_from_slice(&self.dc.to_registers());
                (regs, 8)
            }
        }
    }

    fn holding_registers(&self) -> ([u16; 4], std::ops::Range<u16>) {
        match self.model {
            Model::Pzem003 => (
                [self.high_alarm_cv, self.low_alarm_cv, u16::from(self.address), 0],
                0..3,
            ),
            m if m.family() == Family::Dc => (
                [
                    self.high_alarm_cv,
                    self.low_alarm_cv,
                    u16::from(self.address),
                    self.shunt.code(),
                ],
                0..4,
            ),
            _ => ([0, self.power_alarm_w, u16::from(self.address), 0], 1..3),
        }
    }

    /// Answer a request PDU (function code and data). Register reads
    /// outside the map, unknown functions and bad values get exceptions as
    /// the manuals describe.
    pub fn handle(&mut self, pdu: &[u8]) -> MeterReply {
        let word = |i: usize| u16::from_be_bytes([pdu[i], pdu[i + 1]]);
        match (pdu.first().copied(), pdu.len()) {
            (Some(f @ (0x03 | 0x04)), 5) => {
                let (start, count) = (word(1), word(3));
                let (regs, range): ([u16; 10], std::ops::Range<u16>) = if f == 0x04 {
                    let (r, n) = self.input_registers();
                    (r, 0..n as u16)
                } else {
                    let (h, range) = self.holding_registers();
                    let mut r = [0u16; 10];
                    r[..4].copy_from_slice(&h);
                    (r, range)
                };
                let end = u32::from(start) + u32::from(count);
                if count == 0 || start < range.start || end > u32::from(range.end) {
                    return MeterReply::Exception(ExceptionCode::IllegalDataAddress);
                }
                let mut out = Vec::with_capacity(2 + 2 * usize::from(count));
                out.push(f);
                out.push((2 * count) as u8);
                for r in start..start + count {
                    out.extend_from_slice(&regs[usize::from(r)].to_be_bytes());
                }
                MeterReply::Pdu(out)
            }
            (Some(0x06), 5) => {
                let (reg, value) = (word(1), word(3));
                match self.write(reg, value) {
                    Ok(()) => MeterReply::Pdu(pdu.to_vec()),
                    Err(code) => MeterReply::Exception(code),
                }
            }
            (Some(0x42), 1) => {
                self.set_energy_wh(0);
                MeterReply::Pdu(pdu.to_vec())
            }
            _ => MeterReply::Exception(ExceptionCode::IllegalFunction),
        }
    }

    fn write(&mut self, reg: u16, value: u16) -> Result<(), ExceptionCode> {
        let bad = ExceptionCode::IllegalDataValue;
        let (_, range) = self.holding_registers();
        if !range.contains(&reg) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match (self.family(), reg) {
            (_, 0x0002) => {
                if !(1..=247).contains(&value) {
                    return Err(bad);
                }
                self.address = value as u8;
            }
            (Family::Ac, ac::REG_POWER_ALARM) => self.power_alarm_w = value,
            (Family::Dc, dc::REG_HIGH_VOLTAGE_ALARM) => {
                if !(dc::MIN_HIGH_ALARM_CV..=dc::MAX_ALARM_CV).contains(&value) {
                    return Err(bad);
                }
                self.high_alarm_cv = value;
            }
            (Family::Dc, dc::REG_LOW_VOLTAGE_ALARM) => {
                if !(dc::MIN_LOW_ALARM_CV..=dc::MAX_ALARM_CV).contains(&value) {
                    return Err(bad);
                }
                self.low_alarm_cv = value;
            }
            (Family::Dc, dc::REG_SHUNT) => self.shunt = Shunt::from_code(value).map_err(|_| bad)?,
            _ => return Err(ExceptionCode::IllegalDataAddress),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;
    use crate::frame::{Registers, Reply, Request};

    fn ask(m: &mut SimMeter, req: Request) -> Result<Vec<u8>, ExceptionCode> {
        let frame = req.rtu_frame(Address::FACTORY_DEFAULT);
        let b = frame.as_bytes();
        match m.handle(&b[1..b.len() - 2]) {
            MeterReply::Pdu(p) => Ok(p),
            MeterReply::Exception(c) => Err(c),
        }
    }

    #[test]
    fn ac_meter_serves_its_registers() {
        let mut m = SimMeter::new(Model::Pzem016, 1);
        let req = Request::read_input_registers(0, 10).unwrap();
        let pdu = ask(&mut m, req).unwrap();
        let Ok(Reply::Registers(regs)) = req.decode_pdu(&pdu) else {
            panic!()
        };
        assert_eq!(AcReading::from_registers(&regs).unwrap(), m.ac());
        assert_eq!(
            ask(&mut m, Request::read_input_registers(0, 11).unwrap()),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ask(&mut m, Request::read_holding_registers(0, 1).unwrap()),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn dc_meter_refuses_ac_read_and_takes_parameters() {
        let mut m = SimMeter::new(Model::Pzem017, 3);
        assert_eq!(
            ask(&mut m, Request::read_input_registers(0, 10).unwrap()),
            Err(ExceptionCode::IllegalDataAddress)
        );
        ask(&mut m, Request::write_register(3, 2)).unwrap();
        assert_eq!(m.shunt(), Shunt::A200);
        assert_eq!(
            ask(&mut m, Request::write_register(3, 9)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            ask(&mut m, Request::write_register(0, 100)),
            Err(ExceptionCode::IllegalDataValue)
        );
        ask(&mut m, Request::write_register(2, 9)).unwrap();
        assert_eq!(m.address, 9);
        let req = Request::read_holding_registers(0, 4).unwrap();
        let pdu = ask(&mut m, req).unwrap();
        let Ok(Reply::Registers(regs)) = req.decode_pdu(&pdu) else {
            panic!()
        };
        let p = crate::DcParameters::from_registers(&Registers::new(0, &pdu[2..])).unwrap();
        assert_eq!((regs.len(), p.address, p.shunt), (4, 9, Some(Shunt::A200)));
    }

    #[test]
    fn pzem003_has_no_shunt_register() {
        let mut m = SimMeter::new(Model::Pzem003, 1);
        let err = Request::read_holding_registers(0, 4).unwrap();
        assert_eq!(ask(&mut m, err), Err(ExceptionCode::IllegalDataAddress));
        assert!(ask(&mut m, Request::read_holding_registers(0, 3).unwrap()).is_ok());
    }

    #[test]
    fn energy_integrates_and_resets() {
        let mut m = SimMeter::new(Model::Pzem016, 1);
        m.frozen = true;
        m.set_ac(AcReading {
            power_dw: 36_000,
            voltage_dv: 2300,
            ..m.ac()
        });
        let mut rng = Rng::new(1);
        m.advance(Duration::from_secs(10), &mut rng);
        assert_eq!(m.energy_wh(), 10);
        ask(&mut m, Request::reset_energy()).unwrap();
        assert_eq!(m.energy_wh(), 0);
    }

    #[test]
    fn calibration_is_refused() {
        let mut m = SimMeter::new(Model::Pzem016, 1);
        assert_eq!(
            m.handle(&[0x41, 0x37, 0x21]),
            MeterReply::Exception(ExceptionCode::IllegalFunction)
        );
    }

    #[test]
    fn values_wander_within_bounds() {
        let mut m = SimMeter::new(Model::Pzem016, 2);
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            m.advance(Duration::from_secs(1), &mut rng);
            let r = m.ac();
            assert!((220.0..=245.0).contains(&r.voltage_v()));
            assert!((49.8..=50.2).contains(&r.frequency_hz()));
        }
    }
}
