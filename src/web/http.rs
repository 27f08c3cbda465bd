//! A small blocking HTTP/1.1 server for pzem-web: one I/O thread around one `ppoll(2)`,
//! a fixed pool of worker threads for the answers.
//!
//! Request heads are parsed by `httparse`; this module only frames them: it reads into a
//! fixed-size buffer until the head is complete, and answers with one response per
//! connection (`Connection: close`).
//!
//! **A slow or broken client cannot stop others.** The I/O thread never blocks on a
//! client: every socket is non-blocking and waited on together. A client has
//! [`ServerConfig::head_timeout`] to send its whole request head (then 408) and
//! [`ServerConfig::write_timeout`] to take the answer (then it is dropped). Only complete
//! requests reach the workers, which compute answers and never touch sockets. At most
//! [`ServerConfig::max_connections`] connections are open; a new one beyond that evicts
//! the oldest connection still sending its head.
//!
//! **Bad requests get 4xx:** a head larger than [`ServerConfig::max_head`] gets 431, an
//! unparsable one 400, a method other than GET or HEAD 405, a request target that is not
//! a path 400.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::poll_set::PollSet;

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Worker threads computing answers.
    pub workers: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub head_timeout: Duration,
    /// Time a client has to take the answer.
    pub write_timeout: Duration,
    /// Largest request head, bytes.
    pub max_head: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            workers: 2,
            max_connections: 64,
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_head: 8 * 1024,
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path, as sent (not decoded).
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Further headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut b: String = body.into();
        b.push('\n');
        Response::new(status, "text/plain; charset=utf-8", b)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire (without the body for `HEAD`).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// What a head's bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// More bytes are needed.
    Partial,
    /// A request.
    Complete(Request),
    /// An answer to send before closing (4xx).
    Refuse(Response),
}

/// Parses a request head from `buf` (sans-IO). `full` says the buffer has reached the
/// size limit, so a still incomplete head is too large.
pub fn parse_head(buf: &[u8], full: bool) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if full => Head::Refuse(Response::text(431, "request head too large")),
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Refuse(Response::text(431, "too many header fields")),
        Err(e) => Head::Refuse(Response::text(400, format!("malformed request: {e}"))),
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("").to_owned();
            let target = req.path.unwrap_or("");
            if method != "GET" && method != "HEAD" {
                return Head::Refuse(Response::text(405, "only GET and HEAD").with_header("Allow", "GET, HEAD"));
            }
            if !target.starts_with('/') {
                return Head::Refuse(Response::text(400, "the request target must be a path"));
            }
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let query = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            Head::Complete(Request {
                method,
                path: path.to_owned(),
                query,
            })
        }
    }
}

enum State {
    Reading(Vec<u8>),
    Working {
        head_only: bool,
    },
    Writing {
        data: Vec<u8>,
        pos: usize,
    },
    /// Answer sent, write side shut: read what the client still sends, until it closes,
    /// so it sees the answer rather than a reset.
    Draining,
}

struct Conn {
    id: u64,
    stream: TcpStream,
    state: State,
    deadline: Instant,
}

struct Job {
    id: u64,
    request: Request,
}

/// Serves `listener` until `stop` is set by a handler of SIGTERM or SIGINT. `make_handler`
/// is called once per worker; each worker answers requests with its handler.
///
/// The stop signals are blocked in this thread before the workers are spawned (so they
/// inherit the mask and never take the signal) and unblocked only while the I/O thread
/// waits: a signal ends that wait and is never missed between the check of `stop` and
/// the wait, which has no timeout of its own when no connection has a deadline. The mask
/// is restored on return.
pub fn serve<F, H>(listener: TcpListener, config: ServerConfig, make_handler: F, stop: &AtomicBool) -> io::Result<()>
where
    F: Fn() -> H,
    H: FnMut(&Request) -> Response + Send + 'static,
{
    let wait_mask = crate::poll_set::block_stop_signals();
    let result = serve_blocked(listener, config, make_handler, stop, wait_mask);
    crate::poll_set::restore_signals(wait_mask);
    result
}

fn serve_blocked<F, H>(
    listener: TcpListener,
    config: ServerConfig,
    make_handler: F,
    stop: &AtomicBool,
    wait_mask: Option<libc::sigset_t>,
) -> io::Result<()>
where
    F: Fn() -> H,
    H: FnMut(&Request) -> Response + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let wake_tx = Arc::new(wake_tx);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, Response)>();
    let mut workers = Vec::new();
    for n in 0..config.workers.max(1) {
        let mut handler = make_handler();
        let (job_rx, done_tx, wake_tx) = (Arc::clone(&job_rx), done_tx.clone(), Arc::clone(&wake_tx));
        let worker = std::thread::Builder::new()
            .name(format!("http-worker-{n}"))
            .spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let response = handler(&job.request);
                    if done_tx.send((job.id, response)).is_err() {
                        return;
                    }
                    let _ = (&*wake_tx).write(&[1]);
                }
            })?;
        workers.push(worker);
    }
    drop(done_tx);
    let result = io_loop(&listener, config, &wake_rx, &job_tx, &done_rx, stop, wait_mask);
    drop(job_tx);
    for w in workers {
        let _ = w.join();
    }
    result
}

fn io_loop(
    listener: &TcpListener,
    config: ServerConfig,
    wake_rx: &UnixStream,
    jobs: &mpsc::Sender<Job>,
    done: &mpsc::Receiver<(u64, Response)>,
    stop: &AtomicBool,
    wait_mask: Option<libc::sigset_t>,
) -> io::Result<()> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut poll = PollSet::new()?;
    poll.set_wait_mask(wait_mask);
    let mut next_id = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.clear();
        // Keys: 0 the listener, 1 the wake socket, 2 + id each connection.
        poll.push(listener.as_raw_fd(), 0, true, false);
        poll.push(wake_rx.as_raw_fd(), 1, true, false);
        for c in &conns {
            let (r, w) = match c.state {
                State::Reading(_) | State::Draining => (true, false),
                State::Writing { .. } => (false, true),
                State::Working { .. } => (false, false),
            };
            poll.push(c.stream.as_raw_fd(), c.id + 2, r, w);
        }
        let now = Instant::now();
        let next = conns
            .iter()
            .filter(|c| !matches!(c.state, State::Working { .. }))
            .map(|c| c.deadline)
            .min();
        // No deadline: sleep until a client, a worker or a stop signal wakes the loop.
        poll.wait(next.map(|d| d.saturating_duration_since(now)))?;
        let now = Instant::now();
        let ready: Vec<bool> = (0..conns.len()).map(|i| poll.is_ready(i + 2)).collect();

        // Answers from the workers.
        if poll.is_ready(1) {
            let mut sink = [0u8; 64];
            while matches!((&*wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        for (id, response) in done.try_iter() {
            if let Some(c) = conns.iter_mut().find(|c| c.id == id) {
                let head_only = matches!(c.state, State::Working { head_only: true });
                c.state = State::Writing {
                    data: response.to_bytes(head_only),
                    pos: 0,
                };
                c.deadline = now + config.write_timeout;
            }
        }

        // Each connection.
        for (i, c) in conns.iter_mut().enumerate() {
            let is_ready = ready.get(i).copied().unwrap_or(false);
            step(c, is_ready, now, &config, &mut buf, jobs);
        }
        conns.retain(|c| !matches!(c.state, State::Draining) || c.deadline > now);
        // Closed ones are marked by a deadline in the past with state Draining.

        // New connections.
        if poll.is_ready(0) {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        if conns.len() >= config.max_connections {
                            // Evict the oldest connection still sending its head.
                            if let Some(k) = conns.iter().position(|c| matches!(c.state, State::Reading(_))) {
                                conns.remove(k);
                            } else {
                                let _ = (&stream).write(&Response::text(503, "busy").to_bytes(false));
                                continue;
                            }
                        }
                        next_id += 1;
                        conns.push(Conn {
                            id: next_id,
                            stream,
                            state: State::Reading(Vec::with_capacity(1024)),
                            deadline: now + config.head_timeout,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and the like: wait for connections to close.
                        log::warn!("accept: {e}");
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Closes a connection: marks it for removal.
fn close(c: &mut Conn, now: Instant) {
    c.state = State::Draining;
    c.deadline = now;
}

fn start_writing(c: &mut Conn, response: &Response, now: Instant, config: &ServerConfig) {
    c.state = State::Writing {
        data: response.to_bytes(false),
        pos: 0,
    };
    c.deadline = now + config.write_timeout;
}

fn step(c: &mut Conn, ready: bool, now: Instant, config: &ServerConfig, buf: &mut [u8], jobs: &mpsc::Sender<Job>) {
    match &mut c.state {
        State::Reading(head) => {
            if ready {
                let room = config.max_head.saturating_sub(head.len()).min(buf.len());
                match (&c.stream).read(&mut buf[..room.max(1)]) {
                    Ok(0) => return close(c, now),
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => return close(c, now),
                }
                match parse_head(head, head.len() >= config.max_head) {
                    Head::Partial => {}
                    Head::Refuse(response) => return start_writing(c, &response, now, config),
                    Head::Complete(request) => {
                        let head_only = request.method == "HEAD";
                        if jobs.send(Job { id: c.id, request }).is_err() {
                            return close(c, now);
                        }
                        c.state = State::Working { head_only };
                        return;
                    }
                }
            }
            if now >= c.deadline {
                let response = if matches!(&c.state, State::Reading(h) if h.is_empty()) {
                    // Connected and sent nothing: just close.
                    return close(c, now);
                } else {
                    Response::text(408, "request head not received in time")
                };
                start_writing(c, &response, now, config);
            }
        }
        // Waited on for no event, so ready means hung up or in error (a client reset while
        // its answer is computed): close it, or every wait would return at once until the
        // worker is done. The late answer finds no connection and is dropped.
        State::Working { .. } => {
            if ready {
                close(c, now);
            }
        }
        State::Writing { data, pos } => {
            if ready {
                match (&c.stream).write(&data[*pos..]) {
                    Ok(n) => *pos += n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => return close(c, now),
                }
                if *pos >= data.len() {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    c.state = State::Draining;
                    c.deadline = now + Duration::from_secs(1);
                    return;
                }
            }
            if now >= c.deadline {
                close(c, now);
            }
        }
        State::Draining => {
            if ready {
                loop {
                    match (&c.stream).read(buf) {
                        Ok(0) => return close(c, now),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return close(c, now),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", false), Head::Partial);
        let Head::Complete(r) = parse_head(
            b"GET /api/samples?series=1&from=2026-01-01T00%3A00%2B02%3A00 HTTP/1.1\r\n\r\n",
            false,
        ) else {
            panic!()
        };
        assert_eq!(r.path, "/api/samples");
        assert_eq!(r.query[1], ("from".into(), "2026-01-01T00:00+02:00".into()));
        let status = |b: &[u8], full| match parse_head(b, full) {
            Head::Refuse(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: y", true), 431);
        assert_eq!(status(b"POST / HTTP/1.1\r\n\r\n", false), 405);
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\n\r\n", false), 400);
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n", false), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", false), 400);
        let many: Vec<u8> = [b"GET / HTTP/1.1\r\n".to_vec(), b"A: b\r\n".repeat(60), b"\r\n".to_vec()].concat();
        assert_eq!(status(&many, false), 431);
    }

    #[test]
    fn response_bytes() {
        let r = Response::text(404, "no").with_header("Allow", "GET\r\nInjected: 1");
        let b = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(b.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(b.contains("Content-Length: 3\r\n") && b.ends_with("\r\n\r\nno\n"));
        assert!(b.contains("Allow: GETInjected: 1\r\n"), "{b}");
        assert!(String::from_utf8(r.to_bytes(true)).unwrap().ends_with("\r\n\r\n"));
    }
}
