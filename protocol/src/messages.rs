//! Every message that crosses a mailfarm link, as plain serde types encoded with postcard.
//!
//! The types are deliberately compact: after the template has been shipped once, a recipient
//! costs an id and its field values on the wire, and a result costs an id, an outcome and the
//! server's reply.

use serde::{Deserialize, Serialize};

use crate::bounces::{BounceJob, BounceVerdict, ReturnedMail, Unsubscription};
use crate::roles::{
    Assignment, FarmSnapshot, InboundCounters, InboundPolicy, InboundRecord, NodeRole, NodeState,
    NodeStatus,
};

/// SHA-256 of a campaign's template bundle contents; names the template on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// First frame on every link, sent by the client that opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// What the client is, and what it brings.
    pub role: Role,
}

/// The role a client claims; the coordinator checks it against the client's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A sender node.
    Smurf {
        /// Node name; must match the DNS name in its certificate (`NAME.smurf.mailfarm`).
        node: String,
        /// Most recipients the smurf accepts in flight at once (its credit window).
        window: u32,
        /// Template bundles the smurf already holds, so they are not shipped again.
        templates_held: Vec<ContentHash>,
        /// Results of earlier links the smurf will report first, as late results; the
        /// coordinator leases nothing until it has them, so those messages are not sent again.
        held_results: u32,
        /// The role its config names for a node the coordinator has never assigned; `None`
        /// joins as `out`. An assignment stored on the coordinator always wins.
        initial_role: Option<NodeRole>,
        /// The smurf's software version, shown by `farm nodes`.
        software: String,
    },
    /// An operator's command-line client.
    Operator {
        /// Operator name; must match the DNS name in its certificate (`NAME.operator.mailfarm`).
        name: String,
    },
}

/// Where and how a smurf delivers a campaign's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTarget {
    /// Relay `host:port` (smart host) that receives every message; `None` delivers directly to
    /// each recipient domain's MX hosts.
    pub relay: Option<String>,
    /// Concurrent SMTP connections per smurf to the relay (MX delivery uses the shaping file).
    pub connections: u16,
}

/// The farm's traffic shaping, sent to every smurf: the shaping file's text (TOML: a
/// `default` section and per-domain / per-site overrides) and this smurf's share of every
/// limit, so that the limits hold for the whole farm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapingUpdate {
    /// The shaping file, as TOML text (empty: built-in defaults).
    pub toml: String,
    /// This smurf's share of each site's limits, numerator.
    pub share_numerator: u32,
    /// This smurf's share of each site's limits, denominator (at least 1).
    pub share_denominator: u32,
}

impl ShapingUpdate {
    /// The share as a fraction in (0, 1].
    pub fn share(&self) -> f64 {
        f64::from(self.share_numerator.max(1)) / f64::from(self.share_denominator.max(1))
    }
}

/// Everything a smurf needs to render a campaign's messages: shipped once per smurf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBundle {
    /// Hash of the rest of the bundle; batches refer to it.
    pub hash: ContentHash,
    /// Campaign identifier.
    pub campaign_id: String,
    /// Handlebars source of the Subject header.
    pub subject: String,
    /// Handlebars source of the text/plain part.
    pub text: String,
    /// Handlebars source of the text/html part, if any.
    pub html: Option<String>,
    /// From header.
    pub from: String,
    /// Reply-To header.
    pub reply_to: Option<String>,
    /// List-Id value.
    pub list_id: String,
    /// Domain of the signed VERP return paths.
    pub bounce_domain: String,
    /// Handlebars source of the List-Unsubscribe target, if any.
    pub list_unsubscribe: Option<String>,
    /// Column names of the recipient data, in the order values are sent.
    pub field_names: Vec<String>,
    /// Index of the `email` column in `field_names`.
    pub email_field: u32,
    /// Key that signs VERP return paths, so bounces can be traced and not forged.
    pub verp_key: Vec<u8>,
    /// Where to deliver.
    pub delivery: DeliveryTarget,
    /// Base URL of the farm's web node for signed unsubscribe links (`campaign.toml`'s
    /// `unsubscribe_base_url`); `None`: no signed links.
    pub unsubscribe_base_url: Option<String>,
}

/// One recipient's data: its id and the values of its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientData {
    /// Coordinator-assigned id, unique within the campaign.
    pub id: u64,
    /// Field values in the order of [`TemplateBundle::field_names`]; may be shorter when the
    /// recipient's row lacked trailing fields.
    pub values: Vec<String>,
}

/// A batch of recipients to render and send with one template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientBatch {
    /// The template bundle to render with.
    pub template: ContentHash,
    /// The recipients.
    pub recipients: Vec<RecipientData>,
}

/// What happened to one recipient's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Accepted by the receiving server (2xx).
    Delivered,
    /// Temporarily refused or not attempted to completion (4xx, network trouble): retry later.
    Deferred,
    /// Permanently refused (5xx) or impossible to render or send.
    Failed,
}

/// The result of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientResult {
    /// Recipient id from the batch.
    pub id: u64,
    /// Outcome class.
    pub outcome: Outcome,
    /// SMTP reply code, or 0 when no server reply applies (render error, connection failure).
    pub code: u16,
    /// RFC 3463 enhanced status code as `class.subject.detail`, when the server gave one.
    pub enhanced: Option<(u8, u16, u16)>,
    /// Reply text or local reason.
    pub text: String,
    /// Size of the message the smurf rendered, in bytes (0 when it was not rendered).
    pub rendered_bytes: u32,
    /// The server that answered (`host[ip]:port`), empty when none was reached.
    pub remote: String,
    /// Time the attempt took, in milliseconds.
    pub duration_ms: u32,
}

/// The coordinator's answer to a [`Hello`]: the second frame of every link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The hello was accepted.
    Welcome {
        /// Coordinator's protocol version.
        version: u16,
        /// Name the coordinator recognised (node or operator).
        name: String,
    },
    /// The hello was refused; the link closes.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Coordinator-to-smurf messages, after the [`HelloReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// A campaign's template bundle.
    Template(Box<TemplateBundle>),
    /// Recipients to send.
    Batch(RecipientBatch),
    /// The template is no longer needed (its campaign ended).
    Forget(ContentHash),
    /// New shaping rules or a new share of them (smurfs joined or left).
    Shaping(ShapingUpdate),
    /// The oldest results frame not yet acknowledged (`Results` or `LateResults`) is committed
    /// to the coordinator's store. Until then the smurf keeps it, and sends it again as late
    /// results on its next link if this one drops.
    ResultsCommitted,
    /// The role the node must hold and whether it must drain; sent after the welcome and
    /// whenever the operator changes it.
    Assign(Assignment),
    /// What an `in` node accepts; sent after the welcome and whenever it changes.
    InboundPolicy(InboundPolicy),
    /// Returned mail the coordinator has queued durably, by the names the `in` node gave: the
    /// node may delete its copies.
    ReturnedStored(Vec<String>),
    /// Returned messages for a `bounce` node to analyse.
    BounceWork(Vec<BounceJob>),
    /// The unsubscribes a `web` node sent are stored up to this journal position.
    UnsubscribesStored(u64),
    /// The whole farm at a glance, every second, for a `web` node's dashboard.
    FarmView(Box<FarmSnapshot>),
    /// This smurf's share of sites' farm-wide learnt rates and connection counts.
    SiteRates(Vec<crate::throttle::SiteRate>),
    /// The forwarding rule set: a snapshot (or a chunk of one) after the welcome, then deltas.
    ForwardRules(crate::ForwardUpdate),
    /// The coordinator's answers to notice claims, each committed before it is sent.
    NoticeGrants(Vec<crate::NoticeGrant>),
}

/// Smurf-to-coordinator messages, after the [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmurfMessage {
    /// Results of delivery attempts; each frees one unit of window.
    Results(Vec<RecipientResult>),
    /// The smurf could not use a template (it did not compile); its recipients fail.
    TemplateRejected {
        /// Which template.
        hash: ContentHash,
        /// The compile error.
        reason: String,
    },
    /// The smurf is shutting down: it sends no more results after this.
    Goodbye,
    /// Periodic load report, used to balance work across smurfs.
    Load(SmurfLoad),
    /// Results of recipients leased on an earlier link (it dropped, or the coordinator
    /// restarted) that finished after it ended. Applied if the recipient is still pending, so
    /// a message that went out is not sent again.
    LateResults(Vec<RecipientResult>),
    /// Recipients received in batches and never attempted, given back (role switch, drain,
    /// shutdown): the coordinator leases them again at once to other `out` nodes.
    HandBack(Vec<u64>),
    /// The node's role and state changed.
    Status(NodeStatus),
    /// Messages an `in` node accepted since the last report, for the accounting log.
    InboundReceived(Vec<InboundRecord>),
    /// Returned mail an `in` node stored, for the coordinator's bounce queue.
    Returned(Vec<ReturnedMail>),
    /// What a `bounce` node learnt from the messages it leased.
    BounceVerdicts(Vec<BounceVerdict>),
    /// Unsubscribes (and undos) a `web` node recorded durably, in journal order.
    Unsubscribes(Vec<Unsubscription>),
    /// What the smurf learnt about throttling sites (on a cut, and with each load report).
    SiteThrottles(Vec<crate::throttle::SiteThrottle>),
    /// Change-of-address notices an `in` node wants to send: each needs a grant.
    NoticeClaims(Vec<crate::NoticeClaim>),
    /// Forwarded messages that reached their end (delivered or failed), for the accounting log.
    Forwarded(Vec<crate::ForwardRecord>),
}

/// What a smurf reports about its load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmurfLoad {
    /// Messages queued for delivery and not yet being sent.
    pub queued: u32,
    /// Messages being sent right now.
    pub sending: u32,
    /// CPU use of the smurf process over the last interval, percent of one core.
    pub cpu_percent: u16,
    /// Sites currently in the slow "bog" lane.
    pub bog_sites: u32,
    /// Messages waiting in the bog.
    pub bog_queued: u32,
    /// Cumulative inbound counters of this process (nodes that held the `in` role).
    pub inbound: InboundCounters,
}

/// A campaign as an operator submits it: settings and template sources. The recipient CSV
/// follows in [`OperatorRequest::CsvChunk`] frames ended by [`OperatorRequest::CsvEnd`], so a
/// list of any size streams through in constant memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSubmission {
    /// Campaign identifier.
    pub id: String,
    /// From header.
    pub from: String,
    /// Reply-To header.
    pub reply_to: Option<String>,
    /// Handlebars source of the subject.
    pub subject: String,
    /// List-Id value.
    pub list_id: String,
    /// VERP domain.
    pub bounce_domain: String,
    /// Handlebars source of List-Unsubscribe.
    pub list_unsubscribe: Option<String>,
    /// Text part source.
    pub text: String,
    /// HTML part source.
    pub html: Option<String>,
    /// Where to deliver.
    pub delivery: DeliveryTarget,
    /// Do not send before this time (ms since the Unix epoch).
    pub start_at_ms: Option<u64>,
    /// Most messages per period for this campaign across the farm.
    pub rate_cap: Option<crate::Rate>,
    /// Base URL of the farm's web node for signed unsubscribe links (`<base>/u/<token>`).
    pub unsubscribe_base_url: Option<String>,
}

/// Operator-to-coordinator requests (after the [`Hello`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// Start a campaign; its CSV follows in chunks.
    Launch(Box<CampaignSubmission>),
    /// A piece of the recipient CSV of the campaign being launched.
    CsvChunk(Vec<u8>),
    /// The CSV is complete; the coordinator answers the launch now.
    CsvEnd,
    /// Counters of one campaign.
    Status {
        /// Campaign identifier.
        campaign_id: String,
    },
    /// Counters of every campaign.
    List,
    /// Stop leasing a campaign's recipients until resumed.
    Pause {
        /// Campaign identifier.
        campaign_id: String,
    },
    /// Resume a paused campaign.
    Resume {
        /// Campaign identifier.
        campaign_id: String,
    },
    /// Skip every unsent recipient of a campaign; in-flight messages finish.
    Cancel {
        /// Campaign identifier.
        campaign_id: String,
    },
    /// The smurfs connected now.
    Nodes,
    /// Stop giving work to a node; it finishes what it holds and is reported idle.
    Drain {
        /// Node name.
        node: String,
    },
    /// Give work to a drained node again.
    Undrain {
        /// Node name.
        node: String,
    },
    /// Add an address to the suppression list: it is skipped in every later campaign.
    Suppress {
        /// The address.
        address: String,
        /// Why (shown in reports).
        reason: String,
    },
    /// Move a node to another role (durable; applied at once if it is connected).
    Assign {
        /// Node name.
        node: String,
        /// The new role.
        role: NodeRole,
        /// Allow taking away the last `out` node while a campaign is sending.
        force: bool,
    },
    /// The whole farm at a glance: nodes, inbound counters, campaigns.
    Farm,
    /// Throttled sites, farm-wide: configured and learnt rate and connections, last reply.
    Sites,
    /// Add forwarding rules or change their new address (`forward add`, `forward import`):
    /// every rule is checked and the set is applied whole or not at all.
    ForwardSet {
        /// The rules, each with the line it came from (0: the command line).
        rules: Vec<(u64, crate::ForwardRule)>,
    },
    /// Remove the rule of an old address (`forward remove`).
    ForwardRemove {
        /// The old address.
        old: String,
    },
    /// Every forwarding rule (`forward list`).
    ForwardList,
}

/// A smurf, as `farm nodes` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// Whether it is connected now (a known node that is not keeps its assignment).
    pub connected: bool,
    /// Its assigned role.
    pub role: NodeRole,
    /// Where it stands in that role.
    pub state: NodeState,
    /// Its software version.
    pub version: String,
    /// The address it serves in its role (`in`, `web`).
    pub serving: Option<String>,
    /// Why its role could not start, if it could not.
    pub problem: Option<String>,
    /// Recipients in flight on it.
    pub in_flight: u64,
    /// Its window.
    pub window: u32,
    /// Draining (no new work).
    pub draining: bool,
    /// Its last load report.
    pub load: SmurfLoad,
    /// Results received from it since it joined.
    pub results: u64,
}

/// Lifecycle state of a campaign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignState {
    /// Waiting for its scheduled start.
    Scheduled,
    /// Sending.
    #[default]
    Running,
    /// Paused by an operator.
    Paused,
    /// Cancelled by an operator.
    Cancelled,
    /// Every recipient reached a final state.
    Finished,
}

impl CampaignState {
    /// Lower-case name for display.
    pub fn as_str(&self) -> &'static str {
        match self {
            CampaignState::Scheduled => "scheduled",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Finished => "finished",
        }
    }
}

/// Counters of a campaign, as shown by `campaign status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCounters {
    /// Campaign identifier.
    pub id: String,
    /// Lifecycle state.
    pub state: CampaignState,
    /// Whether no more work will happen (finished, or cancelled with nothing in flight).
    pub finished: bool,
    /// Recipients accepted into the campaign.
    pub total: u64,
    /// Rows refused at ingest (bad address, bad encoding, duplicate).
    pub rejected_rows: u64,
    /// Not yet handed to a smurf.
    pub queued: u64,
    /// Handed to a smurf, no result yet.
    pub in_flight: u64,
    /// Accepted by the receiving server.
    pub delivered: u64,
    /// Last attempt was temporarily refused.
    pub deferred: u64,
    /// Permanently failed.
    pub failed: u64,
    /// Skipped because the address is on the suppression list.
    pub suppressed: u64,
    /// Skipped because the campaign was cancelled.
    pub skipped: u64,
    /// Delivery attempts made (first tries and retries).
    pub attempts: u64,
    /// Milliseconds since launch (until finish, once finished).
    pub elapsed_ms: u64,
    /// Bytes of recipient data and results that crossed QUIC, frames included.
    pub wire_bytes: u64,
    /// Bytes of template bundles shipped to smurfs.
    pub template_bytes: u64,
    /// How many times the template was shipped (once per smurf that served the campaign).
    pub template_shipments: u64,
    /// Total size of the messages smurfs rendered.
    pub rendered_bytes: u64,
    /// Recipients whose mail bounced for good (address suppressed), from returned mail and
    /// from permanent refusals during delivery.
    pub bounced_hard: u64,
    /// Temporary bounces (mailbox full, ...) from returned mail.
    pub bounced_soft: u64,
    /// Feedback-loop complaints (address suppressed).
    pub complaints: u64,
    /// Bounces by reason (`userunknown`, `mailboxfull`, ...).
    pub bounce_reasons: Vec<(String, u64)>,
    /// Recipients who unsubscribed (one-click or the unsubscribe page).
    pub unsubscribed: u64,
    /// Since when `wire_bytes`, `template_bytes`, `template_shipments` and `rendered_bytes`
    /// count (ms since the epoch): they are the running coordinator's traffic, not stored, so
    /// after a restart they start again from the restart (0: since the launch).
    pub traffic_since_ms: u64,
}

/// Coordinator-to-operator responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorResponse {
    /// A campaign was accepted.
    Launched {
        /// Campaign counters right after ingest.
        counters: Box<CampaignCounters>,
        /// First rejected rows with reasons (`line N: reason`), capped.
        rejects: Vec<String>,
        /// Where the coordinator wrote the full rejects report, if anywhere.
        rejects_file: Option<String>,
    },
    /// Counters of one or more campaigns.
    Status(Vec<CampaignCounters>),
    /// The request was carried out.
    Done {
        /// What was done, for the operator.
        message: String,
    },
    /// The smurfs connected now.
    Nodes(Vec<NodeInfo>),
    /// The whole farm at a glance.
    Farm(Box<FarmSnapshot>),
    /// The request failed.
    Error {
        /// What went wrong, for the operator.
        message: String,
    },
    /// Throttled sites, farm-wide (answer to [`OperatorRequest::Sites`]).
    Sites(Vec<crate::throttle::SiteView>),
    /// Every forwarding rule and the rule set's version (answer to
    /// [`OperatorRequest::ForwardList`]).
    ForwardRules {
        /// The rule set's version.
        version: u64,
        /// The rules, by old address.
        rules: Vec<crate::ForwardRule>,
    },
    /// Forwarding rules refused, one line each (`line N: reason`); nothing was applied.
    ForwardRefused {
        /// Every problem found.
        problems: Vec<String>,
    },
}
