//! The engine against a real throttling peer (issue 11): Postfix's smtpd with anvil limits
//! (`smtpd_client_connection_count_limit`, `smtpd_client_message_rate_limit`), which answer
//! `421 4.7.0 ... Error: too many connections from ...` and `450 4.7.1 Error: too much mail
//! from ...`. The engine must learn them (fewer sessions, a lower rate), retry the refused
//! messages itself, and deliver every message exactly once. Requires root and the Debian
//! package `postfix`: the test fails, never skips, without them.

mod engine_common;

use std::collections::HashSet;
use std::time::Duration;

use engine_common::{campaign, collect, submit};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::delivery::{DeliveryEngine, DeliverySettings};
use mailfarm_smurf::outbound::smtp::Timeouts;
use mailfarm_testkit::postfix::{Postfix, MAILBOX};
use tokio::sync::mpsc;

const MESSAGES: usize = 60;

/// anvil limits for loopback clients (normally exempt as `$mynetworks`): two sessions at
/// once, 20 messages per 2 s.
const ANVIL: &str = "\
smtpd_client_event_limit_exceptions =
smtpd_client_connection_count_limit = 2
anvil_rate_time_unit = 2s
smtpd_client_message_rate_limit = 20
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_anvil_limits_are_learnt_and_nothing_is_lost() {
    let postfix = Postfix::start_with(ANVIL);
    let relay = postfix.plain_addr.to_string();
    let mut settings = DeliverySettings::new("engine.test");
    settings.relay_override = Some(relay.clone());
    settings.timeouts = Timeouts::uniform(Duration::from_secs(10));
    settings.connect_timeout = Duration::from_secs(2);
    settings.idle_timeout = Duration::from_secs(2);
    let mut engine = DeliveryEngine::new(settings);
    let generation = engine.next_generation();
    // Four sessions asked for, two allowed.
    let campaign = campaign(Some(relay.clone()), 4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let list: Vec<String> = (0..MESSAGES).map(|_| MAILBOX.to_owned()).collect();
    submit(&mut engine, generation, &campaign, 0, &list, &tx);

    let mut learnt = (None, None);
    let watch = async {
        loop {
            if let Some(site) = engine.stats().site(&format!("relay:{relay}")) {
                // The latest lesson: the engine may step down (4 → 3 → 2) before it settles.
                learnt.0 = site.learnt_rate.or(learnt.0);
                learnt.1 = site.learnt_connections.or(learnt.1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let results = tokio::select! {
        r = collect(&mut rx, MESSAGES, Duration::from_secs(60)) => r,
        () = watch => unreachable!("the watch loop never ends"),
    };
    let reports = engine.throttle_reports();
    let log = postfix.maillog();
    // anvil's own words in the log.
    let refused_connections = log.matches("Connection concurrency limit exceeded").count();
    let refused_mail = log
        .matches("Message delivery request rate limit exceeded")
        .count();
    eprintln!(
        "anvil refused {refused_connections} connections and {refused_mail} messages; \
         learnt {learnt:?}; reports {reports:?}"
    );
    assert!(
        results.values().all(|r| r.outcome == Outcome::Delivered),
        "{:?}",
        results.values().find(|r| r.outcome != Outcome::Delivered)
    );
    // Not vacuous: Postfix did throttle, and the engine heard it.
    assert!(
        refused_connections + refused_mail > 0,
        "anvil never refused:\n{log}"
    );
    assert!(learnt.0.is_some() || learnt.1.is_some(), "nothing learnt");
    assert!(
        learnt.1.is_none_or(|c| c <= 2),
        "learnt {learnt:?} connections"
    );
    let site = reports.first().expect("the relay site reported");
    let last = site.last_reply.as_deref().unwrap_or("");
    assert!(
        site.throttled > 0
            && (last.contains("too much mail") || last.contains("too many connections")),
        "{site:?}"
    );
    // Exactly once: every message in the mailbox, each Message-ID once.
    let messages = postfix.wait_for_messages(MESSAGES);
    let ids: HashSet<&str> = messages
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        })
        .collect();
    assert_eq!(messages.len(), MESSAGES);
    assert_eq!(ids.len(), MESSAGES, "distinct Message-IDs");
    engine.shutdown().await;
}
