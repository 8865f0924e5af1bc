//! CreateAcls, DescribeAcls and DeleteAcls (v1-v3): the ACL bindings in the
//! metadata store (`security::acl`), which every broker follows. Without an
//! authorizer (`KAFSCALE_AUTHORIZER` unset) they answer SECURITY_DISABLED, as
//! Kafka does. An invalid binding or filter gets INVALID_REQUEST with a
//! message, each on its own. A change is answered once this broker applies it,
//! so the client's next request already sees it here.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{
    INVALID_REQUEST, KAFKA_STORAGE_ERROR, NONE, REQUEST_TIMED_OUT, SECURITY_DISABLED,
};
use crate::security::acl::{AclBinding, AclFilter};
use crate::shard::Shard;

/// How long a change may take to come back through this broker's watch
/// before the answer goes out anyway (it is stored; it arrives later).
const APPLY_WAIT: Duration = Duration::from_secs(5);

const NO_AUTHORIZER: &str = "No Authorizer is configured (KAFSCALE_AUTHORIZER=acl enables ACLs)";

fn text(s: impl ToString) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn enabled(shard: &Shard) -> bool {
    shard.settings.security.authorizer.enabled()
}

/// Writes (Some) and removes (None) ACL records, then waits until this broker
/// applies them; the Kafka code of the outcome.
async fn store(shard: &Rc<Shard>, changes: Vec<(String, Option<Vec<u8>>)>) -> i16 {
    if changes.is_empty() {
        return NONE;
    }
    let meta = shard.meta.clone();
    let authorizer = shard.settings.security.authorizer.clone();
    let expected: Vec<(String, bool)> = changes
        .iter()
        .map(|(k, v)| (k.clone(), v.is_some()))
        .collect();
    let outcome = shard
        .io
        .run(async move {
            meta.put_security(changes).await?;
            authorizer
                .wait_for(APPLY_WAIT, |set| {
                    expected
                        .iter()
                        .all(|(k, present)| set.contains_key(k) == *present)
                })
                .await;
            Ok::<(), crate::metadata::MetaError>(())
        })
        .await;
    match outcome {
        Ok(Ok(())) => NONE,
        Ok(Err(e)) if e.is_retriable() => REQUEST_TIMED_OUT,
        _ => KAFKA_STORAGE_ERROR,
    }
}

pub async fn create(shard: &Rc<Shard>, req: CreateAclsRequest) -> CreateAclsResponse {
    let mut resp = CreateAclsResponse::default();
    if !enabled(shard) {
        resp.results = req
            .creations
            .iter()
            .map(|_| {
                let mut r = AclCreationResult::default();
                r.error_code = SECURITY_DISABLED;
                r.error_message = text(NO_AUTHORIZER);
                r
            })
            .collect();
        return resp;
    }
    let checked: Vec<_> = req
        .creations
        .iter()
        .map(|c| {
            AclBinding::new(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let changes = checked
        .iter()
        .flatten()
        .map(|b| (b.key(), Some(b.encode())))
        .collect();
    let stored = store(shard, changes).await;
    resp.results = checked
        .into_iter()
        .map(|c| {
            let mut r = AclCreationResult::default();
            match c {
                Ok(_) if stored == NONE => r.error_code = NONE,
                Ok(_) => {
                    r.error_code = stored;
                    r.error_message = text("the ACL could not be stored");
                }
                Err(e) => {
                    r.error_code = INVALID_REQUEST;
                    r.error_message = text(e);
                }
            }
            r
        })
        .collect();
    resp
}

#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        name: name.as_ref().map(|n| n.to_string()),
        pattern,
        principal: principal.as_ref().map(|n| n.to_string()),
        host: host.as_ref().map(|n| n.to_string()),
        operation,
        permission,
    }
}

pub fn describe(shard: &Shard, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    if !enabled(shard) {
        resp.error_code = SECURITY_DISABLED;
        resp.error_message = text(NO_AUTHORIZER);
        return resp;
    }
    let f = filter(
        req.resource_type_filter,
        &req.resource_name_filter,
        req.pattern_type_filter,
        &req.principal_filter,
        &req.host_filter,
        req.operation,
        req.permission_type,
    );
    if !f.valid() {
        resp.error_code = INVALID_REQUEST;
        resp.error_message = text("the ACL filter has unknown elements");
        return resp;
    }
    let acls = shard.settings.security.authorizer.acls();
    let mut by_resource: BTreeMap<(i8, &str, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in acls.bindings().filter(|b| f.matches(b)) {
        let mut d = AclDescription::default();
        d.principal = s(&b.principal);
        d.host = s(&b.host);
        d.operation = b.operation as i8;
        d.permission_type = b.permission as i8;
        by_resource
            .entry((b.resource_type as i8, &b.name, b.pattern as i8))
            .or_default()
            .push(d);
    }
    resp.resources = by_resource
        .into_iter()
        .map(|((rt, name, pattern), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = rt;
            r.resource_name = s(name);
            r.pattern_type = pattern;
            r.acls = acls;
            r
        })
        .collect();
    resp
}

fn matching(b: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut m = DeleteAclsMatchingAcl::default();
    m.resource_type = b.resource_type as i8;
    m.resource_name = s(&b.name);
    m.pattern_type = b.pattern as i8;
    m.principal = s(&b.principal);
    m.host = s(&b.host);
    m.operation = b.operation as i8;
    m.permission_type = b.permission as i8;
    m
}

pub async fn delete(shard: &Rc<Shard>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut resp = DeleteAclsResponse::default();
    if !enabled(shard) {
        resp.filter_results = req
            .filters
            .iter()
            .map(|_| {
                let mut r = DeleteAclsFilterResult::default();
                r.error_code = SECURITY_DISABLED;
                r.error_message = text(NO_AUTHORIZER);
                r
            })
            .collect();
        return resp;
    }
    let acls = shard.settings.security.authorizer.acls();
    let mut changes = Vec::new();
    // Per filter: the bindings it matched, or None for an invalid filter.
    let mut results: Vec<Option<Vec<&AclBinding>>> = Vec::new();
    for f in &req.filters {
        let f = filter(
            f.resource_type_filter,
            &f.resource_name_filter,
            f.pattern_type_filter,
            &f.principal_filter,
            &f.host_filter,
            f.operation,
            f.permission_type,
        );
        if !f.valid() {
            results.push(None);
            continue;
        }
        let matched: Vec<&AclBinding> = acls.bindings().filter(|b| f.matches(b)).collect();
        changes.extend(matched.iter().map(|b| (b.key(), None)));
        results.push(Some(matched));
    }
    changes.sort();
    changes.dedup();
    let stored = store(shard, changes).await;
    resp.filter_results = results
        .into_iter()
        .map(|r| {
            let mut out = DeleteAclsFilterResult::default();
            match r {
                None => {
                    out.error_code = INVALID_REQUEST;
                    out.error_message = text("the ACL filter has unknown elements");
                }
                Some(_) if stored != NONE => {
                    out.error_code = stored;
                    out.error_message = text("the ACLs could not be deleted");
                }
                Some(matched) => out.matching_acls = matched.into_iter().map(matching).collect(),
            }
            out
        })
        .collect();
    resp
}
