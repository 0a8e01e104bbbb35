//! ntfy's own publish API: `POST <topic URL>` with the message as a
//! plain-text body and the `Title`, `Priority` and `Tags` headers
//! (https://docs.ntfy.sh/publish/; server side: binwiederhier/ntfy
//! server/server.go, `parsePublishParams`). An access token goes into
//! `Authorization: Bearer`.

use super::{SendError, check, http_client, transport};
use crate::notify::event::Severity;
use crate::notify::message::Message;
use crate::notify::secrets::Secret;

/// An ntfy topic.
#[derive(Debug, Clone)]
pub struct Ntfy {
    url: Secret,
    token: Option<Secret>,
}

impl Ntfy {
    /// A topic URL and an optional token.
    pub fn new(url: Secret, token: Option<Secret>) -> Ntfy {
        Ntfy { url, token }
    }

    /// ntfy's priority names (1 min … 5 max/urgent).
    pub fn priority(m: &Message) -> &'static str {
        match (m.resolved, m.severity) {
            (true, _) | (_, Severity::Info) => "default",
            (_, Severity::Critical) => "urgent",
            (_, Severity::Warning) => "high",
        }
    }

    /// Tags: ntfy shows known emoji short codes as emoji.
    pub fn tags(m: &Message) -> &'static str {
        match (m.resolved, m.severity) {
            (true, _) => "white_check_mark,sightline",
            (_, Severity::Critical) => "rotating_light,sightline",
            (_, Severity::Warning) => "warning,sightline",
            (_, Severity::Info) => "information_source,sightline",
        }
    }

    /// One attempt.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let mut req = http_client()?
            .post(self.url.expose())
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Title", m.title.as_str())
            .header("Priority", Self::priority(m))
            .header("Tags", Self::tags(m))
            .body(m.body.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        check(req.send().await.map_err(transport)?).await
    }
}
