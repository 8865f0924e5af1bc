//! ApiVersions: the implemented ranges, from the codec's table. The SASL APIs
//! are listed only on SASL listeners, where they work.

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

pub fn handle() -> ApiVersionsResponse {
    kafscale_codec::versions::api_versions_response(crate::errors::NONE)
}

/// The answer on a listener with (`sasl`) or without SASL.
pub fn for_listener(sasl: bool) -> ApiVersionsResponse {
    let mut r = handle();
    if !sasl {
        let handshake = ApiKey::SaslHandshake as i16;
        let authenticate = ApiKey::SaslAuthenticate as i16;
        r.api_keys
            .retain(|k| k.api_key != handshake && k.api_key != authenticate);
    }
    r
}
