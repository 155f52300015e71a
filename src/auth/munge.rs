//! MUNGE credentials (`Authorization: MUNGE <credential>`), the identity every Slurm node already
//! has: a job runs `munge -n` and the registry learns the job owner's uid without any secret in
//! the batch script.
//!
//! Decoding runs the local `unmunge` (credential on stdin) rather than linking libmunge, so the
//! registry builds and runs on machines without MUNGE. munged itself refuses replayed, expired
//! and rewound credentials and checks the MAC, so a credential works exactly once.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Longest credential accepted; `munge -n` makes about 130 bytes, with a payload a few hundred.
const MAX_CREDENTIAL: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MungeError {
    #[error("not a MUNGE credential")]
    Malformed,
    #[error("MUNGE credential refused: {0}")]
    Refused(&'static str),
    #[error("cannot decode MUNGE credentials: {0}")]
    Unavailable(String),
}

/// Decodes credentials through `unmunge`.
#[derive(Debug, Clone)]
pub struct Munge {
    pub unmunge: PathBuf,
    /// munged's socket; `None` for unmunge's default.
    pub socket: Option<PathBuf>,
}

impl Munge {
    /// The uid of the process that encoded `credential`.
    pub async fn decode(&self, credential: &str) -> Result<u32, MungeError> {
        let credential = credential.trim();
        if !well_formed(credential) {
            return Err(MungeError::Malformed);
        }
        let mut cmd = tokio::process::Command::new(&self.unmunge);
        cmd.args(["--numeric", "--keys=status,uid", "--output=/dev/null"]);
        if let Some(s) = &self.socket {
            cmd.arg("--socket").arg(s);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let unavailable = |e: std::io::Error| {
            MungeError::Unavailable(format!("running {}: {e}", self.unmunge.display()))
        };
        let mut child = cmd.spawn().map_err(unavailable)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| MungeError::Unavailable("unmunge has no stdin".into()))?;
        let input = credential.to_owned();
        let run = async move {
            stdin.write_all(input.as_bytes()).await?;
            drop(stdin);
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| MungeError::Unavailable("unmunge timed out".into()))?
            .map_err(unavailable)?;
        parse_metadata(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `MUNGE:<base64>:` and nothing else, so nothing odd reaches unmunge.
pub(crate) fn well_formed(c: &str) -> bool {
    c.len() <= MAX_CREDENTIAL
        && c.starts_with("MUNGE:")
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b':'))
}

/// Reads `STATUS: <n>` and `UID: <n>` from `unmunge --numeric` output.
pub(crate) fn parse_metadata(text: &str) -> Result<u32, MungeError> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let status: i64 = field("STATUS")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            MungeError::Unavailable("unmunge printed no status (is munged running?)".into())
        })?;
    // Codes from munge.h (munge_err_t).
    match status {
        0 => {}
        15 => return Err(MungeError::Refused("expired")),
        16 => return Err(MungeError::Refused("rewound (clock skew)")),
        17 => return Err(MungeError::Refused("replayed")),
        18 => return Err(MungeError::Refused("not authorized for this host")),
        6 | 7 => {
            return Err(MungeError::Unavailable(format!(
                "munged not reachable (status {status})"
            )))
        }
        _ => return Err(MungeError::Refused("invalid")),
    }
    field("UID")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| MungeError::Unavailable("unmunge printed no uid".into()))
}

/// The host's name for `uid` (getpwuid_r), for users MUNGE knows but the database does not.
pub fn host_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call and the strings
    // pw_name points into are copied before buf is dropped.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unmunge_numeric_output() {
        assert_eq!(
            parse_metadata("STATUS:          0\nUID:             1000\n"),
            Ok(1000)
        );
        assert_eq!(
            parse_metadata("STATUS:          17\nUID:             0\n"),
            Err(MungeError::Refused("replayed"))
        );
        assert_eq!(
            parse_metadata("STATUS:          15\n"),
            Err(MungeError::Refused("expired"))
        );
        assert!(matches!(
            parse_metadata(""),
            Err(MungeError::Unavailable(_))
        ));
    }

    #[test]
    fn only_munge_armor_is_passed_on() {
        assert!(well_formed("MUNGE:AwQFAAB+abc=:"));
        assert!(!well_formed("MUNGE:abc\n--socket=/x"));
        assert!(!well_formed("Basic abc"));
    }

    #[test]
    fn root_has_a_host_name() {
        assert_eq!(host_user_name(0).as_deref(), Some("root"));
    }
}
