//! The fault sink: an in-process SMTP receiver that imitates hostile or
//! overloaded MTAs, for delivery-engine tests and benchmarks.
//!
//! A [`FaultPlan`] says how it misbehaves: temporary (451) and permanent (550)
//! refusals of a fraction of recipients, a global acceptance rate beyond which
//! messages get `421` and the connection is closed, a cap on simultaneous
//! connections, a delay before every reply, connections dropped after the
//! message content but before the final reply, or a custom greeting that
//! refuses service. Accepted messages are not stored: [`SinkStats`] keeps
//! counters, a per-second histogram and the Message-ID and recipient of every
//! accepted message, so a test can check exactly-once delivery.
//!
//! Randomness is reproducible and independent of scheduling: the fate of a
//! recipient is a hash of [`FaultPlan::seed`], the address and how many of
//! its earlier attempts this sink tempfailed or dropped. The same recipients
//! sent to two sinks with the same plan get the same answers whatever the
//! connection count or order; a retried recipient is decided afresh, and a
//! permanently refused one stays refused. (The same recipient sent on several
//! connections at once makes the attempt counts race.) The throttle depends on
//! time, so it is the one non-reproducible fault.
//!
//! The protocol is the shared server core's ([`crate::smtp::server`], as for
//! the capture receiver and the inbound MX); this module holds the plan's
//! decisions and its `session` module applies them. The sink runs the core in its
//! lenient mode (MAIL parameters other than SIZE are ignored) and bounded
//! everywhere else: line lengths, message size, recipients per message, idle
//! time and bad commands per session.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::smtp::server::{ServerConfig, SmtpServer};

pub mod provider;
mod session;

use session::Sink;

/// Name in the default greeting and the EHLO reply.
pub const HOSTNAME: &str = "mailfarm-fault-sink";
/// Largest message accepted, in bytes (announced as SIZE); more gets 552.
pub const MAX_MESSAGE_SIZE: u64 = 32 * 1024 * 1024;
/// Most recipients per message; more get 452.
pub const MAX_RECIPIENTS: usize = 1000;
/// How long a session may wait for the client's next line or write.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After shutdown, how long open sessions may take to finish before they are
/// aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bad commands tolerated per session before 421 and disconnect.
pub const MAX_ERRORS: u32 = 20;
/// Longest Message-ID value recorded; longer ones are cut.
const MESSAGE_ID_MAX: usize = 998;
/// Most recipients whose attempt count is remembered; when full, the counts
/// start over (retried recipients are then decided as first attempts).
const ATTEMPTS_MAX: usize = 1 << 20;
/// Salts separating the independent random decisions.
const SALT_RCPT: u64 = 0x7263_7074;
const SALT_DROP: u64 = 0x6472_6f70;
const SALT_KEY: u64 = 0x006b_6579;

/// How the sink misbehaves. The default plan is a well-behaved receiver.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Fraction of RCPTs answered `451 4.3.0` (0 to 1).
    pub tempfail_ratio: f64,
    /// Fraction of RCPTs answered `550 5.1.1` (0 to 1; with
    /// `tempfail_ratio` at most 1).
    pub permfail_ratio: f64,
    /// Most messages accepted per second, across all connections (a token
    /// bucket holding [`throttle_burst`] messages). A message beyond it gets
    /// `421 4.7.0 Too many messages, slow down` at the final dot and the
    /// connection is closed.
    pub throttle_rate: Option<f64>,
    /// Most simultaneous sessions; more connections get `421 4.7.0` as their
    /// greeting and are closed.
    pub max_connections: Option<usize>,
    /// Delay before each reply (greeting included).
    pub reply_delay: Duration,
    /// Fraction of DATA transfers where the connection is closed after the
    /// content is received, without a final reply (0 to 1).
    pub drop_mid_data_ratio: f64,
    /// A custom greeting line, code included (e.g. `554 no service`). A code
    /// other than 220 refuses service: the sink then answers 503 to
    /// everything but QUIT (or closes at once after a 421).
    pub greeting: Option<String>,
    /// Seed of every random decision.
    pub seed: u64,
    /// Most messages accepted in any second, across all connections, answered as Amazon SES
    /// does beyond it: `454 Throttling failure: Maximum sending rate exceeded.` at the final
    /// dot, the session staying open (see [`provider`]).
    pub provider_rate: Option<f64>,
}

/// The burst the throttle allows on top of `rate` per second: a tenth of a
/// second's worth, at least one message.
pub fn throttle_burst(rate: f64) -> f64 {
    (rate / 10.0).max(1.0)
}

/// What the sink saw and did, shared and live (atomics, and mutexes held
/// only briefly).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// TCP connections accepted, refused ones included.
    pub connections: AtomicU64,
    /// Connections refused at the greeting (over `max_connections`, or a
    /// custom greeting other than 220).
    pub refused: AtomicU64,
    /// Messages accepted (250 to the final dot).
    pub accepted: AtomicU64,
    /// RCPTs answered 451 by the plan.
    pub tempfailed: AtomicU64,
    /// RCPTs answered 550 by the plan.
    pub permfailed: AtomicU64,
    /// Messages refused with 421 by the throttle.
    pub throttled: AtomicU64,
    /// DATA transfers dropped without a final reply.
    pub dropped: AtomicU64,
    /// Sessions open now (refused connections not counted).
    pub open_connections: AtomicU64,
    /// Most sessions open at once.
    pub peak_connections: AtomicU64,
    /// Accepted messages per Unix second.
    pub per_second: Mutex<BTreeMap<u64, u64>>,
    /// `(Message-ID, envelope recipient)` of every accepted message, one
    /// entry per recipient, in acceptance order. The Message-ID is the
    /// header value trimmed (brackets kept), empty when missing.
    pub messages: Mutex<Vec<(String, String)>>,
}

impl SinkStats {
    /// A copy of [`per_second`](Self::per_second).
    pub fn per_second_snapshot(&self) -> BTreeMap<u64, u64> {
        lock(&self.per_second).clone()
    }

    /// A copy of [`messages`](Self::messages).
    pub fn messages_snapshot(&self) -> Vec<(String, String)> {
        lock(&self.messages).clone()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The throttle's token bucket.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What RCPT gets.
enum Fate {
    Accept,
    Temp,
    Perm,
}

/// State shared by all sessions of one sink.
#[derive(Debug)]
struct Shared {
    plan: FaultPlan,
    stats: Arc<SinkStats>,
    /// Tempfailed or dropped attempts per recipient key.
    attempts: Mutex<HashMap<u64, u32>>,
    bucket: Option<Mutex<Bucket>>,
    provider_rate: Option<Arc<provider::ProviderRate>>,
}

impl Shared {
    fn attempt(&self, rcpt: &str) -> u32 {
        let key = hash(self.plan.seed, SALT_KEY, rcpt, 0);
        lock(&self.attempts).get(&key).copied().unwrap_or(0)
    }

    fn bump(&self, rcpt: &str) {
        let key = hash(self.plan.seed, SALT_KEY, rcpt, 0);
        let mut attempts = lock(&self.attempts);
        if attempts.len() >= ATTEMPTS_MAX && !attempts.contains_key(&key) {
            attempts.clear();
        }
        *attempts.entry(key).or_insert(0) += 1;
    }

    fn rcpt_fate(&self, rcpt: &str) -> Fate {
        let plan = &self.plan;
        if plan.tempfail_ratio <= 0.0 && plan.permfail_ratio <= 0.0 {
            return Fate::Accept;
        }
        let u = unit(hash(plan.seed, SALT_RCPT, rcpt, self.attempt(rcpt)));
        if u < plan.tempfail_ratio {
            self.bump(rcpt);
            self.stats.tempfailed.fetch_add(1, Ordering::Relaxed);
            Fate::Temp
        } else if u < plan.tempfail_ratio + plan.permfail_ratio {
            self.stats.permfailed.fetch_add(1, Ordering::Relaxed);
            Fate::Perm
        } else {
            Fate::Accept
        }
    }

    /// Whether to drop this transfer (decided on its first recipient); a
    /// dropped transfer counts as an attempt for all its recipients.
    fn drop_transfer(&self, rcpts: &[String]) -> bool {
        let ratio = self.plan.drop_mid_data_ratio;
        let Some(first) = rcpts.first() else {
            return false;
        };
        if ratio <= 0.0 {
            return false;
        }
        let u = unit(hash(self.plan.seed, SALT_DROP, first, self.attempt(first)));
        if u >= ratio {
            return false;
        }
        for rcpt in rcpts {
            self.bump(rcpt);
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn take_token(&self) -> bool {
        match &self.bucket {
            None => true,
            Some(bucket) => lock(bucket).take(),
        }
    }

    fn record_accepted(&self, message_id: String, rcpts: Vec<String>) {
        {
            let mut attempts = lock(&self.attempts);
            if !attempts.is_empty() {
                for rcpt in &rcpts {
                    attempts.remove(&hash(self.plan.seed, SALT_KEY, rcpt, 0));
                }
            }
        }
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *lock(&self.stats.per_second).entry(second).or_insert(0) += 1;
        lock(&self.stats.messages).extend(rcpts.into_iter().map(|r| (message_id.clone(), r)));
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable hash of `(seed, salt, text, n)` (FNV-1a, then mixed).
fn hash(seed: u64, salt: u64, text: &str, n: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ mix(seed ^ mix(salt));
    for &b in text.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h ^ mix(u64::from(n).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// Maps a hash to `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A bound fault sink; call [`FaultSink::run`] to serve.
#[derive(Debug)]
pub struct FaultSink {
    server: SmtpServer<Sink>,
}

impl FaultSink {
    /// Binds `addr` (e.g. `127.0.0.1:0`). Fails with
    /// [`io::ErrorKind::InvalidInput`] for an impossible plan: a ratio
    /// outside 0..=1, tempfail plus permfail over 1, a throttle rate that is
    /// not positive, or a greeting with a line break.
    pub async fn bind(addr: SocketAddr, plan: FaultPlan) -> io::Result<Self> {
        validate(&plan).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bucket = plan.throttle_rate.map(|rate| {
            let capacity = throttle_burst(rate);
            Mutex::new(Bucket {
                rate,
                capacity,
                tokens: capacity,
                last: Instant::now(),
            })
        });
        let config = server_config(&plan);
        let provider_rate = plan
            .provider_rate
            .map(|r| Arc::new(provider::ProviderRate::new(r)));
        let shared = Arc::new(Shared {
            plan,
            stats: Arc::new(SinkStats::default()),
            attempts: Mutex::new(HashMap::new()),
            bucket,
            provider_rate,
        });
        let server = SmtpServer::bind(addr, config, Sink(shared)).await?;
        Ok(Self { server })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The provider-style rate limit (`--rate`), to read its refusals or change it while the
    /// sink runs; `None` without one.
    pub fn provider_rate(&self) -> Option<Arc<provider::ProviderRate>> {
        self.server.handler().0.provider_rate.clone()
    }

    /// The live statistics: take them before calling [`run`](Self::run).
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.server.handler().0.stats)
    }

    /// Serves until `shutdown` resolves; then stops accepting, tells idle
    /// sessions to close (421), lets sessions busy with a message finish for
    /// up to [`SHUTDOWN_GRACE`] and aborts the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        self.server.run(shutdown).await
    }
}

/// The server core's settings for a plan.
fn server_config(plan: &FaultPlan) -> ServerConfig {
    ServerConfig {
        hostname: HOSTNAME.to_owned(),
        max_message_size: MAX_MESSAGE_SIZE,
        max_recipients: MAX_RECIPIENTS,
        max_sessions: plan.max_connections,
        max_sessions_per_ip: None,
        command_line_max: super::capture::COMMAND_LINE_MAX,
        data_line_max: super::capture::DATA_LINE_MAX,
        command_timeout: IDLE_TIMEOUT,
        data_line_timeout: IDLE_TIMEOUT,
        data_timeout: None,
        session_timeout: None,
        shutdown_grace: SHUTDOWN_GRACE,
        max_errors: MAX_ERRORS,
        strict: false,
        tls: None,
    }
}

/// Why a plan cannot be served.
fn validate(plan: &FaultPlan) -> Result<(), String> {
    if let Some(rate) = plan.provider_rate.filter(|r| !(r.is_finite() && *r >= 1.0)) {
        return Err(format!("provider_rate must be at least 1, not {rate}"));
    }
    for (name, ratio) in [
        ("tempfail_ratio", plan.tempfail_ratio),
        ("permfail_ratio", plan.permfail_ratio),
        ("drop_mid_data_ratio", plan.drop_mid_data_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("{name} must be between 0 and 1, not {ratio}"));
        }
    }
    if plan.tempfail_ratio + plan.permfail_ratio > 1.0 {
        return Err("tempfail_ratio + permfail_ratio must not exceed 1".into());
    }
    if let Some(rate) = plan.throttle_rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("throttle_rate must be positive, not {rate}"));
        }
    }
    if let Some(greeting) = &plan.greeting {
        if greeting.contains(['\r', '\n']) {
            return Err("greeting must be a single line".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_spread() {
        assert_eq!(hash(1, SALT_RCPT, "a@b", 0), hash(1, SALT_RCPT, "a@b", 0));
        assert_ne!(hash(1, SALT_RCPT, "a@b", 0), hash(2, SALT_RCPT, "a@b", 0));
        assert_ne!(hash(1, SALT_RCPT, "a@b", 0), hash(1, SALT_RCPT, "a@b", 1));
        let n = 10_000;
        let below = (0..n)
            .filter(|i| unit(hash(7, SALT_RCPT, &format!("r{i}@x"), 0)) < 0.25)
            .count();
        assert!((2300..2700).contains(&below), "{below}");
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = Bucket {
            rate: 10.0,
            capacity: 2.0,
            tokens: 2.0,
            last: Instant::now(),
        };
        assert!(b.take() && b.take());
        assert!(!b.take());
        b.last -= Duration::from_millis(150);
        assert!(b.take());
        assert!(!b.take());
    }

    #[test]
    fn bad_plans_are_refused() {
        for plan in [
            FaultPlan {
                tempfail_ratio: 1.5,
                ..FaultPlan::default()
            },
            FaultPlan {
                tempfail_ratio: 0.6,
                permfail_ratio: 0.6,
                ..FaultPlan::default()
            },
            FaultPlan {
                drop_mid_data_ratio: f64::NAN,
                ..FaultPlan::default()
            },
            FaultPlan {
                throttle_rate: Some(0.0),
                ..FaultPlan::default()
            },
            FaultPlan {
                greeting: Some("220 a\r\n250 b".into()),
                ..FaultPlan::default()
            },
        ] {
            assert!(validate(&plan).is_err(), "{plan:?}");
        }
        assert!(validate(&FaultPlan::default()).is_ok());
    }
}
