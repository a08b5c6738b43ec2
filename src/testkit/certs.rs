//! Certificates made at test time: a CA, a server certificate for `127.0.0.1` and
//! `localhost`, a client certificate for mutual TLS, and deliberately wrong ones.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tempfile::TempDir;

/// PEM files for TLS tests, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("certificate generation failed: {e}"))
}

fn write(dir: &Path, name: &str, pem: &str) -> io::Result<()> {
    std::fs::write(dir.join(name), pem)
}

fn ca(name: &str) -> io::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(other)?).map_err(other)
}

fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> io::Result<()> {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(other)?;
    params.distinguished_name.push(DnType::CommonName, stem);
    let key = KeyPair::generate().map_err(other)?;
    let cert = params.signed_by(&key, issuer).map_err(other)?;
    write(dir, &format!("{stem}.pem"), &cert.pem())?;
    write(dir, &format!("{stem}-key.pem"), &key.serialize_pem())
}

impl TestCerts {
    /// Generates every file.
    pub fn generate() -> io::Result<TestCerts> {
        let dir = tempfile::Builder::new()
            .prefix("connhub-certs-")
            .tempdir()?;
        let p = dir.path();
        let trusted = ca("connhub test CA")?;
        write(p, "ca.pem", &trusted.pem())?;
        leaf(p, "server", &["127.0.0.1", "localhost"], &trusted)?;
        leaf(p, "client", &["connhub-client"], &trusted)?;
        leaf(p, "wrong-host", &["elsewhere.invalid"], &trusted)?;
        let other_ca = ca("some other CA")?;
        write(p, "other-ca.pem", &other_ca.pem())?;
        leaf(p, "other-client", &["connhub-client"], &other_ca)?;
        std::fs::write(p.join("not-pem.pem"), "this is not a certificate\n")?;
        Ok(TestCerts { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Another CA, which signed nothing the servers trust.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// Server certificate for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    /// Its key.
    pub fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }

    /// A server certificate, from the right CA, for another host name.
    pub fn wrong_host_cert(&self) -> PathBuf {
        self.path("wrong-host.pem")
    }

    /// Its key.
    pub fn wrong_host_key(&self) -> PathBuf {
        self.path("wrong-host-key.pem")
    }

    /// Client certificate for mutual TLS.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// Its key.
    pub fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// A client certificate signed by the other CA, which servers reject.
    pub fn other_client_cert(&self) -> PathBuf {
        self.path("other-client.pem")
    }

    /// Its key.
    pub fn other_client_key(&self) -> PathBuf {
        self.path("other-client-key.pem")
    }

    /// A file that exists but holds no PEM.
    pub fn not_pem(&self) -> PathBuf {
        self.path("not-pem.pem")
    }
}
