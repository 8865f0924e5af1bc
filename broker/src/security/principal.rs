//! Principals (`User:name`) and how a client certificate's subject becomes one:
//! the subject in RFC 2253 form (`CN=alice,OU=eng,O=Acme,C=US`, as Kafka's
//! `X500Principal.getName()`), then the first matching rule of
//! `KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES`, Kafka's `ssl.principal.mapping.rules`
//! syntax: `RULE:pattern/replacement/[LU]` entries and `DEFAULT` (the whole
//! subject), separated by commas.

use std::fmt;

use regex::Regex;

/// An authenticated (or anonymous) client, always of type `User` as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Self {
        Principal { name: name.into() }
    }

    /// Who a client is on a listener without authentication.
    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// The rules, in order; the first that matches the whole subject decides.
#[derive(Debug, Clone)]
pub struct MappingRules(Vec<Rule>);

impl Default for MappingRules {
    fn default() -> Self {
        MappingRules(vec![Rule::Default])
    }
}

/// Reads up to the next unescaped `/`; returns the text (escapes kept, but `\/`
/// made `/`) and the rest after the slash.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references as Rust's `${1}`, so `$1@x` keeps its meaning.
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            out.push_str(&format!("${{{n}}}"));
        } else if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
    }
    out
}

impl MappingRules {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = spec.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("RULE:") {
                let (pattern, r) =
                    until_slash(r).ok_or_else(|| format!("unterminated rule at {rest:?}"))?;
                let (replacement, r) =
                    until_slash(r).ok_or_else(|| format!("unterminated rule at {rest:?}"))?;
                let (case, r) = match r.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                    _ => (None, r),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
                rules.push(Rule::Map {
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = r;
            } else {
                return Err(format!("expected RULE: or DEFAULT at {rest:?}"));
            }
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(format!("expected a comma at {rest:?}"));
            }
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(MappingRules(rules))
    }

    /// The principal name for a certificate subject; None when no rule applies
    /// (the connection is refused, as in Kafka).
    pub fn apply(&self, subject: &str) -> Option<String> {
        self.0.iter().find_map(|r| match r {
            Rule::Default => Some(subject.to_string()),
            Rule::Map {
                pattern,
                replacement,
                case,
            } => {
                let caps = pattern.captures(subject)?;
                let mut out = String::new();
                caps.expand(replacement, &mut out);
                Some(match case {
                    Some('L') => out.to_lowercase(),
                    Some('U') => out.to_uppercase(),
                    _ => out,
                })
            }
        })
    }
}

/// Escapes an attribute value as RFC 2253 asks.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject of a DER certificate in RFC 2253 form (most significant RDN
/// last in the certificate, first here).
pub fn certificate_subject(der: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut attrs = Vec::new();
        for a in rdn.iter() {
            let oid = a.attr_type();
            let key = match oid.to_id_string().as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                other => other.to_string(),
            };
            let value = a
                .as_str()
                .map_err(|e| format!("subject attribute {key}: {e}"))?;
            attrs.push(format!("{key}={}", escape(value)));
        }
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_mapping_rules() {
        let r = MappingRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            r.apply("CN=kafka-producer,OU=ServiceUsers,O=Acme,C=US")
                .as_deref(),
            Some("kafka-producer")
        );
        assert_eq!(
            r.apply("CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US")
                .as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(r.apply("O=x,cn=abc.d,C=US").as_deref(), Some("ABC.D"));
        assert_eq!(r.apply("O=nobody").as_deref(), Some("O=nobody"));
        let strict = MappingRules::parse("RULE:^CN=([a-z]+)$/$1/").unwrap();
        assert_eq!(strict.apply("CN=alice").as_deref(), Some("alice"));
        assert_eq!(strict.apply("CN=alice,O=x"), None);
        assert_eq!(
            MappingRules::default().apply("CN=a").as_deref(),
            Some("CN=a")
        );
        assert!(MappingRules::parse("RULE:^(x/$1").is_err());
        assert!(MappingRules::parse("NOPE").is_err());
        assert!(MappingRules::parse("RULE:([/$1/").is_err());
    }

    #[test]
    fn subject_values_are_escaped() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(Principal::user("bob").to_string(), "User:bob");
    }
}
