//! Scenario: a recipient domain that does not exist (NXDOMAIN) fails at once, without retries.

use mailfarm_testkit::dns;

#[test]
fn recipients_fail_at_once_without_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = dns::TestDns::start(&["other.test. 300 IN A 127.0.0.2"]);
    mailfarm_testkit::assert_permanent_dns_failure(
        tmp.path(),
        dns.addr,
        "nonexistent.test",
        "does not exist",
    );
}
