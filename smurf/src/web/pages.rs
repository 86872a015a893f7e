//! The public pages of the unsubscribe flow, rendered on the server as small self-contained
//! HTML (no script, no external resources): what a recipient sees after clicking the link in a
//! message. They never show the address (the node does not know it) and never set cookies.

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f1ec;color:#222;\
margin:0;padding:3em 1em}main{max-width:32em;margin:auto;background:#fff;padding:2em;\
border-radius:8px;box-shadow:0 1px 4px #0002}h1{font-size:1.4em;margin-top:0}\
button{font-size:1.05em;padding:.6em 1.4em;border:0;border-radius:6px;background:#b5442a;\
color:#fff;cursor:pointer}button.secondary{background:#555}p.small{color:#666;font-size:.9em}";

/// A whole page around `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 800);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style>\
         </head><body><main>{body}</main></body></html>",
        escape(title)
    );
    out
}

/// The GET page: says what will happen, one button that POSTs; changes nothing itself.
pub fn confirm_page(token: &str, list: &str) -> String {
    page(
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe from {list}?</h1>\
             <p>You will get no more messages from the list <strong>{list}</strong>.</p>\
             <form method=\"post\" action=\"/u/{token}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button id=\"unsubscribe\" type=\"submit\">Unsubscribe</button></form>\
             <p class=\"small\">Nothing changes until you press the button.</p>",
            list = escape(list),
            token = escape(token)
        ),
    )
}

/// After the unsubscribe: confirms, and offers the undo while the window lasts.
pub fn done_page(token: &str, list: &str, undo_hours: u64) -> String {
    page(
        "Unsubscribed",
        &format!(
            "<h1 id=\"done\">You are unsubscribed</h1>\
             <p>You will get no more messages from <strong>{list}</strong>.</p>\
             <form method=\"post\" action=\"/u/{token}/undo\">\
             <button class=\"secondary\" id=\"undo\" type=\"submit\">Undo: subscribe me again\
             </button></form><p class=\"small\">You can undo this for {undo_hours} hours.</p>",
            list = escape(list),
            token = escape(token)
        ),
    )
}

/// After an undo.
pub fn resubscribed_page(list: &str) -> String {
    page(
        "Subscribed again",
        &format!(
            "<h1 id=\"resubscribed\">You are subscribed again</h1>\
             <p>You will keep getting <strong>{}</strong>.</p>",
            escape(list)
        ),
    )
}

/// A plain refusal page (bad token, expired undo, server trouble).
pub fn error_page(title: &str, message: &str) -> String {
    page(
        title,
        &format!(
            "<h1 id=\"error\">{}</h1><p>{}</p>",
            escape(title),
            escape(message)
        ),
    )
}
