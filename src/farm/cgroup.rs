//! A build's own cgroup under the delegated `[farm] cgroup` directory, on either hierarchy:
//! cgroup v2, or the memory controller of cgroup v1 (RHEL 8, Slurm's cgroup/v1 sites). The
//! hierarchy is read off the delegated directory itself and carried as data ([`Hierarchy`]):
//! the file the limit is written to, where an OOM kill is counted, how the cgroup is emptied.
//! Everything else (the child joining through `cgroup.procs` before `exec`, the removal) is the
//! same on both.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often a build's cgroup is emptied and removal retried before it is left behind.
const REMOVE_TRIES: usize = 50;
const REMOVE_EVERY: Duration = Duration::from_millis(10);

/// What a cgroup hierarchy names its memory files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hierarchy {
    /// For messages: `cgroup v2`, `cgroup v1 memory`.
    pub name: &'static str,
    /// The memory limit (the knob a build over it is said to have exceeded).
    pub limit: &'static str,
    /// What "no limit" is written as (`max_memory_bytes = 0`).
    unlimited: &'static str,
    /// Swap beyond the limit, held at none where the controller offers it (a missing file is
    /// skipped), and whether it counts memory and swap together (v1's memsw: the limit itself)
    /// or swap alone (v2: 0). Written after `limit`: v1 refuses a memsw below the limit.
    swap: &'static str,
    swap_counts_memory: bool,
    /// The file with the `oom_kill N` line.
    oom_events: &'static str,
    /// Counters of the limit being hit, read only when `oom_events` has no `oom_kill` line
    /// (v1 before Linux 4.13), and then only together with a SIGKILL death.
    fail_counts: &'static [&'static str],
    /// Kills everything in the cgroup at once (v2, Linux 5.14); without it, every pid listed in
    /// `cgroup.procs` is sent SIGKILL.
    kill: Option<&'static str>,
}

pub const V2: Hierarchy = Hierarchy {
    name: "cgroup v2",
    limit: "memory.max",
    unlimited: "max",
    swap: "memory.swap.max",
    swap_counts_memory: false,
    oom_events: "memory.events",
    fail_counts: &[],
    kill: Some("cgroup.kill"),
};

pub const V1_MEMORY: Hierarchy = Hierarchy {
    name: "cgroup v1 memory",
    limit: "memory.limit_in_bytes",
    unlimited: "-1",
    swap: "memory.memsw.limit_in_bytes",
    swap_counts_memory: true,
    oom_events: "memory.oom_control",
    // With memsw at the limit, it is memsw's counter that the kernel raises.
    fail_counts: &["memory.failcnt", "memory.memsw.failcnt"],
    kill: None,
};

/// Why the delegated directory cannot hold build cgroups, or a build's cgroup not be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "it is neither a cgroup v2 directory (no cgroup.controllers) nor one of the cgroup v1 \
         memory hierarchy (no memory.limit_in_bytes): farm.cgroup must be a cgroup directory \
         delegated to this service's user, on cgroup v2 one with the memory controller enabled \
         for its children (`memory` in its cgroup.subtree_control), on cgroup v1 one under the \
         memory hierarchy (e.g. /sys/fs/cgroup/memory/...)"
    )]
    NotACgroup,
    #[error(
        "it is a cgroup v2 directory whose children get no memory controller, and it cannot \
         be enabled: farm.cgroup must have `memory` in its cgroup.controllers (enabled by its \
         parent) and hold no process itself, so that `+memory` can be written to its \
         cgroup.subtree_control"
    )]
    NoMemoryController,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Hierarchy {
    /// The hierarchy of the delegated directory `dir`, from its own files.
    pub fn detect(dir: &Path) -> Result<Hierarchy, CgroupError> {
        if dir.join("cgroup.controllers").exists() {
            let control = dir.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).map_err(|source| CgroupError::Io {
                action: "reading",
                path: control,
                source,
            })?;
            return if enabled.split_whitespace().any(|c| c == "memory") {
                Ok(V2)
            } else {
                Err(CgroupError::NoMemoryController)
            };
        }
        if dir.join(V1_MEMORY.limit).exists() {
            return Ok(V1_MEMORY);
        }
        Err(CgroupError::NotACgroup)
    }
}

/// A child cgroup of the delegated `[farm] cgroup` holding one build; on drop, whatever is
/// still in it is killed and it is removed.
pub struct BuildCgroup {
    pub hierarchy: Hierarchy,
    dir: PathBuf,
    /// Open until the child is started (it joins through its inherited copy).
    procs: Option<File>,
}

impl BuildCgroup {
    /// `build-<pid>-<n>` under `parent`, limited to `max_memory` bytes (0: unlimited) and no
    /// swap beyond them.
    pub fn create(parent: &Path, max_memory: u64) -> Result<BuildCgroup, CgroupError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let hierarchy = match Hierarchy::detect(parent) {
            // A delegated v2 directory (systemd's `Delegate=memory`) has the controller but
            // leaves enabling it for its children to its owner; that fails if it holds a
            // process (the server belongs in a sibling: systemd's `DelegateSubgroup=`).
            Err(CgroupError::NoMemoryController) => {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
                Hierarchy::detect(parent)?
            }
            detected => detected?,
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("build-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|source| CgroupError::Io {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        // From here on, dropping `cg` removes the directory again.
        let mut cg = BuildCgroup {
            hierarchy,
            dir,
            procs: None,
        };
        let limit = if max_memory == 0 {
            hierarchy.unlimited.to_owned()
        } else {
            max_memory.to_string()
        };
        cg.write(hierarchy.limit, &limit)?;
        let swap = if hierarchy.swap_counts_memory {
            limit.as_str()
        } else {
            "0"
        };
        // The limit is on memory, not RAM; a kernel without swap accounting has no such file.
        if cg.dir.join(hierarchy.swap).exists() {
            cg.write(hierarchy.swap, swap)?;
        }
        // Rust opens files close-on-exec: the build program never holds it.
        let procs = cg.dir.join("cgroup.procs");
        cg.procs = Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|source| CgroupError::Io {
                    action: "opening",
                    path: procs,
                    source,
                })?,
        );
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(|source| CgroupError::Io {
            action: "writing",
            path,
            source,
        })
    }

    /// The open `cgroup.procs` a child writes `0` to before `exec`, to join (both hierarchies).
    pub fn procs_fd(&self) -> Option<std::os::fd::RawFd> {
        self.procs.as_ref().map(|f| f.as_raw_fd())
    }

    /// Closes this process's `cgroup.procs`, once the child holds its own copy.
    pub fn close_procs(&mut self) {
        self.procs = None;
    }

    /// The kernel's OOM killer ended a process of the build, whose first process ended with
    /// `status`.
    pub fn oom_killed(&self, status: ExitStatus) -> bool {
        let read = |file: &str| std::fs::read_to_string(self.dir.join(file)).ok();
        match read(self.hierarchy.oom_events)
            .as_deref()
            .and_then(oom_kills)
        {
            Some(n) => n > 0,
            None => {
                status.signal() == Some(libc::SIGKILL)
                    && self.hierarchy.fail_counts.iter().any(|f| {
                        read(f)
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
            }
        }
    }

    /// SIGKILL to every process `cgroup.procs` lists.
    fn signal_each(&self) {
        let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) else {
            return;
        };
        for pid in pids
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: a plain signal. A pid listed here is in the build's cgroup; one that
            // exited and was reused since is a window of the length of this loop.
            if pid > 0 {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// N of the `oom_kill N` line (`memory.events`, v1's `memory.oom_control`).
fn oom_kills(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        self.procs = None;
        // cgroup.kill also ends a process that left the build's process group; where there is
        // none (v1, v2 before Linux 5.14), each listed process is killed, again on every try
        // (a process forked meanwhile).
        let killed_at_once = self
            .hierarchy
            .kill
            .is_some_and(|f| std::fs::write(self.dir.join(f), "1").is_ok());
        // Killed processes leave the cgroup once reaped, a moment later.
        for _ in 0..REMOVE_TRIES {
            if !killed_at_once {
                self.signal_each();
            }
            match std::fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(REMOVE_EVERY),
                _ => return,
            }
        }
        tracing::warn!(
            cgroup = %self.dir.display(),
            "a build's cgroup still holds processes and is left behind"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn the_hierarchy_is_read_off_the_delegated_directory() {
        let v2 = dir_with(&[
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.subtree_control", "cpu memory\n"),
        ]);
        assert_eq!(Hierarchy::detect(v2.path()).unwrap(), V2);
        let v1 = dir_with(&[
            ("cgroup.procs", ""),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        assert_eq!(Hierarchy::detect(v1.path()).unwrap(), V1_MEMORY);
        assert_eq!(V1_MEMORY.limit, "memory.limit_in_bytes");

        // v2 without memory for its children: its builds would have no memory.max.
        let unenabled = dir_with(&[
            ("cgroup.controllers", "cpu memory\n"),
            ("cgroup.subtree_control", "cpu\n"),
        ]);
        let e = Hierarchy::detect(unenabled.path()).unwrap_err();
        assert!(matches!(e, CgroupError::NoMemoryController), "{e}");
        assert!(e.to_string().contains("cgroup.subtree_control"), "{e}");
        // A v1 hierarchy of another controller, or no cgroup at all.
        for files in [&[("cgroup.procs", ""), ("cpu.shares", "1024")][..], &[]] {
            let other = dir_with(files);
            let e = Hierarchy::detect(other.path()).unwrap_err();
            assert!(matches!(e, CgroupError::NotACgroup), "{e}");
            assert!(
                e.to_string().contains("farm.cgroup must be")
                    && e.to_string().contains("/sys/fs/cgroup/memory"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_oom_kill_is_counted_in_either_hierarchys_file() {
        // memory.events (v2) and memory.oom_control (v1) share the line.
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
            Some(0)
        );
        // v1 before Linux 4.13: no count, the fall-back decides.
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn without_an_oom_count_v1_reads_the_fail_counters_of_a_killed_build() {
        let dir = dir_with(&[
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"),
            ("memory.failcnt", "0\n"),
            ("memory.memsw.failcnt", "3\n"),
        ]);
        let cg = BuildCgroup {
            hierarchy: V1_MEMORY,
            dir: dir.path().to_path_buf(),
            procs: None,
        };
        assert!(cg.oom_killed(ExitStatus::from_raw(libc::SIGKILL)));
        // The limit was reached (and memory reclaimed), but the build ended on its own.
        assert!(!cg.oom_killed(ExitStatus::from_raw(1 << 8)));
    }
}
