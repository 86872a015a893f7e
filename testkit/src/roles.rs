//! Driving a [`ProcessFarm`]'s nodes and reading its state the way scripts do: through the
//! CLI's `--json` output (`farm nodes --json`, `campaign status --json`), never through log
//! lines or padded human text.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::farm::ProcessFarm;

impl ProcessFarm {
    /// `farm nodes --json`.
    pub fn nodes_json(&self) -> Vec<Value> {
        let out = self.farm(&["nodes", "--json"]);
        assert!(out.status.success(), "farm nodes: {out:?}");
        let nodes: Value = serde_json::from_slice(&out.stdout).expect("farm nodes --json");
        nodes.as_array().cloned().unwrap_or_default()
    }

    /// One node's entry of `farm nodes --json`.
    pub fn node_json(&self, name: &str) -> Value {
        let all = self.nodes_json();
        let found = all.iter().find(|n| n["node"] == name).cloned();
        found.unwrap_or_else(|| panic!("no node {name}: {all:?}"))
    }

    /// `farm assign NAME ROLE`, which must succeed.
    pub fn assign(&self, name: &str, role: &str) {
        let out = self.farm(&["assign", name, role]);
        assert!(out.status.success(), "assign {name} {role}: {out:?}");
    }

    /// Waits (up to 60 s) until `name` is connected, holds `role` and is active.
    pub fn wait_role(&self, name: &str, role: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = self.node_json(name);
            if n["role"] == role && n["state"] == "active" && n["connected"] == true {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never active as {role}: {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `campaign status ID --json`: the campaign's counters.
    pub fn campaign_json(&self, id: &str) -> Value {
        let out = self.campaign(&["status", id, "--json"]);
        assert!(out.status.success(), "campaign status: {out:?}");
        let list: Value = serde_json::from_slice(&out.stdout).expect("campaign status --json");
        list[0].clone()
    }

    /// Polls `campaign status --json` until `done` holds (up to `timeout`).
    pub fn wait_campaign(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.campaign_json(id);
            if done(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "campaign {id} stuck: {c}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
