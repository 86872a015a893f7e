//! Scenario: a domain that publishes a null MX (RFC 7505) accepts no mail: its recipients fail
//! at once, without retries, and no connection is attempted.

use mailfarm_testkit::dns;

#[test]
fn recipients_fail_at_once_without_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = dns::TestDns::start(&["nomail.test. 300 IN MX 0 ."]);
    mailfarm_testkit::assert_permanent_dns_failure(tmp.path(), dns.addr, "nomail.test", "null mx");
}
