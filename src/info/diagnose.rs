//! Error messages for people: which device and address, what failed, and
//! what to check.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use crate::error::Error;
use crate::frame::ExceptionCode;
use crate::line::Line;
use crate::model::StopBits;

use super::PROGRAM;
use super::actions::{ActionError, Step};
use super::text::{address_phrase, model_label};

/// What to check about the serial settings.
fn stop_bits_hint(line: &Line, stop_bits: StopBits) -> &'static str {
    match (line.is_serial(), stop_bits) {
        (false, _) => "the gateway's serial side: 9600 baud, 8N1 for AC meters, 8N2 for DC meters",
        (true, StopBits::Two) => {
            "stop bits: AC meters use 8N1, DC meters 8N2; this line is open at 8N2 \
             (-t dc or auto); if an AC meter stays silent, try -t ac"
        }
        (true, StopBits::One) => {
            "stop bits: AC meters use 8N1, DC meters 8N2; this line is open at 8N1 (-t ac); \
             for a DC meter use -t dc"
        }
    }
}

/// What to check when a meter does not answer on `line`, open with
/// `stop_bits` (they matter on a serial line only).
pub fn no_answer_checklist(line: &Line, stop_bits: StopBits) -> String {
    let mut out = String::from("Check:\n");
    for item in [
        "the address: list the meters with --scan, or use -a 0xF8 when only one meter is on the line",
        "wiring: A to A and B to B (swap them if unsure), and a common ground",
        "termination: 120 ohm across A and B at both ends of a long line",
        stop_bits_hint(line, stop_bits),
        "power: an AC meter without mains does not answer at all; \
         a DC meter needs 7 V or more on its input, or 5 V on its USB port",
    ] {
        let _ = writeln!(out, "  - {item}");
    }
    if !line.is_serial() {
        let _ = writeln!(
            out,
            "  - the gateway mode: --tcp is RTU over TCP, add --modbus-tcp for Modbus TCP"
        );
    }
    out
}

fn refusal_hint(code: ExceptionCode, step: Step) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "The meter does not support this function.",
        ExceptionCode::IllegalDataAddress if step == Step::WriteShunt => {
            "The meter has no such register: a PZEM-003 has no shunt setting (its 10 A shunt is built in)."
        }
        ExceptionCode::IllegalDataAddress => "The meter has no such register: is it the model you expect?",
        ExceptionCode::IllegalDataValue => "The meter did not accept the value; check the ranges in --help.",
        ExceptionCode::SlaveDeviceFailure => {
            "The meter failed to carry out the request; try again, and check its supply."
        }
        ExceptionCode::Other(_) => "This is not a documented PZEM exception: is it a PZEM meter?",
    }
}

/// The message for a failed action on `line`, open with `stop_bits`, for
/// stderr (several lines, no program name).
pub fn explain(err: &ActionError, line: &Line, stop_bits: StopBits, timeout: Duration) -> String {
    let dev = line.describe(stop_bits);
    match err {
        ActionError::Device {
            address,
            step,
            answered_before,
            error,
        } => {
            let at = address_phrase(*address);
            if let Some(code) = error.exception() {
                return format!(
                    "the meter at {at} on {dev} refused the request while {step}: {code}.\n{}\n",
                    refusal_hint(code, *step)
                );
            }
            match error {
                e if e.is_garbled() && address.is_general() => format!(
                    "garbled reply at {at} on {dev} while {step} ({e}).\n\
                     More than one meter may be answering: 0xF8 reaches every meter on the line, so it \
                     works only with a single meter connected.\n\
                     List the meters with --scan, then choose one with -a ADDR.\n"
                ),
                e if e.is_garbled() => format!(
                    "garbled reply from {at} on {dev} while {step} ({e}).\n\
                     Two meters may share this address (list them with --scan), or the line is noisy.\n{}",
                    no_answer_checklist(line, stop_bits)
                ),
                Error::NoAnswer if *answered_before => format!(
                    "the meter at {at} on {dev} answered at first, then stopped answering while {step} \
                     (no reply within {} ms, retried).\n{}{}",
                    timeout.as_millis(),
                    if step.follows_address_change() {
                        "If the write went through, the meter now answers at its new address; \
                         --scan will tell.\n"
                    } else {
                        "Check that it is still powered and connected: a loose A/B wire or an AC meter \
                         losing mains looks like this.\n"
                    },
                    no_answer_checklist(line, stop_bits)
                ),
                Error::NoAnswer => format!(
                    "no answer from {at} on {dev} while {step} (no reply within {} ms, retried).\n{}",
                    timeout.as_millis(),
                    no_answer_checklist(line, stop_bits)
                ),
                Error::Verify { .. } => format!(
                    "verification failed at {at} on {dev} while {step}: {error}.\n\
                     The meter acknowledged the write but did not keep the value. Try again; if it \
                     persists, power-cycle the meter and check it with {PROGRAM} -a ADDR.\n"
                ),
                Error::Io(e) => io_message(line, e),
                e => format!("{at} on {dev}: {step}: {e}\n"),
            }
        }
        ActionError::WrongFamily {
            address,
            model,
            action,
            needs,
        } => format!(
            "the meter at address {address} on {dev} is a {} ({} meter); --{action} is for {needs} meters. \
             Nothing was written.\n",
            model_label(*model),
            model.family()
        ),
        ActionError::AddressTaken { address, model } => format!(
            "address {address} is already used by a {} on {dev}; choose a free address (list them with --scan). \
             Nothing was written.\n",
            model_label(*model)
        ),
        ActionError::NothingFound(range) => format!(
            "no meter answered at addresses {}-{} on {dev}.\n{}",
            range.from,
            range.to,
            no_answer_checklist(line, stop_bits)
        ),
        ActionError::Cancelled => "cancelled; nothing was changed.\n".to_string(),
    }
}

/// The message when the device cannot be opened or the line fails.
pub fn io_message(line: &Line, e: &io::Error) -> String {
    let place = line.place();
    if line.is_serial() {
        format!(
            "cannot use {place}: {e}.\n\
             Check the device path (ls /dev/ttyUSB* /dev/serial/by-id/), the permissions (group dialout), \
             and that no other program (the pzem-dbus service, serial-starter) is using the port.\n"
        )
    } else {
        format!("cannot use the gateway {place}: {e}.\nCheck the host and port, and that the gateway is reachable.\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::frame::{FrameError, Function};
    use crate::info::options::ScanRange;
    use crate::model::{Family, Model};

    fn serial() -> Line {
        Line::Serial("/dev/ttyUSB0".into())
    }

    /// The message for `err` on `/dev/ttyUSB0` at 8N2.
    fn explain_serial(err: &ActionError, timeout: Duration) -> String {
        explain(err, &serial(), StopBits::Two, timeout)
    }

    fn device(address: Address, answered_before: bool, error: Error) -> ActionError {
        ActionError::Device {
            address,
            step: Step::Identify,
            answered_before,
            error,
        }
    }

    #[test]
    fn collision_at_general_address() {
        let e = device(Address::GENERAL, false, Error::Frame(FrameError::Crc));
        let msg = explain_serial(&e, Duration::from_millis(250));
        assert!(msg.contains("0xF8"), "{msg}");
        assert!(msg.contains("More than one meter may be answering"), "{msg}");
        assert!(msg.contains("--scan") && msg.contains("-a ADDR"), "{msg}");
        assert!(msg.contains("/dev/ttyUSB0 (9600 8N2)"), "{msg}");
    }

    #[test]
    fn no_answer_names_what_to_check() {
        let e = device(Address::unit(7).unwrap(), false, Error::NoAnswer);
        let msg = explain_serial(&e, Duration::from_millis(250));
        assert!(
            msg.starts_with("no answer from address 7 on /dev/ttyUSB0 (9600 8N2)"),
            "{msg}"
        );
        for needle in ["A to A", "120 ohm", "8N1", "mains", "--scan"] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
        let e = device(Address::unit(7).unwrap(), true, Error::NoAnswer);
        let msg = explain_serial(&e, Duration::from_millis(250));
        assert!(msg.contains("answered at first, then stopped"), "{msg}");
        assert!(msg.contains("still powered") && !msg.contains("new address"), "{msg}");
    }

    #[test]
    fn silence_after_an_address_change_points_to_the_new_address() {
        for step in [Step::WriteAddress, Step::ReadAtNewAddress] {
            let e = ActionError::Device {
                address: Address::unit(7).unwrap(),
                step,
                answered_before: true,
                error: Error::NoAnswer,
            };
            let msg = explain_serial(&e, Duration::from_millis(250));
            assert!(msg.contains(&format!("while {step} ")), "{msg}");
            assert!(msg.contains("now answers at its new address"), "{msg}");
        }
    }

    #[test]
    fn refusal_names_the_code() {
        let e = ActionError::Device {
            address: Address::unit(3).unwrap(),
            step: Step::WriteShunt,
            answered_before: true,
            error: Error::Frame(FrameError::Exception {
                function: Function::WriteSingleRegister,
                code: ExceptionCode::IllegalDataAddress,
            }),
        };
        let msg = explain_serial(&e, Duration::from_millis(250));
        assert!(
            msg.contains("refused") && msg.contains("illegal data address (0x02)"),
            "{msg}"
        );
        assert!(msg.contains("PZEM-003"), "{msg}");
        let e = ActionError::Device {
            address: Address::unit(3).unwrap(),
            step: Step::ReadParameters,
            answered_before: true,
            error: Error::Frame(FrameError::Exception {
                function: Function::ReadHoldingRegisters,
                code: ExceptionCode::IllegalDataAddress,
            }),
        };
        let msg = explain_serial(&e, Duration::from_millis(250));
        assert!(
            msg.contains("while reading its parameters: illegal data address"),
            "{msg}"
        );
        assert!(
            msg.contains("is it the model you expect") && !msg.contains("PZEM-003"),
            "{msg}"
        );
    }

    #[test]
    fn other_failures() {
        let tcp = Line::ModbusTcp("gw:502".into());
        let e = ActionError::WrongFamily {
            address: Address::unit(1).unwrap(),
            model: Model::GenericAc,
            action: "set-shunt",
            needs: Family::Dc,
        };
        assert!(explain(&e, &tcp, StopBits::Two, Duration::ZERO).contains("--set-shunt is for DC meters"));
        let e = ActionError::NothingFound(ScanRange::ALL);
        let msg = explain(&e, &tcp, StopBits::Two, Duration::ZERO);
        assert!(msg.contains("1-247") && msg.contains("--modbus-tcp"), "{msg}");
        let e = device(
            Address::unit(1).unwrap(),
            true,
            Error::Verify {
                what: "shunt range (A)",
                wrote: 200,
                read: 100,
            },
        );
        assert!(explain_serial(&e, Duration::ZERO).contains("verification failed at address 1"));
        let e = device(Address::unit(1).unwrap(), false, Error::Io(io::Error::other("gone")));
        assert!(explain_serial(&e, Duration::ZERO).contains("dialout"));
    }
}
