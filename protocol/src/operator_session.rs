//! Session state of an operator link on the coordinator, with no I/O.
//!
//! An operator link is a hello, then requests one at a time. A launch is the one request that
//! spans frames: [`OperatorRequest::Launch`], then any number of
//! [`OperatorRequest::CsvChunk`]s, then [`OperatorRequest::CsvEnd`]. [`OperatorLink`] checks
//! that order, so the coordinator's network code only carries out what it is told.

use crate::{
    CampaignSubmission, Hello, HelloReply, OperatorRequest, ProtocolError, Role, PROTOCOL_VERSION,
};

/// Where an operator link stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No hello yet.
    #[default]
    Hello,
    /// Between requests.
    Ready,
    /// A launch was announced; CSV chunks follow until the end.
    Launching,
}

/// What the coordinator must do after an operator frame.
#[derive(Debug, PartialEq, Eq)]
pub enum OperatorEvent {
    /// Start ingesting a campaign; its CSV follows.
    Launch(Box<CampaignSubmission>),
    /// Feed this piece of the CSV to the launch being ingested.
    CsvChunk(Vec<u8>),
    /// The CSV is complete: finish the launch and answer it.
    CsvEnd,
    /// Answer this request (every kind but the launch frames).
    Request(OperatorRequest),
}

/// Coordinator-side state of one operator link.
#[derive(Debug, Default)]
pub struct OperatorLink {
    phase: Phase,
    name: Option<String>,
}

impl OperatorLink {
    /// A link whose hello has not arrived yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles the operator's hello; `certified` tells whether the client certificate proves
    /// the claimed operator name. Returns the reply to send; a refusal is also an error.
    pub fn on_hello(
        &mut self,
        hello: Hello,
        certified: impl Fn(&str) -> bool,
    ) -> Result<HelloReply, (HelloReply, ProtocolError)> {
        crate::error::check_hello(self.phase != Phase::Hello, &hello)?;
        let Role::Operator { name } = hello.role else {
            return Err(crate::error::refusal(ProtocolError::Unexpected {
                message: "smurf hello",
                state: "expecting an operator",
            }));
        };
        if !certified(&name) {
            return Err(crate::error::refusal(ProtocolError::Refused(format!(
                "certificate is not the operator certificate of {name:?}"
            ))));
        }
        self.phase = Phase::Ready;
        self.name = Some(name.clone());
        Ok(HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            name,
        })
    }

    /// The operator's name, once welcomed.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Checks a request against the link's phase.
    pub fn on_request(&mut self, request: OperatorRequest) -> Result<OperatorEvent, ProtocolError> {
        match (self.phase, request) {
            (Phase::Hello, _) => Err(ProtocolError::Unexpected {
                message: "request",
                state: "awaiting hello",
            }),
            (Phase::Ready, OperatorRequest::Launch(submission)) => {
                self.phase = Phase::Launching;
                Ok(OperatorEvent::Launch(submission))
            }
            (Phase::Ready, OperatorRequest::CsvChunk(_) | OperatorRequest::CsvEnd) => {
                Err(ProtocolError::Unexpected {
                    message: "CSV data",
                    state: "no launch in progress",
                })
            }
            (Phase::Ready, other) => Ok(OperatorEvent::Request(other)),
            (Phase::Launching, OperatorRequest::CsvChunk(chunk)) => {
                Ok(OperatorEvent::CsvChunk(chunk))
            }
            (Phase::Launching, OperatorRequest::CsvEnd) => {
                self.phase = Phase::Ready;
                Ok(OperatorEvent::CsvEnd)
            }
            (Phase::Launching, _) => Err(ProtocolError::Unexpected {
                message: "a request other than CSV chunks",
                state: "launching",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeliveryTarget;

    fn hello(name: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role: Role::Operator { name: name.into() },
        }
    }

    fn submission() -> Box<CampaignSubmission> {
        Box::new(CampaignSubmission {
            id: "c".into(),
            from: "a@b.test".into(),
            reply_to: None,
            subject: "s".into(),
            list_id: "l".into(),
            bounce_domain: "b.test".into(),
            list_unsubscribe: None,
            text: "t".into(),
            html: None,
            delivery: DeliveryTarget {
                relay: None,
                connections: 1,
            },
            start_at_ms: None,
            rate_cap: None,
            unsubscribe_base_url: None,
        })
    }

    #[test]
    fn a_launch_is_chunks_then_end_and_nothing_else() {
        let mut link = OperatorLink::new();
        assert!(
            link.on_request(OperatorRequest::List).is_err(),
            "no hello yet"
        );
        link.on_hello(hello("op"), |n| n == "op").unwrap();
        assert_eq!(link.name(), Some("op"));
        assert!(link.on_request(OperatorRequest::CsvEnd).is_err());
        assert!(matches!(
            link.on_request(OperatorRequest::Launch(submission())),
            Ok(OperatorEvent::Launch(_))
        ));
        assert_eq!(
            link.on_request(OperatorRequest::CsvChunk(b"email\n".to_vec())),
            Ok(OperatorEvent::CsvChunk(b"email\n".to_vec()))
        );
        assert!(
            link.on_request(OperatorRequest::List).is_err(),
            "no other request inside a launch"
        );
        let mut link = OperatorLink::new();
        link.on_hello(hello("op"), |_| true).unwrap();
        link.on_request(OperatorRequest::Launch(submission()))
            .unwrap();
        assert_eq!(
            link.on_request(OperatorRequest::CsvEnd),
            Ok(OperatorEvent::CsvEnd)
        );
        assert_eq!(
            link.on_request(OperatorRequest::List),
            Ok(OperatorEvent::Request(OperatorRequest::List))
        );
    }

    #[test]
    fn hellos_are_checked() {
        let mut link = OperatorLink::new();
        let (reply, _) = link.on_hello(hello("op"), |n| n == "other").unwrap_err();
        assert!(matches!(reply, HelloReply::Refused { .. }));
        let mut stale = hello("op");
        stale.version = PROTOCOL_VERSION + 1;
        assert!(OperatorLink::new().on_hello(stale, |_| true).is_err());
        let mut link = OperatorLink::new();
        link.on_hello(hello("op"), |_| true).unwrap();
        assert!(
            link.on_hello(hello("op"), |_| true).is_err(),
            "second hello"
        );
    }
}
