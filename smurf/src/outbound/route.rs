//! Where a recipient domain's mail goes: the ordered MX hosts with their addresses, and the
//! "site" they form. Domains whose MX host sets are identical share one site, and so one
//! connection pool and one set of limits (gmail.test and googlemail.test, say).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Identity of a site: the sorted, de-duplicated MX host names joined by `,` (for a domain
/// without MX records, the domain itself; for relay mode, `relay:host:port`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey(pub Arc<str>);

impl SiteKey {
    /// The key of a set of MX host names (order and duplicates do not matter).
    pub fn from_hosts<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = hosts
            .into_iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        Self(names.join(",").into())
    }
}

impl std::fmt::Display for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One host to try, with its resolved addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Host name (without trailing dot), used for TLS server name checks and logs.
    pub name: String,
    /// MX preference (lower first); 0 for an implicit MX or a relay.
    pub preference: u16,
    /// Its addresses, in the order to try.
    pub addresses: Vec<IpAddr>,
}

/// The route of one recipient domain.
#[derive(Clone, Debug)]
pub struct MxRoute {
    /// The recipient domain (lower case).
    pub domain: String,
    /// Hosts in the order to try: by preference, shuffled within equal preference.
    pub hosts: Vec<MxHost>,
    /// The site the hosts form.
    pub site: SiteKey,
    /// When the DNS data behind this route expires (minimum TTL).
    pub expires: Instant,
}

/// Why a domain has no usable route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent.
    #[error("{domain} does not accept mail (null MX, RFC 7505)")]
    NullMx {
        /// The domain.
        domain: String,
    },
    /// The domain does not exist. Permanent.
    #[error("{domain} does not exist (NXDOMAIN)")]
    NoSuchDomain {
        /// The domain.
        domain: String,
    },
    /// Neither MX nor A/AAAA records lead to an address. Permanent.
    #[error("{domain} has no mail host address")]
    NoAddresses {
        /// The domain.
        domain: String,
    },
    /// DNS failed in a way that may pass (SERVFAIL, timeout, refused). Temporary.
    #[error("DNS lookup for {domain} failed temporarily: {reason}")]
    Temporary {
        /// The domain.
        domain: String,
        /// What failed.
        reason: String,
    },
}

impl RouteError {
    /// Whether a later attempt may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, RouteError::Temporary { .. })
    }
}
