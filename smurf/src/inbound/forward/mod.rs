//! Forwarding on the `in` role: mail for a moved address is stored by the MX (`forward/`),
//! then relayed here to its new address through the smurf's outbound engine, with an SRS
//! envelope sender; the original sender gets a change-of-address notice, at most one per
//! (sender, address, UTC day) farm-wide, granted by the coordinator.
//!
//! - [`ForwardState`]: the rule set (applied from the coordinator's snapshot and deltas) and
//!   the SRS key, shared by the MX (read at every RCPT) and the link (which updates it).
//! - [`srs`]: the SRS rewriting and its checks; [`notice`]: RFC 3834 rules and the notice.
//! - [`relay`]: the service that works through `forward/new` and the notice outbox.

mod group_sync;
pub mod notice;
pub mod relay;
pub mod srs;
pub mod stored;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mailfarm_protocol::{ForwardTable, ForwardTableError, ForwardUpdate, InboundCounters};

pub use srs::Srs;

/// The trace line the MX writes into a stored forward message, one per forwarded recipient:
/// `X-Mailfarm-Forward: <old> <new>` (or `<srs address> <original sender> srs` for a bounce
/// to an SRS address).
pub const FORWARD_HEADER: &str = "X-Mailfarm-Forward: ";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The rule set and the SRS rewriter built from its settings and the farm's key.
#[derive(Debug, Default)]
pub struct ForwardState {
    /// The rules.
    pub table: ForwardTable,
    /// The SRS rewriter, once both the SRS domain and the farm's key are known.
    pub srs: Option<Srs>,
    verp_key: Vec<u8>,
}

impl ForwardState {
    /// Applies a rule update (a gap leaves the state as it was).
    pub fn apply(&mut self, update: ForwardUpdate) -> Result<(), ForwardTableError> {
        let settings = update.settings.is_some();
        self.table.apply(update)?;
        if settings {
            self.rebuild();
        }
        Ok(())
    }

    /// Takes the farm's key (from the inbound policy).
    pub fn set_verp_key(&mut self, key: &[u8]) {
        if self.verp_key != key {
            self.verp_key = key.to_vec();
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let domain = &self.table.settings().srs_domain;
        self.srs = (!domain.is_empty() && !self.verp_key.is_empty())
            .then(|| Srs::new(&self.verp_key, domain));
    }
}

/// [`ForwardState`] shared between the link and the MX's sessions.
#[derive(Clone, Debug, Default)]
pub struct SharedForward(Arc<RwLock<ForwardState>>);

impl SharedForward {
    /// Reads the state (a panicked writer leaves consistent data: each change is one call).
    pub fn read(&self) -> RwLockReadGuard<'_, ForwardState> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state.
    pub fn write(&self) -> RwLockWriteGuard<'_, ForwardState> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Live forwarding counters of this process.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Relayed to the new address (accepted there).
    pub delivered: AtomicU64,
    /// Failed for good.
    pub failed: AtomicU64,
    /// Notices accepted by the sender's server.
    pub notices_sent: AtomicU64,
    /// Notices not sent, by reason.
    suppressed: Mutex<Vec<(String, u64)>>,
}

impl ForwardCounters {
    /// Counts one notice not sent.
    pub fn suppress(&self, reason: &str) {
        let mut list = self
            .suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match list.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => {
                list.push((reason.to_owned(), 1));
                list.sort();
            }
        }
    }

    /// Adds these counters to the farm's inbound counters.
    pub fn add_to(&self, counters: &mut InboundCounters) {
        counters.forward_delivered += self.delivered.load(Ordering::Relaxed);
        counters.forward_failed += self.failed.load(Ordering::Relaxed);
        counters.notices_sent += self.notices_sent.load(Ordering::Relaxed);
        let list = self
            .suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let other = InboundCounters {
            notices_suppressed: list.clone(),
            ..Default::default()
        };
        counters.add(&other);
    }
}
