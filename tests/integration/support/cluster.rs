//! A real multi-node Slurm cluster on one machine (see /work/shared/docs/compute-nodes.md): one
//! `slurmctld` in the test's own namespaces and [`NODES`] `slurmd`, each in a network namespace
//! of its own (a veth pair into a bridge, its own address, `NodeName`/`NodeAddr`), all sharing
//! the one munged (its socket is a path, and namespaces share the file system).
//!
//! Every node also has a mount namespace of its own in which its private directory is
//! bind-mounted over one common path, [`NodeCluster::node_local`]: what a node-local disk is on a
//! real cluster, the same path on every node with different contents. The site's client config
//! puts the SIF cache there, so "every node has a copy" is checked node by node
//! ([`NodeCluster::on_node`]), and nodes never share a cache.
//!
//! The registry under test listens on loopback, which other network namespaces cannot reach; a
//! plain TCP relay on the bridge address forwards to it (the nodes' view of "the registry host").
//! The cluster installs the prolog prefetch (deploy/slurm/prolog.d) as a site would.
//!
//! Nothing reaches beyond this machine: the bridge has no uplink and no forwarding is enabled.
//! Namespaces, veths and the bridge are removed when the cluster is dropped.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::node::{user_bin, user_deploy};
use super::slurm::{chmod, free_port, SlurmCluster, PLUGINS};
use super::users::ensure_munged;
use super::{require_tool, run, run_output, Server};

/// Compute nodes of a cluster: enough for `sbcast`'s fan-out to mean something.
pub const NODES: usize = 3;

/// The private range the clusters' bridges use: 10.231.X.0/24, one X per live cluster.
const NET_PREFIX: &str = "10.231";

pub struct NodeCluster {
    // Dropped in this order: the daemons stop before their network goes.
    slurm: SlurmCluster,
    relay: Relay,
    net: Network,
    nodes: Vec<String>,
}

impl Deref for NodeCluster {
    type Target = SlurmCluster;
    fn deref(&self) -> &SlurmCluster {
        &self.slurm
    }
}

impl NodeCluster {
    /// Starts the cluster with the registry `server` reachable from every node, and waits until
    /// all [`NODES`] are idle.
    pub fn start(server: &Server) -> NodeCluster {
        for tool in [
            "slurmctld",
            "slurmd",
            "sbatch",
            "srun",
            "sbcast",
            "ip",
            "nsenter",
        ] {
            require_tool(tool);
        }
        ensure_munged();
        let net = Network::create(NODES);
        let relay = Relay::start(
            SocketAddr::from((net.host_ip(), 0)),
            SocketAddr::from(([127, 0, 0, 1], server.port())),
        );
        let dir = tempfile::Builder::new()
            .prefix("hpcr-cluster.")
            .tempdir_in("/var/tmp")
            .expect("cluster temp dir");
        let root = dir.path().to_path_buf();
        for sub in [
            "state",
            "spool",
            "log",
            "out",
            "node-local",
            "nodes",
            "site",
        ] {
            fs::create_dir_all(root.join(sub)).expect("cluster dirs");
        }
        chmod(&root, 0o755);
        chmod(&root.join("out"), 0o1777);
        let nodes: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        for node in &nodes {
            // Like /var/tmp on a node: every user may create the cache root in it.
            let local = root.join("nodes").join(node);
            fs::create_dir_all(&local).expect("node dir");
            chmod(&local, 0o1777);
        }
        let site = write_site_files(&root, &relay.url());
        let host = run(&mut Command::new("hostname")).trim().to_owned();
        let r = root.display();
        let node_lines: String = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "NodeName={n} NodeAddr={} CPUs=2 RealMemory=2000 State=UNKNOWN\n",
                    net.node_ip(i)
                )
            })
            .collect();
        let conf = format!(
            "ClusterName=hpcrnodes
SlurmctldHost={host}({host_ip})
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/spool/%n/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.%n.log
{PLUGINS}
Prolog={prolog}
PrologFlags=Alloc
PrologEpilogTimeout=300
{node_lines}PartitionName=debug Nodes=n[1-{NODES}] Default=YES MaxTime=INFINITE State=UP
",
            host_ip = net.host_ip(),
            ctld_port = free_port(),
            node_port = free_port(),
            prolog = site.prolog.display(),
        );
        let conf_path = root.join("slurm.conf");
        fs::write(&conf_path, conf).expect("write slurm.conf");
        chmod(&conf_path, 0o644);
        let mut slurm = SlurmCluster::assemble(dir, conf_path);
        let slurmctld = slurm.daemon("slurmctld", &[], &[]);
        slurm.spawn(slurmctld, "slurmctld");
        for (i, node) in nodes.iter().enumerate() {
            let slurmd = slurm.daemon("slurmd", &["-N", node], &[]);
            let cmd = net.enter(
                i,
                &root.join("nodes").join(node),
                &root.join("node-local"),
                slurmd,
            );
            slurm.spawn(cmd, &format!("slurmd {node}"));
        }
        slurm.wait_until_idle(NODES);
        NodeCluster {
            slurm,
            relay,
            net,
            nodes,
        }
    }

    /// The node names, n1 … nN.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The registry's URL as the nodes reach it.
    pub fn registry_url(&self) -> String {
        self.relay.url()
    }

    /// The path every node sees as its own local disk (empty from the test's side).
    pub fn node_local(&self) -> PathBuf {
        self.slurm.dir().join("node-local")
    }

    /// The site's client config (registry URL, cache under [`NodeCluster::node_local`]),
    /// readable by every user.
    pub fn client_config(&self) -> PathBuf {
        self.slurm.dir().join("site/client.toml")
    }

    /// The node cache's root as every node sees it.
    pub fn cache_root(&self) -> PathBuf {
        self.node_local().join("hpc-registry")
    }

    /// Where `path`, as a job on `node` sees it below [`NodeCluster::node_local`], is from here.
    pub fn on_node(&self, node: &str, path: &Path) -> PathBuf {
        let rest = path
            .strip_prefix(self.node_local())
            .unwrap_or_else(|_| panic!("{} is not on a node's local disk", path.display()));
        self.slurm.dir().join("nodes").join(node).join(rest)
    }

    /// Every node's cache root, as seen from here: `(node, <node's disk>/hpc-registry)`.
    pub fn node_caches(&self) -> Vec<(String, PathBuf)> {
        self.nodes
            .iter()
            .map(|n| (n.clone(), self.on_node(n, &self.cache_root())))
            .collect()
    }

    /// Empties every node's local disk (between the parts of a test).
    pub fn wipe_node_disks(&self) {
        for node in &self.nodes {
            let disk = self.slurm.dir().join("nodes").join(node);
            for entry in fs::read_dir(&disk).expect("node disk").flatten() {
                let path = entry.path();
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
    }

    /// The bridge the nodes hang off, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{NODES} nodes on bridge {} ({}.0/24), registry relay {}",
            self.net.bridge,
            self.net.prefix(),
            self.relay.url()
        )
    }
}

/// What a site installs on its nodes: /etc/hpc-registry/client.toml and the prolog, here kept in
/// the cluster's directory (slurmd gives a prolog a fresh environment, so a wrapper names the
/// config, as an installation without /etc/hpc-registry would do).
struct SiteFiles {
    prolog: PathBuf,
}

fn write_site_files(root: &Path, registry_url: &str) -> SiteFiles {
    let site = root.join("site");
    chmod(&site, 0o755);
    let config = site.join("client.toml");
    fs::write(
        &config,
        format!(
            "url = \"{registry_url}\"\n[cache]\ndir = \"{}\"\n",
            root.join("node-local/hpc-registry").display()
        ),
    )
    .expect("client.toml");
    chmod(&config, 0o644);
    let prolog = site.join("prolog");
    fs::write(
        &prolog,
        format!(
            "#!/bin/sh\nexport HPC_REGISTRY_CLIENT_CONFIG={} HPC_REGISTRY_BIN={} HPC_REGISTRY_PREFETCH_TIMEOUT=240\nexec {} \"$@\"\n",
            config.display(),
            user_bin().display(),
            user_deploy("slurm/prolog.d/hpc-registry-prefetch").display()
        ),
    )
    .expect("prolog");
    chmod(&prolog, 0o755);
    SiteFiles { prolog }
}

/// The bridge and one network namespace per node.
struct Network {
    /// X of 10.231.X.0/24.
    subnet: u8,
    bridge: String,
    namespaces: Vec<String>,
}

impl Network {
    /// Picks a free 10.231.X.0/24 and builds the bridge, the namespaces and their veths.
    fn create(nodes: usize) -> Network {
        // Clusters of parallel tests pick their subnets one at a time.
        static PICK: Mutex<()> = Mutex::new(());
        let _pick = PICK.lock().unwrap_or_else(|e| e.into_inner());
        let in_use = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))
            + &run(Command::new("ip").args(["-4", "route", "show", "table", "all"]));
        let start = std::process::id() as usize % 200;
        let subnet = (0..230)
            .map(|k| ((start + k) % 230 + 20) as u8)
            .find(|x| {
                !in_use.contains(&format!("{NET_PREFIX}.{x}."))
                    && !Path::new(&format!("/sys/class/net/hpcrb{x}")).exists()
            })
            .expect("no free 10.231.X.0/24 for a test cluster");
        let mut net = Network {
            subnet,
            bridge: format!("hpcrb{subnet}"),
            namespaces: Vec::new(),
        };
        let prefix = net.prefix();
        let ip = |args: &[&str]| {
            run(Command::new("ip").args(args));
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &net.bridge]);
        ip(&["link", "set", &net.bridge, "up"]);
        for i in 0..nodes {
            let ns = format!("hpcr-{}-{subnet}-n{}", std::process::id(), i + 1);
            ip(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let veth = format!("hpcrv{subnet}n{}", i + 1);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &net.bridge, "up"]);
            let addr = format!("{}/24", net.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("{prefix}.1"),
            ]);
        }
        net
    }

    fn prefix(&self) -> String {
        format!("{NET_PREFIX}.{}", self.subnet)
    }

    fn host_ip(&self) -> Ipv4Addr {
        format!("{}.1", self.prefix())
            .parse()
            .expect("bridge address")
    }

    fn node_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix(), 11 + i)
    }

    /// `daemon` run in node `i`'s network namespace and in a mount namespace of its own, where
    /// `disk` is bind-mounted over `local`. (`ip netns exec` would remount /sys and lose the
    /// cgroup mounts slurmd wants, hence nsenter + unshare.)
    fn enter(&self, i: usize, disk: &Path, local: &Path, daemon: Command) -> Command {
        let mut cmd = Command::new(require_tool("nsenter"));
        cmd.arg(format!("--net=/run/netns/{}", self.namespaces[i]))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                "mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"",
                "sh",
            ])
            .arg(disk)
            .arg(local)
            .arg(daemon.get_program())
            .args(daemon.get_args());
        for (k, v) in daemon.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run_output(Command::new("ip").args(["netns", "del", ns]));
        }
        let _ = run_output(Command::new("ip").args(["link", "del", &self.bridge]));
    }
}

/// Forwards TCP connections from `listen` to `target`, both ways, until dropped.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen).expect("relay listen");
        let addr = listener.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::Builder::new()
            .name("cluster-relay".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect(target) else {
                        continue;
                    };
                    pipe(&client, &upstream);
                    pipe(&upstream, &client);
                }
            })
            .expect("relay thread");
        Relay { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies `from` into `to` on a thread of its own; ends `to`'s writing side at EOF.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = thread::Builder::new()
        .name("cluster-relay-pipe".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}
