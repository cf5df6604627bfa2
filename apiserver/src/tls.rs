//! The cluster's certificate authority and the API server's certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Files of the cluster PKI under one folder.
pub struct Pki {
    dir: PathBuf,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Dora cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

impl Pki {
    /// The PKI kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pki { dir: dir.into() }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Path of the CA certificate that clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Creates the CA and a server certificate for `names` (DNS names or IP addresses) unless
    /// they exist. Existing files are kept, so clients keep trusting the same CA.
    pub fn ensure(&self, names: &[String]) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        if !self.path("ca.key").exists() {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&self.path("ca.key"), key.serialize_pem().as_bytes())?;
            fs::write(self.ca_path(), cert.pem())?;
            let _ = fs::remove_file(self.path("server.pem"));
        }
        if !self.path("server.pem").exists() {
            let ca_key = KeyPair::from_pem(&fs::read_to_string(self.path("ca.key"))?)?;
            let issuer = Issuer::new(ca_params(), ca_key);
            let mut params = CertificateParams::new(names.to_vec())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "dora-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2045, 1, 1);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&self.path("server.key"), key.serialize_pem().as_bytes())?;
            fs::write(self.path("server.pem"), cert.pem())?;
        }
        Ok(())
    }

    /// The rustls configuration serving the server certificate (HTTP/2 and HTTP/1.1).
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_file_iter(self.path("server.pem"))
            .context("cannot read server.pem")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(self.path("server.key"))
            .context("cannot read server.key")?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
