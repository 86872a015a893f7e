//! The farm-wide learnt rate of each throttling site (issue 11). Each smurf learns a site's
//! acceptable rate from its replies (AIMD, in the smurf's `delivery::adaptive`) and reports it
//! here; the farm-wide learnt rate of a site is the sum of its smurfs' learnt rates (a smurf
//! that learnt nothing counts with the rate the site accepted from it). When one smurf is cut,
//! every smurf sending to the site gets an equal share of the new farm-wide value, so a site
//! that throttles one smurf slows them all, and the shares add up to it as configured limits'
//! shares do. Also the source of `farm sites` and the per-site `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailfarm_protocol::throttle::{SiteRate, SiteThrottle, SiteView};
use tokio::sync::watch;

/// A smurf's report older than this no longer counts (it stopped sending to the site).
const FRESH: Duration = Duration::from_secs(10);

/// Per site, per smurf: its last report and when it came.
type Reports = HashMap<String, HashMap<String, (SiteThrottle, Instant)>>;

/// What every smurf reported about every throttling site.
#[derive(Debug)]
pub struct ThrottleBook {
    sites: Mutex<Reports>,
    /// Bumped when a smurf was cut: every link then sends its smurf its new shares.
    signal: watch::Sender<u64>,
}

impl Default for ThrottleBook {
    fn default() -> Self {
        Self {
            sites: Mutex::new(HashMap::new()),
            signal: watch::channel(0).0,
        }
    }
}

impl ThrottleBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.sites.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a smurf's reports; wakes every link when one of them is a cut.
    pub fn report(&self, node: &str, reports: Vec<SiteThrottle>) {
        let now = Instant::now();
        let cut = reports.iter().any(|r| r.cut);
        {
            let mut sites = self.lock();
            for report in reports {
                sites
                    .entry(report.site.clone())
                    .or_default()
                    .insert(node.to_owned(), (report, now));
            }
        }
        if cut {
            self.signal.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Forgets a smurf that left.
    pub fn forget(&self, node: &str) {
        let mut sites = self.lock();
        for smurfs in sites.values_mut() {
            smurfs.remove(node);
        }
        sites.retain(|_, smurfs| !smurfs.is_empty());
    }

    /// Wakes when shares changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    /// A smurf's share (equal among the smurfs sending to it) of every site with a farm-wide
    /// learnt rate or connection count.
    pub fn shares(&self) -> Vec<SiteRate> {
        let now = Instant::now();
        let sites = self.lock();
        let mut out = Vec::new();
        for (site, smurfs) in sites.iter() {
            let fresh: Vec<&SiteThrottle> = smurfs
                .values()
                .filter(|(_, at)| now.duration_since(*at) <= FRESH)
                .map(|(r, _)| r)
                .collect();
            let n = fresh.len() as u64;
            if n == 0 || !fresh.iter().any(|r| r.cut || r.learnt_milli.is_some()) {
                continue;
            }
            let learnt = farm_learnt(&fresh);
            // Only what some smurf learnt is shared: a rate cut says nothing of connections.
            let rate_milli = learnt
                .rate
                .filter(|_| fresh.iter().any(|r| r.learnt_milli.is_some()))
                .map(|sum| (sum / n).max(1));
            let connections = learnt
                .connections
                .filter(|_| fresh.iter().any(|r| r.learnt_connections.is_some()))
                .map(|sum| u32::try_from((u64::from(sum) / n).max(1)).unwrap_or(u32::MAX));
            out.push(SiteRate {
                site: site.clone(),
                rate_milli,
                connections,
            });
        }
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }

    /// Every site some smurf reported, farm-wide.
    pub fn sites(&self) -> Vec<SiteView> {
        let now = Instant::now();
        let sites = self.lock();
        let mut out: Vec<SiteView> = sites
            .iter()
            .map(|(site, smurfs)| {
                let fresh: Vec<&SiteThrottle> = smurfs
                    .values()
                    .filter(|(_, at)| now.duration_since(*at) <= FRESH)
                    .map(|(r, _)| r)
                    .collect();
                let learnt = farm_learnt(&fresh);
                let last = smurfs
                    .values()
                    .filter(|(r, _)| r.last_reply.is_some())
                    .max_by_key(|(_, at)| *at)
                    .and_then(|(r, _)| r.last_reply.clone());
                SiteView {
                    site: site.clone(),
                    configured_milli: fresh
                        .iter()
                        .map(|r| r.configured_milli)
                        .sum::<Option<u64>>(),
                    learnt_milli: fresh
                        .iter()
                        .any(|r| r.learnt_milli.is_some())
                        .then_some(learnt.rate)
                        .flatten(),
                    configured_connections: fresh.iter().map(|r| r.configured_connections).sum(),
                    learnt_connections: fresh
                        .iter()
                        .any(|r| r.learnt_connections.is_some())
                        .then_some(learnt.connections)
                        .flatten(),
                    connections: fresh.iter().map(|r| r.connections).sum(),
                    throttled: smurfs.values().map(|(r, _)| r.throttled).sum(),
                    last_reply: last,
                    smurfs: u32::try_from(fresh.len()).unwrap_or(u32::MAX),
                }
            })
            .collect();
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }
}

/// Farm-wide sums.
struct Learnt {
    /// Thousandths per second; `None` when some smurf has no figure at all.
    rate: Option<u64>,
    connections: Option<u32>,
}

/// The farm-wide learnt values: each smurf's learnt value, or when it learnt nothing (it was
/// not throttled lately) the rate the site accepted from it, or its configured one.
fn farm_learnt(fresh: &[&SiteThrottle]) -> Learnt {
    let rate = fresh
        .iter()
        .map(|r| {
            r.learnt_milli
                .or(r.accepted_milli.filter(|a| *a > 0))
                .or(r.configured_milli)
        })
        .sum::<Option<u64>>();
    let connections = fresh
        .iter()
        .map(|r| Some(r.learnt_connections.unwrap_or(r.configured_connections)))
        .sum::<Option<u32>>();
    Learnt { rate, connections }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(site: &str, learnt: Option<u64>, configured: Option<u64>, cut: bool) -> SiteThrottle {
        SiteThrottle {
            site: site.into(),
            configured_milli: configured,
            learnt_milli: learnt,
            configured_connections: 4,
            learnt_connections: None,
            accepted_milli: None,
            connections: 3,
            throttled: u64::from(cut),
            last_reply: cut.then(|| "454 Throttling failure".into()),
            cut,
        }
    }

    #[test]
    fn a_cut_on_one_smurf_is_shared_by_all() {
        let book = ThrottleBook::default();
        let signal = book.subscribe();
        book.report("a", vec![report("relay:x:25", None, Some(25_000), false)]);
        assert!(!signal.has_changed().unwrap());
        assert!(book.shares().is_empty(), "nothing learnt yet");
        book.report(
            "b",
            vec![report("relay:x:25", Some(15_000), Some(25_000), true)],
        );
        assert!(signal.has_changed().unwrap());
        let rates = book.shares();
        // 25 + 15 farm-wide, 20 each.
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].rate_milli, Some(20_000));
        assert_eq!(rates[0].connections, None, "no connection count was learnt");
        let view = book.sites();
        assert_eq!(view[0].learnt_milli, Some(40_000));
        assert_eq!(view[0].configured_milli, Some(50_000));
        assert_eq!(view[0].smurfs, 2);
        assert_eq!(
            view[0].last_reply.as_deref(),
            Some("454 Throttling failure")
        );
        book.forget("b");
        book.forget("a");
        assert!(book.sites().is_empty());
    }

    #[test]
    fn unlimited_smurfs_count_with_what_the_site_accepted() {
        let book = ThrottleBook::default();
        book.report("a", vec![report("relay:x:25", None, None, false)]);
        book.report("b", vec![report("relay:x:25", Some(15_000), None, true)]);
        assert_eq!(book.shares()[0].rate_milli, None, "a's part is unknown");
        let mut a = report("relay:x:25", None, None, false);
        a.accepted_milli = Some(21_000);
        book.report("a", vec![a]);
        assert_eq!(book.shares()[0].rate_milli, Some(18_000));
        assert_eq!(book.sites()[0].configured_milli, None);
    }
}
