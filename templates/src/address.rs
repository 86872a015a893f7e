//! One home for the address rules: what an address must be to go into an SMTP envelope and a
//! header ([`check_address`]), what a recipient row must be at ingest so that it cannot fail
//! later on a smurf ([`normalize_recipient`], which also turns an internationalised domain
//! into its ASCII A-label form), and how a recipient's domain is derived ([`domain_of`]).
//!
//! The coordinator checks recipients at ingest and the renderer checks them again; both call
//! [`check_recipient`], so a row that passes ingest renders.

use std::borrow::Cow;

/// Why a recipient address whose local part is not ASCII is refused.
const NON_ASCII_LOCAL: &str =
    "local part is not ASCII (internationalised local parts need SMTPUTF8, which is not supported)";

/// Checks an addr-spec usable in an SMTP envelope and a header: ASCII dot-atom local part of at
/// most 64 octets, DNS domain, at most 254 octets in all.
pub fn check_address(address: &str) -> Result<(), &'static str> {
    if address.is_empty() {
        return Err("empty address");
    }
    if address.len() > 254 {
        return Err("longer than 254 octets");
    }
    let (local, domain) = address.rsplit_once('@').ok_or("no @")?;
    if local.is_empty() || local.len() > 64 {
        return Err("local part empty or longer than 64 octets");
    }
    if !is_dot_atom(local) {
        return Err("local part has characters that need quoting");
    }
    if !is_domain(domain) {
        return Err("invalid domain");
    }
    Ok(())
}

/// RFC 5322 dot-atom: atext runs separated by single dots.
pub fn is_dot_atom(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
}

/// Checks a recipient address as it will be sent: [`check_address`], and a fully qualified
/// domain (at least two labels). This is the rule ingest and rendering share.
pub fn check_recipient(address: &str) -> Result<(), &'static str> {
    if let Some((local, _)) = address.rsplit_once('@') {
        if !local.is_ascii() {
            return Err(NON_ASCII_LOCAL);
        }
    }
    check_address(address)?;
    if !domain_of_raw(address).contains('.') {
        return Err("domain not fully qualified");
    }
    Ok(())
}

/// The address a recipient row is sent to, or why the row would fail later: an
/// internationalised domain (`heidi@bücher.test`) becomes its A-label form
/// (`heidi@xn--bcher-kva.test`) with IDNA, then [`check_recipient`] applies. ASCII addresses are
/// returned unchanged (borrowed).
pub fn normalize_recipient(address: &str) -> Result<Cow<'_, str>, &'static str> {
    let address = match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => {
            if !local.is_ascii() {
                return Err(NON_ASCII_LOCAL);
            }
            let ascii = idna::domain_to_ascii(domain)
                .map_err(|_| "internationalised domain that IDNA cannot convert")?;
            Cow::Owned(format!("{local}@{ascii}"))
        }
        _ => Cow::Borrowed(address),
    };
    check_recipient(&address)?;
    Ok(address)
}

/// The lower-cased domain of a recipient's address (what follows the last `@`); empty when
/// there is no `@`. The one place coordinator and smurf derive a recipient's domain.
pub fn domain_of(address: &str) -> String {
    domain_of_raw(address).to_ascii_lowercase()
}

fn domain_of_raw(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// True for a plausible DNS domain: dot-separated labels of letters, digits and inner hyphens.
pub fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// True for a DNS name as a resolver takes it: dot-separated labels of 1 to 63 letters, digits,
/// `-` or `_` (underscores name services: `_domainkey`, `_mta-sts`). No overall length limit:
/// a caller that needs the 253-octet one adds it. The one rule for the names the smurf looks
/// up or keys on (DKIM domains and selectors, shaping sections, MX routes).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_addresses() {
        assert!(check_address("first.last+tag@sub.example.com").is_ok());
        for bad in [
            "",
            "@x.example",
            "a@",
            "a..b@x.example",
            ".a@x.example",
            "a@x..example",
            "a@-x.example",
            "a b@x.example",
            "a@x.example\r\nBcc: v@x.example",
            "ä@x.example",
            "a<b@x.example",
        ] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        assert!(check_address(&format!("{}@x.example", "a".repeat(65))).is_err());
    }

    #[test]
    fn recipients_that_would_fail_to_render_are_refused() {
        for (bad, why) in [
            ("two@@example.test", "quoting"),
            ("trailing.dot.@example.test", "quoting"),
            ("a@localhost", "fully qualified"),
            ("ä@example.test", "SMTPUTF8"),
            ("a@exa_mple.test", "invalid domain"),
        ] {
            let err = normalize_recipient(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
            assert!(check_recipient(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internationalised_domains_become_a_labels() {
        assert_eq!(
            normalize_recipient("heidi@bücher.test").as_deref(),
            Ok("heidi@xn--bcher-kva.test")
        );
        assert_eq!(
            normalize_recipient("Heidi@Example.TEST").as_deref(),
            Ok("Heidi@Example.TEST"),
            "ASCII addresses are kept as written"
        );
        assert!(matches!(
            normalize_recipient("a@b.example"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(normalize_recipient("ä@bücher.test").is_err());
    }

    #[test]
    fn the_domain_is_derived_once() {
        assert_eq!(domain_of("a@Sub.Example.COM"), "sub.example.com");
        assert_eq!(domain_of("odd@local@x.test"), "x.test");
        assert_eq!(domain_of("no-at"), "");
        assert_eq!(domain_of("a@"), "");
    }
}
