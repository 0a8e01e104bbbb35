//! The channels sightline sends through: the `[alerting]` receivers, used
//! directly from the host.

pub mod discord;
pub mod email;
pub mod ntfy;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use crate::error_text::{chain as error_chain, one_line};

use super::message::Message;
use super::secrets::{Secret, SecretError, check_inline, read_file};
use crate::config::LoadedConfig;
use crate::sysroot::Sysroot;

/// Which channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// ntfy's publish API.
    Ntfy,
    /// A Discord webhook.
    Discord,
    /// Email over SMTP.
    Email,
}

impl ChannelKind {
    /// `ntfy`, `discord`, `email` (also the metric label).
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Discord => "discord",
            ChannelKind::Email => "email",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SendError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {body}")]
    Http {
        /// Status code.
        status: u16,
        /// Body (shortened).
        body: String,
    },
    /// The SMTP server refused.
    #[error("SMTP {detail}")]
    Smtp {
        /// Its answer.
        detail: String,
    },
    /// Nothing answered, or the connection broke.
    #[error("{detail}")]
    Transport {
        /// Why.
        detail: String,
    },
}

/// The request timeout of every channel: a hung server must not hold a
/// delivery worker for long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// One configured channel.
#[derive(Debug, Clone)]
pub enum Channel {
    /// ntfy.
    Ntfy(ntfy::Ntfy),
    /// Discord.
    Discord(discord::Discord),
    /// Email.
    Email(email::Email),
}

impl Channel {
    /// Which.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Channel::Ntfy(_) => ChannelKind::Ntfy,
            Channel::Discord(_) => ChannelKind::Discord,
            Channel::Email(_) => ChannelKind::Email,
        }
    }

    /// One delivery attempt.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        match self {
            Channel::Ntfy(c) => c.send(m).await,
            Channel::Discord(c) => c.send(m).await,
            Channel::Email(c) => c.send(m).await,
        }
    }
}

/// Builds every configured channel, reading their secrets. A channel whose
/// secret cannot be used is an error naming the file and the fix.
pub fn from_config(root: &Sysroot, cfg: &LoadedConfig) -> Result<Vec<Channel>, SecretError> {
    check_inline(root, cfg)?;
    let a = &cfg.config.alerting;
    let mut out = Vec::new();
    let secret = |key: &str, file: &Option<String>| -> Result<Option<Secret>, SecretError> {
        file.as_deref().map(|f| read_file(root, key, f)).transpose()
    };
    if let Some(url) = &a.ntfy_url {
        let token = secret("alerting.ntfy_token_file", &a.ntfy_token_file)?;
        out.push(Channel::Ntfy(ntfy::Ntfy::new(Secret::new(url), token)));
    }
    let discord = match (&a.discord_webhook_url, &a.discord_webhook_url_file) {
        (Some(u), _) => Some(Secret::new(u)),
        (None, f) => secret("alerting.discord_webhook_url_file", f)?,
    };
    if let Some(url) = discord {
        out.push(Channel::Discord(discord::Discord::new(url)));
    }
    if let (Some(to), Some(host), Some(from)) = (&a.email_to, &a.smtp_smarthost, &a.smtp_from) {
        let password = secret(
            "alerting.smtp_auth_password_file",
            &a.smtp_auth_password_file,
        )?;
        out.push(Channel::Email(email::Email {
            to: to.clone(),
            from: from.clone(),
            smarthost: host.clone(),
            username: a.smtp_auth_username.clone(),
            password,
            require_tls: a.smtp_require_tls,
        }));
    }
    Ok(out)
}

/// The HTTP client for the webhook channels: rustls with the ring provider
/// and the system's roots (rustls-platform-verifier, as reqwest chooses).
/// A machine without a CA bundle (the platform verifier then refuses to
/// build) still gets a client: plain http works, and https fails per
/// request with a certificate error that names the problem.
pub(crate) fn http_client() -> Result<reqwest::Client, SendError> {
    // reqwest is built without a default provider; install ring once per
    // process (a second install fails harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(SEND_TIMEOUT)
    };
    builder().build().or_else(|e| {
        tracing::warn!(error = %error_chain(&e), "no system CA roots; https channels will fail");
        builder()
            .tls_certs_only(Vec::new())
            .build()
            .map_err(|e| SendError::Transport {
                detail: format!("building the HTTP client: {}", error_chain(&e)),
            })
    })
}

/// Maps a reqwest error without its URL (which may carry a token).
pub(crate) fn transport(e: reqwest::Error) -> SendError {
    SendError::Transport {
        detail: error_chain(&e.without_url()),
    }
}

/// Turns a response into Ok or an HTTP error with a short body.
pub(crate) async fn check(resp: reqwest::Response) -> Result<(), SendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(SendError::Http {
        status: status.as_u16(),
        body: one_line(&body, 200),
    })
}
