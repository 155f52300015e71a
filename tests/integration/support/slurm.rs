//! A one-node Slurm cluster for the test binary, exactly as in /work/shared/docs/real-peers.md:
//! slurmctld and slurmd as root with the config in a temporary directory, MUNGE authentication,
//! no cgroups and no accounting. Its ports are picked free at start, so it never meets another
//! cluster on the machine. Both daemons get SIGTERM when the test binary exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::users::ensure_munged;
use super::*;

pub struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
}

/// The shared cluster (started on first use).
pub fn slurm() -> &'static Slurm {
    static SLURM: OnceLock<Slurm> = OnceLock::new();
    SLURM.get_or_init(Slurm::start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Slurm {
    fn start() -> Slurm {
        for tool in ["slurmctld", "slurmd", "sbatch", "sinfo", "squeue"] {
            assert!(
                find_tool(tool).is_some(),
                "`{tool}` is not installed: install the Debian package `slurm-wlm`"
            );
        }
        ensure_munged();
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-slurm-")
            .tempdir()
            .expect("slurm temp dir")
            .keep();
        for sub in ["state", "spool", "log", "out"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Jobs run as unprivileged users: they read the config and write their output here.
        for (p, mode) in [(dir.clone(), 0o755), (dir.join("out"), 0o1777)] {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        let host = run(&mut Command::new("hostname")).trim().to_owned();
        let d = dir.display();
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=hpcregtest\nSlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={}\nSlurmdPort={}\nSlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nCredType=cred/munge\n\
                 StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
                 JobCompType=jobcomp/none\nMpiDefault=none\nReturnToService=2\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN\n\
                 PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let slurm = Slurm { dir, conf };
        for daemon in ["slurmctld", "slurmd"] {
            let mut cmd = Command::new(daemon);
            cmd.arg("-D")
                .arg("-f")
                .arg(&slurm.conf)
                .env("SLURM_CONF", &slurm.conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = spawn_managed(cmd, libc::SIGTERM).expect("start a slurm daemon");
            // Runs for the rest of the test binary and dies with it.
            std::mem::forget(child);
            if daemon == "slurmctld" {
                slurm.wait_for("slurmctld answering", |s| {
                    s.cmd("sinfo").output().is_ok_and(|o| o.status.success())
                });
            }
        }
        slurm.wait_for("the node idle", |s| {
            s.cmd("sinfo")
                .args(["-h", "-o", "%t"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        slurm
    }

    fn wait_for(&self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "slurm: no {what} within 60 s; slurmctld log:\n{}\nslurmd log:\n{}",
                self.log("slurmctld"),
                self.log("slurmd")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("log/{daemon}.log"))).unwrap_or_default()
    }

    /// A Slurm client command for this cluster.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// A directory every job may write to.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// Submits `script` as host user `user`; returns the job id.
    pub fn sbatch_as(&self, user: &str, script: &Path) -> String {
        let out = self.out_dir().join("%j.out");
        let mut cmd = self.cmd("runuser");
        cmd.args(["-u", user, "--", "sbatch", "--parsable", "-o"])
            .arg(out)
            .arg(script);
        run(&mut cmd).trim().to_owned()
    }

    /// Waits until job `id` left the queue; returns its output file's content.
    pub fn wait_job(&self, id: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let queued = run(self.cmd("squeue").args(["-h", "-j", id, "-o", "%i"]));
            if queued.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still queued after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        std::fs::read_to_string(self.out_dir().join(format!("{id}.out"))).unwrap_or_default()
    }
}
