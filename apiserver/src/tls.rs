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
