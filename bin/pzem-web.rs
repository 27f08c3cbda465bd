//! `pzem-web`: the energy history's page and API, read-only, on a small HTTP server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use getopts::Options;
use pzem::history::config;
use pzem::history::time::{Offset, local_offset};
use pzem::web::app::App;
use pzem::web::http::{self, ServerConfig};

const DEFAULT_CONFIG: &str = "/data/conf/pzem.conf";
const DEFAULT_DB: &str = "/data/var/lib/pzem-venus/history.sqlite";
const DEFAULT_LISTEN: &str = "0.0.0.0:8088";

const HELP_TAIL: &str = "\
Serves the page at / and the API at /api/series and /api/samples (docs/history.md).
The history file is opened read-only; pzem-web never writes it. Options not given
come from the [web] section of the config file (db, listen).

Exit codes: 0 stopped, 2 usage, 3 cannot listen.
";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let args = match pzem::utf8_args() {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
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
    opts.optflag("v", "verbose", "log debug messages");
    opts.optflag("h", "help", "show this help");
    opts.optflag("V", "version", "show the version");
    let matches = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return usage_error(&e.to_string()),
    };
    if matches.opt_present("h") {
        println!(
            "{}\n{HELP_TAIL}",
            opts.usage("Usage: pzem-web [--db FILE] [--listen ADDR:PORT]")
        );
        return ExitCode::SUCCESS;
    }
    if matches.opt_present("V") {
        println!("pzem-web {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(extra) = matches.free.first() {
        return usage_error(&format!("unexpected argument '{extra}'"));
    }
    let level = if matches.opt_present("v") { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let parsed = (|| -> Result<(PathBuf, String, Offset, usize), String> {
        let (path, explicit) = match matches.opt_str("c") {
            Some(p) => (p, true),
            None => (DEFAULT_CONFIG.to_owned(), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => config::parse(&text).map_err(|e| format!("{path}: {e}"))?.web,
            Err(e) if explicit => return Err(format!("cannot read {path}: {e}")),
            Err(_) => Default::default(),
        };
        let db = PathBuf::from(matches.opt_str("db").or(file.db).unwrap_or_else(|| DEFAULT_DB.into()));
        let listen = matches
            .opt_str("l")
            .or(file.listen)
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
            eprintln!("pzem-web: cannot listen on {listen}: {e}");
            return ExitCode::from(3);
        }
    };
    let bound = listener.local_addr().map_or(listen.clone(), |a| a.to_string());
    log::info!(
        "serving {} read-only on http://{bound}/ (local time offset {offset})",
        db.display()
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let config = ServerConfig {
        workers,
        ..ServerConfig::default()
    };
    let make = || {
        let mut app = App::new(db.clone(), offset);
        move |req: &http::Request| app.handle(req)
    };
    match http::serve(listener, config, make, &STOP) {
        Ok(()) => {
            log::info!("stopping");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pzem-web: {e}");
            ExitCode::from(3)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("pzem-web: {message}\nTry 'pzem-web --help'.");
    ExitCode::from(2)
}
