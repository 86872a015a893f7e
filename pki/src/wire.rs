//! Protocol frames over QUIC streams: the thin async shell around the sans-IO codec.

use mailfarm_protocol::{encode_frame, FrameDecoder, FrameError};
use serde::{de::DeserializeOwned, Serialize};

/// Errors reading or writing frames on a QUIC stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or the connection was lost.
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed or the connection was lost.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads whole messages from a QUIC receive stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    bytes_read: u64,
}

impl FrameReader {
    /// Wraps `recv`, refusing frames larger than `max_frame`.
    pub fn new(recv: quinn::RecvStream, max_frame: usize) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; 64 * 1024],
            bytes_read: 0,
        }
    }

    /// The next message and the size of its frame, or `None` when the peer finished the stream
    /// cleanly between frames.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<(T, u64)>, WireError> {
        loop {
            if let Some(body) = self.decoder.next_frame()? {
                let size = (body.len() + mailfarm_protocol::FRAME_HEADER_LEN) as u64;
                return Ok(Some((mailfarm_protocol::decode_message(&body)?, size)));
            }
            match self.recv.read(&mut self.buf).await? {
                Some(n) => {
                    self.bytes_read += n as u64;
                    self.decoder.push(&self.buf[..n]);
                }
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Changes the largest accepted frame, e.g. once the link's role is known.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.decoder.set_max_frame(max_frame);
    }

    /// Bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

/// Encodes `message` as one frame, writes it, and returns the frame size.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<u64, WireError> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(buf.len() as u64)
}
