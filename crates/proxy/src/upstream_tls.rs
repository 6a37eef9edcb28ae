//! TLS to upstream endpoints (`[upstreams.NAME.tls]`): rustls client connections, TLS 1.2
//! and 1.3 only, ALPN `http/1.1` (or `h2` for `protocol = "h2"`), the server's certificate verified against a CA bundle
//! (or the Mozilla roots when none is given) for a configured name, or for the endpoint's
//! IP address when no name is configured (registries usually hand out IPs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// An upstream's TLS settings as config gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTlsSpec {
    /// PEM bundle of the CAs that may sign endpoint certificates. Default: the Mozilla
    /// root set (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate. Default: none, and the
    /// endpoint's IP address is checked instead (it must be in the certificate's SANs).
    pub server_name: Option<String>,
}

/// A loaded upstream TLS config, shared by every connection of the upstream.
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The same config offering ALPN `h2` only (`protocol = "h2"`).
    connector_h2: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Distinguishes pools: connections made with one config are not reused by another.
    id: u64,
}

/// Source of [`UpstreamTls::id`]s; 0 means plain TCP.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl UpstreamTls {
    /// Reads the CA bundle and builds the client config.
    ///
    /// # Errors
    /// A message naming the file or value at fault (the caller adds the config key).
    pub fn load(spec: &UpstreamTlsSpec) -> Result<UpstreamTls, String> {
        let mut roots = RootCertStore::empty();
        match &spec.ca_file {
            Some(path) => {
                let certificates: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                if certificates.is_empty() {
                    return Err(format!("{}: no certificate in the file", path.display()));
                }
                for certificate in certificates {
                    roots
                        .add(certificate)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let server_name = spec
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("server_name {name:?}: {e}"))
            })
            .transpose()?;
        let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config_h2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config_h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            connector_h2: TlsConnector::from(Arc::new(config_h2)),
            server_name,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The pool identity of connections made with this config.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Runs the TLS handshake on `stream` to `address`.
    ///
    /// # Errors
    /// The handshake failed (certificate not trusted, wrong name, protocol error).
    pub async fn connect(
        &self,
        stream: TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        self.connector.connect(name, stream).await
    }

    /// [`UpstreamTls::connect`], offering ALPN `h2` instead of `http/1.1` when `h2`; a
    /// server that does not select `h2` fails the connection.
    ///
    /// # Errors
    /// As [`UpstreamTls::connect`], or the server did not negotiate `h2`.
    pub async fn connect_alpn(
        &self,
        stream: TcpStream,
        address: SocketAddr,
        h2: bool,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        if !h2 {
            return self.connect(stream, address).await;
        }
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let stream = self.connector_h2.connect(name, stream).await?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other(
                "the endpoint did not negotiate ALPN h2",
            ));
        }
        Ok(stream)
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reports_the_file_and_the_name() {
        let missing = UpstreamTls::load(&UpstreamTlsSpec {
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        })
        .unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");

        let dir = std::env::temp_dir().join(format!("sy-upstream-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = UpstreamTls::load(&UpstreamTlsSpec {
            ca_file: Some(empty.clone()),
            server_name: None,
        })
        .unwrap_err();
        assert!(error.contains("no certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();

        let bad_name = UpstreamTls::load(&UpstreamTlsSpec {
            ca_file: None,
            server_name: Some("not a name!".into()),
        })
        .unwrap_err();
        assert!(bad_name.contains("server_name"), "{bad_name}");

        let a = UpstreamTls::load(&UpstreamTlsSpec::default()).unwrap();
        let b = UpstreamTls::load(&UpstreamTlsSpec::default()).unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), 0);
    }
}
