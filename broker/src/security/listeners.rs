//! Listeners as Kafka has them: `KAFSCALE_LISTENERS`
//! (`PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9096`), names mapped to
//! security protocols by `KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP`
//! (`INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL`; a name that is a protocol maps to
//! itself), and the addresses clients are told, `KAFSCALE_ADVERTISED_LISTENERS`.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One listener: where it binds and what clients are told.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    /// None: the bound port (known only after binding port 0).
    pub advertised_port: Option<u16>,
}

impl Listener {
    pub fn advertised_port(&self) -> i32 {
        self.advertised_port.unwrap_or(self.bind.port()) as i32
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListenerError {
    #[error("{var}: {entry:?} is not NAME://host:port")]
    Syntax { var: &'static str, entry: String },
    #[error("KAFSCALE_LISTENERS: listener {0} has no security protocol (name it after one, or map it in KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP)")]
    NoProtocol(String),
    #[error("KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP: {0:?} is not NAME:PROTOCOL with PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")]
    Map(String),
    #[error("{var}: listener {name} appears twice")]
    Duplicate { var: &'static str, name: String },
    #[error("KAFSCALE_LISTENERS: {0:?} does not resolve to an address to bind")]
    Address(String),
    #[error("KAFSCALE_ADVERTISED_LISTENERS: {0} is not a listener of KAFSCALE_LISTENERS")]
    UnknownAdvertised(String),
    #[error("KAFSCALE_LISTENERS: {0} and {1} bind the same address")]
    SameAddress(String, String),
}

/// `NAME://host:port` → (NAME, host, port); the host may be empty or `[v6]`.
fn split_entry(var: &'static str, entry: &str) -> Result<(String, String, u16), ListenerError> {
    let bad = || ListenerError::Syntax {
        var,
        entry: entry.to_string(),
    };
    let (name, rest) = entry.split_once("://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.trim().to_ascii_uppercase(), host.to_string(), port))
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// The listeners `KAFSCALE_LISTENERS` describes (None when it is empty: the
/// caller falls back to `KAFSCALE_BROKER_ADDR` as one PLAINTEXT listener).
/// `default_host` is advertised for a listener bound to every address
/// (0.0.0.0) that `KAFSCALE_ADVERTISED_LISTENERS` does not name.
pub fn parse(
    listeners: &str,
    protocol_map: &str,
    advertised: &str,
    default_host: &str,
) -> Result<Option<Vec<Listener>>, ListenerError> {
    let mut map: HashMap<String, SecurityProtocol> = HashMap::new();
    for e in entries(protocol_map) {
        let (name, proto) = e.split_once(':').ok_or(ListenerError::Map(e.to_string()))?;
        let proto = SecurityProtocol::parse(proto).ok_or(ListenerError::Map(e.to_string()))?;
        map.insert(name.trim().to_ascii_uppercase(), proto);
    }
    let mut adv: HashMap<String, (String, u16)> = HashMap::new();
    for e in entries(advertised) {
        let (name, host, port) = split_entry("KAFSCALE_ADVERTISED_LISTENERS", e)?;
        if adv.insert(name.clone(), (host, port)).is_some() {
            return Err(ListenerError::Duplicate {
                var: "KAFSCALE_ADVERTISED_LISTENERS",
                name,
            });
        }
    }
    let mut out: Vec<Listener> = Vec::new();
    for e in entries(listeners) {
        let (name, host, port) = split_entry("KAFSCALE_LISTENERS", e)?;
        if out.iter().any(|l| l.name == name) {
            return Err(ListenerError::Duplicate {
                var: "KAFSCALE_LISTENERS",
                name,
            });
        }
        let protocol = map
            .get(&name)
            .copied()
            .or_else(|| SecurityProtocol::parse(&name))
            .ok_or_else(|| ListenerError::NoProtocol(name.clone()))?;
        let bind_host = if host.is_empty() { "0.0.0.0" } else { &host };
        let bind = (bind_host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ListenerError::Address(e.to_string()))?;
        if let Some(other) = out.iter().find(|l| l.bind == bind && port != 0) {
            return Err(ListenerError::SameAddress(other.name.clone(), name));
        }
        let (advertised_host, advertised_port) = match adv.remove(&name) {
            Some((h, p)) => (h, Some(p)),
            None if bind.ip().is_unspecified() => (default_host.to_string(), None),
            None if host.is_empty() => (bind.ip().to_string(), None),
            None => (host.clone(), None),
        };
        out.push(Listener {
            name,
            protocol,
            bind,
            advertised_host,
            advertised_port,
        });
    }
    if let Some(name) = adv.into_keys().next() {
        return Err(ListenerError::UnknownAdvertised(name));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// This machine's host name, advertised for listeners bound to every address.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(h)) if !h.is_empty() => h.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_map_and_advertise() {
        let l = parse(
            "PLAINTEXT://127.0.0.1:9092, internal://:9095,SASL_SSL://0.0.0.0:9096",
            "INTERNAL:SASL_PLAINTEXT",
            "SASL_SSL://kafka.example.com:19096",
            "node-1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(
            (l[0].advertised_host.as_str(), l[0].advertised_port()),
            ("127.0.0.1", 9092)
        );
        assert_eq!(l[1].name, "INTERNAL");
        assert_eq!(l[1].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l[1].advertised_host, "node-1");
        assert_eq!(l[2].protocol, SecurityProtocol::SaslSsl);
        assert!(l[2].protocol.tls() && l[2].protocol.sasl());
        assert_eq!(
            (l[2].advertised_host.as_str(), l[2].advertised_port()),
            ("kafka.example.com", 19096)
        );
        assert_eq!(parse("", "", "", "h"), Ok(None));
    }

    #[test]
    fn bad_listeners_are_named() {
        assert!(matches!(
            parse("EXTERNAL://:1", "", "", "h"),
            Err(ListenerError::NoProtocol(n)) if n == "EXTERNAL"
        ));
        assert!(matches!(
            parse("PLAINTEXT://:1,PLAINTEXT://:2", "", "", "h"),
            Err(ListenerError::Duplicate { .. })
        ));
        assert!(matches!(
            parse("PLAINTEXT://127.0.0.1:1", "", "SSL://x:2", "h"),
            Err(ListenerError::UnknownAdvertised(n)) if n == "SSL"
        ));
        assert!(matches!(
            parse("PLAINTEXT:/x:1", "", "", "h"),
            Err(ListenerError::Syntax { .. })
        ));
        assert!(matches!(
            parse("A://:1", "A:KERBEROS", "", "h"),
            Err(ListenerError::Map(_))
        ));
        assert!(matches!(
            parse("PLAINTEXT://127.0.0.1:5,SSL://127.0.0.1:5", "", "", "h"),
            Err(ListenerError::SameAddress(..))
        ));
    }
}
