//! [`TlsConfig`]: the `tls` block of a connector, and loading its files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::connector::key;
use crate::error::{Cause, ConfigErrors, Error, Origin, Result};
use crate::status::Kind;

/// TLS settings of a connector (the `tls` block).
///
/// ```yaml
/// tls:
///   enabled: true
///   ca_file: /etc/ssl/redis-ca.pem      # CA that signed the server's certificate
///   cert_file: /etc/ssl/client.pem      # client certificate, for mutual TLS
///   key_file: /etc/ssl/client-key.pem   # its key (never printed)
///   insecure_skip_verify: false         # Redis only: accept any server certificate
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Connect over TLS. A `rediss://` or `https://` address turns it on too.
    pub enabled: bool,
    /// Client certificate (PEM), for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), for mutual TLS; needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) that signed the server's certificate. Without it, the
    /// system's trust store is used.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate, with no check of its signer or name. Only for tests
    /// against self-signed servers. Redis only: etcd's client cannot skip verification, so
    /// an etcd connector refuses it (give `ca_file` instead).
    pub insecure_skip_verify: bool,
}

/// The contents of a connector's TLS files. Holds a private key, so it has no `Debug`.
pub(crate) struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    pub(crate) fn validate(&self, prefix: &str, errors: &mut ConfigErrors) {
        let prefix = key(prefix, "tls");
        for (name, file) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("ca_file", &self.ca_file),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                errors.push(
                    key(&prefix, name),
                    format!("file {} does not exist", path.display()),
                );
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            errors.push(
                key(
                    &prefix,
                    if self.cert_file.is_some() {
                        "key_file"
                    } else {
                        "cert_file"
                    },
                ),
                "cert_file and key_file go together (mutual TLS needs both)",
            );
        }
    }

    /// Reads and checks the files. Each problem is an [`Error::Tls`] naming the file.
    pub(crate) fn load(&self, connector: &str, kind: &Kind) -> Result<TlsFiles> {
        let read = |what: &str, path: &Path, marker: &str| -> Result<Vec<u8>> {
            let tls = |message: String, source: Option<Cause>| Error::Tls {
                origin: Origin::new(connector.to_owned(), kind.clone()),
                message,
                source,
            };
            let bytes = std::fs::read(path).map_err(|e| {
                let message = format!("cannot read {what} {}: {e}", path.display());
                tls(message, Some(Arc::new(e)))
            })?;
            let text = String::from_utf8_lossy(&bytes);
            if !text.contains("-----BEGIN") || !text.contains(marker) {
                return Err(tls(
                    format!(
                        "{what} {} is not PEM (expected a \"-----BEGIN ...{marker}\" block)",
                        path.display()
                    ),
                    None,
                ));
            }
            Ok(bytes)
        };
        let ca = match &self.ca_file {
            Some(p) => Some(read("ca_file", p, "CERTIFICATE-----")?),
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((
                read("cert_file", c, "CERTIFICATE-----")?,
                read("key_file", k, "PRIVATE KEY-----")?,
            )),
            _ => None,
        };
        Ok(TlsFiles { ca, identity })
    }
}

/// The words a TLS failure leaves in an error's text, from rustls and the servers' alerts.
const TLS_MARKERS: &[&str] = &[
    // Specific reasons first; the first marker found names the reason.
    "UnknownIssuer",
    "UnknownCA",
    "NotValidForName",
    "not valid for name",
    "CertificateRequired",
    "BadCertificate",
    "Expired",
    "CorruptMessage",
    "InvalidContentType",
    "InappropriateMessage",
    "BadSignature",
    "InvalidCertificate",
    "invalid peer certificate",
    "AlertReceived",
    "received fatal alert",
    "HandshakeFailure",
    "tls handshake",
    "TLS handshake",
];

/// If `text` (an error with its causes) shows a TLS failure, a short reason for it.
pub(crate) fn tls_failure(text: &str) -> Option<String> {
    let hit = TLS_MARKERS.iter().find(|m| text.contains(*m))?;
    let reason = match *hit {
        "UnknownIssuer" | "UnknownCA" => "the server's certificate is not signed by a trusted CA",
        "NotValidForName" | "not valid for name" => {
            "the server's certificate is not valid for this host name"
        }
        "CertificateRequired" | "BadCertificate" => {
            "the server rejected the client certificate (or requires one)"
        }
        "Expired" => "a certificate has expired",
        "CorruptMessage" | "InvalidContentType" | "InappropriateMessage" => {
            "the server did not speak TLS"
        }
        _ => "the TLS handshake failed",
    };
    Some(format!("{reason}: {text}"))
}
