//! Typed operations on PZEM meters over any [`Transport`].

use std::time::Duration;

use crate::ac::{self, AcParameters, AcReading};
use crate::address::Address;
use crate::dc::{self, DcParameters, DcReading, Shunt};
use crate::error::Error;
use crate::frame::{ExceptionCode, FrameError, MAX_RTU_FRAME, Registers, Reply, Request};
use crate::model::Family;
use crate::transport::Transport;

// Kept here so that `crate::client::Reading` and `pzem::client::Parameters` still
// resolve: the types themselves are sans-IO and live in `crate::reading`.
pub(crate) use crate::reading::{Parameters, Reading};

/// Requests to meters, with bounded retries of transient failures (no
/// answer, garbled reply). Refusals and verification failures are never
/// retried.
///
/// Allocation-free: replies are received into a buffer the client owns.
pub struct Client<T> {
    transport: T,
    retries: u8,
    settle: Duration,
    buf: [u8; MAX_RTU_FRAME],
}

impl<T: Transport> Client<T> {
    /// A client that tries each request up to three times.
    pub fn new(transport: T) -> Client<T> {
        Client {
            transport,
            retries: 2,
            settle: Duration::from_millis(200),
            buf: [0; MAX_RTU_FRAME],
        }
    }

    /// Set how many times a transient failure is retried (0 = one attempt).
    pub fn set_retries(&mut self, retries: u8) {
        self.retries = retries;
    }

    /// Set how long to wait after a parameter write before reading it back.
    pub fn set_settle_time(&mut self, settle: Duration) {
        self.settle = settle;
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (e.g. to change its timeout).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Give the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Send `request`, retrying transient failures, and hand the reply to
    /// `decode`.
    fn call<R>(
        &mut self,
        address: Address,
        request: &Request,
        mut decode: impl FnMut(Reply<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut attempt = 0;
        loop {
            let result = self
                .transport
                .transact(address, request, &mut self.buf)
                .and_then(&mut decode);
            match result {
                Err(e) if e.is_transient() && attempt < self.retries => attempt += 1,
                other => return other,
            }
        }
    }

    fn read_registers<R>(
        &mut self,
        address: Address,
        request: Request,
        decode: impl Fn(&Registers<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.call(address, &request, |reply| match reply {
            Reply::Registers(regs) => decode(&regs),
            _ => Err(Error::Frame(FrameError::EchoMismatch)),
        })
    }

    fn write(&mut self, address: Address, register: u16, value: u16) -> Result<(), Error> {
        self.call(address, &Request::write_register(register, value), |_| Ok(()))
    }

    /// Read the ten measurement registers of an AC meter.
    pub fn read_ac(&mut self, address: Address) -> Result<AcReading, Error> {
        self.read_registers(address, READ_AC, |r| AcReading::from_registers(r).map_err(unexpected))
    }

    /// Read the eight measurement registers of a DC meter.
    pub fn read_dc(&mut self, address: Address) -> Result<DcReading, Error> {
        self.read_registers(address, READ_DC, |r| DcReading::from_registers(r).map_err(unexpected))
    }

    /// Read a meter of the given family.
    pub fn read(&mut self, address: Address, family: Family) -> Result<Reading, Error> {
        match family {
            Family::Ac => self.read_ac(address).map(Reading::Ac),
            Family::Dc => self.read_dc(address).map(Reading::Dc),
        }
    }

    /// Read an AC meter's power alarm threshold and address.
    pub fn read_ac_parameters(&mut self, address: Address) -> Result<AcParameters, Error> {
        self.read_registers(address, READ_AC_PARAMETERS, |r| {
            AcParameters::from_registers(r).map_err(unexpected)
        })
    }

    /// Read a DC meter's voltage alarms, address and shunt range. A meter
    /// without the shunt register (PZEM-003) gives `shunt: None`.
    pub fn read_dc_parameters(&mut self, address: Address) -> Result<DcParameters, Error> {
        let decode = |r: &Registers<'_>| DcParameters::from_registers(r).map_err(unexpected);
        match self.read_registers(address, READ_DC_PARAMETERS, decode) {
            Err(e) if e.exception() == Some(ExceptionCode::IllegalDataAddress) => {
                self.read_registers(address, READ_DC_PARAMETERS_NO_SHUNT, decode)
            }
            other => other,
        }
    }

    /// Read the parameters of a meter of the given family.
    pub fn read_parameters(&mut self, address: Address, family: Family) -> Result<Parameters, Error> {
        match family {
            Family::Ac => self.read_ac_parameters(address).map(Parameters::Ac),
            Family::Dc => self.read_dc_parameters(address).map(Parameters::Dc),
        }
    }

    /// Read the address a meter has stored (holding register 0x0002 in both
    /// families). Useful at the general address to learn a lone meter's
    /// address.
    pub fn read_address(&mut self, address: Address) -> Result<u8, Error> {
        self.read_registers(address, READ_ADDRESS, |r| match r.get(0) {
            Some(a) => u8::try_from(a).map_err(|_| unexpected(format_args!("stored address {a} is not 1-247"))),
            None => Err(unexpected("no address register in the reply")),
        })
    }

    /// Give the meter at `address` the new address `new`, then read it back
    /// at `new`. The general address is not a valid new address.
    pub fn set_address(&mut self, address: Address, new: Address) -> Result<(), Error> {
        if new.is_general() {
            return Err(Error::Argument(
                "0xF8 is the general address, not an address a meter can keep".into(),
            ));
        }
        self.write(address, ac::REG_ADDRESS, u16::from(new.get()))?;
        std::thread::sleep(self.settle);
        let read = self.read_address(new)?;
        verify("address", u32::from(new.get()), u32::from(read))
    }

    /// Set an AC meter's power alarm threshold in W (1..=25 000) and read it back.
    pub fn set_power_alarm(&mut self, address: Address, watts: u32) -> Result<AcParameters, Error> {
        let value = ac::power_alarm_register(watts).map_err(|e| Error::Argument(e.to_string()))?;
        self.write(address, ac::REG_POWER_ALARM, value)?;
        std::thread::sleep(self.settle);
        let params = self.read_ac_parameters(address)?;
        verify("power alarm threshold (W)", watts, u32::from(params.power_alarm_w))?;
        Ok(params)
    }

    /// Set a DC meter's high and low voltage alarm thresholds in V and read
    /// them back.
    pub fn set_voltage_alarms(&mut self, address: Address, high_v: f64, low_v: f64) -> Result<DcParameters, Error> {
        let (high, low) = dc::voltage_alarm_registers(high_v, low_v).map_err(|e| Error::Argument(e.to_string()))?;
        self.write(address, dc::REG_HIGH_VOLTAGE_ALARM, high)?;
        self.write(address, dc::REG_LOW_VOLTAGE_ALARM, low)?;
        std::thread::sleep(self.settle);
        let params = self.read_dc_parameters(address)?;
        verify(
            "high voltage alarm (0.01 V)",
            u32::from(high),
            u32::from(params.high_voltage_alarm_cv),
        )?;
        verify(
            "low voltage alarm (0.01 V)",
            u32::from(low),
            u32::from(params.low_voltage_alarm_cv),
        )?;
        Ok(params)
    }

    /// Set a PZEM-017's shunt range and read it back.
    pub fn set_shunt(&mut self, address: Address, shunt: Shunt) -> Result<DcParameters, Error> {
        self.write(address, dc::REG_SHUNT, shunt.code())?;
        std::thread::sleep(self.settle);
        let params = self.read_dc_parameters(address)?;
        let Some(read) = params.shunt else {
            return Err(unexpected(
                "the meter has no shunt register (a PZEM-003 has a fixed 10 A shunt)",
            ));
        };
        verify("shunt range (A)", shunt.amps(), read.amps())?;
        Ok(params)
    }

    /// Reset the meter's energy counter (function 0x42). The caller should
    /// read the counter back to confirm.
    pub fn reset_energy(&mut self, address: Address) -> Result<(), Error> {
        self.call(address, &Request::reset_energy(), |_| Ok(()))
    }

    /// Find out whether a meter answers at `address`, and read it, telling
    /// AC from DC ([`Reading::family`]).
    ///
    /// Reads the ten AC input registers: an AC meter answers, a DC meter
    /// refuses with exception 0x02 and is read with its eight. `Ok(None)`
    /// when nothing answers. Only reads are sent.
    pub fn probe(&mut self, address: Address) -> Result<Option<Reading>, Error> {
        match self.read_ac(address) {
            Ok(r) => Ok(Some(Reading::Ac(r))),
            Err(Error::NoAnswer) => Ok(None),
            Err(e) if e.exception() == Some(ExceptionCode::IllegalDataAddress) => {
                self.read_dc(address).map(|r| Some(Reading::Dc(r)))
            }
            Err(e) => Err(e),
        }
    }
}

/// A request known at compile time: a bad one fails the build, not a poll.
const fn fixed(request: Result<Request, crate::frame::RequestError>) -> Request {
    match request {
        Ok(r) => r,
        Err(_) => panic!("invalid constant request"),
    }
}

const READ_AC: Request = fixed(Request::read_input_registers(0, ac::INPUT_REGISTERS));
const READ_DC: Request = fixed(Request::read_input_registers(0, dc::INPUT_REGISTERS));
const READ_AC_PARAMETERS: Request = fixed(Request::read_holding_registers(
    ac::PARAMETER_REGISTERS.0,
    ac::PARAMETER_REGISTERS.1,
));
const READ_DC_PARAMETERS: Request = fixed(Request::read_holding_registers(0, 4));
const READ_DC_PARAMETERS_NO_SHUNT: Request = fixed(Request::read_holding_registers(0, 3));
const READ_ADDRESS: Request = fixed(Request::read_holding_registers(ac::REG_ADDRESS, 1));

/// A reply that passed every frame check but holds values the register maps
/// do not allow.
fn unexpected(why: impl std::fmt::Display) -> Error {
    Error::UnexpectedValue(why.to_string())
}

fn verify(what: &'static str, wrote: u32, read: u32) -> Result<(), Error> {
    if wrote == read {
        Ok(())
    } else {
        Err(Error::Verify { what, wrote, read })
    }
}
