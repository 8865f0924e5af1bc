//! TLS on the Kafka listeners, with rustls (ring provider): the certificate
//! chain and key from PEM files (`KAFSCALE_TLS_CERT_FILE`,
//! `KAFSCALE_TLS_KEY_FILE`), client certificates required and checked against
//! `KAFSCALE_TLS_CLIENT_CA_FILE` when it is set (mutual TLS).
//!
//! The files are looked at again at most once a second, as connections arrive;
//! when one has changed (modification time or size) the configuration is built
//! anew, so a renewed certificate (cert-manager) is served without a restart.
//! A reload that fails keeps the configuration in force and logs why.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var} {path}: {reason}")]
    File {
        var: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(var: &'static str, path: &std::path::Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        var,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// What a file looked like when it was read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// The TLS server configuration in force, reloaded when its files change.
pub struct TlsServer {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsFiles {
    fn stamps(&self) -> Vec<Stamp> {
        let mut v = vec![stamp(&self.cert), stamp(&self.key)];
        if let Some(ca) = &self.client_ca {
            v.push(stamp(ca));
        }
        v
    }

    fn build(&self) -> Result<ServerConfig, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_error("KAFSCALE_TLS_CERT_FILE", &self.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("KAFSCALE_TLS_CERT_FILE", &self.cert, e))?;
        if certs.is_empty() {
            return Err(file_error(
                "KAFSCALE_TLS_CERT_FILE",
                &self.cert,
                "no certificate in the file",
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| file_error("KAFSCALE_TLS_KEY_FILE", &self.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let var = "KAFSCALE_TLS_CLIENT_CA_FILE";
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(var, ca, e))? {
                    roots
                        .add(c.map_err(|e| file_error(var, ca, e))?)
                        .map_err(|e| file_error(var, ca, e))?;
                }
                if roots.is_empty() {
                    return Err(file_error(var, ca, "no certificate in the file"));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| file_error(var, ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))
    }
}

impl TlsServer {
    /// Reads the files; fails (and the broker does not start) if they are unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = files.stamps();
        let config = Arc::new(files.build()?);
        Ok(TlsServer {
            files,
            loaded: Mutex::new(Loaded {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether client certificates are required (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration for a new connection, rebuilt first if a file changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        // Real time: a file check at most once a second, whatever the broker's clock.
        if l.checked.elapsed() >= RECHECK {
            l.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != l.stamps {
                l.stamps = stamps;
                match self.files.build() {
                    Ok(c) => {
                        info!(cert = %self.files.cert.display(), "TLS certificate files changed; reloaded");
                        l.config = Arc::new(c);
                    }
                    Err(e) => {
                        warn!(error = %e, "TLS certificate files changed but cannot be used; keeping the previous ones")
                    }
                }
            }
        }
        l.config.clone()
    }
}
