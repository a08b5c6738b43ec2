//! [`Relay`]: a TCP relay in front of a real server, for faults of the network between a
//! client and the server rather than of the server: connections that go silent, as when a
//! NAT or a load balancer drops a flow it judged idle without closing either end.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::sync::lock;

/// A TCP relay on a free loopback port to one server. Each connection to it is relayed
/// to the server over a connection of its own, byte for byte, until
/// [`silence`](Relay::silence). Stopped, and every relayed connection closed, on drop.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// let redis = connhub::testkit::RedisServer::start()?;
/// let relay = connhub::testkit::Relay::start(redis.addr())?;
/// let config = connhub::RedisConfig::new(relay.addr());
/// // ... connect through it, then:
/// relay.silence(); // the connections made so far carry nothing more
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Relay {
    addr: String,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    stopped: AtomicBool,
    links: Mutex<Vec<Link>>,
}

/// One relayed connection: both sockets, and whether it went silent.
#[derive(Debug)]
struct Link {
    client: TcpStream,
    server: TcpStream,
    silent: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying connections on a free loopback port to `target` (`host:port`).
    pub fn start(target: impl Into<String>) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared::default());
        let target = target.into();
        let accepting = shared.clone();
        thread::Builder::new()
            .name("connhub-testkit-relay".into())
            .spawn(move || accept(listener, &target, &accepting))?;
        Ok(Relay { addr, shared })
    }

    /// `127.0.0.1:<port>`, where it accepts connections.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Every connection relayed so far goes silent: what either end sends is dropped,
    /// and neither end is closed or told. Connections made later are relayed as before.
    pub fn silence(&self) {
        for link in lock(&self.shared.links).iter() {
            link.silent.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        for link in lock(&self.shared.links).drain(..) {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees it is stopped.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Accepts connections until the relay stops, each relayed by two threads.
fn accept(listener: TcpListener, target: &str, shared: &Shared) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        // A server that refuses the connection: the client sees it closed.
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let silent = Arc::new(AtomicBool::new(false));
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        let mut links = lock(&shared.links);
        // Both threads of a finished link have dropped their flags.
        links.retain(|l| Arc::strong_count(&l.silent) > 1);
        links.push(Link {
            client: c3,
            server: s3,
            silent: silent.clone(),
        });
        drop(links);
        let up = silent.clone();
        thread::spawn(move || pump(client, server, &up));
        thread::spawn(move || pump(s2, c2, &silent));
    }
}

/// Copies what `from` sends to `to` (dropping it while `silent`) until either closes;
/// then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if !silent.load(Ordering::Relaxed) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
