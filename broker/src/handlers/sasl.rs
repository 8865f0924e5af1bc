//! SaslHandshake (v1) and SaslAuthenticate (v0-v2): the connection's
//! `security::sasl::Session` does the work; this maps it to Kafka's messages.
//! A PLAIN password is checked on the I/O runtime's blocking pool (PBKDF2 takes
//! milliseconds of CPU that a shard should spend on requests).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info};

use crate::errors::{
    ILLEGAL_SASL_STATE, NONE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};
use crate::security::sasl::{SaslError, Session};
use crate::shard::Shard;

fn code(e: &SaslError) -> i16 {
    match e {
        SaslError::IllegalState(_) => ILLEGAL_SASL_STATE,
        SaslError::Unsupported(_) => UNSUPPORTED_SASL_MECHANISM,
        SaslError::Failed(_) => SASL_AUTHENTICATION_FAILED,
    }
}

pub fn handshake(
    shard: &Shard,
    session: &Session,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let settings = &shard.settings.security.sasl;
    let mut resp = SaslHandshakeResponse::default();
    resp.error_code = match session.handshake(settings, &req.mechanism) {
        Ok(()) => NONE,
        Err(e) => code(&e),
    };
    if session.listener.protocol.sasl() {
        resp.mechanisms = settings
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
    }
    resp
}

pub async fn authenticate(
    shard: &Rc<Shard>,
    session: &Session,
    req: SaslAuthenticateRequest,
    peer: &str,
) -> SaslAuthenticateResponse {
    let settings = &shard.settings.security.sasl;
    let now = || shard.clock().now();
    let step = match session.authenticate(settings, &req.auth_bytes, now()) {
        Ok(Ok(step)) => Ok(step),
        Ok(Err(check)) => {
            let check = std::sync::Arc::new(check);
            let c = check.clone();
            let ok = shard
                .io
                .run(async move {
                    tokio::task::spawn_blocking(move || c.verify())
                        .await
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
            session.finish_plain(settings, &check, ok, now())
        }
        Err(e) => Err(e),
    };
    let mut resp = SaslAuthenticateResponse::default();
    match step {
        Ok(step) => {
            if session.is_authenticated() {
                debug!(peer, listener = %session.listener.name, principal = %session.principal(), "SASL step succeeded");
            }
            resp.auth_bytes = Bytes::from(step.reply);
            resp.session_lifetime_ms = step.session_lifetime_ms;
        }
        Err(e) => {
            if let SaslError::Failed(reason) = &e {
                info!(peer, listener = %session.listener.name, %reason, "SASL authentication failed");
            }
            resp.error_code = code(&e);
            resp.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    resp
}
