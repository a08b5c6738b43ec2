//! A child server process: spawn, signal, wait until it answers, clean up on drop.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start answering.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a starting server is asked whether it answers.
const READY_POLL: Duration = Duration::from_millis(25);

/// How many times a server is started on fresh ports after losing a port to another
/// process between choosing it and binding it.
const PORT_RACE_TRIES: usize = 3;

/// Runs `start` again on fresh ports while it fails because a port was taken.
pub(crate) fn retry_port_race<T>(mut start: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 1;
    loop {
        match start() {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < PORT_RACE_TRIES => {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; servers bind it right after).
///
/// It is chosen below the kernel's ephemeral range, so that while a server is down no
/// client socket can take its port (a connect to a dead local port can even connect to
/// itself when the source port it draws is that same port) and a restart on the same port
/// finds it free. A port is never handed out twice in one process, so tests running side
/// by side do not pick the same one.
pub fn free_port() -> io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..100 {
        let port = pick_port()?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

fn pick_port() -> io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(1));
    if high > low + 1000 {
        for _ in 0..500 {
            let port = fastrand::u16(low..high);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Runs a blocking wait; inside a multi-threaded tokio runtime it moves off the worker
/// first (`block_in_place`), so other tasks keep running.
pub(crate) fn off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Polls `look` every 50 ms until it gives a value, off the runtime's worker; after
/// `within`, a timeout error with the last reason `look` gave for waiting.
pub(crate) fn poll_until<T>(
    within: Duration,
    mut look: impl FnMut() -> Result<T, String>,
) -> io::Result<T> {
    let deadline = Instant::now() + within;
    off_the_runtime(|| {
        loop {
            match look() {
                Ok(v) => return Ok(v),
                Err(why) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not within {within:?}: {why}"),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

/// Finds `binary` on the PATH, or says how to install it.
pub(crate) fn require(binary: &str, debian_package: &str) -> io::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "`{binary}` was not found on PATH; install it (Debian: apt-get install {debian_package}, or run scripts/install-deps)"
            ),
        ))
    }
}

/// One running server process.
#[derive(Debug)]
pub(crate) struct Process {
    child: Option<Child>,
    program: String,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl Process {
    pub(crate) fn spawn(program: &str, args: Vec<String>, log: &Path) -> io::Result<Process> {
        let mut p = Process {
            child: None,
            program: program.to_owned(),
            args,
            log: log.to_owned(),
        };
        p.start()?;
        Ok(p)
    }

    pub(crate) fn start(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", self.program)))?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGCONT first: a stopped process still dies on SIGKILL, but this keeps
            // its sockets from lingering in odd states.
            self.signal_pid(c.id(), libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        match &self.child {
            Some(c) => {
                self.signal_pid(c.id(), sig);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server is not running",
            )),
        }
    }

    fn signal_pid(&self, pid: u32, sig: i32) {
        if let Ok(pid) = i32::try_from(pid) {
            // The crate's one unsafe block: std has no way to send SIGSTOP/SIGCONT.
            // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory is shared.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// True when the server's log says its port was taken.
    pub(crate) fn lost_port_race(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains("address already in use"))
    }

    /// The last lines of the server's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Polls `probe` until it answers true, the process exits, or the timeout passes.
    /// Waits until `probe` says the server answers. Inside a multi-threaded tokio runtime
    /// the wait moves off the runtime's worker (`block_in_place`), so other tasks keep
    /// running; [`wait_ready_async`](Process::wait_ready_async) never blocks at all.
    pub(crate) fn wait_ready(&mut self, what: &str, probe: impl Fn() -> bool) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let wait = || loop {
            if self.ready_step(what, &probe, deadline)? {
                return Ok(());
            }
            std::thread::sleep(READY_POLL);
        };
        off_the_runtime(wait)
    }

    /// [`wait_ready`](Process::wait_ready) for async code: sleeps on tokio's timer.
    pub(crate) async fn wait_ready_async(
        &mut self,
        what: &str,
        probe: impl Fn() -> bool,
    ) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.ready_step(what, &probe, deadline)? {
            tokio::time::sleep(READY_POLL).await;
        }
        Ok(())
    }

    /// Kills the process if it runs and starts it again with the same arguments.
    pub(crate) fn respawn(&mut self) -> io::Result<()> {
        self.kill();
        self.start()
    }

    /// One look: ready, not yet, or an error when the process died or time ran out.
    fn ready_step(
        &mut self,
        what: &str,
        probe: &impl Fn() -> bool,
        deadline: Instant,
    ) -> io::Result<bool> {
        if probe() {
            return Ok(true);
        }
        if !self.is_running() {
            let kind = if self.lost_port_race() {
                io::ErrorKind::AddrInUse
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!(
                    "{what} exited during start-up; its log says:\n{}",
                    self.log_tail()
                ),
            ));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{what} did not answer within {READY_TIMEOUT:?}; its log says:\n{}",
                    self.log_tail()
                ),
            ));
        }
        Ok(false)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `request` to a loopback port and returns what came back within a short time.
pub(crate) fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n") && !request.starts_with(b"GET") {
            break;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
