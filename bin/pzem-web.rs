//! `pzem-web`: the energy history's page and API, read-only, on a small HTTP server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use getopts::Options;
use pzem::cli::{self, Program};
use pzem::history::config::{self, DEFAULT_DB, HistoryConfig};
use pzem::history::time::{Offset, local_offset};
use pzem::venus::config::{DEFAULT_CONFIG, read_config};
use pzem::web::app::App;
use pzem::web::http::{self, ServerConfig};

const DEFAULT_LISTEN: &str = "0.0.0.0:8088";
/// Exit code of a usage or config error.
const USAGE: u8 = 2;
/// Exit code when the server cannot listen or fails.
const CANNOT_SERVE: u8 = 3;

const HELP_TAIL: &str = "\
Serves the page at / and the API at /api/series and /api/samples (docs/history.md).
The history file is opened read-only; pzem-web never writes it. Options not given
come from the [web] section of the config file (db, listen); without either db,
the file is the one [logger] names, else the default.
";

fn main() -> ExitCode {
    let program = Program {
        name: "pzem-web",
        usage: "pzem-web [--db FILE] [--listen ADDR:PORT]",
        help_tail: HELP_TAIL,
        exit_codes: vec![
            (0, "stopped by a signal"),
            (USAGE, "usage or config error"),
            (CANNOT_SERVE, "cannot listen on the address, or serving failed"),
        ],
        usage_code: USAGE,
    };
    let usage_error = |message: &str| program.usage_error(message);
    let mut opts = Options::new();
    opts.optopt("", "db", &format!("the history file (default {DEFAULT_DB})"), "FILE");
    opts.optopt(
        "l",
        "listen",
        &format!("address and port (default {DEFAULT_LISTEN})"),
        "ADDR:PORT",
    );
    opts.optopt(
        "c",
        "config",
        &format!("config file (default {DEFAULT_CONFIG} if present)"),
        "FILE",
    );
    opts.optopt(
        "",
        "utc-offset",
        "local time offset for days and hours (default: this machine's)",
        "+HH:MM",
    );
    opts.optopt("", "workers", "threads computing answers (default 2)", "N");
    let matches = match program.start(opts) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let parsed = (|| -> Result<(PathBuf, String, Offset, usize), String> {
        let file = match read_config(matches.opt_str("c").as_deref())? {
            Some((path, text)) => config::parse(&text).map_err(|e| format!("{path}: {e}"))?,
            None => HistoryConfig::default(),
        };
        let db = PathBuf::from(matches.opt_str("db").unwrap_or_else(|| file.web_db().to_owned()));
        let listen = matches
            .opt_str("l")
            .or(file.web.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let offset = match matches.opt_str("utc-offset") {
            Some(t) => Offset::parse(&t).map_err(|e| format!("--utc-offset: {e}"))?,
            None => local_offset(),
        };
        let workers = match matches.opt_str("workers") {
            None => 2,
            Some(t) => match t.parse::<usize>() {
                Ok(n @ 1..=16) => n,
                _ => return Err(format!("--workers takes 1 to 16, not '{t}'")),
            },
        };
        Ok((db, listen, offset, workers))
    })();
    let (db, listen, offset, workers) = match parsed {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pzem-web: cannot listen on {listen}: {e}; give --listen ADDR:PORT or listen in [web]");
            return ExitCode::from(CANNOT_SERVE);
        }
    };
    let bound = listener.local_addr().map_or(listen.clone(), |a| a.to_string());
    log::info!(
        "serving {} read-only on http://{bound}/ (local time offset {offset})",
        db.display()
    );
    let stop = cli::install_stop_signals();
    let config = ServerConfig {
        workers,
        ..ServerConfig::default()
    };
    let make = || {
        let mut app = App::new(db.clone(), offset);
        move |req: &http::Request| app.handle(req)
    };
    match http::serve(listener, config, make, stop) {
        Ok(()) => {
            log::info!("stopping");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pzem-web: {e}");
            ExitCode::from(CANNOT_SERVE)
        }
    }
}
