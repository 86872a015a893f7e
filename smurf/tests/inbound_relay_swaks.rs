//! The inbound MX is never an open relay: swaks tries the classic relay tricks
//! (RFC 2505) and each gets 5xx; a VERP return path signed with the wrong key
//! gets 550 and is counted, a good one gets 250 and is on disk. Requires
//! `/usr/bin/swaks`: the test fails, never skips, when it is missing.

mod inbound_support;

use std::sync::atomic::Ordering::Relaxed;

use inbound_support::{start, BOUNCE_DOMAIN, POSTMASTER, VERP_KEY};
use mailfarm_smurf::inbound::mx::{Destination, MailKind};
use mailfarm_templates::VerpSigner;
use mailfarm_testkit::{rcpt_reply_code, swaks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tricks_are_refused_and_only_signed_verp_is_taken() {
    let server = start(|_| {}).await;
    let tricks = [
        "someone@other.test",
        "user%other.test@example.test",
        "\"user@other.test\"@example.test",
        "@relay.test:user@other.test",
        "@relay.test:postmaster@example.test",
        "user@other.test@example.test",
        "user@[127.0.0.1]",
        "postmaster@[127.0.0.1]",
        "other.test!user@example.test",
    ];
    for trick in tricks {
        let (ok, out) = swaks(server.addr, &["--from", "s@x.test", "--to", trick]).await;
        assert!(!ok, "{trick} was accepted:\n{out}");
        let code = rcpt_reply_code(&out);
        assert!(
            code.is_some_and(|c| (500..600).contains(&c)),
            "{trick}: RCPT got {code:?}, not 5xx:\n{out}"
        );
    }
    let relay = server.counters.refused_relay.load(Relaxed);
    assert_eq!(relay, tricks.len() as u64, "relay refusals counted");

    // A VERP address signed with another key: 550, counted as forged.
    let forged = VerpSigner::new(b"not-the-farm-key").return_path("spring", 7, BOUNCE_DOMAIN);
    let (ok, out) = swaks(server.addr, &["--from", "<>", "--to", &forged]).await;
    assert!(!ok, "{out}");
    assert_eq!(rcpt_reply_code(&out), Some(550), "{out}");
    // Tampered: the recipient id changed, the signature kept.
    let good = VerpSigner::new(VERP_KEY).return_path("spring", 7, BOUNCE_DOMAIN);
    let tampered = good.replacen("-7-", "-8-", 1);
    assert_ne!(tampered, good);
    let (ok, out) = swaks(server.addr, &["--from", "<>", "--to", &tampered]).await;
    assert!(!ok, "{out}");
    assert_eq!(rcpt_reply_code(&out), Some(550), "{out}");
    assert_eq!(server.counters.refused_forged_verp.load(Relaxed), 2);
    assert!(server.stored(MailKind::Bounce).is_empty());

    // The good one: 250, on disk in bounces/new before the reply.
    let (ok, out) = swaks(
        server.addr,
        &[
            "--from",
            "<>",
            "--to",
            &good,
            "--header",
            "Subject: Undelivered Mail Returned to Sender",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(rcpt_reply_code(&out), Some(250), "{out}");
    let bounces = server.stored(MailKind::Bounce);
    assert_eq!(bounces.len(), 1);
    assert!(
        bounces[0].starts_with(&format!(
            "Return-Path: <>\r\nX-Mailfarm-Envelope-To: <{good}>\r\n"
        )),
        "{}",
        bounces[0]
    );
    assert!(bounces[0].contains("Subject: Undelivered Mail Returned to Sender"));

    // postmaster@ is kept locally, case-insensitively.
    let (ok, out) = swaks(
        server.addr,
        &["--from", "s@x.test", "--to", &POSTMASTER.to_uppercase()],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(server.stored(MailKind::Local).len(), 1);

    let c = &server.counters;
    assert_eq!(c.received.load(Relaxed), 2);
    assert_eq!(c.bounces.load(Relaxed), 1);
    assert_eq!(c.kept.load(Relaxed), 1);
    let events = server.events.lock().expect("events").clone();
    assert_eq!(events.len(), 2);
    assert!(matches!(
        &events[0].rcpts[..],
        [(addr, Destination::Bounce(token))] if *addr == good && token.recipient_id == 7
    ));
    server.stop().await;
}
