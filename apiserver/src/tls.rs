//! The cluster's certificate authority and the API server's certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

const CLUSTER_CA: &str = "Dora cluster CA";
const PROXY_CA: &str = "Dora API-to-node CA";

/// Files of the cluster PKI under one folder.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

/// A node agent's serving certificate and its key, as PEM.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificate {
    pub certificate: String,
    pub key: String,
    /// The cluster CA, which also signs the API server's certificate.
    pub ca: String,
    /// The CA of the API server's client certificate: the only callers a node accepts.
    pub proxy_ca: String,
}

/// The cluster CA signs serving certificates (API server, nodes); a second CA signs only the
/// API server's client certificate, so that a node's certificate can never pass for the API
/// server when calling another node.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// Writes a file readable by its owner only (mode 0600), whatever mode an existing file had:
/// the contents go to a new 0600 file in the same folder that then replaces `path`, so that
/// they are never readable by others, and a crash leaves the old file or the new one whole.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut temporary = name.to_os_string();
    temporary.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = path.with_file_name(temporary);
    // Only this process uses this name: what is there was left by a crash of an earlier
    // process with the same id.
    let _ = fs::remove_file(&temporary);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
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

    /// Creates the CAs, a server certificate for `names` (DNS names or IP addresses) and the
    /// API server's client certificate unless they exist. Existing files are kept, so clients
    /// and nodes keep trusting the same CAs.
    pub fn ensure(&self, names: &[String]) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        if self.ensure_ca("ca", CLUSTER_CA)? {
            let _ = fs::remove_file(self.path("server.pem"));
        }
        if self.ensure_ca("proxy-ca", PROXY_CA)? {
            let _ = fs::remove_file(self.path("proxy.pem"));
        }
        if !self.path("server.pem").exists() {
            let (cert, key) = self.sign(
                ("ca", CLUSTER_CA),
                names,
                "dora-apiserver",
                ExtendedKeyUsagePurpose::ServerAuth,
            )?;
            write_private(&self.path("server.key"), key.as_bytes())?;
            fs::write(self.path("server.pem"), cert)?;
        }
        if !self.path("proxy.pem").exists() {
            let (cert, key) = self.sign(
                ("proxy-ca", PROXY_CA),
                &["dora-apiserver".to_string()],
                "dora-apiserver",
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            write_private(&self.path("proxy.key"), key.as_bytes())?;
            fs::write(self.path("proxy.pem"), cert)?;
        }
        Ok(())
    }

    /// Creates `<name>.key` and `<name>.pem` unless the key exists; true when it made them.
    fn ensure_ca(&self, name: &str, common_name: &str) -> anyhow::Result<bool> {
        let key_path = self.path(&format!("{name}.key"));
        if key_path.exists() {
            return Ok(false);
        }
        let key = KeyPair::generate()?;
        let cert = ca_params(common_name).self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        fs::write(self.path(&format!("{name}.pem")), cert.pem())?;
        Ok(true)
    }

    /// A certificate for `names` signed by the CA `(file name, common name)`: (cert, key) PEM.
    fn sign(
        &self,
        (ca, ca_name): (&str, &str),
        names: &[String],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<(String, String)> {
        let ca_key = KeyPair::from_pem(
            &fs::read_to_string(self.path(&format!("{ca}.key")))
                .with_context(|| format!("cannot read {ca}.key"))?,
        )?;
        let issuer = Issuer::new(ca_params(ca_name), ca_key);
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A serving certificate for node `node`, valid for `names` (its host names and
    /// addresses), with the CAs it needs.
    pub fn issue_node(&self, node: &str, names: &[String]) -> anyhow::Result<NodeCertificate> {
        let (certificate, key) = self.sign(
            ("ca", CLUSTER_CA),
            names,
            &format!("dora-node {node}"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok(NodeCertificate {
            certificate,
            key,
            ca: fs::read_to_string(self.ca_path()).context("cannot read ca.pem")?,
            proxy_ca: fs::read_to_string(self.path("proxy-ca.pem"))
                .context("cannot read proxy-ca.pem")?,
        })
    }

    /// The HTTPS client for node agents: it trusts the cluster CA only and presents the API
    /// server's client certificate.
    pub fn node_client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.node_tls()?)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?)
    }

    /// TLS towards node agents: the cluster CA as the only root, the API server's client
    /// certificate as identity.
    pub fn node_tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_path()).context("cannot read ca.pem")? {
            roots.add(cert?)?;
        }
        let certs = CertificateDer::pem_file_iter(self.path("proxy.pem"))
            .context("cannot read proxy.pem")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(self.path("proxy.key"))
            .context("cannot read proxy.key")?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
        Ok(tls)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_end_up_0600_even_when_they_were_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"token: secret").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "token: secret");
        let fresh = dir.path().join("secret.key");
        write_private(&fresh, b"new").unwrap();
        assert_eq!(mode(&fresh), 0o600);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind");
        assert!(write_private(&dir.path().join("missing/file"), b"x").is_err());
    }
}
