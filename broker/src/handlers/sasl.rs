//! SaslHandshake (v0-v1) and SaslAuthenticate (v0-v2): the connection's
//! `security::sasl::Session` does the work; this maps it to Kafka's messages,
//! or, after SaslHandshake v0, to raw size-prefixed tokens (`raw_token`).
//! A PLAIN password is checked on the I/O runtime's blocking pool (PBKDF2 takes
//! milliseconds of CPU that a shard should spend on requests).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info};

use super::Outcome;
use crate::errors::{
    ILLEGAL_SASL_STATE, NONE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};
use crate::security::sasl::{SaslError, Session, Step};
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
    version: i16,
) -> SaslHandshakeResponse {
    let settings = &shard.settings.security.sasl;
    let mut resp = SaslHandshakeResponse::default();
    resp.error_code = match session.handshake(settings, &req.mechanism, version) {
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

/// One client token, whichever way it came: the server's reply, or why the
/// exchange failed (logged here).
async fn exchange(
    shard: &Rc<Shard>,
    session: &Session,
    token: &[u8],
    peer: &str,
) -> Result<Step, SaslError> {
    let settings = &shard.settings.security.sasl;
    let now = || shard.clock().now();
    let step = match session.authenticate(settings, token, now()) {
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
    match &step {
        Ok(_) if session.is_authenticated() => {
            debug!(peer, listener = %session.listener.name, principal = %session.principal(), "SASL step succeeded");
        }
        Err(SaslError::Failed(reason)) => {
            info!(peer, listener = %session.listener.name, %reason, "SASL authentication failed");
        }
        _ => {}
    }
    step
}

pub async fn authenticate(
    shard: &Rc<Shard>,
    session: &Session,
    req: SaslAuthenticateRequest,
    peer: &str,
) -> SaslAuthenticateResponse {
    let mut resp = SaslAuthenticateResponse::default();
    match exchange(shard, session, &req.auth_bytes, peer).await {
        Ok(step) => {
            resp.auth_bytes = Bytes::from(step.reply);
            resp.session_lifetime_ms = step.session_lifetime_ms;
        }
        Err(e) => {
            resp.error_code = code(&e);
            resp.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    resp
}

/// A raw token after SaslHandshake v0: the reply goes back as a size-prefixed
/// frame with no Kafka header (an empty one when PLAIN succeeds, as Kafka sends).
/// A failure has no way to be told in this framing: Kafka closes the
/// connection, and so does this.
pub async fn raw_token(shard: &Rc<Shard>, session: &Session, token: &[u8], peer: &str) -> Outcome {
    match exchange(shard, session, token, peer).await {
        Ok(step) => {
            let Ok(len) = i32::try_from(step.reply.len()) else {
                return Outcome::Close;
            };
            let mut frame = Vec::with_capacity(4 + step.reply.len());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&step.reply);
            Outcome::Respond(Bytes::from(frame))
        }
        Err(e) => {
            info!(peer, listener = %session.listener.name, error = %e, "closing connection: SASL exchange (SaslHandshake v0) failed");
            Outcome::Close
        }
    }
}
