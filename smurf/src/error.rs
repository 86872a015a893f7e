//! Typed errors of the smurf's entry points: what went wrong, and whether it is worth retrying.

use mailfarm_pki::wire::WireError;
use mailfarm_protocol::ProtocolError;

/// Why a smurf could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SmurfError {
    /// The node's certificates do not make a TLS configuration.
    #[error("building the smurf's TLS configuration: {0}")]
    Tls(String),
    /// No UDP socket for QUIC.
    #[error("opening a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The template cache folder cannot be used.
    #[error("opening the template cache: {0}")]
    TemplateCache(#[source] std::io::Error),
}

/// Why one link to the coordinator ended; the smurf reconnects after any of them.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The coordinator could not be reached (temporary: it may be restarting).
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The coordinator address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The QUIC connection failed after it was made.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The coordinator refused this smurf (its certificate or name): retrying will not help
    /// until the farm's configuration changes.
    #[error("the coordinator refused this smurf: {0}")]
    Refused(String),
    /// The coordinator dropped the link during the hello, which is how a refused client
    /// certificate shows under TLS 1.3.
    #[error("coordinator dropped the link during the hello (certificate refused?): {0}")]
    DroppedAtHello(String),
    /// The coordinator closed the stream before answering the hello.
    #[error("coordinator closed the stream before answering the hello")]
    ClosedAtHello,
    /// A frame could not be read or written.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The coordinator broke a protocol rule.
    #[error("protocol: {0}")]
    Protocol(ProtocolError),
    /// A local task failed.
    #[error("{0}")]
    Task(String),
}

impl From<ProtocolError> for LinkError {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::Refused(reason) => LinkError::Refused(reason),
            other => LinkError::Protocol(other),
        }
    }
}

impl LinkError {
    /// Whether the coordinator refused this node (logged differently: a config problem).
    pub fn is_refusal(&self) -> bool {
        matches!(self, LinkError::Refused(_) | LinkError::DroppedAtHello(_))
    }
}
