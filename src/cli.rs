//! What every service binary does the same way around its own options: the
//! common flags (`-v`, `-h`, `-V`), parsing UTF-8 arguments, `--help` with
//! the exit codes, logging to stderr, usage errors, and the stop flag that
//! SIGTERM and SIGINT set.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use getopts::{Matches, Options};

/// A service binary's name and texts.
pub struct Program {
    /// The name, as in messages: `pzem-dbus`.
    pub name: &'static str,
    /// The usage line, after `Usage: `.
    pub usage: &'static str,
    /// Text after the options in `--help`.
    pub help_tail: &'static str,
    /// Its exit codes and what each means, for `--help`.
    pub exit_codes: Vec<(u8, &'static str)>,
    /// The code of a usage error.
    pub usage_code: u8,
}

/// Set by SIGTERM and SIGINT once [`install_stop_signals`] ran.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Make SIGTERM and SIGINT set [`STOP`] (the service loops block them outside
/// their wait, so none is missed).
pub fn install_stop_signals() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
    }
    &STOP
}

impl Program {
    /// Add the common flags to `opts`, parse the arguments, answer `--help`
    /// and `--version`, and start logging (`-v`: debug). `Err` is the exit
    /// code to leave with now.
    pub fn start(&self, opts: Options) -> Result<Matches, ExitCode> {
        let args = crate::utf8_args().map_err(|e| self.usage_error(&e))?;
        self.start_with(opts, &args)
    }

    /// [`Program::start`] on `args` (without the program name) rather than
    /// the process's: for a binary with subcommands, the arguments after
    /// the subcommand.
    pub fn start_with(&self, mut opts: Options, args: &[String]) -> Result<Matches, ExitCode> {
        opts.optflag("v", "verbose", "log debug messages");
        opts.optflag("h", "help", "show this help");
        opts.optflag("V", "version", "show the version");
        let matches = opts.parse(args).map_err(|e| self.usage_error(&e.to_string()))?;
        if matches.opt_present("h") {
            println!(
                "{}\n{}\nExit codes:",
                opts.usage(&format!("Usage: {}", self.usage)),
                self.help_tail
            );
            for (code, meaning) in &self.exit_codes {
                println!("  {code}  {meaning}");
            }
            return Err(ExitCode::SUCCESS);
        }
        if matches.opt_present("V") {
            println!("{} {}", self.name, env!("CARGO_PKG_VERSION"));
            return Err(ExitCode::SUCCESS);
        }
        if let Some(extra) = matches.free.first() {
            return Err(self.usage_error(&format!("unexpected argument '{extra}'")));
        }
        let level = if matches.opt_present("v") { "debug" } else { "info" };
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
            .format_timestamp(None)
            .format_target(false)
            .init();
        Ok(matches)
    }

    /// Say what is wrong and how to get help; the usage exit code.
    pub fn usage_error(&self, message: &str) -> ExitCode {
        eprintln!("{}: {message}\nTry '{} --help'.", self.name, self.name);
        ExitCode::from(self.usage_code)
    }
}
