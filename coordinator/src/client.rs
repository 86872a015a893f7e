//! The operator's side of the control link: what `mailfarm campaign ...` uses to talk to a
//! running coordinator, authenticated by the operator certificate.

use std::net::SocketAddr;

use mailfarm_pki::wire::{write_frame, FrameReader, WireError};
use mailfarm_pki::{Identity, COORDINATOR_NAME};
use mailfarm_protocol::{
    CampaignSubmission, Hello, HelloReply, OperatorRequest, OperatorResponse, Role,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

/// Size of the CSV chunks a launch streams.
const CSV_CHUNK: usize = 256 * 1024;

/// Why an operator request could not be made. Every variant but `Refused` may be temporary
/// (the coordinator restarting); `Refused` needs another certificate or farm folder.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The operator certificate does not make a TLS configuration.
    #[error("operator TLS configuration: {0}")]
    Tls(String),
    /// No UDP socket for QUIC.
    #[error("opening a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The coordinator could not be reached.
    #[error("connecting to the coordinator at {addr}: {reason}")]
    Connect {
        /// The coordinator address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The coordinator refused this operator.
    #[error("coordinator refused: {0}")]
    Refused(String),
    /// The coordinator dropped the link at the hello: how a certificate from another farm
    /// shows under TLS 1.3.
    #[error("the coordinator closed the link (is this operator certificate from its farm?): {0}")]
    DroppedAtHello(String),
    /// The coordinator closed the control stream.
    #[error("the coordinator closed the control stream")]
    Closed,
    /// A frame could not be read or written.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The CSV could not be read.
    #[error("reading the CSV: {0}")]
    Csv(#[source] std::io::Error),
}

/// A connected operator session.
pub struct OperatorClient {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    reader: FrameReader,
}

impl OperatorClient {
    /// Connects to the coordinator at `addr` as operator `name`.
    pub async fn connect(
        addr: SocketAddr,
        identity: &Identity,
        name: &str,
    ) -> Result<Self, ClientError> {
        let config =
            mailfarm_pki::client_config(identity).map_err(|e| ClientError::Tls(e.to_string()))?;
        let bind = if addr.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(config);
        let connect = |reason: String| ClientError::Connect { addr, reason };
        let connection = endpoint
            .connect(addr, COORDINATOR_NAME)
            .map_err(|e| connect(e.to_string()))?
            .await
            .map_err(|e| connect(e.to_string()))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect(e.to_string()))?;
        write_frame(
            &mut send,
            &Hello {
                version: PROTOCOL_VERSION,
                role: Role::Operator {
                    name: name.to_owned(),
                },
            },
        )
        .await?;
        let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
        match reader.next::<HelloReply>().await {
            Ok(Some((HelloReply::Welcome { .. }, _))) => {}
            Ok(Some((HelloReply::Refused { reason }, _))) => {
                return Err(ClientError::Refused(reason))
            }
            Ok(None) => return Err(ClientError::Closed),
            Err(WireError::Read(e)) => return Err(ClientError::DroppedAtHello(e.to_string())),
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            _endpoint: endpoint,
            connection,
            send,
            reader,
        })
    }

    /// Sends a request and waits for its response.
    pub async fn request(
        &mut self,
        request: &OperatorRequest,
    ) -> Result<OperatorResponse, ClientError> {
        write_frame(&mut self.send, request).await?;
        self.response().await
    }

    async fn response(&mut self) -> Result<OperatorResponse, ClientError> {
        match self.reader.next::<OperatorResponse>().await? {
            Some((response, _)) => Ok(response),
            None => Err(ClientError::Closed),
        }
    }

    /// Launches a campaign, streaming its CSV from `csv` in chunks; returns the answer.
    pub async fn launch(
        &mut self,
        submission: CampaignSubmission,
        mut csv: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<OperatorResponse, ClientError> {
        use tokio::io::AsyncReadExt;
        write_frame(
            &mut self.send,
            &OperatorRequest::Launch(Box::new(submission)),
        )
        .await?;
        let mut chunk = vec![0u8; CSV_CHUNK];
        loop {
            let n = csv.read(&mut chunk).await.map_err(ClientError::Csv)?;
            if n == 0 {
                break;
            }
            write_frame(
                &mut self.send,
                &OperatorRequest::CsvChunk(chunk[..n].to_vec()),
            )
            .await?;
        }
        write_frame(&mut self.send, &OperatorRequest::CsvEnd).await?;
        self.response().await
    }

    /// Closes the session.
    pub async fn close(mut self) {
        let _ = self.send.finish();
        self.connection.close(0u32.into(), b"bye");
    }
}
