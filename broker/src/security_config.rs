//! The security settings on the command line (`KAFSCALE_LISTENERS`, TLS, SASL,
//! the ACL authorizer, etcd TLS, the operations endpoints' exposure), turned into
//! `security::SecuritySettings` at start. See docs/security.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::metadata::etcd::EtcdTls;
use crate::security::acl::{Authorizer, AuthorizerSettings};
use crate::security::listeners::{self, Listener, SecurityProtocol};
use crate::security::principal::MappingRules;
use crate::security::sasl::{SaslMechanism, SaslSettings};
use crate::security::tls::{TlsFiles, TlsServer};
use crate::security::{SecurityError, SecuritySettings};

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Kafka listeners, comma-separated `NAME://host:port` (e.g.
    /// `PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9096`). Names are security
    /// protocols (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or mapped to one by
    /// KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP. Unset: one PLAINTEXT listener on
    /// KAFSCALE_BROKER_ADDR, advertised as KAFSCALE_BROKER_HOST/PORT.
    #[arg(long, env = "KAFSCALE_LISTENERS", default_value = "")]
    pub listeners: String,
    /// Custom listener names to security protocols, `NAME:PROTOCOL,...`.
    #[arg(
        long,
        env = "KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP",
        default_value = ""
    )]
    pub listener_security_protocol_map: String,
    /// Addresses clients are told per listener, `NAME://host:port,...`
    /// (default: the listener's own; for 0.0.0.0, KAFSCALE_BROKER_HOST or the host name).
    #[arg(long, env = "KAFSCALE_ADVERTISED_LISTENERS", default_value = "")]
    pub advertised_listeners: String,
    /// PEM certificate chain of the TLS listeners (SSL, SASL_SSL); reloaded when it changes.
    #[arg(long, env = "KAFSCALE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listeners; reloaded when it changes.
    #[arg(long, env = "KAFSCALE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, TLS clients must present a certificate it signed
    /// (mutual TLS); on SSL listeners the certificate's subject is the principal.
    #[arg(long, env = "KAFSCALE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How a client certificate's subject becomes a principal name (Kafka's
    /// ssl.principal.mapping.rules: `RULE:pattern/replacement/[LU]`, `DEFAULT`).
    #[arg(
        long,
        env = "KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES",
        default_value = "DEFAULT"
    )]
    pub ssl_principal_mapping_rules: String,
    /// SASL mechanisms offered on SASL listeners.
    #[arg(
        long,
        env = "KAFSCALE_SASL_MECHANISMS",
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_mechanisms: String,
    /// `name:password` lines: each user gets SCRAM-SHA-256 and SCRAM-SHA-512
    /// credentials (salted, in the metadata store) if it has none yet.
    #[arg(long, env = "KAFSCALE_SASL_USERS_FILE")]
    pub sasl_users_file: Option<PathBuf>,
    /// PBKDF2 iterations of credentials made from KAFSCALE_SASL_USERS_FILE.
    #[arg(long, env = "KAFSCALE_SCRAM_ITERATIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(4096..=16384))]
    pub scram_iterations: u32,
    /// Longest SASL session (KIP-368, Kafka's connections.max.reauth.ms): clients
    /// re-authenticate before it ends, or the connection is closed. 0: no limit.
    #[arg(long, env = "KAFSCALE_SASL_SESSION_LIFETIME_MS", default_value_t = 0)]
    pub sasl_session_lifetime_ms: u64,
    /// PEM CA bundle of etcd's server certificate (https:// endpoints).
    #[arg(long, env = "KAFSCALE_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd (its --client-cert-auth).
    #[arg(long, env = "KAFSCALE_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM private key of KAFSCALE_ETCD_CERT_FILE.
    #[arg(long, env = "KAFSCALE_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// Name etcd's certificate is checked against (default: the endpoint's host).
    #[arg(long, env = "KAFSCALE_ETCD_TLS_SERVER_NAME")]
    pub etcd_tls_server_name: Option<String>,
    /// Authorization: `none` (every request allowed) or `acl` (Kafka's ACLs, made
    /// with CreateAcls and kept in the metadata store; docs/security.md).
    #[arg(long, env = "KAFSCALE_AUTHORIZER", default_value = "none")]
    pub authorizer: String,
    /// Principals allowed everything with the ACL authorizer, `User:admin;User:ops`.
    #[arg(long, env = "KAFSCALE_SUPER_USERS", default_value = "")]
    pub super_users: String,
    /// With KAFSCALE_AUTHORIZER=acl: allow a request on a resource no ACL covers
    /// (false: such requests are refused, as Kafka's default).
    #[arg(long, env = "KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: bool,
    /// Let the HTTP endpoint and the control gRPC bind a non-loopback address
    /// while a Kafka listener is secured (they have no authentication of their own).
    #[arg(long, env = "KAFSCALE_INSECURE_OPS_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_ops_endpoints: bool,
}

fn read(var: &'static str, p: &PathBuf) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(p).map_err(|e| {
        SecurityError::Tls(crate::security::tls::TlsError::File {
            var,
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    })
}

impl SecurityArgs {
    /// The listeners: KAFSCALE_LISTENERS, or the one PLAINTEXT listener of the
    /// older settings.
    pub(crate) fn listeners(
        &self,
        broker_addr: SocketAddr,
        broker_host: Option<&str>,
        broker_port: Option<u16>,
    ) -> Result<Vec<Listener>, SecurityError> {
        let default_host = broker_host
            .map(str::to_string)
            .unwrap_or_else(listeners::hostname);
        if let Some(l) = listeners::parse(
            &self.listeners,
            &self.listener_security_protocol_map,
            &self.advertised_listeners,
            &default_host,
        )? {
            return Ok(l);
        }
        Ok(vec![Listener {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            bind: broker_addr,
            advertised_host: broker_host
                .map(str::to_string)
                .unwrap_or_else(|| broker_addr.ip().to_string()),
            advertised_port: broker_port,
        }])
    }

    /// Everything but the listeners' bound ports (given: already concrete).
    pub(crate) fn settings(
        &self,
        listeners: Vec<Listener>,
    ) -> Result<SecuritySettings, SecurityError> {
        let tls_listener = listeners.iter().find(|l| l.protocol.tls());
        let tls = match (&self.tls_cert_file, &self.tls_key_file, tls_listener) {
            (Some(cert), Some(key), _) => Some(Arc::new(TlsServer::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca_file.clone(),
            })?)),
            (_, _, Some(l)) => return Err(SecurityError::TlsMissing(l.name.clone())),
            _ => None,
        };
        let mut mechanisms = Vec::new();
        for m in self
            .sasl_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let m = SaslMechanism::parse(m).ok_or_else(|| SecurityError::Mechanism(m.into()))?;
            if !mechanisms.contains(&m) {
                mechanisms.push(m);
            }
        }
        let principal_rules =
            MappingRules::parse(&self.ssl_principal_mapping_rules).map_err(SecurityError::Rules)?;
        Ok(SecuritySettings {
            authorizer: Arc::new(Authorizer::new(self.authorizer_settings()?)),
            listeners: listeners.into_iter().map(Arc::new).collect(),
            sasl: SaslSettings {
                mechanisms,
                session_lifetime: (self.sasl_session_lifetime_ms > 0)
                    .then(|| Duration::from_millis(self.sasl_session_lifetime_ms)),
                credentials: Arc::default(),
            },
            tls,
            principal_rules: Arc::new(principal_rules),
        })
    }

    /// KAFSCALE_AUTHORIZER, KAFSCALE_SUPER_USERS, KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND.
    fn authorizer_settings(&self) -> Result<AuthorizerSettings, SecurityError> {
        let enabled = match self.authorizer.trim().to_ascii_lowercase().as_str() {
            "" | "none" => false,
            "acl" => true,
            _ => return Err(SecurityError::Authorizer(self.authorizer.clone())),
        };
        let mut super_users = std::collections::HashSet::new();
        for u in self
            .super_users
            .split(';')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            match u.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    super_users.insert(u.to_string());
                }
                _ => return Err(SecurityError::SuperUser(u.to_string())),
            }
        }
        Ok(AuthorizerSettings {
            enabled,
            super_users,
            allow_if_no_acl: self.allow_everyone_if_no_acl_found,
        })
    }

    /// The users of KAFSCALE_SASL_USERS_FILE (none without it).
    pub(crate) fn users(&self) -> Result<Vec<(String, String)>, SecurityError> {
        match &self.sasl_users_file {
            Some(p) => crate::security::credentials::read_users_file(p).map_err(|reason| {
                SecurityError::UsersFile {
                    path: p.display().to_string(),
                    reason,
                }
            }),
            None => Ok(Vec::new()),
        }
    }

    /// TLS towards etcd, if any of its files is set.
    pub(crate) fn etcd_tls(&self) -> Result<Option<EtcdTls>, SecurityError> {
        if self.etcd_ca_file.is_none() && self.etcd_cert_file.is_none() {
            return Ok(None);
        }
        let ca = match &self.etcd_ca_file {
            Some(p) => Some(read("KAFSCALE_ETCD_CA_FILE", p)?),
            None => None,
        };
        let identity = match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(c), Some(k)) => Some((
                read("KAFSCALE_ETCD_CERT_FILE", c)?,
                read("KAFSCALE_ETCD_KEY_FILE", k)?,
            )),
            _ => None,
        };
        Ok(Some(EtcdTls {
            ca,
            identity,
            domain: self.etcd_tls_server_name.clone(),
        }))
    }

    /// Refuses an operations endpoint on a non-loopback address while a Kafka
    /// listener is secured, unless KAFSCALE_INSECURE_OPS_ENDPOINTS says otherwise.
    pub(crate) fn check_exposure(
        &self,
        listeners: &[Listener],
        endpoints: &[(&'static str, SocketAddr)],
    ) -> Result<(), SecurityError> {
        let Some(secured) = listeners
            .iter()
            .find(|l| l.protocol != SecurityProtocol::Plaintext)
        else {
            return Ok(());
        };
        if self.insecure_ops_endpoints {
            return Ok(());
        }
        match endpoints.iter().find(|(_, a)| !a.ip().is_loopback()) {
            Some((var, addr)) => Err(SecurityError::Exposed {
                var,
                addr: *addr,
                listener: secured.name.clone(),
            }),
            None => Ok(()),
        }
    }
}
