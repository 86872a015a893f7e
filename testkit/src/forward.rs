//! Forwarding tests' peers: a Postfix that is the final destination of the new addresses and
//! of the notices (virtual(8) delivers every address of the given domains into one maildir,
//! with a `Delivered-To:` line), the farm's forwarding counters read from `farm watch --json`,
//! and messages sent with Postfix's `smtp-source`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::farm::ProcessFarm;
use crate::peers::require;
use crate::postfix::Postfix;

/// A Postfix that accepts and delivers every address of `domains` into its maildir.
pub fn final_destination(domains: &[&str]) -> Postfix {
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id -u nobody");
    let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    Postfix::start_with(&format!(
        "virtual_mailbox_domains = {}\n\
         virtual_mailbox_base = @DIR@\n\
         virtual_mailbox_maps = static:maildir/\n\
         virtual_uid_maps = static:{uid}\n\
         virtual_gid_maps = static:{uid}\n\
         virtual_minimum_uid = 1\n\
         smtpd_client_connection_count_limit = 0\n\
         default_process_limit = 200\n",
        domains.join(" ")
    ))
}

/// Sends `file` (headers and body) from `from` (empty: the null sender) to `to` through
/// `addr` with smtp-source; true when the server took it (250 after the data).
pub fn smtp_source(addr: &str, from: &str, to: &str, file: &Path) -> bool {
    smtp_source_output(addr, from, to, file).status.success()
}

/// Like [`smtp_source`], with smtp-source's output (its stderr names a refusal's reply).
pub fn smtp_source_output(addr: &str, from: &str, to: &str, file: &Path) -> std::process::Output {
    let program = require("smtp-source");
    Command::new(program)
        .args(["-m", "1", "-F"])
        .arg(file)
        .args(["-f", from, "-t", to, addr])
        .output()
        .expect("running smtp-source")
}

/// The farm's inbound counters (`farm watch --json`'s `inbound`).
pub fn inbound_counters(farm: &ProcessFarm) -> Value {
    let out = farm.farm(&["watch", "--json", "--count", "1"]);
    assert!(out.status.success(), "farm watch: {out:?}");
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("farm watch --json");
    snapshot["inbound"].clone()
}

/// Waits (up to `timeout`) until the maildir holds messages for which `done` holds.
pub fn wait_delivered(
    postfix: &Postfix,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = postfix.delivered();
        if done(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{} messages delivered, not what was expected; maillog tail:\n{}",
            messages.len(),
            postfix
                .maillog()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of header `name` (first occurrence, case-insensitive) of a delivered message.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
}
