//! SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), server side, and the
//! salted credentials it verifies against. HMAC, SHA-2 and PBKDF2 come from ring.
//!
//! The exchange, as Kafka runs it inside SaslAuthenticate:
//! client-first `n,,n=user,r=cnonce` → server-first `r=cnonce+snonce,s=salt,i=n`
//! → client-final `c=biws,r=nonce,p=proof` → server-final `v=signature`.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};

/// Kafka's bounds on SCRAM iterations (AlterUserScramCredentials refuses others).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The mechanism's number in DescribeUserScramCredentials and
    /// AlterUserScramCredentials (Kafka's `ScramMechanism`).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// `Hi(password, salt, i)`: PBKDF2 with the mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let i = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), i, salt, password, &mut out);
        out
    }
}

/// What the broker keeps of a password: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From `SaltedPassword` (what AlterUserScramCredentials carries).
    pub fn from_salted(m: Mechanism, salted: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let client_key = m.mac(salted, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: m.hash(&client_key),
            server_key: m.mac(salted, b"Server Key"),
        }
    }

    /// From a password, with a fresh random salt.
    pub fn new(m: Mechanism, password: &str, iterations: u32) -> Self {
        let salt = random_bytes::<32>().to_vec();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        Credential::from_salted(m, &salted, salt, iterations)
    }

    /// Whether `password` is the one this credential was made from (SASL PLAIN).
    pub fn verify_password(&self, m: Mechanism, password: &str) -> bool {
        let salted = m.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = m.mac(&salted, b"Client Key");
        constant_time_eq(&m.hash(&client_key), &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // The system's random source failing is not something to serve through:
    // fall back to a time-seeded value would weaken nonces, so the bytes stay
    // as they are only if the kernel refuses (never seen on Linux).
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

/// A fresh server nonce: printable, without commas.
pub fn server_nonce() -> String {
    B64.encode(random_bytes::<18>())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM extensions are not supported: {0}")]
    Extension(String),
    #[error("the authorization id differs from the user name")]
    AuthzId,
    #[error("the nonce does not continue the server's")]
    Nonce,
    #[error("invalid credentials")]
    Credentials,
}

/// The client's first message, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// The message without its GS2 header (part of the AuthMessage).
    bare: String,
    gs2_header: String,
}

/// `=2C` → `,` and `=3D` → `=` (RFC 5802 saslname).
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = msg.splitn(3, ',');
    let cb = parts.next().ok_or(ScramError::Malformed("empty"))?;
    let authz = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no user"))?;
    match cb {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        match attr.split_once('=') {
            Some(("n", v)) if user.is_none() => user = Some(unescape_name(v)?),
            Some(("r", v)) if nonce.is_none() => nonce = Some(v.to_string()),
            Some(("m", _)) => return Err(ScramError::Extension("m".into())),
            Some((k, _)) if user.is_some() && nonce.is_some() => {
                // Kafka's extensions (tokenauth=true for delegation tokens).
                return Err(ScramError::Extension(k.to_string()));
            }
            _ => return Err(ScramError::Malformed("unexpected attribute")),
        }
    }
    let user = user.ok_or(ScramError::Malformed("no user"))?;
    let nonce = nonce
        .filter(|n| !n.is_empty())
        .ok_or(ScramError::Malformed("no nonce"))?;
    if let Some(a) = authz.strip_prefix("a=") {
        if unescape_name(a)? != user {
            return Err(ScramError::AuthzId);
        }
    } else if !authz.is_empty() {
        return Err(ScramError::Malformed("bad authorization id"));
    }
    Ok(ClientFirst {
        user,
        nonce,
        bare: bare.to_string(),
        gs2_header: format!("{cb},{authz},"),
    })
}

/// The server between its first message and the client's final one.
#[derive(Debug, Clone)]
pub struct ServerFirst {
    mechanism: Mechanism,
    credential: Credential,
    client: ClientFirst,
    nonce: String,
    message: String,
}

impl ServerFirst {
    pub fn new(
        mechanism: Mechanism,
        client: ClientFirst,
        credential: Credential,
        server_nonce: &str,
    ) -> Self {
        let nonce = format!("{}{server_nonce}", client.nonce);
        let message = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        ServerFirst {
            mechanism,
            credential,
            client,
            nonce,
            message,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn user(&self) -> &str {
        &self.client.user
    }

    /// Checks the client's proof; the server's final message on success.
    /// RFC 5802: the client-final nonce is the server-first one. librdkafka
    /// before 2.6.1 sends its own nonce once more in front of it (librdkafka#4895;
    /// kcat and most distributions' packages still ship such versions); Kafka
    /// 3.8.1 to 3.9 accept that, and so does this broker, in exactly that form:
    /// the server's random part is still checked.
    fn nonce_matches(&self, nonce: &str) -> bool {
        nonce == self.nonce
            || nonce
                .strip_prefix(self.client.nonce.as_str())
                .is_some_and(|rest| rest == self.nonce)
    }

    pub fn finish(&self, msg: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) if channel.is_none() => channel = Some(v),
                Some(("r", v)) if nonce.is_none() => nonce = Some(v),
                _ => return Err(ScramError::Malformed("unexpected attribute")),
            }
        }
        let channel = channel.ok_or(ScramError::Malformed("no channel binding"))?;
        let header = B64
            .decode(channel)
            .map_err(|_| ScramError::Malformed("channel binding not base64"))?;
        if header != self.client.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if !nonce.is_some_and(|n| self.nonce_matches(n)) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof not base64"))?;
        let m = self.mechanism;
        let auth_message = format!("{},{},{without_proof}", self.client.bare, self.message);
        let signature = m.mac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::Credentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !constant_time_eq(&m.hash(&client_key), &self.credential.stored_key) {
            return Err(ScramError::Credentials);
        }
        let server_signature = m.mac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let m = Mechanism::Sha256;
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = Credential::from_salted(m, &salted, salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let server = ServerFirst::new(m, first, cred.clone(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            server.message(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // One bit of the proof changed: refused.
        assert_eq!(
            server.finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU="),
            Err(ScramError::Credentials)
        );
        // A nonce that is not the server's.
        assert_eq!(
            server.finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            Err(ScramError::Nonce)
        );
        assert!(cred.verify_password(m, "pencil"));
        assert!(!cred.verify_password(m, "pencil2"));
    }

    /// A client side written from RFC 5802 against the server, for SHA-512
    /// (RFC 7677 has no SHA-512 vector).
    #[test]
    fn sha512_round_trip_and_wrong_password() {
        let m = Mechanism::Sha512;
        let cred = Credential::new(m, "s3cret", 4096);
        for (password, ok) in [("s3cret", true), ("wrong", false)] {
            let first = parse_client_first(b"n,,n=al=2Cice,r=abc").unwrap();
            assert_eq!(first.user, "al,ice");
            let server = ServerFirst::new(m, first, cred.clone(), "xyz");
            let salted = m.salted_password(password.as_bytes(), &cred.salt, 4096);
            let client_key = m.mac(&salted, b"Client Key");
            let stored = m.hash(&client_key);
            let without_proof = "c=biws,r=abcxyz";
            let auth = format!("n=al=2Cice,r=abc,{},{without_proof}", server.message());
            let sig = m.mac(&stored, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            let fin = format!("{without_proof},p={}", B64.encode(proof));
            let got = server.finish(fin.as_bytes());
            assert_eq!(got.is_ok(), ok, "{password}");
            if let Ok(v) = got {
                let server_key = m.mac(&salted, b"Server Key");
                let expect = m.mac(&server_key, auth.as_bytes());
                assert_eq!(v, format!("v={}", B64.encode(expect)));
            }
        }
    }

    /// librdkafka before 2.6.1 puts its own nonce in front of the combined one
    /// (librdkafka#4895): accepted in exactly that form, nothing looser.
    #[test]
    fn librdkafka_doubled_client_nonce() {
        let m = Mechanism::Sha256;
        let cred = Credential::new(m, "pw", 4096);
        let salted = m.salted_password(b"pw", &cred.salt, 4096);
        let client_key = m.mac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        for (nonce, ok) in [
            ("abcabcxyz", true),
            ("abcxyz", true),
            ("zzzabcxyz", false),
            ("abcabcxyq", false),
            ("abcabcabcxyz", false),
            ("xyz", false),
        ] {
            let first = parse_client_first(b"n,,n=u,r=abc").unwrap();
            let server = ServerFirst::new(m, first, cred.clone(), "xyz");
            let without_proof = format!("c=biws,r={nonce}");
            let auth = format!("n=u,r=abc,{},{without_proof}", server.message());
            let sig = m.mac(&stored, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            let got = server.finish(format!("{without_proof},p={}", B64.encode(proof)).as_bytes());
            if ok {
                assert!(got.is_ok(), "{nonce}");
            } else {
                assert_eq!(got, Err(ScramError::Nonce), "{nonce}");
            }
        }
    }

    #[test]
    fn client_first_is_checked() {
        assert_eq!(
            parse_client_first(b"p=tls-unique,,n=u,r=x"),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            parse_client_first(b"n,a=other,n=u,r=x"),
            Err(ScramError::AuthzId)
        );
        assert!(parse_client_first(b"n,a=u,n=u,r=x").is_ok());
        assert_eq!(
            parse_client_first(b"n,,n=u,r=x,tokenauth=true"),
            Err(ScramError::Extension("tokenauth".into()))
        );
        assert!(parse_client_first(b"n,,n=u").is_err());
        assert!(parse_client_first(b"n,,n=u=ZZ,r=x").is_err());
        assert!(parse_client_first(&[0xff, 0xfe]).is_err());
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-512"),
            Some(Mechanism::Sha512)
        );
        assert_eq!(Mechanism::from_kafka_type(1), Some(Mechanism::Sha256));
    }
}
