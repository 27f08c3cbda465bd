//! Exit codes of `pzem-info`, and which error gives which.

use crate::error::Error;

/// How a run of `pzem-info` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// Done.
    Ok,
    /// The confirmation was declined; nothing was changed.
    Cancelled,
    /// Bad command line or value, or the action does not fit the meter;
    /// nothing was written.
    Usage,
    /// No valid answer: the meter is silent, or its replies are garbled.
    NoAnswer,
    /// The meter refused the request with a Modbus exception.
    Refused,
    /// A value was written but reads back differently.
    Verify,
    /// The device cannot be opened, or the line failed.
    Io,
}

impl Exit {
    /// Every exit, in code order.
    pub const ALL: [Exit; 7] = [
        Exit::Ok,
        Exit::Cancelled,
        Exit::Usage,
        Exit::NoAnswer,
        Exit::Refused,
        Exit::Verify,
        Exit::Io,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Cancelled => 1,
            Exit::Usage => 2,
            Exit::NoAnswer => 3,
            Exit::Refused => 4,
            Exit::Verify => 5,
            Exit::Io => 6,
        }
    }

    /// One line for `--help`.
    pub fn description(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Cancelled => "cancelled at the prompt; nothing was changed",
            Exit::Usage => "usage: bad option or value, or wrong meter type for the action; nothing written",
            Exit::NoAnswer => "no valid answer: the meter is silent or garbled (--scan: nothing found)",
            Exit::Refused => "the meter refused the request (the exception code is named)",
            Exit::Verify => "verification failed: a written value reads back differently",
            Exit::Io => "I/O error: the device cannot be opened, or the line failed",
        }
    }

    /// The exit a failed request leads to.
    pub fn of_error(error: &Error) -> Exit {
        match error {
            Error::NoAnswer | Error::Incomplete { .. } => Exit::NoAnswer,
            Error::Frame(_) if error.exception().is_some() => Exit::Refused,
            Error::Frame(_) | Error::UnexpectedValue(_) => Exit::NoAnswer,
            Error::Verify { .. } => Exit::Verify,
            Error::Argument(_) => Exit::Usage,
            Error::Io(_) => Exit::Io,
        }
    }

    /// The `--help` section listing every exit code.
    pub fn help() -> String {
        Exit::ALL
            .iter()
            .map(|e| format!("  {}  {}\n", e.code(), e.description()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ExceptionCode, FrameError, Function};

    #[test]
    fn codes_are_distinct_and_documented() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(Exit::help().contains("  4  the meter refused"));
    }

    #[test]
    fn errors_map_to_exits() {
        let refused = Error::Frame(FrameError::Exception {
            function: Function::WriteSingleRegister,
            code: ExceptionCode::IllegalDataValue,
        });
        assert_eq!(Exit::of_error(&refused), Exit::Refused);
        assert_eq!(Exit::of_error(&Error::Frame(FrameError::Crc)), Exit::NoAnswer);
        assert_eq!(Exit::of_error(&Error::NoAnswer), Exit::NoAnswer);
        assert_eq!(
            Exit::of_error(&Error::Verify {
                what: "x",
                wrote: 1,
                read: 2
            }),
            Exit::Verify
        );
        assert_eq!(Exit::of_error(&Error::Argument("x".into())), Exit::Usage);
        assert_eq!(
            Exit::of_error(&Error::UnexpectedValue("shunt code 9".into())),
            Exit::NoAnswer
        );
        assert_eq!(Exit::of_error(&Error::Io(std::io::Error::other("x"))), Exit::Io);
    }
}
