//! ApiVersions: the implemented ranges, from the codec's table.

use kafka_protocol::messages::ApiVersionsResponse;

pub fn handle() -> ApiVersionsResponse {
    kafscale_codec::versions::api_versions_response(crate::errors::NONE)
}
