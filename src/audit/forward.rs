//! Forwarding audit records to the host's syslog (`[audit] syslog = "/dev/log"`): journald and
//! rsyslog both read that socket, so a site's log shipper or SIEM sees every record without
//! tailing the audit file.
//!
//! The file stays the record of truth. A record is forwarded only after its batch is on disk
//! (so syslog never shows a record the chain lacks), as the same JSON line the file holds (with
//! `seq`, `prev` and `hash`, so a receiver can check the chain). Forwarding is best effort and
//! never slows the writer: datagrams are sent without blocking, and one that cannot be sent
//! (no listener, a full socket) is counted in `hpc_registry_audit_forward_dropped_total` and
//! logged at most once a minute.
//!
//! The message is what glibc's `syslog(3)` writes to the socket: `<PRI>Mmm dd hh:mm:ss
//! TAG[PID]: MESSAGE` (RFC 3164's local form, which every `/dev/log` reader parses; journald
//! takes the tag as `SYSLOG_IDENTIFIER` and the PID as `SYSLOG_PID`).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Record;

/// The syslog identifier of every forwarded record.
pub const TAG: &str = "hpc-registry-audit";

/// How often a failing forwarder says so in the server log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Syslog facilities a site may choose (`[audit] syslog_facility`), by their codes.
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Where and how records are forwarded: the parsed `[audit] syslog*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub socket: PathBuf,
    pub facility: u8,
}

impl Target {
    /// Parses `[audit] syslog` and `syslog_facility`; `None` when forwarding is off.
    pub fn from_config(
        socket: Option<&str>,
        facility: Option<&str>,
    ) -> Result<Option<Target>, String> {
        let facility = match facility {
            None => 10,
            Some(name) => FACILITIES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, code)| *code)
                .ok_or_else(|| {
                    let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                    format!(
                        "[audit] syslog_facility: unknown facility {name:?} (one of {})",
                        names.join(", ")
                    )
                })?,
        };
        match socket {
            None => Ok(None),
            Some("") => Err("[audit] syslog: give the socket path, e.g. \"/dev/log\"".into()),
            Some(path) if !Path::new(path).is_absolute() => Err(format!(
                "[audit] syslog: {path:?} is not an absolute path (the syslog socket is usually /dev/log)"
            )),
            Some(path) => Ok(Some(Target {
                socket: PathBuf::from(path),
                facility,
            })),
        }
    }
}

/// Sends records to one syslog socket.
pub struct Forwarder {
    target: Target,
    /// Unbound and unconnected: each datagram is addressed to the socket path, so a syslog
    /// daemon that restarts (a new socket at the same path) is found again at once.
    socket: Option<UnixDatagram>,
    pid: u32,
    last_warning: Option<Instant>,
}

impl Forwarder {
    pub fn new(target: Target) -> Forwarder {
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| tracing::error!("audit: cannot create a syslog socket: {e}"))
            .ok();
        Forwarder {
            target,
            socket,
            pid: std::process::id(),
            last_warning: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Forwards `records` (already on disk), one datagram each.
    pub fn forward(&mut self, records: &[Record]) {
        let mut dropped = 0u64;
        let mut first_error = None;
        for record in records {
            let sent = match (&self.socket, message(&self.target, self.pid, record)) {
                (Some(socket), Ok(msg)) => socket
                    .send_to(msg.as_bytes(), &self.target.socket)
                    .map(|_| ()),
                (None, _) => Err(std::io::Error::other("no socket")),
                (_, Err(e)) => Err(std::io::Error::other(e)),
            };
            if let Err(e) = sent {
                dropped += 1;
                first_error.get_or_insert(e);
            }
        }
        let forwarded = records.len() as u64 - dropped;
        if forwarded > 0 {
            metrics::counter!("hpc_registry_audit_forwarded_total").increment(forwarded);
        }
        if let Some(e) = first_error {
            metrics::counter!("hpc_registry_audit_forward_dropped_total").increment(dropped);
            if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                self.last_warning = Some(Instant::now());
                tracing::warn!(
                    "audit: {dropped} records not forwarded to syslog at {} ({e}); they are in the audit file. Is journald or rsyslog listening there?",
                    self.target.socket.display()
                );
            }
        }
    }
}

/// One record as a syslog datagram: `<PRI>Mmm dd hh:mm:ss TAG[PID]: JSON`. Records that are
/// not "ok" (denials, failures) are notices, the rest informational.
pub fn message(target: &Target, pid: u32, record: &Record) -> Result<String, String> {
    let severity = if record.outcome == "ok" { 6 } else { 5 };
    let pri = u16::from(target.facility) * 8 + severity;
    let stamp = crate::timefmt::syslog_stamp(record.time_ms());
    let json = serde_json::to_string(record).map_err(|e| e.to_string())?;
    Ok(format!("<{pri}>{stamp} {TAG}[{pid}]: {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert_eq!(Target::from_config(None, None), Ok(None));
        let t = Target::from_config(Some("/dev/log"), None)
            .unwrap()
            .unwrap();
        assert_eq!(t.facility, 10, "authpriv by default: records name users");
        let t = Target::from_config(Some("/run/x"), Some("LOCAL3"))
            .unwrap()
            .unwrap();
        assert_eq!(t.facility, 19);
        assert!(Target::from_config(Some("dev/log"), None)
            .unwrap_err()
            .contains("absolute"));
        assert!(Target::from_config(Some("/dev/log"), Some("mail"))
            .unwrap_err()
            .contains("unknown facility \"mail\""));
        // A bad facility is refused even while forwarding is off, so it cannot lurk.
        assert!(Target::from_config(None, Some("nope")).is_err());
    }

    #[test]
    fn a_message_is_what_syslog_3_writes() {
        let target = Target {
            socket: "/dev/log".into(),
            facility: 10,
        };
        let mut r = Record::new("auth.failure", "denied");
        r.time = "2026-12-03T08:04:05.123Z".into();
        r.user = Some("alice".into());
        let msg = message(&target, 42, &r).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            msg,
            format!("<85>Dec  3 08:04:05 hpc-registry-audit[42]: {json}")
        );
        r.outcome = "ok".into();
        assert!(message(&target, 42, &r).unwrap().starts_with("<86>"));
    }

    #[test]
    fn records_reach_a_listening_socket_and_a_missing_one_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let target = Target {
            socket: path.clone(),
            facility: 4,
        };
        let mut forwarder = Forwarder::new(target);
        // Nobody listening yet: dropped, no panic, no error returned.
        forwarder.forward(&[Record::new("manifest.push", "ok")]);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        forwarder.forward(&[Record::new("manifest.push", "ok")]);
        let mut buf = vec![0u8; 65536];
        let n = listener.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("<38>"), "{text}");
        assert!(text.contains("\"action\":\"manifest.push\""), "{text}");
    }
}
