//! DescribeUserScramCredentials and AlterUserScramCredentials: the SCRAM
//! credentials in the metadata store, which every broker follows
//! (`security::credentials`). An upsertion carries the salted password the
//! client derived; the broker keeps only StoredKey and ServerKey from it.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{
    DUPLICATE_RESOURCE, KAFKA_STORAGE_ERROR, NONE, REQUEST_TIMED_OUT, RESOURCE_NOT_FOUND,
    UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM,
};
use crate::security::credentials;
use crate::security::scram::{Credential, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::shard::Shard;

/// Security records to write (Some) or remove (None).
type Changes = Vec<(String, Option<Vec<u8>>)>;

fn message(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

pub fn describe(
    shard: &Shard,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let all = shard.settings.security.sasl.credentials.snapshot();
    let describe = |user: &str, creds: &BTreeMap<Mechanism, Credential>| {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(user.to_string());
        r.credential_infos = creds
            .iter()
            .map(|(m, c)| {
                let mut i = CredentialInfo::default();
                i.mechanism = m.kafka_type();
                i.iterations = c.iterations as i32;
                i
            })
            .collect();
        r
    };
    let mut resp = DescribeUserScramCredentialsResponse::default();
    resp.results = match req.users {
        None => all.iter().map(|(u, c)| describe(u, c)).collect(),
        Some(users) if users.is_empty() => all.iter().map(|(u, c)| describe(u, c)).collect(),
        Some(users) => {
            let mut count: HashMap<&str, usize> = HashMap::new();
            for u in &users {
                *count.entry(u.name.as_str()).or_default() += 1;
            }
            let mut seen = std::collections::HashSet::new();
            users
                .iter()
                .filter(|u| seen.insert(u.name.as_str()))
                .map(|u| {
                    let name = u.name.as_str();
                    match all.get(name) {
                        _ if count.get(name).copied().unwrap_or(0) > 1 => {
                            let mut r = DescribeUserScramCredentialsResult::default();
                            r.user = u.name.clone();
                            r.error_code = DUPLICATE_RESOURCE;
                            r.error_message = message("Cannot describe SCRAM credentials for the same user twice in a single request");
                            r
                        }
                        Some(c) if !c.is_empty() => describe(name, c),
                        _ => {
                            let mut r = DescribeUserScramCredentialsResult::default();
                            r.user = u.name.clone();
                            r.error_code = RESOURCE_NOT_FOUND;
                            r.error_message = message("Attempt to describe a user credential that does not exist");
                            r
                        }
                    }
                })
                .collect()
        }
    };
    resp
}

pub async fn alter(
    shard: &Rc<Shard>,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let all = shard.settings.security.sasl.credentials.snapshot();
    // Users in request order, each with its first error (Kafka answers per user).
    let mut order: Vec<String> = Vec::new();
    let mut errors: HashMap<String, (i16, &'static str)> = HashMap::new();
    let mut note = |order: &mut Vec<String>, user: &str, err: Option<(i16, &'static str)>| {
        if !order.iter().any(|u| u == user) {
            order.push(user.to_string());
        }
        if let Some(e) = err {
            errors.entry(user.to_string()).or_insert(e);
        }
    };
    let mut seen: HashMap<(String, i8), usize> = HashMap::new();
    for (name, m) in req
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.as_str(), u.mechanism)),
        )
    {
        *seen.entry((name.to_string(), m)).or_default() += 1;
    }
    // What is wrong with a user's entry whatever it does: no name, or the same
    // credential changed twice in the request.
    let request_error = |user: &str, mechanism: i8| {
        if user.is_empty() {
            Some((UNACCEPTABLE_CREDENTIAL, "Username must not be empty"))
        } else if seen
            .get(&(user.to_string(), mechanism))
            .copied()
            .unwrap_or(0)
            > 1
        {
            Some((
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            ))
        } else {
            None
        }
    };
    let mut changes: Changes = Vec::new();
    let mut per_user: HashMap<String, Changes> = HashMap::new();
    for d in &req.deletions {
        let user = d.name.as_str();
        let err = if let Some(e) = request_error(user, d.mechanism) {
            Some(e)
        } else {
            match Mechanism::from_kafka_type(d.mechanism) {
                None => Some((UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")),
                Some(m) if !all.get(user).is_some_and(|c| c.contains_key(&m)) => Some((
                    RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist",
                )),
                Some(m) => {
                    per_user
                        .entry(user.to_string())
                        .or_default()
                        .push((credentials::key(user, m), None));
                    None
                }
            }
        };
        note(&mut order, user, err);
    }
    for u in &req.upsertions {
        let user = u.name.as_str();
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        let err = if let Some(e) = request_error(user, u.mechanism) {
            Some(e)
        } else {
            match Mechanism::from_kafka_type(u.mechanism) {
                None => Some((UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")),
                Some(_) if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) => Some((
                    UNACCEPTABLE_CREDENTIAL,
                    "Iterations must be between 4096 and 16384",
                )),
                Some(_) if u.salt.is_empty() || u.salted_password.is_empty() => Some((
                    UNACCEPTABLE_CREDENTIAL,
                    "Salt and salted password must not be empty",
                )),
                Some(m) => {
                    let c =
                        Credential::from_salted(m, &u.salted_password, u.salt.to_vec(), iterations);
                    per_user.entry(user.to_string()).or_default().push((
                        credentials::key(user, m),
                        Some(credentials::encode(user, m, &c)),
                    ));
                    None
                }
            }
        };
        note(&mut order, user, err);
    }
    // A user with any error changes nothing (Kafka applies per user).
    for user in &order {
        if !errors.contains_key(user) {
            changes.extend(per_user.remove(user).unwrap_or_default());
        }
    }
    let stored = if changes.is_empty() {
        Ok(())
    } else {
        let meta = shard.meta.clone();
        match shard
            .io
            .run(async move { meta.put_security(changes).await })
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_retriable() => Err(REQUEST_TIMED_OUT),
            _ => Err(KAFKA_STORAGE_ERROR),
        }
    };
    let mut resp = AlterUserScramCredentialsResponse::default();
    resp.results = order
        .iter()
        .map(|user| {
            let mut r = AlterUserScramCredentialsResult::default();
            r.user = StrBytes::from_string(user.clone());
            match (errors.get(user), stored) {
                (Some((code, text)), _) => {
                    r.error_code = *code;
                    r.error_message = message(text);
                }
                (None, Err(code)) => {
                    r.error_code = code;
                    r.error_message = message("The credentials could not be stored");
                }
                (None, Ok(())) => r.error_code = NONE,
            }
            r
        })
        .collect();
    resp
}
