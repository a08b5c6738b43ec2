//! [`TlsConfig`]: the `tls` block of a connector.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::connector::key;
use crate::error::ConfigErrors;

/// TLS settings of a connector (the `tls` block).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Connect over TLS.
    pub enabled: bool,
    /// Client certificate (PEM), for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), for mutual TLS; needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests against self-signed servers.
    pub insecure_skip_verify: bool,
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
        if self.enabled {
            errors.push(
                key(&prefix, "enabled"),
                "TLS connections are not supported by this version of connhub",
            );
        }
    }
}
