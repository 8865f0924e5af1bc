//! A connection's SASL state (Kafka's SaslHandshake v1 + SaslAuthenticate): a
//! mechanism is chosen, then tokens are exchanged until the client is
//! authenticated or refused. On a SASL listener nothing but ApiVersions,
//! SaslHandshake and SaslAuthenticate is handled before that.
//!
//! SaslHandshake v0 (Kafka before 1.0, and librdkafka clients up to 2.0 that
//! see it listed): the tokens then travel without Kafka headers, each a
//! size-prefixed frame answered by one, until the exchange ends (`raw_tokens`).
//!
//! Session lifetime (KIP-368): with `KAFSCALE_SASL_SESSION_LIFETIME_MS` set,
//! SaslAuthenticate v1+ tells the client how long its session lasts; a client
//! re-authenticates on the same connection before then (same principal), and a
//! connection whose session has expired is closed at its next request.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::credentials::CredentialStore;
use super::scram::{self, Credential, Mechanism, ScramError, ServerFirst};
use super::{Listener, Principal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => Mechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SaslSettings {
    pub mechanisms: Vec<SaslMechanism>,
    /// KIP-368's `connections.max.reauth.ms`; None: sessions do not expire.
    pub session_lifetime: Option<Duration>,
    pub credentials: Arc<CredentialStore>,
}

impl Default for SaslSettings {
    fn default() -> Self {
        SaslSettings {
            mechanisms: vec![
                SaslMechanism::Plain,
                SaslMechanism::Scram(Mechanism::Sha256),
                SaslMechanism::Scram(Mechanism::Sha512),
            ],
            session_lifetime: None,
            credentials: Arc::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A request out of order (Kafka's ILLEGAL_SASL_STATE).
    #[error("{0}")]
    IllegalState(&'static str),
    #[error("unsupported SASL mechanism {0}")]
    Unsupported(String),
    /// SASL_AUTHENTICATION_FAILED; the text is what the client is told.
    #[error("{0}")]
    Failed(String),
}

enum Exchange {
    Idle,
    Chosen(SaslMechanism),
    ScramFinal(Box<ServerFirst>),
    /// A PLAIN password being checked off the shard.
    Checking,
    Failed,
}

/// One connection's identity and SASL progress.
pub struct Session {
    pub listener: Arc<Listener>,
    principal: RefCell<Principal>,
    exchange: RefCell<Exchange>,
    authenticated: Cell<bool>,
    expires: Cell<Option<Instant>>,
    /// SaslHandshake v0 chose the mechanism: the next frames are raw tokens.
    raw: Cell<bool>,
}

/// The answer to one SaslAuthenticate.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub reply: Vec<u8>,
    /// Milliseconds the session lasts (0: forever, or not authenticated yet).
    pub session_lifetime_ms: i64,
}

/// A PLAIN login to check: the password against the user's stored credential.
pub struct PlainCheck {
    pub user: String,
    credential: Option<(Mechanism, Credential)>,
    password: String,
}

impl std::fmt::Debug for PlainCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PlainCheck")
            .field("user", &self.user)
            .finish()
    }
}

impl PlainCheck {
    /// PBKDF2 over the password: milliseconds of CPU, run off the shard.
    pub fn verify(&self) -> bool {
        match &self.credential {
            Some((m, c)) => c.verify_password(*m, &self.password),
            None => false,
        }
    }
}

const FAILED: &str = "Authentication failed: Invalid username or password";

fn is_auth_api(api_key: i16) -> bool {
    // SaslHandshake, ApiVersions, SaslAuthenticate.
    matches!(api_key, 17 | 18 | 36)
}

impl Session {
    /// `principal`: who the client is before any SASL (a client certificate's
    /// subject, or ANONYMOUS).
    pub fn new(listener: Arc<Listener>, principal: Principal) -> Self {
        Session {
            listener,
            principal: RefCell::new(principal),
            exchange: RefCell::new(Exchange::Idle),
            authenticated: Cell::new(false),
            expires: Cell::new(None),
            raw: Cell::new(false),
        }
    }

    pub fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }

    fn sasl(&self) -> bool {
        self.listener.protocol.sasl()
    }

    /// Whether a request of `api_key` may be handled now; false: close the
    /// connection (Kafka does the same with a request before authentication,
    /// and with any but re-authentication once a session has expired).
    pub fn admits(&self, api_key: i16, now: Instant) -> bool {
        if !self.sasl() || is_auth_api(api_key) {
            return true;
        }
        self.authenticated.get() && self.expires.get().is_none_or(|e| now < e)
    }

    /// SaslHandshake of `version`: v0 switches the connection to raw tokens.
    pub fn handshake(
        &self,
        settings: &SaslSettings,
        mechanism: &str,
        version: i16,
    ) -> Result<(), SaslError> {
        if !self.sasl() {
            return Err(SaslError::IllegalState(
                "SASL is not enabled on this listener",
            ));
        }
        let mut ex = self.exchange.borrow_mut();
        if !matches!(*ex, Exchange::Idle) {
            return Err(SaslError::IllegalState("unexpected SaslHandshake"));
        }
        // KIP-368: re-authentication exists only with SaslAuthenticate.
        if version == 0 && self.authenticated.get() {
            return Err(SaslError::IllegalState(
                "re-authentication needs SaslHandshake v1",
            ));
        }
        let m = SaslMechanism::parse(mechanism)
            .filter(|m| settings.mechanisms.contains(m))
            .ok_or_else(|| SaslError::Unsupported(mechanism.to_string()))?;
        *ex = Exchange::Chosen(m);
        self.raw.set(version == 0);
        Ok(())
    }

    /// Whether the next frame is a raw SASL token (after SaslHandshake v0, until
    /// the exchange ends).
    pub fn raw_tokens(&self) -> bool {
        self.raw.get()
    }

    fn fail(&self, reason: String) -> SaslError {
        *self.exchange.borrow_mut() = Exchange::Failed;
        self.raw.set(false);
        SaslError::Failed(reason)
    }

    /// One SaslAuthenticate token. PLAIN returns a check to run off the shard
    /// and finish with `finish_plain`.
    pub fn authenticate(
        &self,
        settings: &SaslSettings,
        token: &[u8],
        now: Instant,
    ) -> Result<Result<Step, Box<PlainCheck>>, SaslError> {
        let ex = std::mem::replace(&mut *self.exchange.borrow_mut(), Exchange::Idle);
        match ex {
            Exchange::Chosen(SaslMechanism::Plain) => {
                let mut parts = token.split(|b| *b == 0);
                let (Some(authz), Some(user), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(self.fail("malformed PLAIN token".into()));
                };
                let (Ok(authz), Ok(user), Ok(password)) = (
                    std::str::from_utf8(authz),
                    std::str::from_utf8(user),
                    std::str::from_utf8(password),
                ) else {
                    return Err(self.fail("malformed PLAIN token".into()));
                };
                if !authz.is_empty() && authz != user {
                    return Err(self.fail(
                        "Authentication failed: the authorization id differs from the user name"
                            .into(),
                    ));
                }
                let creds = settings.credentials.snapshot();
                let credential = creds
                    .get(user)
                    .and_then(|c| c.iter().next_back().map(|(m, c)| (*m, c.clone())));
                *self.exchange.borrow_mut() = Exchange::Checking;
                Ok(Err(Box::new(PlainCheck {
                    user: user.to_string(),
                    credential,
                    password: password.to_string(),
                })))
            }
            Exchange::Chosen(SaslMechanism::Scram(m)) => {
                let first = scram::parse_client_first(token)
                    .map_err(|e| self.fail(format!("Authentication failed: {e}")))?;
                let Some(cred) = settings.credentials.get(&first.user, m) else {
                    return Err(self.fail(FAILED.into()));
                };
                let server = ServerFirst::new(m, first, cred, &scram::server_nonce());
                let reply = server.message().as_bytes().to_vec();
                *self.exchange.borrow_mut() = Exchange::ScramFinal(Box::new(server));
                Ok(Ok(Step {
                    reply,
                    session_lifetime_ms: 0,
                }))
            }
            Exchange::ScramFinal(server) => match server.finish(token) {
                Ok(reply) => self.complete(settings, server.user(), now).map(|lifetime| {
                    Ok(Step {
                        reply: reply.into_bytes(),
                        session_lifetime_ms: lifetime,
                    })
                }),
                Err(ScramError::Credentials) => Err(self.fail(FAILED.into())),
                Err(e) => Err(self.fail(format!("Authentication failed: {e}"))),
            },
            Exchange::Failed => {
                *self.exchange.borrow_mut() = Exchange::Failed;
                Err(SaslError::IllegalState("authentication has failed"))
            }
            other => {
                *self.exchange.borrow_mut() = other;
                Err(SaslError::IllegalState(
                    "SaslAuthenticate before SaslHandshake",
                ))
            }
        }
    }

    /// The outcome of a PLAIN check.
    pub fn finish_plain(
        &self,
        settings: &SaslSettings,
        check: &PlainCheck,
        ok: bool,
        now: Instant,
    ) -> Result<Step, SaslError> {
        if !ok {
            return Err(self.fail(FAILED.into()));
        }
        *self.exchange.borrow_mut() = Exchange::Idle;
        let lifetime = self.complete(settings, &check.user, now)?;
        Ok(Step {
            reply: Vec::new(),
            session_lifetime_ms: lifetime,
        })
    }

    /// The client is `user` from now on; the session's lifetime in ms.
    fn complete(
        &self,
        settings: &SaslSettings,
        user: &str,
        now: Instant,
    ) -> Result<i64, SaslError> {
        let principal = Principal::user(user);
        if self.authenticated.get() && *self.principal.borrow() != principal {
            return Err(self
                .fail("Authentication failed: re-authentication must keep the principal".into()));
        }
        *self.principal.borrow_mut() = principal;
        self.authenticated.set(true);
        self.raw.set(false);
        *self.exchange.borrow_mut() = Exchange::Idle;
        self.expires.set(settings.session_lifetime.map(|d| now + d));
        Ok(settings
            .session_lifetime
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
            .unwrap_or(0))
    }

    /// Whether the client has authenticated (at least once) on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::credentials::{bootstrap, Credentials};
    use crate::security::SecurityProtocol;

    fn session(protocol: SecurityProtocol) -> Session {
        Session::new(
            Arc::new(Listener {
                name: protocol.name().into(),
                protocol,
                bind: "127.0.0.1:0".parse().unwrap(),
                advertised_host: "h".into(),
                advertised_port: None,
            }),
            Principal::anonymous(),
        )
    }

    fn settings() -> SaslSettings {
        let s = SaslSettings {
            session_lifetime: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let users = vec![("alice".to_string(), "pw".to_string())];
        let records = bootstrap(&Credentials::new(), &users, 4096)
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        s.credentials.install(&Arc::new(records));
        s
    }

    #[test]
    fn plain_login_gates_requests_and_expires() {
        let s = settings();
        let sess = session(SecurityProtocol::SaslPlaintext);
        let now = Instant::now();
        assert!(sess.admits(18, now) && !sess.admits(3, now));
        assert_eq!(
            sess.authenticate(&s, b"\0alice\0pw", now).unwrap_err(),
            SaslError::IllegalState("SaslAuthenticate before SaslHandshake")
        );
        assert!(matches!(
            sess.handshake(&s, "GSSAPI", 1),
            Err(SaslError::Unsupported(_))
        ));
        sess.handshake(&s, "PLAIN", 1).unwrap();
        let check = sess
            .authenticate(&s, b"\0alice\0pw", now)
            .unwrap()
            .unwrap_err();
        assert!(check.verify());
        let step = sess.finish_plain(&s, &check, true, now).unwrap();
        assert_eq!(step.session_lifetime_ms, 60_000);
        assert_eq!(sess.principal(), Principal::user("alice"));
        assert!(sess.admits(3, now));
        assert!(!sess.admits(3, now + Duration::from_secs(61)));
        // Re-authentication as someone else is refused.
        sess.handshake(&s, "PLAIN", 1).unwrap();
        let check = sess
            .authenticate(&s, b"\0bob\0pw", now)
            .unwrap()
            .unwrap_err();
        assert!(!check.verify());
        assert!(sess.finish_plain(&s, &check, true, now).is_err());
    }

    #[test]
    fn handshake_v0_switches_to_raw_tokens_until_the_exchange_ends() {
        let s = settings();
        let now = Instant::now();
        let sess = session(SecurityProtocol::SaslSsl);
        sess.handshake(&s, "PLAIN", 0).unwrap();
        assert!(sess.raw_tokens());
        let check = sess
            .authenticate(&s, b"\0alice\0pw", now)
            .unwrap()
            .unwrap_err();
        assert!(sess.raw_tokens(), "still raw while the password is checked");
        sess.finish_plain(&s, &check, check.verify(), now).unwrap();
        assert!(!sess.raw_tokens() && sess.admits(3, now));
        // Re-authentication only with v1.
        assert_eq!(
            sess.handshake(&s, "PLAIN", 0),
            Err(SaslError::IllegalState(
                "re-authentication needs SaslHandshake v1"
            ))
        );
        sess.handshake(&s, "PLAIN", 1).unwrap();
        assert!(!sess.raw_tokens());

        // A failed exchange leaves raw mode (the connection is closed anyway).
        let sess = session(SecurityProtocol::SaslSsl);
        sess.handshake(&s, "SCRAM-SHA-256", 0).unwrap();
        assert!(sess.raw_tokens());
        assert!(sess.authenticate(&s, b"n,,n=mallory,r=abc", now).is_err());
        assert!(!sess.raw_tokens() && !sess.admits(3, now));
    }

    #[test]
    fn wrong_password_and_unknown_user_fail() {
        let s = settings();
        for token in [&b"\0alice\0nope"[..], b"\0mallory\0pw"] {
            let sess = session(SecurityProtocol::SaslSsl);
            sess.handshake(&s, "PLAIN", 1).unwrap();
            let check = sess
                .authenticate(&s, token, Instant::now())
                .unwrap()
                .unwrap_err();
            assert!(!check.verify());
            assert!(matches!(
                sess.finish_plain(&s, &check, false, Instant::now()),
                Err(SaslError::Failed(_))
            ));
            assert!(!sess.admits(0, Instant::now()));
        }
        let sess = session(SecurityProtocol::SaslSsl);
        sess.handshake(&s, "SCRAM-SHA-512", 1).unwrap();
        assert!(matches!(
            sess.authenticate(&s, b"n,,n=mallory,r=abc", Instant::now()),
            Err(SaslError::Failed(_))
        ));
        let plain = session(SecurityProtocol::Plaintext);
        assert!(plain.admits(0, Instant::now()));
        assert!(matches!(
            plain.handshake(&s, "PLAIN", 1),
            Err(SaslError::IllegalState(_))
        ));
    }
}
