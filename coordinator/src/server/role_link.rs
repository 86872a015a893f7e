//! The parts of a smurf link that serve roles other than `out`: returned mail from `in` nodes
//! into the durable bounce queue, bounce work out to `bounce` nodes and their verdicts back,
//! and accounting lines for received mail and applied bounces.

use super::*;
use mailfarm_protocol::{BounceVerdict, ReturnedMail};

use crate::farm::BOUNCE_WINDOW;

/// Returned messages leased on this link and not yet answered.
#[derive(Default)]
pub(super) struct BounceCredit {
    outstanding: usize,
}

impl BounceCredit {
    /// Leases bounce work to the node while it has room (only `bounce` nodes get any).
    pub(super) async fn feed(
        &mut self,
        node: &str,
        send: &mut quinn::SendStream,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<()> {
        let room = BOUNCE_WINDOW.saturating_sub(self.outstanding);
        if room == 0 {
            return Ok(());
        }
        let shared2 = shared.clone();
        let node2 = node.to_owned();
        let jobs = tokio::task::spawn_blocking(move || shared2.farm.lease_bounces(&node2, room))
            .await
            .context("bounce lease task failed")?
            .context("leasing bounce work")?;
        if jobs.is_empty() {
            return Ok(());
        }
        self.outstanding += jobs.len();
        debug!(%node, count = jobs.len(), "bounce work leased");
        write_frame(send, &CoordinatorMessage::BounceWork(jobs)).await?;
        Ok(())
    }

    /// Applies a bounce node's verdicts and logs them.
    pub(super) async fn on_verdicts(
        &mut self,
        node: &str,
        verdicts: Vec<BounceVerdict>,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<()> {
        self.outstanding = self.outstanding.saturating_sub(verdicts.len());
        let shared2 = shared.clone();
        let node2 = node.to_owned();
        let lines =
            tokio::task::spawn_blocking(move || shared2.farm.apply_verdicts(&node2, &verdicts))
                .await
                .context("bounce verdict task failed")?
                .context("applying bounce verdicts")?;
        write_accounting(shared, &lines);
        Ok(())
    }
}

/// Stores returned mail from an `in` node durably, then tells the node it may drop its copies.
pub(super) async fn on_returned(
    mails: Vec<ReturnedMail>,
    send: &mut quinn::SendStream,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let shared2 = shared.clone();
    let names = tokio::task::spawn_blocking(move || shared2.farm.enqueue_returned(&mails))
        .await
        .context("bounce queue task failed")?
        .context("queueing returned mail")?;
    write_frame(send, &CoordinatorMessage::ReturnedStored(names)).await?;
    Ok(())
}

/// Appends lines to the accounting log, if there is one.
pub(super) fn write_accounting<L: serde::Serialize>(shared: &Shared, lines: &[L]) {
    if lines.is_empty() {
        return;
    }
    if let Some(log) = &shared.accounting {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = log.write(lines) {
            error!("accounting log: {e}");
        }
    }
}

/// Applies a web node's unsubscribes durably, then acknowledges them up to the last one.
pub(super) async fn on_unsubscribes(
    node: &str,
    events: Vec<mailfarm_protocol::Unsubscription>,
    send: &mut quinn::SendStream,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let Some(upto) = events.iter().map(|e| e.seq).max() else {
        return Ok(());
    };
    let shared2 = shared.clone();
    let node2 = node.to_owned();
    let lines =
        tokio::task::spawn_blocking(move || shared2.farm.apply_unsubscribes(&node2, &events))
            .await
            .context("unsubscribe task failed")?
            .context("applying unsubscribes")?;
    info!(%node, count = lines.len(), "unsubscribes applied");
    write_accounting(shared, &lines);
    write_frame(send, &CoordinatorMessage::UnsubscribesStored(upto)).await?;
    Ok(())
}

/// Sends a `web` node the farm at a glance (its dashboard), when it holds that role.
pub(super) async fn send_farm_view(
    node: &str,
    send: &mut quinn::SendStream,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    if shared.farm.assignment(node).role != mailfarm_protocol::NodeRole::Web {
        return Ok(());
    }
    let view = Box::new(shared.farm.snapshot());
    write_frame(send, &CoordinatorMessage::FarmView(view)).await?;
    Ok(())
}
