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

/// The slurm.conf lines every test cluster shares: MUNGE auth, no cgroups, no accounting.
pub(super) const PLUGINS: &str = "AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600";

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
        Self::start_inner(extra_conf, daemon_env, None)
    }

    /// A cluster whose node also has `gpus` GPUs (stand-ins: jobs may ask for them, as
    /// `sbatch --test-only` of a GPU batch script needs, but there is no GPU behind them).
    pub fn start_with_gpus(gpus: u32) -> SlurmCluster {
        Self::start_inner("GresTypes=gpu", &[], Some(gpus))
    }

    fn start_inner(
        extra_conf: &str,
        daemon_env: &[(&str, &str)],
        gpus: Option<u32>,
    ) -> SlurmCluster {
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
        let node_gres = gpus.map_or(String::new(), |n| format!(" Gres=gpu:{n}"));
        if let Some(n) = gpus {
            // slurmd drops a GPU without a device file; harmless character devices stand in
            // (no cgroups here, so no job is confined to them).
            let devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random"];
            assert!(
                n as usize <= devices.len(),
                "at most {} test GPUs",
                devices.len()
            );
            let lines: String = devices[..n as usize]
                .iter()
                .map(|d| format!("Name=gpu File={d}\n"))
                .collect();
            let gres = root.join("gres.conf");
            fs::write(&gres, lines).expect("write gres.conf");
            chmod(&gres, 0o644);
        }
        let r = root.display();
        let conf = format!(
            "ClusterName=hpcrtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
{plugins}
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000{node_gres} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
{extra_conf}
",
            plugins = PLUGINS,
        );
        let conf_path = root.join("slurm.conf");
        fs::write(&conf_path, conf).expect("write slurm.conf");
        chmod(&conf_path, 0o644);
        let mut cluster = SlurmCluster::assemble(dir, conf_path);
        let slurmctld = cluster.daemon("slurmctld", &[], daemon_env);
        cluster.spawn(slurmctld, "slurmctld");
        let slurmd = cluster.daemon("slurmd", &[], daemon_env);
        cluster.spawn(slurmd, "slurmd");
        cluster.wait_until_idle(1);
        cluster
    }

    /// A cluster of no daemons yet, configured by `conf` in `dir` (which has `log/` and `out/`).
    pub(super) fn assemble(dir: TempDir, conf: PathBuf) -> SlurmCluster {
        SlurmCluster {
            dir,
            conf,
            daemons: Vec::new(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `DAEMON -D ARGS -f slurm.conf`, with `env`, its output discarded (it logs to a file).
    pub(super) fn daemon(&self, daemon: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(require_tool(daemon));
        cmd.arg("-D")
            .args(args)
            .arg("-f")
            .arg(&self.conf)
            .env("SLURM_CONF", &self.conf)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Starts `cmd` (a daemon, or what execs one) as one of the cluster's daemons.
    pub(super) fn spawn(&mut self, cmd: Command, what: &str) {
        let child =
            spawn_managed(cmd, libc::SIGTERM).unwrap_or_else(|e| panic!("start {what}: {e}"));
        self.daemons.push(child);
    }

    /// Waits until `nodes` nodes report idle.
    pub fn wait_until_idle(&self, nodes: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self
                .command("sinfo")
                .args(["-h", "-N", "-o", "%t"])
                .output();
            if let Ok(out) = out {
                let states = String::from_utf8_lossy(&out.stdout).into_owned();
                let states: Vec<&str> = states.split_whitespace().collect();
                if states.len() == nodes && states.iter().all(|s| *s == "idle") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm cluster reported no {nodes} idle nodes within {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// A Slurm client command pointed at this cluster.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// This cluster's `slurm.conf` (for `SLURM_CONF`).
    pub fn conf_path(&self) -> &Path {
        &self.conf
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
        let mut logs: Vec<PathBuf> = fs::read_dir(self.dir.path().join("log"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for path in logs {
            let log = path.file_name().unwrap_or_default().to_string_lossy();
            let text = fs::read_to_string(&path).unwrap_or_default();
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

pub(super) fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
