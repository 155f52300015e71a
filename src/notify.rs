//! systemd's service notification protocol (`sd_notify`), without libsystemd: one datagram per
//! state change to the socket in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). `Type=notify` units learn the server is ready (`READY=1`, sent once it listens
//! and the farm runs) and, with `WatchdogSec=`, that it is still alive (`WATCHDOG=1` every half
//! period, from a task on the async runtime, so a wedged runtime stops the pings and systemd
//! restarts the service). Without `$NOTIFY_SOCKET` every call is a no-op.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service manager. `Ok(false)`: not
/// run under one (no `$NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(SOCKET_ENV) else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        send_abstract(&socket, name, state)?;
    } else if target.starts_with('/') {
        socket.send_to(state.as_bytes(), &target)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{SOCKET_ENV}={target:?} is neither a path nor an @abstract name"),
        ));
    }
    Ok(true)
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract notification sockets exist only on Linux",
    ))
}

/// How often systemd expects `WATCHDOG=1` (`$WATCHDOG_USEC`), if it asked this process for it
/// (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Says `READY=1` (with a status line), then pings the watchdog at half its period until the
/// runtime stops. Failures are logged once: the server works the same without a manager.
pub fn ready_and_watch(status: &str) {
    match notify(&format!("READY=1\nSTATUS={status}")) {
        Ok(true) => tracing::info!("told the service manager we are ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot notify the service manager: {e}"),
    }
    if let Some(period) = watchdog_period() {
        tracing::info!("watchdog: pinging every {:?}", period / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                if let Err(e) = notify("WATCHDOG=1") {
                    tracing::warn!("watchdog ping failed: {e}");
                }
            }
        });
    }
}

/// `STOPPING=1`: the manager shows the service as deactivating while requests drain.
pub fn stopping() {
    let _ = notify("STOPPING=1");
}
