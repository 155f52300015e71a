//! MUNGE credentials (`Authorization: MUNGE <credential>`), the identity every Slurm node already
//! has: a job runs `munge -n` and the registry learns the job owner's uid without any secret in
//! the batch script.
//!
//! Decoding calls libmunge's `munge_decode` directly when the library is there (Debian's
//! `libmunge2`, loaded with `dlopen` at start, so the registry still builds and runs on machines
//! without MUNGE), on the blocking pool with at most [`DECODERS`] at once. Otherwise, or when a
//! site names its own `[auth] unmunge` program, it runs `unmunge` (credential on stdin): a fork
//! and exec per request, about 2 ms of CPU (issue 15). Either way munged itself refuses
//! replayed, expired and rewound credentials and checks the MAC, so a credential works exactly
//! once.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Longest credential accepted; `munge -n` makes about 130 bytes, with a payload a few hundred.
const MAX_CREDENTIAL: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent `munge_decode` calls: each holds a blocking-pool thread while munged answers, and
/// munged itself decodes on a couple of threads, so more would only queue there.
const DECODERS: usize = 4;
/// The `unmunge` setting that means "no particular program": the library is used when present.
pub const DEFAULT_UNMUNGE: &str = "unmunge";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MungeError {
    #[error("not a MUNGE credential")]
    Malformed,
    #[error("MUNGE credential refused: {0}")]
    Refused(&'static str),
    #[error("cannot decode MUNGE credentials: {0}")]
    Unavailable(String),
}

/// Decodes credentials through libmunge or `unmunge`.
pub struct Munge {
    /// munged's socket; `None` for the default.
    socket: Option<PathBuf>,
    decoder: Decoder,
}

enum Decoder {
    Library {
        lib: Arc<LibMunge>,
        slots: tokio::sync::Semaphore,
    },
    Process(PathBuf),
}

impl Munge {
    /// libmunge when it loads and `unmunge` is the default, else the `unmunge` program.
    pub fn new(unmunge: &Path, socket: Option<PathBuf>) -> Munge {
        let library = (unmunge == Path::new(DEFAULT_UNMUNGE))
            .then(LibMunge::load)
            .flatten();
        let decoder = match library {
            Some(lib) => Decoder::Library {
                lib: Arc::new(lib),
                slots: tokio::sync::Semaphore::new(DECODERS),
            },
            None => Decoder::Process(unmunge.to_path_buf()),
        };
        Munge { socket, decoder }
    }

    /// Whether credentials are decoded in-process by libmunge.
    pub fn uses_library(&self) -> bool {
        matches!(self.decoder, Decoder::Library { .. })
    }

    /// The uid of the process that encoded `credential`.
    pub async fn decode(&self, credential: &str) -> Result<u32, MungeError> {
        let credential = credential.trim();
        if !well_formed(credential) {
            return Err(MungeError::Malformed);
        }
        match &self.decoder {
            Decoder::Library { lib, slots } => {
                let _slot = slots
                    .acquire()
                    .await
                    .map_err(|e| MungeError::Unavailable(e.to_string()))?;
                let (lib, socket) = (Arc::clone(lib), self.socket.clone());
                // well_formed: no NUL inside.
                let cred = CString::new(credential).map_err(|_| MungeError::Malformed)?;
                tokio::task::spawn_blocking(move || lib.decode(&cred, socket.as_deref()))
                    .await
                    .map_err(|e| MungeError::Unavailable(format!("decoder task failed: {e}")))?
            }
            Decoder::Process(unmunge) => self.run_unmunge(unmunge, credential).await,
        }
    }

    async fn run_unmunge(&self, unmunge: &Path, credential: &str) -> Result<u32, MungeError> {
        let mut cmd = tokio::process::Command::new(unmunge);
        cmd.args(["--numeric", "--keys=status,uid", "--output=/dev/null"]);
        if let Some(s) = &self.socket {
            cmd.arg("--socket").arg(s);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let unavailable = |e: std::io::Error| {
            MungeError::Unavailable(format!("running {}: {e}", unmunge.display()))
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

/// `munge_err_t` codes from munge.h.
const EMUNGE_SUCCESS: c_int = 0;
/// `MUNGE_OPT_SOCKET` from munge.h.
const MUNGE_OPT_SOCKET: c_int = 8;

type DecodeFn = unsafe extern "C" fn(
    cred: *const c_char,
    ctx: *mut c_void,
    buf: *mut *mut c_void,
    len: *mut c_int,
    uid: *mut libc::uid_t,
    gid: *mut libc::gid_t,
) -> c_int;
type CtxCreateFn = unsafe extern "C" fn() -> *mut c_void;
type CtxDestroyFn = unsafe extern "C" fn(ctx: *mut c_void);
type CtxSetFn = unsafe extern "C" fn(ctx: *mut c_void, opt: c_int, ...) -> c_int;

/// The four functions of libmunge.so.2 the registry calls, resolved once. The handle is never
/// closed: the functions stay valid for the life of the process.
struct LibMunge {
    decode: DecodeFn,
    ctx_create: CtxCreateFn,
    ctx_destroy: CtxDestroyFn,
    ctx_set: CtxSetFn,
}

impl LibMunge {
    fn load() -> Option<LibMunge> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is transmuted to the
        // signature munge.h (libmunge 0.5) declares for it, and only when it was found.
        unsafe {
            let handle = libc::dlopen(c"libmunge.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return None;
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(handle, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            Some(LibMunge {
                decode: std::mem::transmute::<*mut c_void, DecodeFn>(sym(c"munge_decode")?),
                ctx_create: std::mem::transmute::<*mut c_void, CtxCreateFn>(sym(
                    c"munge_ctx_create",
                )?),
                ctx_destroy: std::mem::transmute::<*mut c_void, CtxDestroyFn>(sym(
                    c"munge_ctx_destroy",
                )?),
                ctx_set: std::mem::transmute::<*mut c_void, CtxSetFn>(sym(c"munge_ctx_set")?),
            })
        }
    }

    /// One blocking `munge_decode` (munged answers over its socket).
    fn decode(&self, cred: &CStr, socket: Option<&Path>) -> Result<u32, MungeError> {
        let socket = match socket {
            Some(s) => Some(
                CString::new(s.as_os_str().as_encoded_bytes())
                    .map_err(|_| MungeError::Unavailable("MUNGE socket path has a NUL".into()))?,
            ),
            None => None,
        };
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: a context is created and destroyed here, used by this thread only; `cred` and
        // `socket` are NUL-terminated and outlive the calls; buf and len are NULL, so libmunge
        // allocates no payload; uid and gid point to locals.
        let status = unsafe {
            let ctx = (self.ctx_create)();
            if ctx.is_null() {
                return Err(MungeError::Unavailable("munge_ctx_create failed".into()));
            }
            let mut status = EMUNGE_SUCCESS;
            if let Some(s) = &socket {
                status = (self.ctx_set)(ctx, MUNGE_OPT_SOCKET, s.as_ptr());
            }
            if status == EMUNGE_SUCCESS {
                status = (self.decode)(
                    cred.as_ptr(),
                    ctx,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut uid,
                    &mut gid,
                );
            }
            (self.ctx_destroy)(ctx);
            status
        };
        status_result(i64::from(status)).map(|()| uid)
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
    status_result(status)?;
    field("UID")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| MungeError::Unavailable("unmunge printed no uid".into()))
}

/// What a `munge_err_t` means for the caller (codes from munge.h).
fn status_result(status: i64) -> Result<(), MungeError> {
    match status {
        0 => Ok(()),
        15 => Err(MungeError::Refused("expired")),
        16 => Err(MungeError::Refused("rewound (clock skew)")),
        17 => Err(MungeError::Refused("replayed")),
        18 => Err(MungeError::Refused("not authorized for this host")),
        6 | 7 => Err(MungeError::Unavailable(format!(
            "munged not reachable (status {status})"
        ))),
        _ => Err(MungeError::Refused("invalid")),
    }
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
