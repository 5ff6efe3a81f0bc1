//! A TCP proxy on 127.0.0.1 between a daemon and its server, to cut the network in tests: it
//! forwards, refuses (closes every connection, as a host that is down answers with RST),
//! black-holes (stops moving bytes and leaves connections open, as a dropped link does), or
//! breaks off each connection after so many bytes towards the client (a flaky link mid-download).
//! Std threads; everything stops on `Drop`.

use anyhow::Result;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forwards both ways.
    Pass = 0,
    /// Closes every open connection and every new one at once.
    Refuse = 1,
    /// Moves no byte; connections (old and new) stay open until the mode changes.
    BlackHole = 2,
    /// Forwards, but closes each connection once it has carried [`Proxy::set_cut_after`] bytes
    /// towards the client (counted from when this mode is set or the connection opened).
    Cut = 3,
}

struct Shared {
    upstream: Mutex<String>,
    mode: AtomicU8,
    /// Bytes towards the client after which `Cut` closes a connection.
    cut_after: AtomicU64,
    /// Connections `Cut` has closed.
    cuts: AtomicU64,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Pass,
            1 => Mode::Refuse,
            2 => Mode::BlackHole,
            _ => Mode::Cut,
        }
    }
}

pub struct Proxy {
    pub addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.to_owned()),
            mode: AtomicU8::new(Mode::Pass as u8),
            cut_after: AtomicU64::new(u64::MAX),
            cuts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || handle(conn, &s));
            }
        });
        Ok(Self { addr, shared })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forwards new connections to `upstream` from now on (a server started after its proxy,
    /// e.g. one whose `--public-url` is the proxy's).
    pub fn set_upstream(&self, upstream: &str) {
        *self.shared.upstream.lock().expect("proxy lock") = upstream.to_owned();
    }

    /// The byte count after which [`Mode::Cut`] closes a connection.
    pub fn set_cut_after(&self, bytes: u64) {
        self.shared.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// How many connections [`Mode::Cut`] has closed so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Mode::Refuse {
            // A poisoned lock only means a proxy thread panicked; the sockets are still there.
            for c in self.shared.open.lock().expect("proxy lock").drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.set_mode(Mode::Refuse);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn handle(client: TcpStream, s: &Arc<Shared>) {
    // A new connection during a black hole waits (unanswered) for the mode to change.
    while s.mode() == Mode::BlackHole && !s.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !matches!(s.mode(), Mode::Pass | Mode::Cut) || s.stop.load(Ordering::SeqCst) {
        return; // dropping `client` closes it
    }
    let upstream = s.upstream.lock().expect("proxy lock").clone();
    let Ok(server) = TcpStream::connect(&upstream) else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    {
        let mut open = s.open.lock().expect("proxy lock");
        for c in [&client, &server] {
            if let Ok(c) = c.try_clone() {
                open.push(c);
            }
        }
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let sh = s.clone();
    std::thread::spawn(move || pump(c2, s2, &sh, false));
    pump(server, client, s, true);
}

/// Copies `from` to `to` while the mode is `Pass` (or `Cut`, up to its limit when `to` is the
/// client), holds still during a black hole, closes both on `Refuse` or at the end of either
/// side.
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, to_client: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes sent to the client while cutting.
    let mut sent = 0u64;
    loop {
        match s.mode() {
            Mode::BlackHole if !s.stop.load(Ordering::SeqCst) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Mode::Pass if !s.stop.load(Ordering::SeqCst) => sent = 0,
            Mode::Cut if !s.stop.load(Ordering::SeqCst) => {}
            _ => break,
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut n = n;
                let cut = to_client && s.mode() == Mode::Cut && {
                    let room = s.cut_after.load(Ordering::SeqCst).saturating_sub(sent);
                    n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                    sent += n as u64;
                    room <= n as u64
                };
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if cut {
                    s.cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
