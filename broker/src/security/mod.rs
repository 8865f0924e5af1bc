//! Who a client is: listeners and their security protocols, TLS (rustls) with
//! optional client certificates, SASL (PLAIN, SCRAM-SHA-256/512) against salted
//! credentials kept in the metadata store, and ACLs (`acl`) kept there too. See
//! docs/security.md.
//!
//! Nothing here knows Kafka's wire types: the handlers (`handlers/sasl.rs`,
//! `handlers/scram_credentials.rs`) translate requests into these calls.

pub mod acl;
pub mod credentials;
pub mod listeners;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::sync::Arc;

pub use listeners::{Listener, SecurityProtocol};
pub use principal::Principal;

/// Everything security-related the layers below the command line read.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Every listener, the first one being the broker's primary address (the one
    /// registered as `host`/`port` for brokers that predate listeners).
    pub listeners: Vec<Arc<Listener>>,
    pub sasl: sasl::SaslSettings,
    /// The TLS server configuration (None when no listener uses TLS).
    pub tls: Option<Arc<tls::TlsServer>>,
    /// How client-certificate subjects become principals.
    pub principal_rules: Arc<principal::MappingRules>,
    /// The ACLs and how they apply (`KAFSCALE_AUTHORIZER`).
    pub authorizer: Arc<acl::Authorizer>,
}

impl SecuritySettings {
    /// One PLAINTEXT listener, nothing else (tests, and brokers without security).
    pub fn plaintext(listener: Listener) -> Self {
        SecuritySettings {
            listeners: vec![Arc::new(listener)],
            sasl: sasl::SaslSettings::default(),
            tls: None,
            principal_rules: Arc::new(principal::MappingRules::default()),
            authorizer: Arc::default(),
        }
    }

    /// Installs a set of security records (the credentials and the ACLs).
    pub fn install(&self, records: &crate::metadata::SecurityRecords) {
        self.sasl.credentials.install(records);
        self.authorizer.install(records);
    }
}

/// Follows the security records for as long as the broker runs (on the I/O runtime).
pub async fn follow(
    mut stream: crate::metadata::SecurityStream,
    credentials: Arc<credentials::CredentialStore>,
    authorizer: Arc<acl::Authorizer>,
) {
    use futures::StreamExt;
    while let Some(records) = stream.next().await {
        credentials.install(&records);
        authorizer.install(&records);
    }
}

/// A security setting the broker cannot run with; the text names it.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Listeners(#[from] listeners::ListenerError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES: {0}")]
    Rules(String),
    #[error(
        "KAFSCALE_SASL_MECHANISMS: unknown mechanism {0:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
    )]
    Mechanism(String),
    #[error("KAFSCALE_SASL_USERS_FILE {path}: {reason}")]
    UsersFile { path: String, reason: String },
    #[error("a listener uses TLS ({0}) but KAFSCALE_TLS_CERT_FILE and KAFSCALE_TLS_KEY_FILE are not both set")]
    TlsMissing(String),
    #[error("KAFSCALE_AUTHORIZER: unknown authorizer {0:?} (none, acl)")]
    Authorizer(String),
    #[error("KAFSCALE_SUPER_USERS: {0:?} is not a principal (User:name; several separated by ;)")]
    SuperUser(String),
    #[error("{var}={addr} is not a loopback address, and listener {listener} is secured: the HTTP endpoint and the control gRPC have no authentication, so bind them to 127.0.0.1 (or set KAFSCALE_INSECURE_OPS_ENDPOINTS=true to accept that)")]
    Exposed {
        var: &'static str,
        addr: std::net::SocketAddr,
        listener: String,
    },
}
