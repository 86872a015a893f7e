//! A site's worker: one SMTP session at a time, reused for the site's jobs. Renders (and
//! DKIM-signs) each message right before sending it, and reports every attempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mailfarm_protocol::{Outcome, RecipientResult};
use mailfarm_templates::{BodyTransport, RenderedMessage};
use tracing::debug;

use super::health::Signal;
use super::site::{Kind, Plan, Site, Target, WorkerGuard};
use super::{Job, Shared};
use crate::outbound::session::{open_session, Session, SessionSettings};
use crate::outbound::smtp::{Delivery, Phase, SmtpError};
use crate::outbound::throttle::{Action, ThrottleKind};
use crate::smtp::reply::Reply;

/// Most addresses tried to open one session (across the MX hosts, in order).
pub const MAX_OPEN_TRIES: usize = 5;

/// An open session and where it goes.
struct Open {
    session: Session,
    /// `host[ip]:port`.
    remote: String,
    /// Messages sent on it.
    sent: u32,
}

impl Open {
    async fn close(self) {
        let _ = self.session.client.quit().await;
    }
}

/// Why no session could be opened.
struct OpenFailure {
    outcome: Outcome,
    code: u16,
    enhanced: Option<(u8, u16, u16)>,
    text: String,
    remote: String,
    signal: Option<Signal>,
    /// What the refusal asks of the site, when it is a throttling reply (or the server dropped
    /// the connection at banner time).
    action: Action,
}

/// What became of a job's attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// A result was reported (or the job was dropped with its link).
    Reported,
    /// The site throttled it: put it back in the site's queue, no result.
    Throttled,
    /// The site refused the session for too many connections: put the job back and end this
    /// worker (the dispatcher starts another only within the learnt connection count).
    Refused,
}

/// Acts on what the site said (see [`crate::outbound::throttle`]): cuts, suspends, caps or
/// bogs the site, and tells whether the job is to be retried on the smurf.
/// Only a transient refusal is retried (an operator's rule may act on a permanent one: the
/// site is then suspended, capped or bogged, and the message fails as usual).
fn on_throttle(
    (site, shared, job): (&Site, &Shared, &mut Job),
    (action, transient): (&Action, bool),
    text: &str,
    sent: Instant,
) -> bool {
    if *action == Action::Ignore {
        return false;
    }
    if site.throttled(action, text, shared.shaping().share(), sent) {
        shared.throttle_changed.notify_one();
    }
    transient && !matches!(action, Action::Bog) && job.held.hold(Instant::now())
}

/// What the shaping's classifier makes of a reply from this site.
fn classify(site: &Site, shared: &Shared, reply: &Reply) -> Action {
    shared
        .shaping()
        .classifier()
        .classify(&site.key().0, reply.code, reply.enhanced, &reply.text)
}

/// What an attempt that did not deliver comes to: outcome, reply code, enhanced code, what it
/// tells about the site, and the throttling action.
type Verdict = (Outcome, u16, Option<(u8, u16, u16)>, Option<Signal>, Action);

/// The deferral a refusal means, and what it tells about the site: a throttling reply shows the
/// site works, only not this fast; any other temporary refusal counts against it.
fn deferred_by(reply: &Reply, action: Action) -> Verdict {
    let signal = match action {
        Action::Ignore => Signal::TempFailure,
        _ => Signal::Success,
    };
    (
        Outcome::Deferred,
        reply.code,
        enhanced(reply),
        Some(signal),
        action,
    )
}

fn enhanced(reply: &Reply) -> Option<(u8, u16, u16)> {
    reply.enhanced.map(|e| (e.class, e.subject, e.detail))
}

/// The attempt's result.
#[allow(clippy::too_many_arguments)]
fn result(
    job: &Job,
    outcome: Outcome,
    code: u16,
    enhanced: Option<(u8, u16, u16)>,
    text: String,
    size: u32,
    remote: &str,
    started: Instant,
) -> RecipientResult {
    RecipientResult {
        id: job.recipient.id,
        outcome,
        code,
        enhanced,
        text,
        rendered_bytes: size,
        remote: remote.to_owned(),
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
    }
}

/// Runs one worker until its site has nothing for it.
pub(super) async fn run(site: Arc<Site>, shared: Arc<Shared>, mut guard: WorkerGuard) {
    let mut open: Option<Open> = None;
    while let Some(mut job) = site.next_job(&shared, &mut guard).await {
        let attempt = deliver(&site, &shared, &mut job, &mut open).await;
        site.job_done(&mut guard);
        match attempt {
            Attempt::Reported => {}
            Attempt::Throttled => site.requeue(job),
            Attempt::Refused => {
                site.requeue(job);
                break;
            }
        }
    }
    if let Some(open) = open.take() {
        open.close().await;
    }
}

/// Renders the message for `transport` and signs it when a DKIM key for its From domain exists.
fn render(shared: &Shared, job: &Job, transport: BodyTransport) -> Result<RenderedMessage, String> {
    if let Some(raw) = &job.raw {
        return Ok(RenderedMessage {
            return_path: raw.mail_from.clone(),
            recipient: raw.rcpt_to.clone(),
            message_id: String::new(),
            data: raw.data.clone(),
        });
    }
    let mut message = job
        .campaign
        .template
        .render_for(
            job.recipient.id,
            job.email(),
            &job.recipient.values,
            transport,
        )
        .map_err(|e| format!("render: {e}"))?;
    if let Some(dkim) = &shared.dkim {
        match dkim.sign(&message.data) {
            Ok(Some(signed)) => message.data = signed,
            Ok(None) => {}
            Err(e) => return Err(format!("DKIM signing: {e}")),
        }
    }
    Ok(message)
}

/// Whether a session error happened before the server said anything about the message, so
/// that trying it again on a fresh session cannot duplicate it.
fn before_any_reply(e: &SmtpError) -> bool {
    matches!(
        e,
        SmtpError::Io {
            phase: Phase::MailFrom,
            ..
        } | SmtpError::Closed {
            phase: Phase::MailFrom
        } | SmtpError::Broken
    )
}

/// One attempt for `job`: limiter, render, session (reused or new), send, report (or put
/// back when the site throttled it).
async fn deliver(site: &Site, shared: &Shared, job: &mut Job, open: &mut Option<Open>) -> Attempt {
    let shutting_down =
        |job: &Job| job.report(Outcome::Deferred, 0, None, "smurf shutting down".into());
    if !site.acquire(Kind::Message, shared).await {
        shutting_down(job);
        return Attempt::Reported;
    }
    if !shared.is_current(job) {
        return Attempt::Reported;
    }
    let started = Instant::now();
    // 8bit unless the session this worker holds did not announce 8BITMIME: nearly every
    // server does, and a message rendered so for one that does not is rendered again below.
    let mut transport = match open {
        Some(o) if !o.session.client.capabilities().eight_bit_mime => BodyTransport::SevenBit,
        _ => BodyTransport::EightBit,
    };
    let mut message = match render(shared, job, transport) {
        Ok(message) => message,
        Err(text) => {
            let _ = job
                .results
                .send(result(job, Outcome::Failed, 0, None, text, 0, "", started));
            return Attempt::Reported;
        }
    };
    let mut size = u32::try_from(message.data.len()).unwrap_or(u32::MAX);
    let plan = site.plan();
    let max_per_connection = plan
        .max_per_connection
        .unwrap_or(shared.settings.max_messages_per_connection)
        .max(1);
    let mut retried = false;
    loop {
        let stale = open
            .as_ref()
            .is_some_and(|o| o.session.client.is_broken() || o.sent >= max_per_connection);
        if stale {
            if let Some(old) = open.take() {
                old.close().await;
            }
        }
        if open.is_none() {
            if !site.acquire(Kind::Connection, shared).await {
                shutting_down(job);
                return Attempt::Reported;
            }
            match open_for(&plan, shared, site).await {
                Ok(session) => *open = Some(session),
                Err(f) => {
                    debug!(site = %site.key(), remote = %f.remote, "{}", f.text);
                    if let Some(signal) = f.signal {
                        site.record(signal);
                    }
                    if on_throttle(
                        (site, shared, job),
                        (&f.action, f.outcome == Outcome::Deferred),
                        &f.text,
                        started,
                    ) {
                        return match f.action {
                            Action::Throttle(ThrottleKind::Connections) => Attempt::Refused,
                            _ => Attempt::Throttled,
                        };
                    }
                    let r = result(
                        job, f.outcome, f.code, f.enhanced, f.text, size, &f.remote, started,
                    );
                    let _ = job.results.send(r);
                    return Attempt::Reported;
                }
            }
        }
        let Some(o) = open.as_mut() else {
            return Attempt::Reported;
        };
        if transport == BodyTransport::EightBit
            && !o.session.client.capabilities().eight_bit_mime
            && !message.data.is_ascii()
        {
            transport = BodyTransport::SevenBit;
            match render(shared, job, transport) {
                Ok(again) => message = again,
                Err(text) => {
                    let r = result(job, Outcome::Failed, 0, None, text, 0, "", started);
                    let _ = job.results.send(r);
                    return Attempt::Reported;
                }
            }
            size = u32::try_from(message.data.len()).unwrap_or(u32::MAX);
        }
        let sent_at = Instant::now();
        let sent = o
            .session
            .client
            .send(&message.return_path, &message.recipient, &message.data)
            .await;
        match sent {
            Ok(delivery) => {
                o.sent += 1;
                let (outcome, reply, local) = match &delivery {
                    Delivery::Delivered(reply) => (Outcome::Delivered, reply, false),
                    Delivery::Deferred(r) => (Outcome::Deferred, &r.reply, false),
                    Delivery::Failed(r) => (Outcome::Failed, &r.reply, r.phase == Phase::Local),
                };
                if !local {
                    // The site answered: it works, whatever it said about this message.
                    site.record(Signal::Success);
                    if outcome == Outcome::Delivered {
                        site.delivered();
                    }
                    let action = classify(site, shared, reply);
                    let line = reply_line(reply);
                    if on_throttle(
                        (site, shared, job),
                        (&action, reply.is_transient()),
                        &line,
                        sent_at,
                    ) {
                        return Attempt::Throttled;
                    }
                }
                let r = result(
                    job,
                    outcome,
                    reply.code,
                    enhanced(reply),
                    reply.text.clone(),
                    size,
                    &o.remote,
                    started,
                );
                let _ = job.results.send(r);
                return Attempt::Reported;
            }
            Err(e) => {
                let Some(broken) = open.take() else {
                    return Attempt::Reported;
                };
                let remote = broken.remote.clone();
                let reused = broken.sent > 0;
                broken.close().await;
                if reused && !retried && before_any_reply(&e) {
                    debug!(site = %site.key(), %remote, "reused session failed before any reply ({e}): once more on a new one");
                    retried = true;
                    continue;
                }
                let (outcome, code, enhanced, signal, action) = match &e {
                    SmtpError::InvalidHeloName(_) => {
                        (Outcome::Failed, 0, None, None, Action::Ignore)
                    }
                    SmtpError::Rejected { reply, .. } => {
                        deferred_by(reply, classify(site, shared, reply))
                    }
                    _ => (
                        Outcome::Deferred,
                        0,
                        None,
                        Some(Signal::TempFailure),
                        Action::Ignore,
                    ),
                };
                let text = format!("{remote}: {e}");
                if let Some(signal) = signal {
                    site.record(signal);
                }
                if on_throttle(
                    (site, shared, job),
                    (&action, outcome == Outcome::Deferred),
                    &text,
                    sent_at,
                ) {
                    return Attempt::Throttled;
                }
                let r = result(job, outcome, code, enhanced, text, size, &remote, started);
                let _ = job.results.send(r);
                return Attempt::Reported;
            }
        }
    }
}

/// The reply as one line, code and enhanced code included.
fn reply_line(reply: &Reply) -> String {
    match reply.enhanced {
        Some(e) => format!("{} {e} {}", reply.code, reply.text),
        None => format!("{} {}", reply.code, reply.text),
    }
}

/// Opens a session for the site: the MX hosts in order and each one's addresses in order (or
/// the relay's addresses), moving on after a failure, at most [`MAX_OPEN_TRIES`] addresses.
async fn open_for(plan: &Plan, shared: &Shared, site: &Site) -> Result<Open, OpenFailure> {
    let settings = &shared.settings;
    let mut auth = None;
    let candidates: Vec<(String, SocketAddr)> = match &plan.target {
        Target::Mx(route) => route
            .hosts
            .iter()
            .flat_map(|h| {
                h.addresses
                    .iter()
                    .map(|ip| (h.name.clone(), SocketAddr::new(*ip, settings.smtp_port)))
            })
            .collect(),
        Target::Relay {
            host,
            port,
            auth: credentials,
            ..
        } => {
            auth.clone_from(credentials);
            match host.parse::<IpAddr>() {
                Ok(ip) => vec![(host.clone(), SocketAddr::new(ip, *port))],
                Err(_) => match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => addrs.map(|a| (host.clone(), a)).collect(),
                    Err(e) => {
                        return Err(OpenFailure {
                            outcome: Outcome::Deferred,
                            code: 0,
                            enhanced: None,
                            text: format!("resolving relay {host}: {e}"),
                            remote: String::new(),
                            signal: Some(Signal::TempFailure),
                            action: Action::Ignore,
                        })
                    }
                },
            }
        }
    };
    let session_settings = SessionSettings {
        helo_name: settings.helo_name.clone(),
        timeouts: settings.timeouts,
        tls: plan.tls.unwrap_or(settings.tls_policy),
        tls_client: shared.tls_client.clone(),
        auth,
        allow_plaintext_auth: false,
        connect_timeout: settings.connect_timeout,
    };
    let mut last: Option<(SmtpError, String)> = None;
    for (host, addr) in candidates.into_iter().take(MAX_OPEN_TRIES) {
        let remote = format!("{host}[{}]:{}", addr.ip(), addr.port());
        match open_session(addr, &host, &session_settings).await {
            Ok(session) => {
                return Ok(Open {
                    session,
                    remote,
                    sent: 0,
                })
            }
            Err(e) => {
                debug!(%remote, "cannot open a session: {e}");
                let fatal = matches!(
                    e,
                    SmtpError::InvalidHeloName(_) | SmtpError::InvalidCredentials(_)
                );
                last = Some((e, remote));
                if fatal {
                    break;
                }
            }
        }
    }
    let Some((e, remote)) = last else {
        return Err(OpenFailure {
            outcome: Outcome::Deferred,
            code: 0,
            enhanced: None,
            text: "no address to connect to".into(),
            remote: String::new(),
            signal: Some(Signal::TempFailure),
            action: Action::Ignore,
        });
    };
    let (outcome, code, enhanced, signal, action) = match &e {
        SmtpError::InvalidHeloName(_) | SmtpError::InvalidCredentials(_) => {
            (Outcome::Failed, 0, None, None, Action::Ignore)
        }
        SmtpError::Rejected { reply, phase } => {
            let mut action = classify(site, shared, reply);
            // Refused at the greeting for being too fast: fewer sessions, whatever the words.
            if *phase == Phase::Greeting && action == Action::Throttle(ThrottleKind::Rate) {
                action = Action::Throttle(ThrottleKind::Connections);
            }
            deferred_by(reply, action)
        }
        // Dropped at banner time: a site limiting connections that way.
        SmtpError::Closed {
            phase: Phase::Greeting,
        } => (
            Outcome::Deferred,
            0,
            None,
            Some(Signal::TempFailure),
            Action::Throttle(ThrottleKind::Connections),
        ),
        _ => (
            Outcome::Deferred,
            0,
            None,
            Some(Signal::TempFailure),
            Action::Ignore,
        ),
    };
    Err(OpenFailure {
        outcome,
        code,
        enhanced,
        text: format!("{remote}: {e}"),
        remote,
        signal,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_before_any_reply_allow_a_second_try() {
        let io = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(before_any_reply(&SmtpError::Io {
            phase: Phase::MailFrom,
            source: io(),
        }));
        assert!(before_any_reply(&SmtpError::Closed {
            phase: Phase::MailFrom
        }));
        assert!(!before_any_reply(&SmtpError::Closed {
            phase: Phase::DataEnd
        }));
        assert!(!before_any_reply(&SmtpError::Io {
            phase: Phase::DataBody,
            source: io(),
        }));
    }
}
