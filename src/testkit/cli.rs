//! `redis-cli`, for what the testkit asks its servers (roles, cluster state) and for
//! `redis-cli --cluster create`.

use std::io;
use std::process::Command;

use super::process::require;

/// Runs `redis-cli` against `127.0.0.1:port` and returns its output. It blocks for the
/// few milliseconds a local server takes to answer.
pub(crate) fn cli(port: u16, password: Option<&str>, args: &[&str]) -> io::Result<String> {
    require("redis-cli", "redis-tools")?;
    let mut cmd = Command::new("redis-cli");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--no-auth-warning",
    ]);
    if let Some(pw) = password {
        cmd.args(["-a", pw]);
    }
    let out = cmd.args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.starts_with("Could not connect") {
        return Err(io::Error::other(format!(
            "redis-cli {} on port {port} failed: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(text)
}

/// The value after `field:` in an `INFO`-style reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// The value after `field` in a flat `key\nvalue\n...` reply (`SENTINEL MASTER`).
pub(crate) fn pair_field<'a>(reply: &'a str, field: &str) -> Option<&'a str> {
    let lines: Vec<&str> = reply.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .find_map(|kv| (kv.first() == Some(&field)).then(|| kv.get(1).copied())?)
}
