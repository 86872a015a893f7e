//! The name a smurf gives in EHLO. Big receivers refuse, or score down, a greeting name that
//! does not resolve, so the default is the machine's fully qualified name, and
//! [`helo_name_problem`] says when a name will not do for direct MX delivery (`farm init` and
//! smurf startup warn with it). Relay delivery does not care.

use std::net::IpAddr;

/// Top-level names and suffixes that never resolve on the public Internet (RFC 2606, RFC 6761,
/// RFC 6762, RFC 8375) or are private by convention.
const PRIVATE_SUFFIXES: &[&str] = &[
    ".invalid",
    ".test",
    ".example",
    ".localhost",
    ".local",
    ".localdomain",
    ".lan",
    ".internal",
    ".home.arpa",
    ".example.com",
    ".example.net",
    ".example.org",
];

/// This machine's fully qualified domain name, if it has one: the kernel's host name when it
/// holds a dot, else the first dotted alias of that name in `/etc/hosts` (what `hostname -f`
/// finds without DNS).
pub fn machine_fqdn() -> Option<String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn_from(hostname.trim(), &hosts)
}

/// The FQDN of `hostname` given the text of a hosts file.
fn fqdn_from(hostname: &str, hosts: &str) -> Option<String> {
    if hostname.is_empty() {
        return None;
    }
    if hostname.contains('.') {
        return Some(hostname.trim_end_matches('.').to_ascii_lowercase());
    }
    let prefix = format!("{}.", hostname.to_ascii_lowercase());
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let names: Vec<String> = line
                .split_whitespace()
                .skip(1)
                .map(str::to_ascii_lowercase)
                .collect();
            names
                .iter()
                .any(|n| *n == hostname.to_ascii_lowercase() || n.starts_with(&prefix))
                .then(|| names.into_iter().find(|n| n.starts_with(&prefix)))
                .flatten()
        })
        .map(|name| name.trim_end_matches('.').to_owned())
        .next()
}

/// The EHLO name of a smurf whose config sets none: the machine's FQDN, or
/// `NODE.mailfarm.invalid` when the machine has none.
pub fn default_helo_name(node: &str) -> String {
    machine_fqdn().unwrap_or_else(|| format!("{node}.mailfarm.invalid"))
}

/// Why `name` will not do as an EHLO name for direct MX delivery, or `None` when it looks like
/// a public host name (DNS is not asked).
pub fn helo_name_problem(name: &str) -> Option<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.parse::<IpAddr>().is_ok() {
        return Some("an IP address must be written as an address literal ([192.0.2.1])".into());
    }
    if lower.starts_with('[') {
        return Some("an address literal, which many receivers score down".into());
    }
    if !lower.contains('.') {
        return Some("not a fully qualified name".into());
    }
    let dotted = format!(".{lower}");
    PRIVATE_SUFFIXES
        .iter()
        .find(|suffix| dotted.ends_with(*suffix))
        .map(|suffix| {
            format!(
                "names under {} do not resolve on the Internet",
                &suffix[1..]
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fqdn_comes_from_the_host_name_or_the_hosts_file() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 mx1.old.example mx1\n\
                     10.0.0.5 mx1 mx1.mail.acme.com\n";
        assert_eq!(fqdn_from("mx1.Acme.com.", ""), Some("mx1.acme.com".into()));
        assert_eq!(fqdn_from("mx1", hosts), Some("mx1.mail.acme.com".into()));
        assert_eq!(fqdn_from("vm", hosts), None);
        assert_eq!(fqdn_from("", hosts), None);
    }

    #[test]
    fn names_that_will_not_do_for_mx_delivery_are_named() {
        for bad in [
            "smurf-1.mailfarm.invalid",
            "smurf-1.test",
            "vm",
            "box.localdomain",
            "host.lan",
            "192.0.2.1",
            "smurf.example.net",
        ] {
            assert!(helo_name_problem(bad).is_some(), "{bad}");
        }
        for good in ["mx1.acme.com", "out-3.mail.example-isp.de", "MX1.Acme.COM."] {
            assert_eq!(helo_name_problem(good), None, "{good}");
        }
    }

    #[test]
    fn the_default_is_the_fqdn_or_a_clearly_invalid_name() {
        let name = default_helo_name("smurf-9");
        match machine_fqdn() {
            Some(fqdn) => assert_eq!(name, fqdn),
            None => assert_eq!(name, "smurf-9.mailfarm.invalid"),
        }
    }
}
