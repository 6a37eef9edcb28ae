//! TLS termination with rustls: certificates chosen by SNI, TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`, and certificates reloadable without a restart (the acceptor reads
//! the current `ServerConfig` from an `ArcSwap` for each new connection, so a reload
//! never touches connections already open).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate: PEM chain and key files, and the host names it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSpec {
    /// PEM file: the leaf certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// SNI names it answers for. Empty: only the default (the first certificate).
    pub names: Vec<String>,
}

/// A listener's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSpec {
    /// Certificates; the first is also the default for clients without a known SNI name.
    pub certificates: Vec<CertificateSpec>,
    /// Lowest protocol version: `1.2` (default) or `1.3`.
    pub min_version_13: bool,
}

/// Serves the SNI-matching certificate, else the default one.
#[derive(Debug)]
struct Resolver {
    by_name: ResolvesServerCertUsingSni,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.server_name().is_some() {
            if let Some(key) = self.by_name.resolve(hello) {
                return Some(key);
            }
        }
        Some(self.default.clone())
    }
}

fn load_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(certified)
}

/// Builds a rustls `ServerConfig` from files. Errors name the file and the problem.
pub fn server_config(spec: &TlsSpec) -> Result<ServerConfig, String> {
    let mut by_name = ResolvesServerCertUsingSni::new();
    let mut default = None;
    for certificate in &spec.certificates {
        let key = Arc::new(load_key(&certificate.cert, &certificate.key)?);
        for name in &certificate.names {
            by_name.add(name, (*key).clone()).map_err(|e| {
                format!("{}: not valid for {name}: {e}", certificate.cert.display())
            })?;
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or("no certificate configured")?;
    let versions: &[&rustls::SupportedProtocolVersion] = if spec.min_version_13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { by_name, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The live TLS config of a listener, replaced on reload.
#[derive(Clone)]
pub struct TlsConfig(Arc<ArcSwap<ServerConfig>>);

impl TlsConfig {
    /// Loads `spec`.
    pub fn load(spec: &TlsSpec) -> Result<TlsConfig, String> {
        Ok(TlsConfig(Arc::new(ArcSwap::from_pointee(server_config(
            spec,
        )?))))
    }

    /// Replaces the certificates for new connections; on error the old ones stay.
    pub fn reload(&self, spec: &TlsSpec) -> Result<(), String> {
        self.0.store(Arc::new(server_config(spec)?));
        Ok(())
    }

    /// An acceptor with the current certificates.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.load_full())
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}
