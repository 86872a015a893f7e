//! Test fixtures the crates' tests share (feature `fixtures`, and this crate's own tests): one
//! valid bundle that each test varies with struct-update syntax, instead of a copy of the
//! whole field list in every test module.

use crate::{ContentHash, DeliveryTarget, TemplateBundle};

/// A bundle that compiles: columns `email` and `first_name`, acme.example names, VERP key of
/// ones, no relay (MX delivery), one connection.
pub fn bundle() -> TemplateBundle {
    TemplateBundle {
        hash: ContentHash([0; 32]),
        campaign_id: "c1".into(),
        subject: "Hi {{first_name}}".into(),
        text: "Hello {{first_name}}".into(),
        html: None,
        from: "news@acme.example".into(),
        reply_to: None,
        list_id: "l.acme.example".into(),
        bounce_domain: "b.acme.example".into(),
        list_unsubscribe: None,
        field_names: vec!["email".into(), "first_name".into()],
        email_field: 0,
        verp_key: vec![1; 32],
        delivery: DeliveryTarget {
            relay: None,
            connections: 1,
        },
        unsubscribe_base_url: None,
    }
}
