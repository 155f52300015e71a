//! `flock(2)` on cache files. A lock belongs to the open file description, so it is inherited
//! across `exec` (how `hpc-registry run` keeps its SIF held while Apptainer runs) and released
//! by the kernel when the last holder exits, however it exits.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Readers: any number at once (a running job holding its SIF).
    Shared,
    /// One at a time (a download, an eviction).
    Exclusive,
}

fn op(mode: Mode) -> libc::c_int {
    match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    }
}

/// Waits for the lock.
pub fn lock(file: &File, mode: Mode) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op(mode)) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes the lock if nobody conflicting holds it; `Ok(false)` if somebody does.
pub fn try_lock(file: &File, mode: Mode) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op(mode) | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Lets the descriptor (and so its lock) survive `exec`.
pub fn keep_across_exec(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; only FD_CLOEXEC changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
