//! The one mapping from a campaign's wire bundle ([`TemplateBundle`]) to a compiled
//! [`MessageTemplate`]: the coordinator checks a launch with it and each smurf compiles what it
//! receives with it, so both always see the same template.

use mailfarm_protocol::TemplateBundle;

use crate::{MessageSettings, MessageTemplate, TemplateError, TemplateSources, VerpSigner};

/// Compiles the templates, header settings, columns and VERP key a bundle carries.
pub fn compile_bundle(bundle: &TemplateBundle) -> Result<MessageTemplate, TemplateError> {
    MessageTemplate::compile(
        &TemplateSources {
            subject: bundle.subject.clone(),
            text: bundle.text.clone(),
            html: bundle.html.clone(),
        },
        MessageSettings {
            campaign_id: bundle.campaign_id.clone(),
            from: bundle.from.clone(),
            reply_to: bundle.reply_to.clone(),
            list_id: bundle.list_id.clone(),
            bounce_domain: bundle.bounce_domain.clone(),
            list_unsubscribe: bundle.list_unsubscribe.clone(),
            unsubscribe_base_url: bundle.unsubscribe_base_url.clone(),
        },
        bundle.field_names.clone(),
        VerpSigner::new(&bundle.verp_key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(subject: &str) -> TemplateBundle {
        TemplateBundle {
            campaign_id: "spring".into(),
            subject: subject.into(),
            from: "News <news@acme.example>".into(),
            list_id: "news.acme.example".into(),
            bounce_domain: "bounces.acme.example".into(),
            verp_key: vec![7; 32],
            ..mailfarm_protocol::fixtures::bundle()
        }
    }

    #[test]
    fn a_bundle_compiles_with_its_own_columns_and_settings() {
        let template = compile_bundle(&bundle("Hi {{first_name}}")).unwrap();
        let message = template
            .render(
                1,
                "ann@example.test",
                &["ann@example.test".into(), "Ann".into()],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&message.data);
        assert!(text.contains("Subject: Hi Ann"), "{text}");
        assert!(message.return_path.ends_with("@bounces.acme.example"));
        assert!(matches!(
            compile_bundle(&bundle("Hi {{city}}")),
            Err(TemplateError::UnknownField { .. })
        ));
    }
}
