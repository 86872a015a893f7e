//! Scenario: a recipient domain that does not exist (NXDOMAIN) fails at once, without retries.

mod common;
#[path = "../smurf/tests/support/dns.rs"]
mod dns;

#[test]
fn recipients_fail_at_once_without_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = dns::TestDns::start(&["other.test. 300 IN A 127.0.0.2"]);
    common::assert_permanent_dns_failure(
        tmp.path(),
        dns.addr,
        "nonexistent.test",
        "does not exist",
    );
}
