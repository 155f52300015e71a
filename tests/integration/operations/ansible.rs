//! The Ansible roles of deploy/ansible applied for real: ansible-core from PyPI (the pinned venv
//! of scripts/install-test-deps.sh) runs site.yml against this machine (`connection: local`),
//! with every path of the roles under a temporary prefix so the host's own /etc, /var and
//! systemd stay untouched (only the roles' system users are created on the host). The admin
//! password travels through ansible-vault. systemd is not PID 1 here (and the prefixed units are
//! not where it looks anyway), so the services are started from the installed units the way
//! systemd would: ExecStart, User=, Group=, Environment=, AmbientCapabilities= and
//! LoadCredential= (`%d`) parsed from the unit files. Then: the server answers over HTTPS with
//! the TLS files the role installed, a push becomes a SIF (built by the builder the builder role
//! installed, when this binary has `hpc-registry builder`), the compute-node client with the
//! installed client.toml fetches it as a cluster user authenticated by MUNGE, the installed
//! Slurm prolog prefetches it, and the installed cache cleaner evicts it. A last run reports
//! `changed=0`. `ansible-lint` passes with the production profile.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::node::{file_digest, text};
use crate::support::sif::{check_runnable_sif, skopeo};
use crate::support::users::*;
use crate::support::*;

/// Where scripts/install-test-deps.sh puts ansible-core and ansible-lint.
const DEFAULT_VENV: &str = "/opt/hpc-registry-test/ansible";

fn venv_tool(tool: &str) -> PathBuf {
    let venv = std::env::var_os("HPC_REGISTRY_TEST_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    let path = venv.join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (it installs the pinned ansible-core \
         and ansible-lint into {})",
        path.display(),
        venv.display()
    );
    path
}

/// PATH with the venv's bin first (ansible warns when its own directory is not on it).
fn path_with_venv() -> std::ffi::OsString {
    let bin = venv_tool("ansible-playbook")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest))).expect("a PATH")
}

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ansible")
}

/// `hpc-registry builder --help` works: this binary has the remote builder.
fn builder_command_exists() -> bool {
    Command::new(SERVER_BIN)
        .args(["builder", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The managed host's tree: `root()/etc/hpc-registry`, `root()/var/lib/hpc-registry`, … in a
/// directory every user may traverse (the services run as their own users, and alice runs the
/// installed client), removed at the end.
struct Prefix {
    dir: TempDir,
}

impl Prefix {
    fn new() -> Prefix {
        // Not below /tmp or /var/tmp: the role refuses a node cache there (the cleaner's
        // PrivateTmp= would hide it).
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-ansible-")
            .tempdir_in("/var/lib")
            .expect("prefix dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        // What every real host already has (the roles create only their own directories; the
        // parents they would make here take the mode of the first child, e.g. 0750).
        for d in [
            "etc/systemd/system",
            "usr/local/bin",
            "usr/local/lib",
            "var/lib",
            "var/cache",
        ] {
            let path = dir.path().join(d);
            fs::create_dir_all(&path).unwrap();
            run(Command::new("chmod").arg("-R").arg("0755").arg(dir.path()));
        }
        Prefix { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `/ABSOLUTE/PATH` of the host, under the prefix.
    fn at(&self, absolute: &str) -> PathBuf {
        self.root().join(absolute.trim_start_matches('/'))
    }

    fn s(&self, absolute: &str) -> String {
        self.at(absolute).display().to_string()
    }
}

/// A unit file's `[Service]` (and other sections') keys, in order; repeated keys keep every value.
struct Unit {
    keys: BTreeMap<String, Vec<String>>,
}

impl Unit {
    fn read(path: &Path) -> Unit {
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {line}", path.display()));
            keys.entry(k.to_owned()).or_default().push(v.to_owned());
        }
        Unit { keys }
    }

    fn one(&self, key: &str) -> &str {
        match self.keys.get(key).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{key}= is not set once: {other:?}"),
        }
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.keys.get(key).cloned().unwrap_or_default()
    }

    /// ExecStart as argv (the shipped units quote nothing), with `%d` (the credentials
    /// directory) replaced.
    fn exec_start(&self, credentials: Option<&Path>) -> Vec<String> {
        let line = self.one("ExecStart");
        assert!(
            !line.contains('"') && !line.contains('\''),
            "a quoted ExecStart: {line}"
        );
        line.split_whitespace()
            .map(|w| match credentials {
                Some(dir) => w.replace("%d", &dir.display().to_string()),
                None => {
                    assert!(!w.contains('%'), "an unresolved specifier in {line}");
                    w.to_owned()
                }
            })
            .collect()
    }

    /// A command as systemd would run this unit's ExecStart: a clean environment plus
    /// `Environment=`, as `User=`/`Group=` (no supplementary groups), with `NoNewPrivileges=`,
    /// `CapabilityBoundingSet=` and the ambient capabilities of `AmbientCapabilities=` (through
    /// setpriv, which keeps them across the uid change as systemd does). The filesystem
    /// sandboxing needs systemd itself: `systemd-analyze verify` and `security` check it.
    fn command(&self, credentials: Option<&Path>) -> Command {
        let argv = self.exec_start(credentials);
        let user = self.one("User");
        let group = self.one("Group");
        let caps: Vec<String> = self
            .all("AmbientCapabilities")
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--clear-groups");
        if !caps.is_empty() {
            let list = caps
                .iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect::<Vec<_>>()
                .join(",");
            cmd.arg(format!("--inh-caps={list}"))
                .arg(format!("--ambient-caps={list}"));
        }
        if self.all("NoNewPrivileges") == ["true"] {
            cmd.arg("--no-new-privs");
        }
        if let Some(bounding) = self
            .keys
            .get("CapabilityBoundingSet")
            .and_then(|v| v.last())
        {
            let keep: String = bounding
                .split_whitespace()
                .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect();
            cmd.arg(format!("--bounding-set=-all{keep}"));
        }
        cmd.arg("--").args(&argv).env_clear().env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for assignment in self.all("Environment") {
            let (k, v) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("Environment={assignment}"));
            cmd.env(k, v);
        }
        cmd
    }
}

/// A service started from its unit, its output in a log file; killed on drop.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn start(name: &str, mut cmd: Command, log_dir: &Path) -> Service {
        let log = log_dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = spawn_managed(cmd, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Service {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// Counts of a PLAY RECAP line: `localhost : ok=12 changed=3 unreachable=0 failed=0 …`.
fn recap(output: &str) -> BTreeMap<String, u64> {
    let line = output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .find(|l| l.contains(" ok="))
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{output}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// The controller's side: inventory, variables, the vault, TLS files, logs.
struct Controller {
    dir: TempDir,
    vault_password_file: PathBuf,
}

impl Controller {
    fn playbook(&self, inventory: &str) -> BTreeMap<String, u64> {
        let inventory_path = self.dir.path().join("inventory.ini");
        fs::write(&inventory_path, inventory).unwrap();
        let out = run_output(
            Command::new(venv_tool("ansible-playbook"))
                .current_dir(ansible_dir())
                .arg("-i")
                .arg(&inventory_path)
                .arg("--vault-password-file")
                .arg(&self.vault_password_file)
                .arg("-e")
                .arg(format!("@{}", self.dir.path().join("vars.yml").display()))
                .arg("-e")
                .arg(format!(
                    "@{}",
                    self.dir.path().join("secrets.yml").display()
                ))
                .arg("site.yml")
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_FORCE_COLOR", "0")
                .env("PATH", path_with_venv())
                .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("ansible-tmp"))
                .env(
                    "ANSIBLE_REMOTE_TEMP",
                    self.dir.path().join("ansible-remote-tmp"),
                )
                .env("ANSIBLE_HOME", self.dir.path().join("ansible-home")),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "ansible-playbook failed ({}):\n{stdout}\n{}",
            out.status,
            text(&out.stderr)
        );
        let counts = recap(&stdout);
        assert_eq!(counts.get("failed"), Some(&0), "{stdout}");
        assert_eq!(counts.get("unreachable"), Some(&0), "{stdout}");
        eprintln!("ansible-playbook: {counts:?}");
        counts
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn uid_of(user: &str) -> u32 {
    run(Command::new("id").args(["-u", user]))
        .trim()
        .parse()
        .expect("numeric uid")
}

/// `curl --cacert CA URL` answers 200 within `wait`.
fn wait_https_ok(url: &str, cacert: &Path, wait: Duration, service: &mut Service) {
    let deadline = Instant::now() + wait;
    loop {
        service.assert_running();
        let out = run_output(
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(cacert)
                .arg(url),
        );
        if text(&out.stdout).trim() == "200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 within {wait:?}: {} {}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            service.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// systemd-analyze verify passes on the installed units, without a single warning.
fn verify_units(unit_dir: &Path, units: &[&str]) {
    let out = run_output(
        Command::new(require_tool("systemd-analyze"))
            .current_dir(unit_dir)
            .args(["verify", "--man=no"])
            .args(units.iter().map(|u| format!("./{u}"))),
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify {units:?}:\n{report}"
    );
}

#[test]
fn the_roles_install_a_working_registry_builder_and_compute_node_and_a_rerun_changes_nothing() {
    let playbook = venv_tool("ansible-playbook");
    ensure_munged();
    let alice_uid = ensure_host_user("alice");
    let with_builder = builder_command_exists();
    if !with_builder {
        eprintln!(
            "SKIPPED (builder part only): `{SERVER_BIN} builder --help` fails, this binary has \
             no remote builder yet; the server builds with a local worker and the builder role \
             is not applied"
        );
    }
    let host = Prefix::new();
    let ca = TestCa::new();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");

    // The controller: a vault holding the admin password (encrypted before any run).
    let controller = tempfile::Builder::new()
        .prefix("hpcreg-ansible-controller-")
        .tempdir()
        .unwrap();
    let admin_password = format!("ansible-{}", unique("pw"));
    let vault_password_file = controller.path().join("vault-password");
    fs::write(&vault_password_file, format!("{}\n", unique("vault"))).unwrap();
    let secrets = controller.path().join("secrets.yml");
    fs::write(
        &secrets,
        format!("vault_hpc_registry_admin_password: {admin_password}\n"),
    )
    .unwrap();
    run(Command::new(playbook.with_file_name("ansible-vault"))
        .arg("encrypt")
        .arg(&secrets)
        .arg("--vault-password-file")
        .arg(&vault_password_file));
    let sealed = fs::read_to_string(&secrets).unwrap();
    assert!(
        sealed.starts_with("$ANSIBLE_VAULT") && !sealed.contains(&admin_password),
        "the vault is not encrypted:\n{sealed}"
    );
    let controller = Controller {
        dir: controller,
        vault_password_file,
    };

    let bin = host.s("/usr/local/bin/hpc-registry");
    let cfg = host.s("/etc/hpc-registry");
    let data_dir = host.at("/var/lib/hpc-registry");
    let cache_dir = host.at("/var/cache/hpc-registry");
    let unit_dir = host.at("/etc/systemd/system");
    let token_src = controller.dir.path().join("builder.token");
    let vars = format!(
        r#"---
hpc_registry_binary: {bin}
hpc_registry_binary_src: {server_bin}
hpc_registry_config_dir: {cfg}
hpc_registry_unit_dir: {unit_dir}
hpc_registry_manage_services: false

hpc_registry_server_data_dir: {data_dir}
hpc_registry_server_listen: "127.0.0.1:{port}"
hpc_registry_server_tls_cert: {cfg}/tls/cert.pem
hpc_registry_server_tls_key: {cfg}/tls/key.pem
hpc_registry_server_tls_cert_src: {ca_cert}
hpc_registry_server_tls_key_src: {ca_key}
hpc_registry_server_munge: true
hpc_registry_server_farm_workers: {workers}
hpc_registry_server_admin_user: admin
hpc_registry_server_admin_password: "{{{{ vault_hpc_registry_admin_password }}}}"

hpc_registry_builder_server_url: "{url}"
hpc_registry_builder_token_src: {token_src}
hpc_registry_builder_work_dir: {builder_dir}
hpc_registry_builder_cacert: {cfg}/ca.crt
hpc_registry_builder_cacert_src: {ca_root}

hpc_registry_compute_url: "{url}"
hpc_registry_compute_cacert: {cfg}/ca.crt
hpc_registry_compute_cacert_src: {ca_root}
hpc_registry_compute_cache_dir: {cache}
hpc_registry_compute_cache_max_size: 10GiB
hpc_registry_compute_libexec_dir: {libexec}
hpc_registry_compute_prolog_dir: {prolog_dir}
hpc_registry_compute_slurm_conf: {slurm_conf}
"#,
        server_bin = SERVER_BIN,
        unit_dir = unit_dir.display(),
        data_dir = data_dir.display(),
        ca_cert = ca.path("server.crt").display(),
        ca_key = ca.path("server.key").display(),
        ca_root = ca.path("ca.crt").display(),
        workers = if with_builder { 0 } else { 1 },
        token_src = token_src.display(),
        builder_dir = host.s("/var/lib/hpc-registry-builder"),
        cache = cache_dir.display(),
        libexec = host.s("/usr/local/lib/hpc-registry"),
        prolog_dir = host.s("/etc/slurm/prolog.d"),
        slurm_conf = host.s("/etc/slurm/slurm.conf"),
    );
    fs::write(controller.dir.path().join("vars.yml"), vars).unwrap();
    let local = format!(
        "localhost ansible_connection=local ansible_python_interpreter={}",
        playbook.with_file_name("python").display()
    );
    let without_builders = format!("[registry]\n{local}\n[builders]\n[compute]\n{local}\n");
    let everything = format!("[registry]\n{local}\n[builders]\n{local}\n[compute]\n{local}\n");

    // Run 1: the server and the compute node (a builder needs a token the running server mints).
    let first = controller.playbook(&without_builders);
    assert!(first["changed"] > 0, "{first:?}");

    // What the roles installed, with the modes they promise.
    let server_user = "hpc-registry";
    let meta = fs::metadata(&data_dir).unwrap();
    assert_eq!(mode_of(&data_dir), 0o750, "data directory");
    assert_eq!(meta.uid(), uid_of(server_user), "data directory owner");
    assert_eq!(
        mode_of(&host.at("/etc/hpc-registry/hpc-registry.toml")),
        0o640
    );
    assert_eq!(mode_of(&host.at("/etc/hpc-registry/tls/key.pem")), 0o640);
    assert_eq!(mode_of(&cache_dir), 0o1777, "node cache root");
    assert_eq!(mode_of(&host.at("/usr/local/bin/hpc-registry")), 0o755);
    verify_units(
        &unit_dir,
        &[
            "hpc-registry.service",
            "hpc-registry-cache-clean.service",
            "hpc-registry-cache-clean.timer",
        ],
    );
    let server_unit = Unit::read(&unit_dir.join("hpc-registry.service"));
    assert_eq!(server_unit.one("User"), server_user);
    assert_eq!(
        server_unit.one("ReadWritePaths"),
        data_dir.display().to_string(),
        "the unit may write its data directory only"
    );

    // The server, as its unit runs it.
    let logs = controller.dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut server = Service::start("hpc-registry.service", server_unit.command(None), &logs);
    let cacert = host.at("/etc/hpc-registry/ca.crt");
    wait_https_ok(
        &format!("{url}/healthz"),
        &cacert,
        Duration::from_secs(60),
        &mut server,
    );
    assert!(
        !fs::read_to_string(host.at("/etc/hpc-registry/hpc-registry.toml"))
            .unwrap()
            .contains(&admin_password),
        "the admin password reached the config"
    );

    // The first administrator came from the vault; alice is a cluster user (MUNGE, her uid).
    let admin_env = [
        ("HPC_REGISTRY_USER", "admin"),
        ("HPC_REGISTRY_PASSWORD", admin_password.as_str()),
    ];
    let ca_file = cacert.display().to_string();
    let alice_uid_s = alice_uid.to_string();
    cli(
        &[
            "user",
            "add",
            "alice",
            "--no-password",
            "--uid",
            &alice_uid_s,
            "--server",
            &url,
            "--cacert",
            &ca_file,
        ],
        &admin_env,
        "",
    );

    let mut builder = None;
    let last = if with_builder {
        // The token goes to the controller's file, which the builder role installs.
        let token = cli(
            &[
                "builder-token",
                "create",
                "ansible-builder",
                "--server",
                &url,
                "--cacert",
                &ca_file,
            ],
            &admin_env,
            "",
        );
        let token = token
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .expect("a token line")
            .to_owned();
        fs::write(&token_src, format!("{token}\n")).unwrap();
        let second = controller.playbook(&everything);
        assert!(second["changed"] > 0, "{second:?}");
        let token_file = host.at("/etc/hpc-registry/builder.token");
        assert_eq!(mode_of(&token_file), 0o600, "builder credential");
        assert_eq!(fs::metadata(&token_file).unwrap().uid(), 0);
        verify_units(&unit_dir, &["hpc-registry-builder.service"]);
        let unit = Unit::read(&unit_dir.join("hpc-registry-builder.service"));
        // systemd's LoadCredential=: a copy readable by the service's user only, at %d.
        let (name, source) = unit
            .one("LoadCredential")
            .split_once(':')
            .expect("LoadCredential=NAME:PATH");
        assert_eq!(source, token_file.display().to_string());
        let credentials = host.at("/run/credentials/hpc-registry-builder.service");
        fs::create_dir_all(&credentials).unwrap();
        fs::copy(source, credentials.join(name)).unwrap();
        let builder_uid = uid_of(unit.one("User"));
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{builder_uid}"))
            .arg(&credentials));
        fs::set_permissions(&credentials, fs::Permissions::from_mode(0o500)).unwrap();
        builder = Some(Service::start(
            "hpc-registry-builder.service",
            unit.command(Some(&credentials)),
            &logs,
        ));
        controller.playbook(&everything)
    } else {
        controller.playbook(&without_builders)
    };
    assert_eq!(
        last.get("changed"),
        Some(&0),
        "the last run changed something: {last:?}"
    );

    // A push becomes a SIF, which the installed client fetches as alice (MUNGE) on this node.
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = layout_dir.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh", "-c", "echo from-ansible"]);
    run(skopeo().args([
        "copy",
        "--dest-cert-dir",
        &ca.path("certs.d").display().to_string(),
        "--dest-creds",
        &format!("admin:{admin_password}"),
        "--format",
        "oci",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://127.0.0.1:{port}/library/ansible-check:1"),
    ]));
    let client_config = host.s("/etc/hpc-registry/client.toml");
    let as_alice = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "alice", "--", "env", "-i"])
            .arg("PATH=/usr/bin:/bin")
            .arg("HOME=/")
            .arg(format!("HPC_REGISTRY_CLIENT_CONFIG={client_config}"));
        for (k, v) in envs {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(&bin).args(args);
        run_output(&mut cmd)
    };
    let out = as_alice(
        &["fetch", "--wait", "5m", "library/ansible-check:1"],
        &[("SLURM_JOB_ID", "1414")],
    );
    if let Some(b) = builder.as_mut() {
        b.assert_running();
    }
    server.assert_running();
    assert!(
        out.status.success(),
        "fetch as alice failed ({}): {}\n{}",
        out.status,
        text(&out.stderr),
        server.log()
    );
    let sif = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(
        sif.parent(),
        Some(cache_dir.join(alice_uid.to_string()).as_path()),
        "the SIF is not in alice's cache of the installed client.toml"
    );
    let hex = sif.file_stem().and_then(|s| s.to_str()).unwrap().to_owned();
    assert_eq!(file_digest(&sif), format!("sha256:{hex}"));
    let work = tempfile::tempdir().unwrap();
    check_runnable_sif(
        "ansible",
        &fs::read(&sif).unwrap(),
        work.path(),
        &["/bin/sh"],
        "from-ansible\n",
    );
    if let Some(b) = builder.as_ref() {
        assert!(
            b.log().contains("ansible-check") || server.log().contains("ansible-builder"),
            "the builder did not build it:\n{}\n{}",
            b.log(),
            server.log()
        );
    }

    // The installed Slurm prolog, as slurmd runs it (root, a fresh environment).
    let comment = "hpc-registry: library/ansible-check:1";
    let out = run_output(
        Command::new(host.at("/etc/slurm/prolog.d/hpc-registry-prefetch"))
            .env_clear()
            .env("SLURM_JOB_ID", "1415")
            .env("SLURM_JOB_UID", alice_uid.to_string())
            .env("SLURM_JOB_COMMENT", comment),
    );
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("prefetched library/ansible-check:1"),
        "the installed prolog did not fetch through the installed client.toml: {said}"
    );

    // The installed cache cleaner, as its timer starts it (its user, CAP_DAC_OVERRIDE): it
    // enters alice's private cache; with a cap of 0 it evicts her SIF.
    let cleaner = Unit::read(&unit_dir.join("hpc-registry-cache-clean.service"));
    let out = run_output(cleaner.command(None).stdin(Stdio::null()));
    let said = text(&out.stderr);
    assert!(out.status.success(), "cache cleaner: {said}");
    assert!(said.contains("1 caches, 0 SIFs evicted"), "{said}");
    assert!(sif.exists());
    let out = run_output(cleaner.command(None).args(["--max-size", "0"]));
    let said = text(&out.stderr);
    assert!(out.status.success(), "cache cleaner: {said}");
    assert!(said.contains("1 caches, 1 SIFs evicted"), "{said}");
    assert!(!sif.exists(), "alice's SIF was not evicted");
    server.assert_running();
}

#[test]
fn ansible_lint_passes_on_the_roles_and_playbook() {
    let lint = venv_tool("ansible-lint");
    let home = tempfile::tempdir().unwrap();
    let out = run_output(
        Command::new(&lint)
            .current_dir(ansible_dir())
            .args([
                "--profile",
                "production",
                "--strict",
                "--offline",
                "--nocolor",
            ])
            .arg("site.yml")
            .arg("roles")
            .env("ANSIBLE_HOME", home.path().join("ansible"))
            .env("PATH", path_with_venv())
            .env("HOME", home.path()),
    );
    assert!(
        out.status.success(),
        "ansible-lint ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}
