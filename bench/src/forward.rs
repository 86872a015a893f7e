//! `mailfarm-bench forward`: forwarded messages per second on one `in` node, next to Postfix
//! doing the same forwarding with `virtual_alias_maps`, in the same run, into the same
//! smtp-sink.
//!
//! Both sides get Postfix's `smtp-source` (`--sessions` parallel sessions) sending to one moved
//! address, `old@old.test`, forwarded to `new@new.test`. mailfarm: a coordinator and one `in`
//! node (real processes); the node stores each message durably, then relays it through its
//! outbound engine (MX lookup on a private unbound, SRS sender) to smtp-sink, and sends one
//! change-of-address notice. Postfix: a private instance whose `virtual_alias_maps` rewrites
//! the recipient and whose `relayhost` is the same smtp-sink. A side's time runs from the first
//! message sent to the last one at the sink; its CPU is the receiving processes' (the `in`
//! node; Postfix's master and all its descendants).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_testkit::dns::TestDns;
use mailfarm_testkit::{ProcessFarm, SmtpSink};
use serde::Serialize;

use crate::postfix::PrivatePostfix;
use crate::procs::tree_cpu;
use crate::report::{text_of, write_heading, write_verdict};
use crate::source::{Envelope, Load};
use crate::sys::Machine;
use crate::throughput::{build_profile, require_program};

/// Options of `forward`.
#[derive(clap::Args, Debug)]
pub struct Forward {
    /// Messages per side.
    #[arg(long, default_value_t = 2_000)]
    pub messages: u64,
    /// Parallel smtp-source sessions.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Postfix smtp-source program.
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    pub smtp_source: PathBuf,
    /// Postfix control program (the peer: a private instance with `virtual_alias_maps`).
    #[arg(long, default_value = "/usr/sbin/postfix")]
    pub postfix: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One forwarder's figures.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Who forwarded.
    pub name: String,
    /// Messages forwarded (arrived at the sink).
    pub messages: u64,
    /// First message sent to last one at the sink.
    pub wall_secs: f64,
    /// Forwarded messages per second.
    pub msgs_per_sec: f64,
    /// CPU of the forwarder, in total.
    pub cpu_secs: f64,
    /// CPU per forwarded message, in microseconds.
    pub cpu_us_per_msg: f64,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct ForwardReport {
    /// Machine (with its load average at the start).
    pub machine: Machine,
    /// Build profile.
    pub build: &'static str,
    /// Parallel sessions.
    pub sessions: usize,
    /// mailfarm's `in` node.
    pub mailfarm: Side,
    /// Postfix with `virtual_alias_maps`.
    pub postfix: Side,
    /// mailfarm's rate over Postfix's.
    pub ratio: f64,
    /// What went wrong.
    pub problems: Vec<String>,
}

impl ForwardReport {
    /// The human report.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        write_heading(
            out,
            "mailfarm-bench forward: one in node next to Postfix virtual_alias_maps",
            &self.machine,
            self.build,
        )?;
        writeln!(
            out,
            "load        smtp-source, {} sessions, one moved address, into one smtp-sink",
            self.sessions
        )?;
        writeln!(
            out,
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "forwarder", "messages", "wall s", "msgs/s", "CPU s", "CPU us/msg"
        )?;
        for s in [&self.mailfarm, &self.postfix] {
            writeln!(
                out,
                "{:<34} {:>9} {:>9.2} {:>9.0} {:>9.2} {:>12.0}",
                s.name, s.messages, s.wall_secs, s.msgs_per_sec, s.cpu_secs, s.cpu_us_per_msg
            )?;
        }
        writeln!(out, "ratio       mailfarm / Postfix = {:.2}x", self.ratio)?;
        write_verdict(
            out,
            &self.problems,
            "every forwarded message counted at the sink",
        )
    }
}

/// Messages at the sink for `new@new.test`.
fn at_sink(sink: &SmtpSink) -> u64 {
    sink.messages_so_far()
        .iter()
        .filter(|(rcpt, _)| rcpt == "new@new.test")
        .count() as u64
}

/// What smtp-source sends to each side: mail for the moved address, one connection per
/// message, smtp-source's own small body.
const ENVELOPE: Envelope<'static> = Envelope {
    helo: None,
    from: "sender@senders.test",
    to: "old@old.test",
};

/// Runs smtp-source, then waits until the sink holds `until` forwarded messages.
fn drive(
    o: &Forward,
    addr: SocketAddr,
    sink: &SmtpSink,
    until: u64,
    cpu: &dyn Fn() -> anyhow::Result<Duration>,
    name: &str,
) -> anyhow::Result<Side> {
    let cpu_before = cpu()?;
    let started = Instant::now();
    let load = Load {
        messages: o.messages,
        sessions: o.sessions,
        message_bytes: None,
        reuse_connections: false,
        envelope: ENVELOPE,
    };
    crate::source::run(&o.smtp_source, addr, &load)
        .with_context(|| format!("smtp-source against {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while at_sink(sink) < until {
        if Instant::now() > deadline {
            bail!(
                "{name}: only {} of {until} forwarded in time",
                at_sink(sink)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu()? - cpu_before).as_secs_f64();
    Ok(Side {
        name: name.to_owned(),
        messages: o.messages,
        wall_secs: wall,
        msgs_per_sec: o.messages as f64 / wall.max(1e-9),
        cpu_secs: cpu,
        cpu_us_per_msg: cpu * 1e6 / o.messages.max(1) as f64,
    })
}

/// The shaping file of the bench's farm: the sink's site as Postfix treats every destination.
const SINK_SHAPING: &str = "[site.\"mx.sink.test\"]\nmax_connections = 20\n\
    message_rate = \"unlimited\"\nconnection_rate = \"unlimited\"\nramp_up = \"0s\"\n";

/// Runs both sides.
pub fn forward(o: &Forward) -> anyhow::Result<ForwardReport> {
    require_program("smtp-source", &o.smtp_source)?;
    let machine = Machine::detect();
    let tmp = tempfile::tempdir().context("temporary folder")?;
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let dns = TestDns::start(&[
        "new.test. 300 IN MX 10 mx.sink.test.",
        "senders.test. 300 IN MX 10 mx.sink.test.",
        "mx.sink.test. 300 IN A 127.0.0.1",
    ]);
    // The sink's site gets Postfix's defaults (20 sessions per destination, no rate limit,
    // no ramp): the built-in shaping (100/s after a 10 s ramp) would bound the rate, not
    // the forwarding.
    let shaping = tmp.path().join("shaping.toml");
    std::fs::write(&shaping, SINK_SHAPING).context("writing the shaping file")?;
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        1,
        16,
        &format!(
            "shaping_file = {:?}\n[forward]\nsrs_domain = \"fwd.test\"",
            shaping.display().to_string()
        ),
        &format!(
            "smtp_port = {}\n[resolver]\nnameserver = \"{}\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.old.test\"\n",
            sink.addr.port(),
            dns.addr
        ),
    );
    let out = farm.forward(&["add", ENVELOPE.to, "new@new.test"]);
    if !out.status.success() {
        bail!("forward add: {}", String::from_utf8_lossy(&out.stderr));
    }
    farm.assign("smurf-1", "in");
    let node = farm.wait_role("smurf-1", "in");
    let addr: SocketAddr = node["serving"]
        .as_str()
        .context("in node address")?
        .parse()
        .context("in node address")?;
    let pid = farm.smurfs[0].child.id();
    let mailfarm = drive(
        o,
        addr,
        &sink,
        o.messages,
        &|| crate::sys::process_cpu(pid),
        "mailfarm in node (durable, SRS)",
    )?;
    let postfix = PrivatePostfix::start(
        &o.postfix,
        &format!(
            "virtual_alias_domains = old.test\n\
         virtual_alias_maps = inline:{{ {{old@old.test=new@new.test}} }}\n\
         relayhost = [127.0.0.1]:{}\n\
         smtp_tls_security_level = none\n",
            sink.addr.port()
        ),
    )?;
    let master = postfix.master_pid()?;
    let postfix_side = drive(
        o,
        postfix.addr,
        &sink,
        2 * o.messages,
        &|| Ok(tree_cpu(master)),
        "Postfix virtual_alias_maps",
    )?;
    let ratio = mailfarm.msgs_per_sec / postfix_side.msgs_per_sec.max(1e-9);
    Ok(ForwardReport {
        machine,
        build: build_profile(),
        sessions: o.sessions,
        mailfarm,
        postfix: postfix_side,
        ratio,
        problems: Vec::new(),
    })
}
