//! ACLs with Kafka's semantics: bindings of a resource pattern (type, name,
//! literal or prefixed) to an entry (principal, host, operation, allow or
//! deny), stored in the metadata store (`security/acl/...`, an `AclBinding`)
//! and followed by every broker.
//!
//! A request is allowed when the principal is a super user; else, when no
//! binding at all covers the resource, when `KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND`
//! is on; else when an ALLOW binding of the principal (or `User:*`) at the
//! client's host (or `*`) grants the operation and no such DENY binding names
//! it or ALL (deny wins). ALL grants every operation; READ, WRITE, DELETE and
//! ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS. Implications
//! apply to ALLOW only, as in Kafka.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kafscale_proto::metadata as pb;
use kafscale_proto::Message;
use tracing::warn;

use crate::metadata::{keys, SecurityRecords};

/// Where ACL records live among the security records.
pub const ACL_PREFIX: &str = "acl/";
/// The one name of the cluster resource.
pub const CLUSTER: &str = "kafka-cluster";
/// The literal name that matches every resource of its type.
pub const WILDCARD: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Kafka's resource types (the wire numbers). Delegation tokens and users
/// are stored and listed like the others; nothing here checks them, as the
/// APIs they guard do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

impl ResourceType {
    pub fn from_i8(v: i8) -> Option<Self> {
        use ResourceType::*;
        Some(match v {
            2 => Topic,
            3 => Group,
            4 => Cluster,
            5 => TransactionalId,
            6 => DelegationToken,
            7 => User,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize - 2
    }

    /// The operations Kafka's `AclEntry.supportedOperations` lists for the type
    /// (what authorized-operation bit fields report).
    fn supported(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }
}

const RESOURCE_TYPES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal = 3,
    Prefixed = 4,
}

impl PatternType {
    pub fn from_i8(v: i8) -> Option<Self> {
        match v {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

impl Operation {
    pub fn from_i8(v: i8) -> Option<Self> {
        use Operation::*;
        Some(match v {
            2 => All,
            3 => Read,
            4 => Write,
            5 => Create,
            6 => Delete,
            7 => Alter,
            8 => Describe,
            9 => ClusterAction,
            10 => DescribeConfigs,
            11 => AlterConfigs,
            12 => IdempotentWrite,
            13 => CreateTokens,
            14 => DescribeTokens,
            _ => return None,
        })
    }

    /// Whether an ALLOW of `self` grants `wanted`.
    fn grants(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY of `self` refuses `wanted` (no implications).
    fn refuses(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Deny = 2,
    Allow = 3,
}

impl Permission {
    pub fn from_i8(v: i8) -> Option<Self> {
        match v {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `Type:name`, e.g. `User:alice` or `User:*`.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a binding cannot be created (Kafka answers INVALID_REQUEST per creation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown or unsupported {0}")]
    Unknown(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

impl AclBinding {
    /// Checks a binding to create, from the wire numbers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        resource_type: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, AclError> {
        let resource_type =
            ResourceType::from_i8(resource_type).ok_or(AclError::Unknown("resource type"))?;
        let pattern = PatternType::from_i8(pattern).ok_or(AclError::Unknown("pattern type"))?;
        let operation = Operation::from_i8(operation).ok_or(AclError::Unknown("operation"))?;
        let permission =
            Permission::from_i8(permission).ok_or(AclError::Unknown("permission type"))?;
        if name.is_empty() {
            return Err(AclError::Invalid("resource name should not be empty"));
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER {
            return Err(AclError::Invalid(
                "the only valid name for the cluster resource is kafka-cluster",
            ));
        }
        match principal.split_once(':') {
            Some((kind, who)) if !kind.is_empty() && !who.is_empty() => {}
            _ => {
                return Err(AclError::Invalid(
                    "principal must be principalType:name, e.g. User:alice or User:*",
                ))
            }
        }
        if host.is_empty() {
            return Err(AclError::Invalid("host must be an IP address or *"));
        }
        Ok(AclBinding {
            resource_type,
            name: name.to_string(),
            pattern,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        })
    }

    /// The record key: every field, so that a binding is stored once.
    pub fn key(&self) -> String {
        format!(
            "{ACL_PREFIX}{}/{}/{}/{}/{}/{}/{}",
            self.resource_type as i8,
            self.pattern as i8,
            keys::encode(&self.name),
            keys::encode(&self.principal),
            keys::encode(&self.host),
            self.operation as i8,
            self.permission as i8
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        pb::AclBinding {
            resource_type: self.resource_type as i32,
            name: self.name.clone(),
            pattern_type: self.pattern as i32,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation as i32,
            permission: self.permission as i32,
        }
        .encode_to_vec()
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let b = pb::AclBinding::decode(v).ok()?;
        let i = |x: i32| i8::try_from(x).ok();
        AclBinding::new(
            i(b.resource_type)?,
            &b.name,
            i(b.pattern_type)?,
            &b.principal,
            &b.host,
            i(b.operation)?,
            i(b.permission)?,
        )
        .ok()
    }

    /// Whether this binding's pattern covers resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }
}

/// A filter of DescribeAcls and DeleteAcls, in wire numbers: ANY (1) for any
/// type, pattern, operation or permission, MATCH (2) for the patterns that
/// apply to a name; None for any name, principal or host.
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

pub const ANY: i8 = 1;
pub const MATCH: i8 = 2;

impl AclFilter {
    /// Whether the filter is valid (UNKNOWN, 0, or numbers Kafka does not know
    /// make it invalid, as Kafka's `isUnknown`).
    pub fn valid(&self) -> bool {
        let any_or = |v: i8, known: bool| v == ANY || known;
        any_or(
            self.resource_type,
            ResourceType::from_i8(self.resource_type).is_some(),
        ) && (self.pattern == ANY
            || self.pattern == MATCH
            || PatternType::from_i8(self.pattern).is_some())
            && any_or(self.operation, Operation::from_i8(self.operation).is_some())
            && any_or(
                self.permission,
                Permission::from_i8(self.permission).is_some(),
            )
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let type_ok = self.resource_type == ANY || self.resource_type == b.resource_type as i8;
        let pattern_ok =
            self.pattern == ANY || self.pattern == MATCH || self.pattern == b.pattern as i8;
        let name_ok = match &self.name {
            None => true,
            // MATCH: every binding that applies to this resource name.
            Some(n) if self.pattern == MATCH => b.covers(n),
            Some(n) => *n == b.name,
        };
        type_ok
            && pattern_ok
            && name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == ANY || self.operation == b.operation as i8)
            && (self.permission == ANY || self.permission == b.permission as i8)
    }
}

/// An ACL host: `*`, an IP address (compared as an address, so `::1` and
/// `0:0:0:0:0:0:0:1` are one host), or any other text, compared as text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Ip(IpAddr),
    Text(String),
}

impl Host {
    fn parse(h: &str) -> Self {
        if h == WILDCARD {
            Host::Any
        } else if let Ok(ip) = h.parse() {
            Host::Ip(ip)
        } else {
            Host::Text(h.to_string())
        }
    }

    fn matches(&self, client: Option<IpAddr>, client_text: &str) -> bool {
        match self {
            Host::Any => true,
            Host::Ip(ip) => client == Some(*ip),
            Host::Text(t) => t == client_text,
        }
    }
}

/// A binding's entry, indexed under its pattern.
#[derive(Debug, Clone)]
struct Entry {
    principal: String,
    host: Host,
    operation: Operation,
    permission: Permission,
}

/// The bindings of one resource type, by pattern name.
#[derive(Debug, Default)]
struct Index {
    literal: HashMap<String, Vec<Entry>>,
    prefixed: HashMap<String, Vec<Entry>>,
    /// The longest prefix, so a lookup tries no longer prefix of a name.
    longest_prefix: usize,
}

/// Every binding in force: by record key (DescribeAcls, DeleteAcls) and
/// indexed by resource type and name (authorization).
#[derive(Debug, Default)]
pub struct AclSet {
    bindings: BTreeMap<String, AclBinding>,
    index: [Index; RESOURCE_TYPES],
}

impl AclSet {
    /// The set of the ACL records among the security records.
    pub fn from_records(records: &SecurityRecords) -> Self {
        let mut set = AclSet::default();
        for (k, v) in records.range(ACL_PREFIX.to_string()..) {
            if !k.starts_with(ACL_PREFIX) {
                break;
            }
            match AclBinding::decode(v) {
                Some(b) => set.add(k.clone(), b),
                None => warn!(key = %k, "ignoring an unreadable ACL record"),
            }
        }
        set
    }

    fn add(&mut self, key: String, b: AclBinding) {
        let index = &mut self.index[b.resource_type.index()];
        let entry = Entry {
            principal: b.principal.clone(),
            host: Host::parse(&b.host),
            operation: b.operation,
            permission: b.permission,
        };
        let by_name = match b.pattern {
            PatternType::Literal => &mut index.literal,
            PatternType::Prefixed => {
                index.longest_prefix = index.longest_prefix.max(b.name.len());
                &mut index.prefixed
            }
        };
        by_name.entry(b.name.clone()).or_default().push(entry);
        self.bindings.insert(key, b);
    }

    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.values()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.bindings.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Every entry whose pattern covers resource `name` of type `rt`: the
    /// literal name, the wildcard and each prefix of the name.
    fn covering<'a>(&'a self, rt: ResourceType, name: &'a str) -> impl Iterator<Item = &'a Entry> {
        let index = &self.index[rt.index()];
        let literal = index.literal.get(name).into_iter().flatten();
        let wildcard = (name != WILDCARD)
            .then(|| index.literal.get(WILDCARD))
            .flatten()
            .into_iter()
            .flatten();
        let prefixed = (!index.prefixed.is_empty())
            .then(|| {
                name.char_indices()
                    .map(|(i, c)| i + c.len_utf8())
                    .take_while(|end| *end <= index.longest_prefix)
                    .filter_map(|end| index.prefixed.get(&name[..end]))
                    .flatten()
            })
            .into_iter()
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }
}

/// How authorization is configured (`KAFSCALE_AUTHORIZER` and friends).
#[derive(Debug, Clone, Default)]
pub struct AuthorizerSettings {
    /// False: every request is allowed (no authorizer, as Kafka without one).
    pub enabled: bool,
    /// `User:admin` strings.
    pub super_users: HashSet<String>,
    pub allow_if_no_acl: bool,
}

/// The ACLs in force and the rules that apply them. The set is replaced as a
/// whole when the store changes; a request reads it once.
#[derive(Debug)]
pub struct Authorizer {
    pub settings: AuthorizerSettings,
    current: tokio::sync::watch::Sender<Arc<AclSet>>,
}

impl Default for Authorizer {
    fn default() -> Self {
        Authorizer::new(AuthorizerSettings::default())
    }
}

impl Authorizer {
    pub fn new(settings: AuthorizerSettings) -> Self {
        Authorizer {
            settings,
            current: tokio::sync::watch::Sender::new(Arc::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    pub fn install(&self, records: &SecurityRecords) {
        self.current
            .send_replace(Arc::new(AclSet::from_records(records)));
    }

    pub fn acls(&self) -> Arc<AclSet> {
        self.current.borrow().clone()
    }

    /// Waits (at most `limit`) until the set in force satisfies `done`: a
    /// change written to the store reaches this broker through its watch, and
    /// the client that made it should see it in its next request.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&AclSet) -> bool) -> bool {
        let mut rx = self.current.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| done(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The decisions for one request of `principal` (`User:name`) from `host`.
    pub fn check<'a>(&'a self, principal: String, host: &'a str) -> Check<'a> {
        Check {
            settings: &self.settings,
            super_user: self.settings.super_users.contains(&principal),
            principal,
            host_ip: host.parse().ok(),
            host,
            acls: self.acls(),
        }
    }
}

/// Authorization decisions for one principal at one host.
pub struct Check<'a> {
    settings: &'a AuthorizerSettings,
    principal: String,
    super_user: bool,
    host: &'a str,
    host_ip: Option<IpAddr>,
    acls: Arc<AclSet>,
}

impl Check<'_> {
    fn applies(&self, e: &Entry) -> bool {
        (e.principal == self.principal || e.principal == WILDCARD_PRINCIPAL)
            && e.host.matches(self.host_ip, self.host)
    }

    pub fn allowed(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        if self.super_user {
            return true;
        }
        let mut any = false;
        let mut allow = false;
        for e in self.acls.covering(rt, name) {
            any = true;
            if !self.applies(e) {
                continue;
            }
            match e.permission {
                Permission::Deny if e.operation.refuses(op) => return false,
                Permission::Deny => {}
                Permission::Allow => allow |= e.operation.grants(op),
            }
        }
        if any {
            allow
        } else {
            self.settings.allow_if_no_acl
        }
    }

    pub fn topic(&self, op: Operation, name: &str) -> bool {
        self.allowed(op, ResourceType::Topic, name)
    }

    pub fn group(&self, op: Operation, name: &str) -> bool {
        self.allowed(op, ResourceType::Group, name)
    }

    pub fn cluster(&self, op: Operation) -> bool {
        self.allowed(op, ResourceType::Cluster, CLUSTER)
    }

    pub fn transactional_id(&self, op: Operation, id: &str) -> bool {
        self.allowed(op, ResourceType::TransactionalId, id)
    }

    /// Whether `op` is allowed on some resource of type `rt` (Kafka's
    /// `authorizeByResourceType`, KIP-679: an idempotent producer may write to
    /// some topic): an ALLOW pattern of the principal not wholly covered by a
    /// DENY. Implications do not apply.
    pub fn any_resource(&self, op: Operation, rt: ResourceType) -> bool {
        // A name no binding is likely to cover: super users, and allow-everyone
        // when nothing covers it.
        if self.allowed(op, rt, "hardcode") {
            return true;
        }
        let mut deny: [HashSet<&str>; 2] = Default::default();
        let mut allow: [Vec<&str>; 2] = Default::default();
        for b in self.acls.bindings().filter(|b| b.resource_type == rt) {
            let who = b.principal == self.principal || b.principal == WILDCARD_PRINCIPAL;
            let host = Host::parse(&b.host).matches(self.host_ip, self.host);
            if !(who && host && b.operation.refuses(op)) {
                continue;
            }
            let p = (b.pattern == PatternType::Prefixed) as usize;
            match b.permission {
                Permission::Deny => {
                    deny[p].insert(&b.name);
                }
                Permission::Allow => allow[p].push(&b.name),
            }
        }
        let [deny_literal, deny_prefixed] = &deny;
        if deny_literal.contains(WILDCARD) {
            return false;
        }
        if allow[0].contains(&WILDCARD) {
            return true;
        }
        let dominated = |name: &str| {
            name.char_indices()
                .any(|(i, c)| deny_prefixed.contains(&name[..i + c.len_utf8()]))
        };
        allow[0]
            .iter()
            .any(|n| !deny_literal.contains(n) && !dominated(n))
            || allow[1].iter().any(|n| !dominated(n))
    }

    /// Kafka's authorized-operations bit field of a resource: bit `op` set for
    /// every supported operation the principal may do.
    pub fn operations(&self, rt: ResourceType, name: &str) -> i32 {
        rt.supported()
            .iter()
            .filter(|op| self.allowed(**op, rt, name))
            .fold(0, |bits, op| bits | 1 << (*op as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    fn bind(
        rt: ResourceType,
        name: &str,
        p: PatternType,
        who: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern: p,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn authorizer(acls: Vec<AclBinding>, allow_if_none: bool) -> Authorizer {
        let a = Authorizer::new(AuthorizerSettings {
            enabled: true,
            super_users: ["User:admin".to_string()].into(),
            allow_if_no_acl: allow_if_none,
        });
        let records: BTreeMap<String, Vec<u8>> =
            acls.iter().map(|b| (b.key(), b.encode())).collect();
        a.install(&Arc::new(records));
        a
    }

    fn check<'a>(a: &'a Authorizer, who: &str, host: &'a str) -> Check<'a> {
        a.check(format!("User:{who}"), host)
    }

    #[test]
    fn allow_deny_and_implied_operations() {
        let a = authorizer(
            vec![
                bind(Topic, "orders-", Prefixed, "User:alice", Write, Allow),
                bind(Topic, "orders-secret", Literal, "User:alice", All, Deny),
                bind(Topic, "*", Literal, "User:bob", Read, Allow),
                bind(Group, "g", Literal, "User:*", Read, Allow),
                bind(Topic, "cfg", Literal, "User:carol", AlterConfigs, Allow),
                bind(Topic, "del", Literal, "User:carol", Delete, Allow),
                bind(Topic, "del", Literal, "User:carol", Describe, Deny),
            ],
            false,
        );
        let c = check(&a, "alice", "127.0.0.1");
        assert!(c.topic(Write, "orders-eu"));
        assert!(c.topic(Describe, "orders-eu"), "WRITE implies DESCRIBE");
        assert!(!c.topic(Read, "orders-eu"));
        assert!(!c.topic(Write, "payments"), "outside the prefix");
        assert!(!c.topic(Write, "orders"), "shorter than the prefix");
        assert!(!c.topic(Write, "orders-secret"), "deny wins");
        assert!(!c.topic(Describe, "orders-secret"), "deny ALL refuses all");
        assert!(c.group(Read, "g") && c.group(Describe, "g") && !c.group(Delete, "g"));
        assert!(!c.group(Read, "h"));
        assert!(!c.cluster(Create), "no ACL and allow-if-none off");
        let c = check(&a, "bob", "10.0.0.1");
        assert!(c.topic(Read, "anything") && c.topic(Describe, "anything"));
        assert!(!c.topic(Write, "anything"));
        let c = check(&a, "carol", "h");
        assert!(c.topic(DescribeConfigs, "cfg") && c.topic(AlterConfigs, "cfg"));
        assert!(
            !c.topic(Describe, "cfg"),
            "ALTER_CONFIGS implies only DESCRIBE_CONFIGS"
        );
        assert!(c.topic(Delete, "del"));
        assert!(
            !c.topic(Describe, "del"),
            "a DENY of DESCRIBE beats the DESCRIBE that DELETE implies"
        );
        assert!(
            check(&a, "admin", "h").topic(Delete, "orders-secret"),
            "super user"
        );
    }

    #[test]
    fn allow_everyone_if_no_acl_only_for_uncovered_resources() {
        let open = authorizer(vec![bind(Topic, "t", Literal, "User:x", Read, Allow)], true);
        let c = check(&open, "alice", "h");
        assert!(c.topic(Write, "free"));
        assert!(!c.topic(Read, "t"), "t has an ACL, not for alice");
        let closed = authorizer(vec![], false);
        assert!(!check(&closed, "alice", "h").topic(Read, "free"));
    }

    #[test]
    fn hosts_are_compared_as_addresses() {
        let mut deny = bind(Topic, "h", Literal, "User:alice", Read, Deny);
        deny.host = "10.0.0.9".into();
        let mut v6 = bind(Topic, "v6", Literal, "User:alice", Read, Allow);
        v6.host = "0:0:0:0:0:0:0:1".into();
        let a = authorizer(
            vec![
                deny,
                v6,
                bind(Topic, "h", Literal, "User:alice", Read, Allow),
            ],
            false,
        );
        assert!(check(&a, "alice", "10.0.0.1").topic(Read, "h"));
        assert!(!check(&a, "alice", "10.0.0.9").topic(Read, "h"));
        assert!(check(&a, "alice", "::1").topic(Read, "v6"));
        assert!(!check(&a, "alice", "127.0.0.1").topic(Read, "v6"));
    }

    #[test]
    fn write_on_any_topic_follows_kip_679() {
        let any = |acls: Vec<AclBinding>| {
            let a = authorizer(acls, false);
            let r = check(&a, "alice", "h").any_resource(Write, Topic);
            r
        };
        assert!(!any(vec![]));
        assert!(any(vec![bind(
            Topic,
            "t",
            Literal,
            "User:alice",
            Write,
            Allow
        )]));
        assert!(any(vec![bind(Topic, "p-", Prefixed, "User:*", All, Allow)]));
        assert!(!any(vec![bind(
            Topic,
            "t",
            Literal,
            "User:alice",
            Read,
            Allow
        )]));
        assert!(!any(vec![
            bind(Topic, "t", Literal, "User:alice", Write, Allow),
            bind(Topic, "t", Literal, "User:alice", Write, Deny),
        ]));
        assert!(!any(vec![
            bind(Topic, "pre-fix", Prefixed, "User:alice", Write, Allow),
            bind(Topic, "pre", Prefixed, "User:alice", Write, Deny),
        ]));
        assert!(!any(vec![
            bind(Topic, "t", Literal, "User:alice", Write, Allow),
            bind(Topic, "*", Literal, "User:*", Write, Deny),
        ]));
        assert!(any(vec![
            bind(Topic, "t", Literal, "User:alice", Write, Allow),
            bind(Topic, "u", Literal, "User:alice", Write, Deny),
        ]));
        let a = authorizer(vec![], false);
        assert!(check(&a, "admin", "h").any_resource(Write, Topic));
    }

    #[test]
    fn authorized_operations_bits() {
        let a = authorizer(
            vec![bind(Group, "g", Literal, "User:alice", Read, Allow)],
            false,
        );
        let c = check(&a, "alice", "h");
        assert_eq!(
            c.operations(Group, "g"),
            1 << Read as i32 | 1 << Describe as i32
        );
        assert_eq!(c.operations(Topic, "t"), 0);
    }

    #[test]
    fn filters_match_as_kafka() {
        let b = AclBinding::new(2, "orders-", 4, "User:alice", "*", 4, 3).unwrap();
        let star = AclBinding::new(2, "*", 3, "User:bob", "*", 3, 3).unwrap();
        let f = |rt, name: Option<&str>, pat| AclFilter {
            resource_type: rt,
            name: name.map(String::from),
            pattern: pat,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        };
        assert!(f(ANY, None, ANY).matches(&b));
        assert!(f(2, Some("orders-"), 4).matches(&b));
        assert!(!f(2, Some("orders-"), 3).matches(&b), "pattern differs");
        assert!(f(2, Some("orders-"), ANY).matches(&b));
        assert!(!f(2, Some("orders-eu"), ANY).matches(&b), "ANY: exact name");
        assert!(f(2, Some("orders-eu"), MATCH).matches(&b), "MATCH: applies");
        assert!(f(2, Some("orders-eu"), MATCH).matches(&star));
        assert!(!f(2, Some("order"), MATCH).matches(&b));
        assert!(!f(3, None, ANY).matches(&b));
        let mut by_principal = f(ANY, None, ANY);
        by_principal.principal = Some("User:bob".into());
        assert!(by_principal.matches(&star) && !by_principal.matches(&b));
        assert!(!f(0, None, ANY).valid());
        assert!(!f(ANY, None, 0).valid());
        assert!(f(ANY, None, MATCH).valid());
    }

    #[test]
    fn creation_is_validated_and_records_round_trip() {
        assert!(AclBinding::new(4, "other", 3, "User:a", "*", 7, 3).is_err());
        assert!(AclBinding::new(4, CLUSTER, 3, "User:a", "*", 7, 3).is_ok());
        assert!(AclBinding::new(2, "t", 3, "alice", "*", 7, 3).is_err());
        assert!(AclBinding::new(2, "t", 3, "User:", "*", 7, 3).is_err());
        assert!(
            AclBinding::new(2, "t", 1, "User:a", "*", 7, 3).is_err(),
            "ANY"
        );
        assert!(
            AclBinding::new(2, "t", 2, "User:a", "*", 7, 3).is_err(),
            "MATCH"
        );
        assert!(AclBinding::new(2, "t", 3, "User:a", "*", 1, 3).is_err());
        assert!(AclBinding::new(2, "t", 3, "User:a", "*", 7, 1).is_err());
        assert!(AclBinding::new(1, "t", 3, "User:a", "*", 7, 3).is_err());
        assert!(AclBinding::new(2, "", 3, "User:a", "*", 7, 3).is_err());
        assert!(AclBinding::new(2, "t", 3, "User:a", "", 7, 3).is_err());
        let b = AclBinding::new(2, "orders-", 4, "User:alice", "*", 4, 3).unwrap();
        assert_eq!(AclBinding::decode(&b.encode()), Some(b.clone()));
        assert_eq!(b.key(), "acl/2/4/orders-/User%3Aalice/%2A/4/3");
        let mut records = BTreeMap::new();
        records.insert(b.key(), b.encode());
        records.insert("acl/broken".into(), vec![0xff, 0xff]);
        records.insert("scram/u/SCRAM-SHA-256".into(), vec![1]);
        let set = AclSet::from_records(&Arc::new(records));
        assert_eq!(set.bindings().collect::<Vec<_>>(), vec![&b]);
        assert!(set.contains_key(&b.key()));
    }

    #[tokio::test]
    async fn waiting_sees_an_installed_change() {
        let a = authorizer(vec![], false);
        let b = bind(Topic, "t", Literal, "User:a", Read, Allow);
        let key = b.key();
        assert!(
            !a.wait_for(Duration::from_millis(10), |s| s.contains_key(&key))
                .await
        );
        a.install(&Arc::new([(b.key(), b.encode())].into()));
        assert!(
            a.wait_for(Duration::from_millis(10), |s| s.contains_key(&key))
                .await
        );
    }
}
