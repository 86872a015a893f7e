//! The bench's "machines": one network namespace per host (coordinator, each smurf, the sink),
//! each with one interface `eth0` and its own address in 10.77.0.0/24, all plugged into a
//! bridge that lives in a namespace of its own (the "switch"). Nothing is created in the
//! host's namespace, no namespace has a route out, so the host's network configuration is
//! untouched and nothing leaves the machine.
//!
//! Namespace names start with `mfnb<PID>-` (PID: this bench process). [`Topology`] removes
//! them when dropped (after killing anything still running inside), so an error or Ctrl-C
//! cleans up; [`remove_leftovers`] removes those of earlier runs whose process is gone (a
//! `kill -9` of the bench).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use crate::procs::{check_interrupted, command, run_ok};

/// Prefix of every namespace this bench creates.
pub const PREFIX: &str = "mfnb";

/// The private test network (only inside the namespaces).
pub const NETWORK: &str = "10.77.0.0/24";

/// One host of the topology.
#[derive(Clone, Debug)]
pub struct Host {
    /// Role name: `coord`, `s1` ... `s4`, `sink`.
    pub role: String,
    /// The namespace's name.
    pub ns: String,
    /// Its address on the test network.
    pub addr: Ipv4Addr,
}

/// The namespaces and the switch; removed on drop.
pub struct Topology {
    /// Namespace holding the bridge.
    switch: String,
    /// The hosts, in creation order.
    pub hosts: Vec<Host>,
    /// Every namespace created so far (the switch first), for teardown.
    created: Vec<String>,
}

/// The name of role `role`'s namespace for this process.
fn ns_name(role: &str) -> String {
    format!("{PREFIX}{}-{role}", std::process::id())
}

/// Runs `ip ARGS`, failing with its error output.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_ok(Command::new("ip").args(args)).map(drop)
}

/// The wrapper that runs a program in namespace `ns`: `ip netns exec NS` (it execs the
/// program, so the child's pid is the program's).
pub fn ns_exec(ns: &str) -> Vec<String> {
    ["ip", "netns", "exec", ns].map(String::from).to_vec()
}

/// Runs `program args` in namespace `ns` to its end and returns its standard output; fails
/// with its output unless it succeeds, or at once when the bench was interrupted.
fn run_in(
    ns: &str,
    program: &Path,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> anyhow::Result<String> {
    check_interrupted()?;
    let out = run_ok(command(&ns_exec(ns), program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of the existing network namespaces.
fn namespaces() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running ip netns list (is iproute2 installed?)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Kills every process still running in `ns` (processes this bench started there), then
/// deletes the namespace. Errors are ignored: teardown does its best.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                crate::sys::kill_hard(pid);
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes the namespaces of earlier runs of this bench whose process no longer exists (and
/// whatever still runs in them). Returns their names.
pub fn remove_leftovers() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in namespaces()? {
        let Some(owner) = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != std::process::id() && !std::path::Path::new(&format!("/proc/{owner}")).exists()
        {
            remove_namespace(&ns);
            removed.push(ns);
        }
    }
    Ok(removed)
}

impl Topology {
    /// Creates the switch and one namespace per `(role, last address octet)`.
    pub fn create(roles: &[(&str, u8)]) -> anyhow::Result<Self> {
        let switch = ns_name("sw");
        let mut topology = Self {
            switch: switch.clone(),
            hosts: Vec::new(),
            created: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        topology.created.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for &(role, octet) in roles {
            topology.add_host(role, Ipv4Addr::new(10, 77, 0, octet))?;
        }
        Ok(topology)
    }

    /// Adds namespace `role` with address `addr`, wired to the bridge by a veth pair made
    /// inside the switch namespace (one end moved straight into the host's namespace).
    fn add_host(&mut self, role: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let ns = ns_name(role);
        ip(&["netns", "add", &ns])?;
        self.created.push(ns.clone());
        let sw = self.switch.clone();
        let port = format!("v-{role}");
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        self.hosts.push(Host {
            role: role.to_owned(),
            ns,
            addr,
        });
        Ok(())
    }

    /// The host of role `role`.
    pub fn host(&self, role: &str) -> anyhow::Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .with_context(|| format!("no host {role} in the topology"))
    }

    /// Bytes received plus sent on `role`'s `eth0` so far.
    pub fn link_bytes(&self, role: &str) -> anyhow::Result<u64> {
        let host = self.host(role)?;
        let text = run_in(
            &host.ns,
            Path::new("cat"),
            &[
                "/sys/class/net/eth0/statistics/rx_bytes",
                "/sys/class/net/eth0/statistics/tx_bytes",
            ],
        )
        .context("reading interface counters")?;
        let values: Vec<u64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if values.len() != 2 {
            bail!("unexpected interface counters in {}: {text:?}", host.ns);
        }
        Ok(values.iter().sum())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Hosts first, the switch last; each namespace's leftover processes are killed first.
        for ns in self.created.iter().rev() {
            remove_namespace(ns);
        }
        eprintln!(
            "netns: removed {} namespaces ({}*)",
            self.created.len(),
            ns_name("")
        );
    }
}
