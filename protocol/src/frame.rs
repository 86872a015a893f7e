//! Length-prefixed framing of postcard-encoded messages.
//!
//! Each frame is a 4-byte big-endian body length followed by the postcard body. The receiver
//! sets the largest body it accepts, so garbage or a hostile peer cannot make it allocate more.

use serde::{de::DeserializeOwned, Serialize};

use crate::FrameError;

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default largest frame body: 64 MiB, enough for a campaign submission with its templates.
/// Smurf links use far smaller frames; their batches are bounded by the window.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let body = postcard::to_allocvec(message).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes one frame body (without its header) into a message.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Reassembles frames from bytes as they arrive, in any chunking.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frame bodies longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_frame,
        }
    }

    /// Changes the largest accepted frame body, e.g. once a link's role is known.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Takes the next complete frame body, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buffer.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; FRAME_HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if self.buffer.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buffer[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buffer.drain(..FRAME_HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Takes and decodes the next complete message, if one has fully arrived.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_frame()? {
            Some(body) => decode_message(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Call when the stream ended: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CoordinatorMessage, OperatorRequest, SmurfMessage};

    #[test]
    fn frames_survive_any_chunking() {
        let messages = vec![
            CoordinatorMessage::Forget(crate::ContentHash([7; 32])),
            CoordinatorMessage::Batch(crate::RecipientBatch {
                template: crate::ContentHash([1; 32]),
                recipients: vec![crate::RecipientData {
                    id: 42,
                    values: vec!["a@b.example".into(), "Zoë".into()],
                }],
            }),
        ];
        let mut wire = Vec::new();
        for m in &messages {
            encode_frame(m, &mut wire).unwrap();
        }
        for chunk in [1, 2, 3, 7, wire.len()] {
            let mut decoder = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                while let Some(m) = decoder.next_message::<CoordinatorMessage>().unwrap() {
                    got.push(m);
                }
            }
            decoder.finish().unwrap();
            assert_eq!(got, messages, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&1000u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 1000, max: 16 })
        );
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 6 }));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut wire = Vec::new();
        encode_frame(&SmurfMessage::Goodbye, &mut wire).unwrap();
        let mut body = wire[FRAME_HEADER_LEN..].to_vec();
        body.push(0);
        assert!(decode_message::<SmurfMessage>(&body).is_err());
    }

    /// Garbage never panics any decoder that reads from the network; it yields errors or, by
    /// chance, a valid message.
    #[test]
    fn random_garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 96) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_message::<SmurfMessage>(&bytes);
            let _ = decode_message::<CoordinatorMessage>(&bytes);
            let _ = decode_message::<OperatorRequest>(&bytes);
            let _ = decode_message::<crate::Hello>(&bytes);
            let _ = decode_message::<crate::HelloReply>(&bytes);
            let _ = decode_message::<crate::OperatorResponse>(&bytes);
            let mut decoder = FrameDecoder::new(64);
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_message::<CoordinatorMessage>() {}
        }
    }
}
