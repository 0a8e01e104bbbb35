//! The k3s API client: reqwest on rustls (ring), trusting only k3s's own
//! server CA and authenticating with `client-admin.crt`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;

use super::version::K3sVersion;
use crate::config::Config;
use crate::error_text::{chain as error_chain, one_line};
use crate::sysroot::Sysroot;

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered (k3s stopped or still starting).
    #[error("the k3s API at {url} does not answer: {detail}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// It answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// Where.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response body (shortened).
        body: String,
    },
    /// The body was not what was expected.
    #[error("{url}: unexpected response: {detail}")]
    Decode {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
}

impl ApiError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 409: someone else wrote the object first (a stale `resourceVersion`
    /// on update, `AlreadyExists` on create). The apiserver's optimistic
    /// concurrency: k8s.io/apiserver `pkg/registry/generic/registry/store.go`.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// A client for one k3s API server.
#[derive(Debug, Clone)]
pub struct K3sApi {
    client: reqwest::Client,
    base: String,
}

impl K3sApi {
    /// Builds a client from the TLS material under `[k3s] tls_dir`.
    pub fn from_config(root: &Sysroot, cfg: &Config) -> Result<K3sApi> {
        let dir = &cfg.k3s.tls_dir;
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = format!("{dir}/{name}");
            root.read(&p)
                .with_context(|| format!("reading {p}"))?
                .with_context(|| {
                    format!("{p} does not exist: is this a k3s server, and has k3s started once?")
                })
        };
        Self::new(
            &cfg.k3s.api_url,
            &read("server-ca.crt")?,
            &read("client-admin.crt")?,
            &read("client-admin.key")?,
        )
    }

    /// Builds a client from PEM material.
    pub fn new(base: &str, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<K3sApi> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("parsing the server CA")?)
                .context("adding the server CA")?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .context("parsing the client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).context("parsing the client key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("client certificate and key do not match")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(K3sApi {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// GET a path and return the body text.
    pub async fn get_text(&self, path: &str) -> Result<String, ApiError> {
        let url = format!("{}{path}", self.base);
        self.exchange(self.client.get(&url), url).await
    }

    /// Sends a request; the body text of a success, or why not.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        url: String,
    ) -> Result<String, ApiError> {
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            url: url.clone(),
            detail: error_chain(&e),
        })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| ApiError::Decode {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(ApiError::Status {
                url,
                status: status.as_u16(),
                body: one_line(&body, 400),
            });
        }
        Ok(body)
    }

    /// GET a path and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let text = self.get_text(path).await?;
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            url: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }

    /// Sends `body` as JSON with `method` (POST, PUT, PATCH) and decodes
    /// the answer. A 409 (a stale `resourceVersion`, or `AlreadyExists` on
    /// create) comes back as [`ApiError::Status`]; see [`ApiError::is_conflict`].
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let content_type = if method == reqwest::Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let req = self
            .client
            .request(method, &url)
            .header("Content-Type", content_type)
            .body(body.to_string());
        let text = self.exchange(req, url.clone()).await?;
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// GET a path and decode JSON; `None` on 404.
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ApiError> {
        match self.get_json(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The running version, from `GET /version` (the apiserver's
    /// `version.Info`; k3s reports e.g. `gitVersion: v1.30.4+k3s1`).
    pub async fn version(&self) -> Result<K3sVersion, ApiError> {
        #[derive(serde::Deserialize)]
        struct Info {
            #[serde(rename = "gitVersion")]
            git_version: String,
        }
        let info: Info = self.get_json("/version").await?;
        K3sVersion::parse(&info.git_version).ok_or_else(|| ApiError::Decode {
            url: format!("{}/version", self.base),
            detail: format!(
                "gitVersion {:?} is not of the form v1.MINOR.PATCH+k3sN",
                info.git_version
            ),
        })
    }

    /// One /readyz probe: Ok when the apiserver answers 200 "ok".
    pub async fn readyz(&self) -> Result<(), String> {
        match self.get_text("/readyz").await {
            Ok(body) if body.trim() == "ok" => Ok(()),
            Ok(body) => Err(format!("/readyz answered {:?}", body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }
}
