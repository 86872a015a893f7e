//! The `mx` benchmark's little Internet: recipient domains `d0.test`..`dN.test` whose MX hosts
//! land on four loopback addresses, some domains sharing MX host names (so they share a site:
//! one queue, one connection pool, one set of limits), the others each with their own; and
//! `throttled.test`, alone on a fifth address, with its own rate limit.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The addresses of the well-behaved MX hosts.
pub const HOSTS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];
/// The address of throttled.test's MX host.
pub const THROTTLED_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The rate-limited domain.
pub const THROTTLED: &str = "throttled.test";
/// TTL of every record.
const TTL: u32 = 300;

/// One recipient domain.
#[derive(Clone, Debug)]
pub struct Domain {
    /// Its name.
    pub name: String,
    /// Its MX host name.
    pub mx: String,
    /// Index into [`HOSTS`] of its MX host's address.
    pub host: usize,
}

/// The domains, their records and what they add up to.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The well-behaved domains, `d{i}.test` at index i.
    pub domains: Vec<Domain>,
    /// Zone-file lines for unbound, throttled.test's included.
    pub records: Vec<String>,
}

impl Layout {
    /// `count` domains; domain i's MX address is `HOSTS[i % 4]`, so every address serves as
    /// many domains as the others (give or take one). In blocks of four, the domains of every
    /// other block (i / 4 even: d0-d3, d8-d11, ...) share the MX host `mx{i % 4 + 1}.shared.test`
    /// of their address (one site for several domains), the others each have their own
    /// `mx.d{i}.test` (one site each).
    pub fn new(count: u32) -> Self {
        let mut records = Vec::new();
        let mut domains = Vec::new();
        let mut shared_done = BTreeSet::new();
        for i in 0..count as usize {
            let host = i % HOSTS.len();
            let name = format!("d{i}.test");
            let mx = if (i / HOSTS.len()).is_multiple_of(2) {
                format!("mx{}.shared.test", host + 1)
            } else {
                format!("mx.{name}")
            };
            records.push(format!("{name}. {TTL} IN MX 10 {mx}."));
            if shared_done.insert(mx.clone()) {
                records.push(format!("{mx}. {TTL} IN A {}", HOSTS[host]));
            }
            domains.push(Domain { name, mx, host });
        }
        records.push(format!("{THROTTLED}. {TTL} IN MX 10 mx.{THROTTLED}."));
        records.push(format!("mx.{THROTTLED}. {TTL} IN A {THROTTLED_HOST}"));
        Self { domains, records }
    }

    /// Sites (distinct MX host sets) of the well-behaved domains.
    pub fn sites(&self) -> usize {
        self.domains
            .iter()
            .map(|d| d.mx.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Sites whose MX host is at `HOSTS[host]`.
    pub fn sites_at(&self, host: usize) -> Vec<&str> {
        self.domains
            .iter()
            .filter(|d| d.host == host)
            .map(|d| d.mx.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Domains whose MX host is at `HOSTS[host]`.
    pub fn domains_at(&self, host: usize) -> usize {
        self.domains.iter().filter(|d| d.host == host).count()
    }

    /// The domain of each of `recipients` messages spread evenly over the well-behaved
    /// domains, with `throttled` messages at throttled.test spread evenly among them.
    pub fn sequence(&self, recipients: u64, throttled: u64) -> Vec<&str> {
        let total = recipients + throttled;
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut next = 0usize;
        for j in 0..total {
            // Bresenham: exactly `throttled` rows, evenly spaced.
            if (j + 1) * throttled / total > j * throttled / total {
                out.push(THROTTLED);
            } else if let Some(domain) = self.domains.get(next % self.domains.len().max(1)) {
                out.push(domain.name.as_str());
                next += 1;
            }
        }
        out
    }

    /// Index into [`HOSTS`] of the sink that should receive mail for `domain`.
    pub fn host_of(&self, domain: &str) -> Option<usize> {
        let index: usize = domain
            .strip_prefix('d')?
            .strip_suffix(".test")?
            .parse()
            .ok()?;
        self.domains.get(index).map(|d| d.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_domains_share_four_hosts_evenly() {
        let layout = Layout::new(20);
        assert_eq!(layout.sites(), 12);
        for host in 0..HOSTS.len() {
            assert_eq!(layout.domains_at(host), 5);
        }
        assert_eq!(layout.host_of("d7.test"), Some(3));
        assert_eq!(
            layout.sites_at(1),
            ["mx.d13.test", "mx.d5.test", "mx2.shared.test"]
        );
        assert_eq!(layout.host_of("throttled.test"), None);
        assert!(layout
            .records
            .contains(&"d9.test. 300 IN MX 10 mx2.shared.test.".to_owned()));
    }

    #[test]
    fn the_sequence_spreads_both_parts_evenly() {
        let layout = Layout::new(20);
        let seq = layout.sequence(2000, 100);
        assert_eq!(seq.len(), 2100);
        assert_eq!(seq.iter().filter(|d| **d == THROTTLED).count(), 100);
        assert_eq!(seq.iter().filter(|d| **d == "d19.test").count(), 100);
        let first_half = seq[..1050].iter().filter(|d| **d == THROTTLED).count();
        assert_eq!(first_half, 50);
    }
}
