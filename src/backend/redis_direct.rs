//! A Redis connection without a driver task, for exclusive checkouts.
//!
//! redis's `MultiplexedConnection` runs a task per socket and hands every request to it
//! through a channel, which lets many tasks share the socket. A pooled connection has one
//! user at a time, so that hop only costs: here the task that sends a command writes it
//! and reads the reply itself.
//!
//! A request that is cancelled or fails halfway leaves the connection marked in flight,
//! and the pool discards it instead of handing out a socket with a reply still pending.

use std::io;
use std::time::Duration;

use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Above this, an emptied read buffer gives its memory back.
const KEEP_BUFFER: usize = 64 * 1024;
/// Smallest free space offered to one read.
const READ_CHUNK: usize = 16 * 1024;

/// Commands whose replies do not come one per request; they need a connection of their own
/// (`redis::Client::get_async_pubsub`, or the multiplexed connection with RESP3).
const REFUSED: [&[u8]; 8] = [
    b"SUBSCRIBE",
    b"PSUBSCRIBE",
    b"SSUBSCRIBE",
    b"UNSUBSCRIBE",
    b"PUNSUBSCRIBE",
    b"SUNSUBSCRIBE",
    b"MONITOR",
    b"CLIENT",
];

/// Longer than any reply a Redis server sends (its `proto-max-bulk-len` is 512 MiB).
const MAX_LENGTH: usize = 1 << 32;

/// Where to connect and how to log in.
pub(crate) struct Dial<'a> {
    pub host: &'a str,
    pub port: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub db: i64,
}

pub(crate) struct DirectLink {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    db: i64,
    response_timeout: Option<Duration>,
    /// Replies still owed to requests sent without waiting for them (`no_response`).
    discard: usize,
    /// A request's reply has not been read in full: the socket's state is unknown.
    in_flight: bool,
}

impl DirectLink {
    /// Connects, authenticates and selects the database.
    pub(crate) async fn connect(
        dial: &Dial<'_>,
        response_timeout: Option<Duration>,
    ) -> RedisResult<Self> {
        let stream = TcpStream::connect((dial.host, dial.port)).await?;
        stream.set_nodelay(true)?;
        let mut link = DirectLink {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            wbuf: Vec::new(),
            db: dial.db,
            response_timeout,
            discard: 0,
            in_flight: false,
        };
        if let Some(password) = dial.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = dial.username {
                auth.arg(user);
            }
            auth.arg(password);
            link.request(&auth).await?.extract_error()?;
        }
        if dial.db != 0 {
            link.request(redis::cmd("SELECT").arg(dial.db))
                .await?
                .extract_error()?;
        }
        Ok(link)
    }

    /// False once a request was left unfinished.
    pub(crate) fn is_clean(&self) -> bool {
        !self.in_flight
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// One command and its reply. A server error is returned as `Value::ServerError`, as
    /// redis's own connections do.
    pub(crate) async fn request(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        refuse(cmd)?;
        self.wbuf.clear();
        cmd.write_packed_command(&mut self.wbuf);
        if cmd.is_no_response() {
            self.send().await?;
            self.discard += 1;
            return Ok(Value::Nil);
        }
        let mut replies = self.exchange(1).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    /// A pipeline: `offset + count` replies, of which the last `count` are returned. In a
    /// transaction (`offset > 0`), a command the server refused to queue fails the whole
    /// request with the server's `EXECABORT` error.
    pub(crate) async fn request_pipeline(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        for cmd in pipeline.cmd_iter() {
            refuse(cmd)?;
        }
        self.wbuf = pipeline.get_packed_pipeline();
        let mut replies = self.exchange(offset + count).await?;
        let rest = replies.split_off(offset.min(replies.len()));
        let queued_error = replies.iter().any(|v| matches!(v, Value::ServerError(_)));
        if queued_error && let Some(Value::ServerError(_)) = rest.last() {
            let exec = rest.into_iter().next_back().unwrap_or(Value::Nil);
            return Err(exec
                .extract_error()
                .err()
                .unwrap_or_else(|| RedisError::from((ErrorKind::Client, "transaction aborted"))));
        }
        Ok(rest)
    }

    /// Writes `wbuf`, then reads `n` replies, within the response timeout.
    async fn exchange(&mut self, n: usize) -> RedisResult<Vec<Value>> {
        self.in_flight = true;
        let replies = match self.response_timeout {
            Some(limit) => tokio::time::timeout(limit, self.send_and_read(n))
                .await
                .map_err(|_| RedisError::from(io::Error::from(io::ErrorKind::TimedOut)))??,
            None => self.send_and_read(n).await?,
        };
        self.in_flight = false;
        Ok(replies)
    }

    async fn send(&mut self) -> RedisResult<()> {
        self.in_flight = true;
        self.stream.write_all(&self.wbuf).await?;
        self.in_flight = false;
        Ok(())
    }

    async fn send_and_read(&mut self, n: usize) -> RedisResult<Vec<Value>> {
        self.stream.write_all(&self.wbuf).await?;
        while self.discard > 0 {
            self.read_reply().await?;
            self.discard -= 1;
        }
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    /// Reads until one whole reply is buffered, then parses and consumes it.
    async fn read_reply(&mut self) -> RedisResult<Value> {
        let mut scan = Scan::default();
        loop {
            if let Some(len) = scan.advance(&self.rbuf)? {
                let value = redis::parse_redis_value(&self.rbuf[..len]);
                self.rbuf.drain(..len);
                if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_BUFFER {
                    self.rbuf = Vec::with_capacity(READ_CHUNK);
                }
                return value;
            }
            self.rbuf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }
}

/// Refuses the commands this connection cannot answer one reply at a time.
fn refuse(cmd: &Cmd) -> RedisResult<()> {
    let mut args = cmd.args_iter();
    let Some(Arg::Simple(name)) = args.next() else {
        return Ok(());
    };
    let Some(refused) = REFUSED.iter().find(|r| r.eq_ignore_ascii_case(name)) else {
        return Ok(());
    };
    if *refused == b"CLIENT" {
        // Only CLIENT REPLY changes how many replies come back.
        match args.next() {
            Some(Arg::Simple(sub)) if sub.eq_ignore_ascii_case(b"REPLY") => {}
            _ => return Ok(()),
        }
    }
    Err(RedisError::from((
        ErrorKind::Client,
        "not supported on a pooled connection: it changes how replies arrive",
        String::from_utf8_lossy(name).into_owned()
            + "; use redis::Client::get_async_pubsub (or a connection of your own) instead",
    )))
}

/// How far a RESP reply has been found complete; resumes where it stopped when more bytes
/// arrive, so a large reply is scanned once.
#[derive(Default)]
struct Scan {
    pos: usize,
    /// Values still to find; 0 before the first header is read.
    pending: usize,
    started: bool,
}

impl Scan {
    /// The reply's length once it is all in `buf`.
    fn advance(&mut self, buf: &[u8]) -> RedisResult<Option<usize>> {
        if !self.started {
            self.pending = 1;
            self.started = true;
        }
        while self.pending > 0 {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(eol) = find_crlf(buf, self.pos + 1) else {
                return Ok(None);
            };
            let next = eol + 2;
            match kind {
                // Blob string, blob error, verbatim string: a length, then that many bytes.
                b'$' | b'!' | b'=' => {
                    let end = match length(kind, &buf[self.pos + 1..eol])? {
                        Some(n) => next + n + 2,
                        None => next, // null
                    };
                    if buf.len() < end {
                        return Ok(None);
                    }
                    self.pos = end;
                    self.pending -= 1;
                }
                // Array, set, push; map and attribute hold pairs (an attribute precedes the
                // value it describes).
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = length(kind, &buf[self.pos + 1..eol])?.unwrap_or(0);
                    let items = if matches!(kind, b'%' | b'|') {
                        n * 2
                    } else {
                        n
                    };
                    self.pos = next;
                    self.pending = self.pending - 1 + items + usize::from(kind == b'|');
                }
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    self.pos = next;
                    self.pending -= 1;
                }
                other => return Err(protocol_error(other)),
            }
        }
        Ok(Some(self.pos))
    }
}

/// The length in a header line; `None` for the null length -1.
fn length(kind: u8, digits: &[u8]) -> RedisResult<Option<usize>> {
    let n: i64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error(kind))?;
    match usize::try_from(n) {
        Ok(n) if n <= MAX_LENGTH => Ok(Some(n)),
        Err(_) if n == -1 => Ok(None),
        _ => Err(protocol_error(kind)),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|p| from + p)
}

fn protocol_error(kind: u8) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "invalid reply from the server",
        format!("unexpected type byte 0x{kind:02x}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::Scan;

    fn whole(bytes: &[u8]) -> Option<usize> {
        Scan::default().advance(bytes).expect("valid RESP")
    }

    #[test]
    fn finds_the_end_of_each_reply_kind() {
        assert_eq!(whole(b"+OK\r\n"), Some(5));
        assert_eq!(whole(b"-ERR no\r\n"), Some(9));
        assert_eq!(whole(b":42\r\n+next\r\n"), Some(5));
        assert_eq!(whole(b"$5\r\nhello\r\n"), Some(11));
        assert_eq!(whole(b"$-1\r\n"), Some(5));
        assert_eq!(whole(b"*-1\r\n"), Some(5));
        assert_eq!(whole(b"*0\r\n"), Some(4));
        assert_eq!(whole(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n"), Some(19));
        assert_eq!(whole(b"%1\r\n+k\r\n+v\r\n"), Some(12));
    }

    #[test]
    fn waits_for_the_rest_of_a_split_reply() {
        let full = b"*2\r\n$5\r\nhello\r\n$3\r\nbye\r\n";
        for cut in 0..full.len() {
            assert_eq!(whole(&full[..cut]), None, "cut at {cut}");
        }
        assert_eq!(whole(full), Some(full.len()));
        // Resuming gives the same answer as scanning from the start.
        let mut scan = Scan::default();
        for cut in 0..full.len() {
            assert_eq!(scan.advance(&full[..cut]).expect("valid"), None);
        }
        assert_eq!(scan.advance(full).expect("valid"), Some(full.len()));
    }

    #[test]
    fn rejects_what_is_not_resp() {
        assert!(Scan::default().advance(b"hello\r\n").is_err());
        assert!(Scan::default().advance(b"$x\r\n").is_err());
        assert!(Scan::default().advance(b"$-2\r\n").is_err());
        assert!(Scan::default().advance(b"*99999999999999\r\n").is_err());
    }
}
