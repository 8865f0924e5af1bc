//! SCRAM credentials as every broker sees them: stored salted in the metadata
//! store (`security/scram/{user}/{mechanism}`, a `ScramCredential`), followed by
//! a watch, and read by the SASL exchanges from an in-memory copy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use kafscale_proto::metadata as pb;
use kafscale_proto::Message;
use tracing::{info, warn};

use super::scram::{Credential, Mechanism};
use crate::metadata::{keys, SecurityRecords};

const SCRAM_PREFIX: &str = "scram/";

/// The record key of a user's credential for one mechanism.
pub fn key(user: &str, m: Mechanism) -> String {
    format!("{SCRAM_PREFIX}{}/{}", keys::encode(user), m.name())
}

pub fn encode(user: &str, m: Mechanism, c: &Credential) -> Vec<u8> {
    pb::ScramCredential {
        user: user.to_string(),
        mechanism: m.name().to_string(),
        salt: c.salt.clone(),
        iterations: c.iterations as i32,
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
    }
    .encode_to_vec()
}

/// Every credential: user → mechanism → credential.
pub type Credentials = BTreeMap<String, BTreeMap<Mechanism, Credential>>;

fn from_records(records: &SecurityRecords) -> Credentials {
    let mut out = Credentials::new();
    for (k, v) in records.iter() {
        if !k.starts_with(SCRAM_PREFIX) {
            continue;
        }
        let c = match pb::ScramCredential::decode(v.as_slice()) {
            Ok(c) => c,
            Err(e) => {
                warn!(key = %k, error = %e, "ignoring an unreadable SCRAM credential");
                continue;
            }
        };
        let Some(m) = Mechanism::from_name(&c.mechanism) else {
            warn!(key = %k, mechanism = %c.mechanism, "ignoring a credential of an unknown mechanism");
            continue;
        };
        out.entry(c.user).or_default().insert(
            m,
            Credential {
                salt: c.salt,
                iterations: c.iterations.max(1) as u32,
                stored_key: c.stored_key,
                server_key: c.server_key,
            },
        );
    }
    out
}

/// The credentials now in force, replaced as a whole when the store changes.
#[derive(Debug, Default)]
pub struct CredentialStore {
    current: RwLock<Arc<Credentials>>,
}

impl CredentialStore {
    pub fn snapshot(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, user: &str, m: Mechanism) -> Option<Credential> {
        self.snapshot().get(user)?.get(&m).cloned()
    }

    pub fn install(&self, records: &SecurityRecords) {
        let creds = from_records(records);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(creds);
    }
}

/// `name:password` lines (blank lines and `#` comments skipped).
pub fn read_users_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                out.push((name.to_string(), password.to_string()))
            }
            // The line is not echoed: it may hold a password.
            _ => return Err(format!("line {} is not name:password", i + 1)),
        }
    }
    Ok(out)
}

/// The records that give every user of the file a credential for each SCRAM
/// mechanism it lacks. Existing credentials are kept: the file bootstraps, and
/// AlterUserScramCredentials changes passwords afterwards.
pub fn bootstrap(
    have: &Credentials,
    users: &[(String, String)],
    iterations: u32,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for (user, password) in users {
        for m in Mechanism::ALL {
            if have.get(user).is_some_and(|c| c.contains_key(&m)) {
                continue;
            }
            let c = Credential::new(m, password, iterations);
            out.push((key(user, m), Some(encode(user, m, &c))));
        }
    }
    if !out.is_empty() {
        info!(
            credentials = out.len(),
            "SCRAM credentials created from KAFSCALE_SASL_USERS_FILE"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bootstrap_keeps_existing() {
        let users = vec![("alice".to_string(), "pw".to_string())];
        let changes = bootstrap(&Credentials::new(), &users, 4096);
        assert_eq!(changes.len(), 2);
        let records: BTreeMap<String, Vec<u8>> = changes
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        assert!(records.contains_key("scram/alice/SCRAM-SHA-512"));
        let store = CredentialStore::default();
        store.install(&Arc::new(records));
        let c = store.get("alice", Mechanism::Sha512).unwrap();
        assert!(c.verify_password(Mechanism::Sha512, "pw"));
        assert_eq!(c.iterations, 4096);
        assert!(bootstrap(&store.snapshot(), &users, 4096).is_empty());
        assert_eq!(
            key("a/b c", Mechanism::Sha256),
            "scram/a%2Fb%20c/SCRAM-SHA-256"
        );
    }

    #[test]
    fn users_file_lines() {
        let p = std::env::temp_dir().join(format!("kafscale-users-{}", uuid::Uuid::new_v4()));
        std::fs::write(&p, "# admins\nadmin:a:b\n\nbob:pw\r\n").unwrap();
        let u = read_users_file(&p).unwrap();
        assert_eq!(
            u,
            vec![("admin".into(), "a:b".into()), ("bob".into(), "pw".into())]
        );
        std::fs::write(&p, "nopassword\n").unwrap();
        assert_eq!(
            read_users_file(&p).unwrap_err(),
            "line 1 is not name:password"
        );
        let _ = std::fs::remove_file(&p);
    }
}
