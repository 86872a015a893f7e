//! The operator's side of the control link: what `mailfarm campaign ...` uses to talk to a
//! running coordinator, authenticated by the operator certificate.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use mailfarm_pki::wire::{write_frame, FrameReader};
use mailfarm_pki::{Identity, COORDINATOR_NAME};
use mailfarm_protocol::{
    CampaignSubmission, Hello, HelloReply, OperatorRequest, OperatorResponse, Role,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

/// Size of the CSV chunks a launch streams.
const CSV_CHUNK: usize = 256 * 1024;

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
    ) -> anyhow::Result<Self> {
        let config = mailfarm_pki::client_config(identity).context("operator TLS configuration")?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut endpoint = quinn::Endpoint::client(bind).context("opening a UDP socket")?;
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(addr, COORDINATOR_NAME)?
            .await
            .with_context(|| format!("connecting to the coordinator at {addr}"))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .context("opening the control stream")?;
        write_frame(
            &mut send,
            &Hello {
                version: PROTOCOL_VERSION,
                role: Role::Operator {
                    name: name.to_owned(),
                },
            },
        )
        .await
        .context("sending hello")?;
        let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
        match reader.next::<HelloReply>().await.context(
            "the coordinator closed the link (is this operator certificate from its farm?)",
        )? {
            Some((HelloReply::Welcome { .. }, _)) => {}
            Some((HelloReply::Refused { reason }, _)) => bail!("coordinator refused: {reason}"),
            None => bail!("the coordinator closed the control stream"),
        }
        Ok(Self {
            _endpoint: endpoint,
            connection,
            send,
            reader,
        })
    }

    /// Sends a request and waits for its response.
    pub async fn request(&mut self, request: &OperatorRequest) -> anyhow::Result<OperatorResponse> {
        write_frame(&mut self.send, request)
            .await
            .context("sending the request")?;
        match self.reader.next::<OperatorResponse>().await? {
            Some((response, _)) => Ok(response),
            None => bail!("the coordinator closed the control stream"),
        }
    }

    /// Launches a campaign, streaming its CSV from `csv` in chunks; returns the answer.
    pub async fn launch(
        &mut self,
        submission: CampaignSubmission,
        mut csv: impl tokio::io::AsyncRead + Unpin,
    ) -> anyhow::Result<OperatorResponse> {
        use tokio::io::AsyncReadExt;
        write_frame(
            &mut self.send,
            &OperatorRequest::Launch(Box::new(submission)),
        )
        .await
        .context("sending the launch")?;
        let mut chunk = vec![0u8; CSV_CHUNK];
        loop {
            let n = csv.read(&mut chunk).await.context("reading the CSV")?;
            if n == 0 {
                break;
            }
            write_frame(
                &mut self.send,
                &OperatorRequest::CsvChunk(chunk[..n].to_vec()),
            )
            .await
            .context("sending the CSV")?;
        }
        write_frame(&mut self.send, &OperatorRequest::CsvEnd)
            .await
            .context("ending the CSV")?;
        match self.reader.next::<OperatorResponse>().await? {
            Some((response, _)) => Ok(response),
            None => bail!("the coordinator closed the control stream"),
        }
    }

    /// Closes the session.
    pub async fn close(mut self) {
        let _ = self.send.finish();
        self.connection.close(0u32.into(), b"bye");
    }
}
