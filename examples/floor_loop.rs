//! The floor for `benches/pzem_dbus.rs`: the least a program has to do to poll the bench's
//! four meters (PZEM-016 at addresses 1 and 2, PZEM-017 at 3 and 4) on a serial line, written
//! with nothing but libc calls, so that pzem-dbus's cost can be put next to it.
//!
//! `floor_loop TTY [INTERVAL_MS] [--publish BYTES]` opens `TTY`, sets it raw 9600 8N2 with
//! termios, and polls the meters round-robin as pzem-dbus does: a cycle visits each meter
//! once, back to back with the 3.5-character Modbus-RTU silence between frames, and the next
//! cycle starts `INTERVAL_MS` (default 1000; 0 = at once) after the previous one started. One
//! meter poll is `write` of the 8-byte read request (function 0x04 from register 0: 10
//! registers for AC, 8 for DC), `ppoll` until the reply is readable, `read` until the whole reply is in
//! (25 bytes AC, 21 bytes DC; a reply arriving in parts takes more `ppoll`/`read` pairs),
//! and one `ppoll` with only a timeout until the next request is due. The reply's length
//! and CRC are checked and nothing else is decoded. It runs until it is killed; it exits
//! with status 1 when the line fails (the simulator hung up), the arguments are wrong, or
//! (with `--publish`) the socket or its reader fails.
//!
//! `--publish BYTES` (at least 1) adds the least a program can do to publish each reading,
//! as pzem-dbus sends each poll's `ItemsChanged` to the bus daemon: after each good reply,
//! one `send` of `BYTES` bytes on a Unix stream socket whose other end a forked child reads
//! in a blocking loop (it wakes for each message, as the daemon does). The child is forked
//! before the line is opened, holds nothing else, and is killed by the kernel when the
//! floor dies (`PR_SET_PDEATHSIG`), so it never outlives it and never writes anything (a
//! profile, under valgrind) after it. Nothing is built or encoded: the bytes are a fixed
//! buffer.

use std::os::unix::ffi::OsStrExt;

/// Bits a character takes on an 8N2 line: start bit, 8 data bits, 2 stop bits.
const BITS_PER_CHARACTER: u64 = 11;
/// The line speed of every PZEM.
const BAUD_RATE: u64 = 9600;
/// The Modbus-RTU inter-frame silence, 3.5 characters, in nanoseconds (as
/// `pzem::frame_gap_us` for two stop bits, ≈ 4.0 ms).
const FRAME_GAP_NS: u64 = 7 * BITS_PER_CHARACTER * 1_000_000 / BAUD_RATE / 2 * 1000;
/// How long to wait for a reply (pzem-dbus's default `-t 300`).
const REPLY_TIMEOUT_NS: u64 = 300_000_000;

/// CRC-16/MODBUS of the first `len` bytes of `bytes` (polynomial 0xA001 reflected, start
/// 0xFFFF), bit by bit: usable in constants and small enough for a 25-byte reply.
const fn crc16_modbus(bytes: &[u8], len: usize) -> u16 {
    let mut crc: u16 = 0xFFFF;
    let mut i = 0;
    while i < len {
        crc ^= bytes[i] as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// The Modbus-RTU frame "read `count` input registers from register 0" for `address`,
/// CRC appended low byte first.
const fn read_input_registers_frame(address: u8, count: u16) -> [u8; 8] {
    let mut frame = [address, 0x04, 0, 0, (count >> 8) as u8, count as u8, 0, 0];
    let crc = crc16_modbus(&frame, 6);
    frame[6] = crc as u8;
    frame[7] = (crc >> 8) as u8;
    frame
}

/// One meter as the floor polls it: its request frame and the length of its reply.
struct PolledMeter {
    /// The complete request, CRC included.
    request: [u8; 8],
    /// Address, function, byte count, 2 bytes a register, CRC.
    reply_len: usize,
}

impl PolledMeter {
    const fn new(address: u8, registers: u16) -> PolledMeter {
        PolledMeter {
            request: read_input_registers_frame(address, registers),
            reply_len: 3 + 2 * registers as usize + 2,
        }
    }
}

/// The bench's meters: two PZEM-016 (10 registers), two PZEM-017 (8 registers).
const METERS: [PolledMeter; 4] = [
    PolledMeter::new(1, 10),
    PolledMeter::new(2, 10),
    PolledMeter::new(3, 8),
    PolledMeter::new(4, 8),
];

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call).
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// `ppoll` on `fd` for input, at most `timeout_ns`; whether it is readable (a hang-up or
/// error counts as readable: the `read` that follows reports it).
fn wait_readable(fd: libc::c_int, timeout_ns: u64) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timespec(timeout_ns);
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    n > 0
}

/// Sleeps until CLOCK_MONOTONIC reaches `at_ns` with one `ppoll` on no descriptors
/// (none when that time has passed).
fn sleep_until(at_ns: u64) {
    let now = now_ns();
    if at_ns > now {
        let ts = timespec(at_ns - now);
        // SAFETY: no descriptors, a valid timespec, no signal mask.
        unsafe { libc::ppoll(std::ptr::null_mut(), 0, &ts, std::ptr::null()) };
    }
}

fn fail(what: &str) -> ! {
    eprintln!("floor_loop: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

/// Opens `path` non-blocking and sets it raw 9600 baud, 8 data bits, no parity, 2 stop bits.
fn open_line(path: &std::ffi::CStr) -> libc::c_int {
    // SAFETY: a NUL-terminated path; the flags ask for nothing unusual.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        fail("open");
    }
    // SAFETY: termios is plain data; tcgetattr fills it before it is used.
    let mut tio: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; tio is a valid termios.
    unsafe {
        if libc::tcgetattr(fd, &mut tio) != 0 {
            fail("tcgetattr");
        }
        libc::cfmakeraw(&mut tio);
        tio.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::CRTSCTS);
        tio.c_cflag |= libc::CS8 | libc::CSTOPB | libc::CLOCAL | libc::CREAD;
        tio.c_cc[libc::VMIN] = 0;
        tio.c_cc[libc::VTIME] = 0;
        if libc::cfsetispeed(&mut tio, libc::B9600) != 0 || libc::cfsetospeed(&mut tio, libc::B9600) != 0 {
            fail("cfsetspeed");
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &tio) != 0 {
            fail("tcsetattr");
        }
        libc::tcflush(fd, libc::TCIOFLUSH);
    }
    fd
}

/// Polls one meter: request out, reply in (until complete or the timeout); whether the
/// reply was complete with a good CRC.
fn poll_meter(fd: libc::c_int, meter: &PolledMeter, reply: &mut [u8; 32]) -> bool {
    // SAFETY: writing 8 bytes from a live array to an open descriptor.
    let sent = unsafe { libc::write(fd, meter.request.as_ptr().cast(), meter.request.len()) };
    if sent != meter.request.len() as isize {
        fail("write");
    }
    let deadline = now_ns() + REPLY_TIMEOUT_NS;
    let mut got = 0;
    while got < meter.reply_len {
        let now = now_ns();
        if now >= deadline || !wait_readable(fd, deadline - now) {
            return false;
        }
        // SAFETY: reading at most the rest of the reply into the buffer's free part.
        let n = unsafe { libc::read(fd, reply[got..].as_mut_ptr().cast(), meter.reply_len - got) };
        match n {
            n if n > 0 => got += n as usize,
            0 => fail("read: line closed"),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {}
            _ => fail("read"),
        }
    }
    let len = meter.reply_len;
    crc16_modbus(reply, len - 2) == u16::from_le_bytes([reply[len - 2], reply[len - 1]])
}

/// A Unix stream socket whose other end a forked child reads and drops until it closes;
/// the parent's end.
fn spawn_reader() -> libc::c_int {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        fail("socketpair");
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the program has one thread; the child only calls prctl, getppid, close, read
    // and _exit.
    match unsafe { libc::fork() } {
        -1 => fail("fork"),
        0 => {
            let mut sink = [0u8; 4096];
            // SAFETY: plain system calls on the child's own descriptors and a live buffer.
            unsafe {
                // Die with the floor, even if it died before the request was made.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent {
                    libc::_exit(1)
                }
                libc::close(fds[0]);
                loop {
                    let n = libc::read(fds[1], sink.as_mut_ptr().cast(), sink.len());
                    if n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted) {
                        continue;
                    }
                    libc::_exit(if n == 0 { 0 } else { 1 })
                }
            }
        }
        _ => {
            // SAFETY: the child's end is not used by the parent.
            unsafe { libc::close(fds[1]) };
            fds[0]
        }
    }
}

/// Sends all of `message` on `socket`, waiting if the reader has fallen behind (a blocking
/// send on a stream socket returns when all of it is queued).
fn publish(socket: libc::c_int, message: &[u8]) {
    // SAFETY: sending from a live buffer on an open socket.
    let n = unsafe { libc::send(socket, message.as_ptr().cast(), message.len(), libc::MSG_NOSIGNAL) };
    if n != message.len() as isize {
        fail("send to the reader (a broken pipe means the forked reader exited)");
    }
}

fn usage() -> ! {
    eprintln!("usage: floor_loop TTY [INTERVAL_MS] [--publish BYTES]  (INTERVAL_MS 0 = back to back; default 1000)");
    std::process::exit(1)
}

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut publish_bytes = None;
    if let Some(at) = args.iter().position(|a| a == "--publish") {
        let Some(n) = args
            .get(at + 1)
            .and_then(|a| a.to_str()?.parse::<usize>().ok())
            .filter(|&n| n > 0)
        else {
            usage()
        };
        publish_bytes = Some(n);
        args.drain(at..at + 2);
    }
    let (Some(path), 1..=2) = (args.first(), args.len()) else {
        usage()
    };
    let interval_ns: u64 = match args.get(1).map(|a| a.to_str().and_then(|s| s.parse::<u64>().ok())) {
        None => 1_000_000_000,
        Some(Some(ms)) => ms * 1_000_000,
        Some(None) => {
            eprintln!("floor_loop: INTERVAL_MS is a whole number of milliseconds");
            std::process::exit(1)
        }
    };
    let Ok(path) = std::ffi::CString::new(path.as_bytes()) else {
        eprintln!("floor_loop: the path holds a NUL byte");
        std::process::exit(1)
    };
    // The reader first, so that it holds no descriptor of the line.
    let publisher = publish_bytes.map(|n| (spawn_reader(), vec![0x55u8; n]));
    let fd = open_line(&path);
    let mut reply = [0u8; 32];
    let mut cycle_start = now_ns();
    loop {
        for (i, meter) in METERS.iter().enumerate() {
            // A missing or bad reply is reported and not retried (a line with no faults
            // never has one; reporting it keeps the CRC check from being optimised away).
            if !poll_meter(fd, meter, &mut reply) {
                eprintln!("floor_loop: no valid reply from address {}", meter.request[0]);
            } else if let Some((socket, message)) = &publisher {
                publish(*socket, message);
            }
            let quiet_until = now_ns() + FRAME_GAP_NS;
            if i + 1 < METERS.len() {
                sleep_until(quiet_until);
            } else {
                // A slow cycle is followed at once by the next, as in pzem-dbus.
                cycle_start = (cycle_start + interval_ns).max(quiet_until);
                sleep_until(cycle_start);
            }
        }
    }
}
