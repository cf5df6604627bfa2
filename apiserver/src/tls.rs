//! The cluster's certificate authorities and what they issue: the API server's serving and
//! client certificates, kept in the PKI folder and renewed while the server runs, and the
//! node agents' serving certificates.
//!
//! Certificates follow RFC 5280 as strict verifiers (OpenSSL's `X509_V_FLAG_X509_STRICT`,
//! Python 3.13's default context, the `cryptography` package) read it: CAs carry a Subject Key
//! Identifier, key usage keyCertSign and cRLSign and critical basic constraints; leaves carry
//! Authority and Subject Key Identifiers, key usage digitalSignature (their keys are ECDSA, so
//! no keyEncipherment), one extended key usage and their names.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CLUSTER_CA: &str = "Dora cluster CA";
const PROXY_CA: &str = "Dora API-to-node CA";

/// How long the certificates the CAs issue (the API server's serving and client certificates,
/// the nodes' serving certificates) last unless told otherwise: weeks, so that a leaked key is
/// not useful for years. Each is renewed when a third of its lifetime is left.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// A certificate is valid from this long before it is issued, for hosts whose clock lags.
const BACKDATE: Duration = Duration::from_secs(300);

/// A renewal that failed is tried again after this long.
const RETRY: Duration = Duration::from_secs(60);

/// Longest sleep before the clock is read again while waiting for a renewal: a host that
/// was suspended wakes up late, and the wall clock tells how late.
const CLOCK_CHECK: Duration = Duration::from_secs(3600);

/// Files of the cluster PKI under one folder, and the lifetime of the certificates it issues.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    lifetime: Duration,
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
    /// When the certificate stops being valid (RFC 3339).
    pub not_after: String,
    /// When the node should ask for a new certificate (RFC 3339): a third of its lifetime
    /// before `not_after`.
    pub renew_after: String,
}

/// A certificate the API server keeps in the PKI folder as `<file>.pem` and `<file>.key`.
#[derive(Debug, Clone, Copy)]
enum Leaf {
    /// Its serving certificate, from the cluster CA.
    Server,
    /// Its client certificate towards node agents, from the API-to-node CA.
    Proxy,
}

impl Leaf {
    fn file(self) -> &'static str {
        match self {
            Leaf::Server => "server",
            Leaf::Proxy => "proxy",
        }
    }

    /// The issuing CA: its file name and common name.
    fn issuer(self) -> (&'static str, &'static str) {
        match self {
            Leaf::Server => ("ca", CLUSTER_CA),
            Leaf::Proxy => ("proxy-ca", PROXY_CA),
        }
    }

    fn usage(self) -> ExtendedKeyUsagePurpose {
        match self {
            Leaf::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Leaf::Proxy => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// A certificate as issued: PEM of it and its key, and what renewing it needs.
struct Issued {
    certificate: String,
    key: String,
    names: Vec<String>,
    not_after: SystemTime,
}

/// The certificate a TLS endpoint presents, replaced when it is renewed: connections made
/// after a renewal get the new one, open connections keep theirs.
#[derive(Debug)]
struct Presented(RwLock<Arc<CertifiedKey>>);

impl Presented {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for Presented {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for Presented {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS towards a server whose certificate chains to the CA in `ca` (a PEM file), presenting
/// no certificate: how a forwarding API server reaches its upstream.
pub(crate) fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("{} holds no certificate", ca.display()))?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The cluster CA signs serving certificates (API server, nodes); a second CA signs only the
/// API server's client certificate, so that a node's certificate can never pass for the API
/// server when calling another node.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    // With a Subject Key Identifier and critical basic constraints.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// RFC 3339, as the API writes times.
fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Sleeps until the wall clock reaches `at`.
async fn sleep_until(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left.min(CLOCK_CHECK)).await;
    }
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
    /// The PKI kept in `dir`, issuing certificates that last [`LEAF_LIFETIME`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pki {
            dir: dir.into(),
            lifetime: LEAF_LIFETIME,
        }
    }

    /// The same PKI issuing certificates that last `lifetime`.
    pub fn with_lifetime(self, lifetime: Duration) -> Self {
        Pki { lifetime, ..self }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Path of the CA certificate that clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// When a certificate that ends at `not_after` is renewed: a third of the lifetime before.
    pub fn renew_after(&self, not_after: SystemTime) -> SystemTime {
        not_after - self.lifetime / 3
    }

    /// Whether a certificate valid until `not_after` must be replaced at `now`: it is due for
    /// renewal, or it lasts longer than this PKI issues them (as the 20-year certificates of
    /// earlier versions did, which also lacked the extensions strict verifiers want).
    fn due(&self, not_after: SystemTime, now: SystemTime) -> bool {
        now >= self.renew_after(not_after) || not_after > now + self.lifetime + BACKDATE
    }

    /// Creates the CAs unless they exist, and the server certificate for `names` (DNS names
    /// or IP addresses) and the API server's client certificate unless current ones exist: an
    /// existing one is replaced when it is due ([`Pki::renew_after`]), lasts longer than this
    /// PKI issues them, or (the server's) is for other names. Existing CAs are kept, so clients
    /// and nodes keep trusting them.
    pub fn ensure(&self, names: &[String]) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        for leaf in [Leaf::Server, Leaf::Proxy] {
            let (ca, common_name) = leaf.issuer();
            if self.ensure_ca(ca, common_name)? {
                let _ = fs::remove_file(self.path(&format!("{}.pem", leaf.file())));
            }
        }
        self.current(Leaf::Server, Some(names))?;
        self.current(Leaf::Proxy, Some(&["dora-apiserver".to_string()]))?;
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

    /// The CA kept as `<ca>.key` and, in `<ca>.pem`, the certificate of that key: the file
    /// may hold others too, such as the previous CA while clients move to a new one.
    fn issuer(&self, ca: &str) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(
            &fs::read_to_string(self.path(&format!("{ca}.key")))
                .with_context(|| format!("cannot read {ca}.key"))?,
        )
        .with_context(|| format!("{ca}.key holds no private key in PEM"))?;
        let certificates = CertificateDer::pem_file_iter(self.path(&format!("{ca}.pem")))
            .with_context(|| format!("cannot read {ca}.pem"))?;
        for certificate in certificates {
            let certificate =
                certificate.with_context(|| format!("{ca}.pem holds no PEM certificates"))?;
            let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&certificate) else {
                continue;
            };
            if parsed.public_key().subject_public_key.data.as_ref() == key.public_key_raw() {
                return Issuer::from_ca_cert_der(&certificate, key)
                    .with_context(|| format!("{ca}.pem: the CA certificate is not usable"));
            }
        }
        anyhow::bail!("{ca}.pem holds no certificate of the key in {ca}.key")
    }

    /// A certificate for `names` signed by the CA kept as `ca` (its file name).
    fn sign(
        &self,
        ca: &str,
        names: &[String],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<Issued> {
        let issuer = self.issuer(ca)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // CA:FALSE and a Subject Key Identifier.
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        // Certificates count whole seconds.
        params.not_after = OffsetDateTime::from(now + self.lifetime).replace_nanosecond(0)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            certificate: cert.pem(),
            key: key.serialize_pem(),
            names: names.to_vec(),
            not_after: params.not_after.into(),
        })
    }

    /// Issues `leaf` for `names` and writes it to its files.
    fn issue(&self, leaf: Leaf, names: &[String]) -> anyhow::Result<Issued> {
        let issued = self.sign(leaf.issuer().0, names, "dora-apiserver", leaf.usage())?;
        let file = leaf.file();
        write_private(&self.path(&format!("{file}.key")), issued.key.as_bytes())?;
        write_private(
            &self.path(&format!("{file}.pem")),
            issued.certificate.as_bytes(),
        )?;
        tracing::info!(certificate = %format!("{file}.pem"), not_after = %rfc3339(issued.not_after), "certificate issued");
        Ok(issued)
    }

    /// `leaf` as its files hold it.
    fn read(&self, leaf: Leaf) -> anyhow::Result<Issued> {
        let file = leaf.file();
        let certificate = fs::read_to_string(self.path(&format!("{file}.pem")))
            .with_context(|| format!("cannot read {file}.pem"))?;
        let key = fs::read_to_string(self.path(&format!("{file}.key")))
            .with_context(|| format!("cannot read {file}.key"))?;
        let der = CertificateDer::from_pem_slice(certificate.as_bytes())
            .with_context(|| format!("{file}.pem holds no certificate"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("{file}.pem is not a certificate: {e}"))?;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or_default(),
            );
        let mut names = Vec::new();
        if let Ok(Some(alternatives)) = parsed.subject_alternative_name() {
            for name in &alternatives.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        names.push(dns.to_string())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                            names.push(IpAddr::from(octets).to_string());
                        } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                            names.push(IpAddr::from(octets).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Issued {
            certificate,
            key,
            names,
            not_after,
        })
    }

    /// `leaf` as its files hold it, issued anew (for `names` if given, else for the names it
    /// has) when it is missing, unreadable, due, or for other names than `names`.
    fn current(&self, leaf: Leaf, names: Option<&[String]>) -> anyhow::Result<Issued> {
        let stale = match self.read(leaf) {
            Ok(current)
                if !self.due(current.not_after, SystemTime::now())
                    && names.is_none_or(|names| names == current.names)
                    && certified_key(&current).is_ok() =>
            {
                return Ok(current);
            }
            Ok(current) => Ok(current.names),
            Err(e) => Err(e),
        };
        let names = match (names, stale) {
            (Some(names), _) => names.to_vec(),
            (None, Ok(names)) => names,
            (None, Err(e)) => return Err(e.context("the PKI folder needs `Pki::ensure` first")),
        };
        self.issue(leaf, &names)
    }

    /// Presents `leaf` and renews it in the background while what is presented is in use.
    /// Must be called within a Tokio runtime.
    fn presented(&self, leaf: Leaf) -> anyhow::Result<Arc<Presented>> {
        let current = self.current(leaf, None)?;
        let presented = Arc::new(Presented(RwLock::new(certified_key(&current)?)));
        tokio::spawn(
            self.clone()
                .keep_renewed(leaf, current, Arc::downgrade(&presented)),
        );
        Ok(presented)
    }

    /// Renews `leaf` when it is due, for as long as `presented` is in use.
    async fn keep_renewed(self, leaf: Leaf, mut current: Issued, presented: Weak<Presented>) {
        let mut at = self.renew_after(current.not_after);
        loop {
            sleep_until(at).await;
            let Some(presented) = presented.upgrade() else {
                return;
            };
            let (pki, names) = (self.clone(), current.names.clone());
            let renewed = tokio::task::spawn_blocking(move || {
                let issued = pki.issue(leaf, &names)?;
                let key = certified_key(&issued)?;
                anyhow::Ok((issued, key))
            })
            .await
            .unwrap_or_else(|e| Err(e.into()));
            match renewed {
                Ok((issued, key)) => {
                    presented.set(key);
                    at = self.renew_after(issued.not_after);
                    current = issued;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), certificate = leaf.file(), "cannot renew the certificate; trying again in a minute");
                    at = SystemTime::now() + RETRY;
                }
            }
        }
    }

    /// A serving certificate for node `node`, valid for `names` (its host names and
    /// addresses), with the CAs it needs.
    pub fn issue_node(&self, node: &str, names: &[String]) -> anyhow::Result<NodeCertificate> {
        let issued = self.sign(
            "ca",
            names,
            &format!("dora-node {node}"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok(NodeCertificate {
            certificate: issued.certificate,
            key: issued.key,
            ca: fs::read_to_string(self.ca_path()).context("cannot read ca.pem")?,
            proxy_ca: fs::read_to_string(self.path("proxy-ca.pem"))
                .context("cannot read proxy-ca.pem")?,
            not_after: rfc3339(issued.not_after),
            renew_after: rfc3339(self.renew_after(issued.not_after)),
        })
    }

    /// The HTTPS client for node agents: it trusts the cluster CA only and presents the API
    /// server's client certificate. Must be called within a Tokio runtime.
    pub fn node_client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.node_tls()?)
            .connect_timeout(Duration::from_secs(5))
            .build()?)
    }

    /// TLS towards node agents: the cluster CA as the only root, the API server's client
    /// certificate (renewed while in use) as identity. Must be called within a Tokio runtime.
    pub fn node_tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_path()).context("cannot read ca.pem")? {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.presented(Leaf::Proxy)?);
        Ok(tls)
    }

    /// The rustls configuration serving the server certificate (HTTP/2 and HTTP/1.1), renewed
    /// while the configuration is in use. Must be called within a Tokio runtime.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.presented(Leaf::Server)?);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The key pair rustls presents for `issued`; its key must match its certificate.
fn certified_key(issued: &Issued) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(issued.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes())?;
    let key = CertifiedKey::from_der(certs, key, &provider())
        .context("the certificate's key is not the key beside it")?;
    Ok(Arc::new(key))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The extensions of `der`, checked as strict verifiers check a leaf issued by `ca`.
    fn assert_conforming_leaf(der: &[u8], ca: &[u8], usage: &str) {
        use x509_parser::extensions::ParsedExtension;
        let (_, ca) = x509_parser::parse_x509_certificate(ca).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(der).unwrap();
        let ca_key_id = match ca
            .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .unwrap()
            .parsed_extension()
        {
            ParsedExtension::SubjectKeyIdentifier(id) => id.0.to_vec(),
            other => panic!("{other:?}"),
        };
        let authority = leaf
            .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .unwrap();
        match authority.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_key_id)
            }
            other => panic!("{other:?}"),
        }
        assert!(
            leaf.get_extension_unique(
                &x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER
            )
            .unwrap()
            .is_some()
        );
        let usage_ext = leaf.key_usage().unwrap().unwrap();
        assert!(usage_ext.critical);
        assert!(usage_ext.value.digital_signature() && !usage_ext.value.key_encipherment());
        let constraints = leaf.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical && !constraints.value.ca);
        let extended = leaf.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(
            (extended.server_auth, extended.client_auth),
            (usage == "server", usage == "client")
        );
        assert!(leaf.subject_alternative_name().unwrap().is_some());
        let constraints = ca.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical && constraints.value.ca);
        let usage = ca.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn certificates_carry_what_strict_verifiers_want() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.ensure(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let read = |file: &str| fs::read_to_string(dir.path().join(file)).unwrap();
        assert_conforming_leaf(&der(&read("server.pem")), &der(&read("ca.pem")), "server");
        assert_conforming_leaf(
            &der(&read("proxy.pem")),
            &der(&read("proxy-ca.pem")),
            "client",
        );
        let node = pki.issue_node("n1", &["10.0.0.1".into()]).unwrap();
        assert_conforming_leaf(&der(&node.certificate), &der(&node.ca), "server");
        assert!(node.renew_after < node.not_after, "{node:?}");
    }

    #[test]
    fn leaves_are_replaced_when_due_or_longer_lived_than_issued() {
        let day = Duration::from_secs(86_400);
        let pki = Pki::new("unused").with_lifetime(30 * day);
        let now = SystemTime::now();
        assert!(!pki.due(now + 30 * day, now));
        assert!(!pki.due(now + 11 * day, now));
        assert!(pki.due(now + 10 * day, now), "a third of the lifetime left");
        assert!(pki.due(now - day, now), "expired");
        assert!(
            pki.due(now + 20 * 365 * day, now),
            "as earlier versions issued"
        );
    }

    #[test]
    fn a_ca_file_may_hold_the_previous_ca_too() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.ensure(&["localhost".into()]).unwrap();
        let ca = fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let other = ca_params(CLUSTER_CA)
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        fs::write(dir.path().join("ca.pem"), format!("{other}{ca}")).unwrap();
        let node = pki.issue_node("n1", &["localhost".into()]).unwrap();
        assert_conforming_leaf(&der(&node.certificate), &der(&ca), "server");
        fs::write(dir.path().join("ca.pem"), other).unwrap();
        let refused = pki.issue_node("n1", &["localhost".into()]).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("no certificate of the key in ca.key"),
            "{refused:#}"
        );
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
