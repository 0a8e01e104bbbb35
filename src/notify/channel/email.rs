//! Email over SMTP with lettre. TLS follows Alertmanager's rules
//! (prometheus/alertmanager notify/email/email.go): port 465 speaks TLS
//! from the first byte; otherwise, with `smtp_require_tls` (default true),
//! the relay must offer STARTTLS or nothing is sent; without it, the mail
//! goes in plain text.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{SEND_TIMEOUT, SendError};
use crate::notify::message::Message;
use crate::notify::secrets::Secret;

/// An email receiver.
#[derive(Debug, Clone)]
pub struct Email {
    /// Recipient.
    pub to: String,
    /// Sender.
    pub from: String,
    /// `host:port`.
    pub smarthost: String,
    /// SMTP user.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<Secret>,
    /// Require STARTTLS.
    pub require_tls: bool,
}

impl Email {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| SendError::Transport {
                detail: format!("smtp_smarthost {:?} is not host:port", self.smarthost),
            })?;
        let params = || {
            TlsParameters::new(host.to_string()).map_err(|e| SendError::Transport {
                detail: format!("TLS setup for {host}: {e}"),
            })
        };
        let tls = if port == 465 {
            Tls::Wrapper(params()?)
        } else if self.require_tls {
            Tls::Required(params()?)
        } else {
            Tls::None
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
        }
        Ok(b.build())
    }

    /// One attempt.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| SendError::Transport {
            detail: format!("{what}: {e}"),
        };
        let mail = lettre::Message::builder()
            .from(self.from.parse().map_err(|e| bad("smtp_from", &e))?)
            .to(self.to.parse().map_err(|e| bad("email_to", &e))?)
            .subject(m.title.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.clone())
            .map_err(|e| bad("building the mail", &e))?;
        match self.transport()?.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_some() => Err(SendError::Smtp {
                detail: e.to_string(),
            }),
            Err(e) => Err(SendError::Transport {
                detail: super::error_chain(&e),
            }),
        }
    }
}
