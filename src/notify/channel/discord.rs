//! A Discord webhook: `POST` of `{"content": ...}` JSON. Discord refuses
//! content over 2000 characters (discord/discord-api-docs,
//! docs/resources/Webhook.md, "Execute Webhook": content "up to 2000
//! characters"), so the text is cut to fit; mentions are disabled so a node
//! name can never ping a whole server.

use serde_json::json;

use super::{SendError, check, http_client, transport};
use crate::notify::message::Message;
use crate::notify::secrets::Secret;

/// Discord's limit on `content`, in characters.
pub const CONTENT_LIMIT: usize = 2000;

/// A Discord webhook.
#[derive(Debug, Clone)]
pub struct Discord {
    url: Secret,
}

impl Discord {
    /// A webhook URL (it carries the token).
    pub fn new(url: Secret) -> Discord {
        Discord { url }
    }

    /// The JSON payload for a message.
    pub fn payload(m: &Message) -> serde_json::Value {
        let text = format!("**{}**\n{}", m.title, m.body);
        json!({
            "username": "sightline",
            "content": cut(&text, CONTENT_LIMIT),
            "allowed_mentions": { "parse": [] }
        })
    }

    /// One attempt.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let resp = http_client()?
            .post(self.url.expose())
            .json(&Self::payload(m))
            .send()
            .await
            .map_err(transport)?;
        check(resp).await
    }
}

/// At most `limit` characters, ending in `…` when cut.
pub fn cut(s: &str, limit: usize) -> String {
    if s.chars().count() <= limit {
        return s.to_string();
    }
    let mut out: String = s.chars().take(limit - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_to_the_limit_in_characters() {
        let long = "é".repeat(2500);
        let c = cut(&long, CONTENT_LIMIT);
        assert_eq!(c.chars().count(), CONTENT_LIMIT);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short", CONTENT_LIMIT), "short");
    }
}
