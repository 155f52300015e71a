//! A real one-node Slurm cluster for a test (slurmctld + slurmd, MUNGE auth, no cgroups, no
//! accounting), configured in a temp dir as in /work/shared/docs/real-peers.md. Ports are picked
//! free at start so clusters of concurrent test binaries never meet; both daemons are stopped
//! when the [`SlurmCluster`] is dropped (and die with the test binary in any case).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::users::ensure_munged;
use super::{require_tool, run, spawn_managed};

/// How long the daemons may take to report an idle node, and a job to finish.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

pub struct SlurmCluster {
    dir: TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

/// How a batch job ended: its final state and what it printed.
#[derive(Debug)]
pub struct JobResult {
    pub id: String,
    pub state: String,
    pub output: String,
}

impl SlurmCluster {
    pub fn start() -> SlurmCluster {
        Self::start_with("", &[])
    }

    /// Like [`SlurmCluster::start`] with `extra_conf` lines appended to slurm.conf (e.g. a
    /// `Prolog=`) and `daemon_env` in the daemons' environment (which a prolog inherits).
    pub fn start_with(extra_conf: &str, daemon_env: &[(&str, &str)]) -> SlurmCluster {
        for tool in ["slurmctld", "slurmd", "sbatch", "scontrol", "sinfo"] {
            require_tool(tool);
        }
        ensure_munged();
        let dir = tempfile::Builder::new()
            .prefix("hpcr-slurm.")
            .tempdir_in("/var/tmp")
            .expect("slurm temp dir");
        let root = dir.path();
        for sub in ["state", "spool", "log", "out"] {
            fs::create_dir_all(root.join(sub)).expect("slurm dirs");
        }
        // Job owners write their output here.
        chmod(&root.join("out"), 0o1777);
        chmod(root, 0o755);
        let host = run(&mut Command::new("hostname")).trim().to_owned();
        let (ctld_port, node_port) = (free_port(), free_port());
        let r = root.display();
        let conf = format!(
            "ClusterName=hpcrtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
{extra_conf}
"
        );
        let conf_path = root.join("slurm.conf");
        fs::write(&conf_path, conf).expect("write slurm.conf");
        chmod(&conf_path, 0o644);
        let mut cluster = SlurmCluster {
            dir,
            conf: conf_path,
            daemons: Vec::new(),
        };
        cluster.spawn("slurmctld", daemon_env);
        cluster.spawn("slurmd", daemon_env);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = cluster.command("sinfo").args(["-h", "-o", "%t"]).output();
            if let Ok(out) = out {
                if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the one-node Slurm cluster reported no idle node within {START_TIMEOUT:?}\n{}",
                cluster.logs()
            );
            thread::sleep(Duration::from_millis(250));
        }
        cluster
    }

    fn spawn(&mut self, daemon: &str, env: &[(&str, &str)]) {
        let mut cmd = Command::new(require_tool(daemon));
        cmd.args(["-D", "-f"])
            .arg(&self.conf)
            .env("SLURM_CONF", &self.conf)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child =
            spawn_managed(cmd, libc::SIGTERM).unwrap_or_else(|e| panic!("start {daemon}: {e}"));
        self.daemons.push(child);
    }

    /// A Slurm client command pointed at this cluster.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// Where job owners may write.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Submits `script` as the unprivileged host user `user` (`runuser -u USER -- sbatch`) and
    /// waits for the job to end.
    pub fn run_job_as(&self, user: &str, name: &str, script: &str) -> JobResult {
        self.run_job_as_with(user, name, script, &[], &[])
    }

    /// [`SlurmCluster::run_job_as`] with `sbatch_args` before the script and `env` in sbatch's
    /// environment (which the job inherits).
    pub fn run_job_as_with(
        &self,
        user: &str,
        name: &str,
        script: &str,
        sbatch_args: &[&str],
        env: &[(&str, &str)],
    ) -> JobResult {
        let path = self.out_dir().join(format!("{name}.sh"));
        fs::write(&path, script).expect("write job script");
        chmod(&path, 0o755);
        let output = self.out_dir().join(format!("{name}.%j.out"));
        let id = run(Command::new("runuser")
            .args(["-u", user, "--", "sbatch", "--parsable", "--job-name", name])
            .arg(format!("--chdir={}", self.out_dir().display()))
            .arg(format!("--output={}", output.display()))
            .args(sbatch_args)
            .arg(&path)
            .env("SLURM_CONF", &self.conf)
            .envs(env.iter().copied()))
        .trim()
        .to_owned();
        let deadline = Instant::now() + JOB_TIMEOUT;
        let state = loop {
            let info = run(self.command("scontrol").args(["show", "job", &id]));
            let state = info
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("JobState="))
                .unwrap_or("UNKNOWN")
                .to_owned();
            if !matches!(
                state.as_str(),
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"
            ) {
                break state;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {state} after {JOB_TIMEOUT:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(250));
        };
        let out_file = self.out_dir().join(format!("{name}.{id}.out"));
        let output = fs::read_to_string(&out_file).unwrap_or_else(|e| {
            panic!(
                "job {id} ({state}) left no output {}: {e}\n{}",
                out_file.display(),
                self.logs()
            )
        });
        JobResult { id, state, output }
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for log in ["slurmctld.log", "slurmd.log"] {
            let text =
                fs::read_to_string(self.dir.path().join("log").join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            all += &format!("--- {log} (last lines)\n");
            for line in tail.iter().rev() {
                all += line;
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for child in self.daemons.iter_mut().rev() {
            // SIGTERM lets slurmctld save its state cleanly; the temp dir goes afterwards.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
