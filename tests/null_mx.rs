//! Scenario: a domain that publishes a null MX (RFC 7505) accepts no mail: its recipients fail
//! at once, without retries, and no connection is attempted.

mod common;
#[path = "../smurf/tests/support/dns.rs"]
mod dns;

#[test]
fn recipients_fail_at_once_without_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = dns::TestDns::start(&["nomail.test. 300 IN MX 0 ."]);
    common::assert_permanent_dns_failure(tmp.path(), dns.addr, "nomail.test", "null mx");
}
