//! Passwords from standard input or the terminal, never from the command line (where `ps` would
//! show them).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

/// A password from stdin (`--password-stdin`) or typed twice at the terminal without echo.
pub fn read_password(from_stdin: bool, what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if from_stdin {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\n', '\r']).to_owned();
        if p.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(p);
    }
    if !stdin.is_terminal() {
        bail!("standard input is not a terminal: pass --password-stdin and pipe the password");
    }
    let first = prompt_hidden(&format!("{what}: "))?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off (restored even on error).
pub fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr/tcsetattr on our own stdin.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            bail!("cannot read terminal settings");
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restoring the settings read above.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
