//! One module per Kafka API family. Each handler has the same shape: take the
//! decoded request on the connection's shard, send per-partition work to the
//! owning shards, and assemble the response in request order.

pub mod acls;
pub mod api_versions;
pub mod authz;
pub mod configs;
pub mod create_partitions;
pub mod delete_records;
pub mod describe_cluster;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_for_leader_epoch;
mod per_partition;
pub mod produce;
pub mod sasl;
pub mod scram_credentials;
pub mod topics;
pub mod trace;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafscale_codec::fetch_chunks::encode_fetch_response;
use kafscale_codec::request::{
    api_versions_fallback, decode_request, encode_response, DecodeError,
};
use tracing::{info, warn};

use crate::security::sasl::Session;
use crate::shard::Shard;

/// What the connection does after a request.
pub enum Outcome {
    Respond(Bytes),
    /// A Fetch answer as chunks (codec `fetch_chunks`): its fields and, between
    /// them, the record data as the log handed it out, written without a copy.
    Chunks(Vec<Bytes>),
    /// `acks=0` produce: Kafka sends nothing back.
    Silent,
    /// The request cannot be answered in its own format: close, as Kafka does.
    Close,
}

/// Counts a handled request and its latency in the shard's metrics; `failed`:
/// an admin response carries an error code.
fn record(
    shard: &Shard,
    api: kafka_protocol::messages::ApiKey,
    started: std::time::Instant,
    failed: bool,
) {
    // Real time, not the shard's clock: request latency for /metrics.
    let now = std::time::Instant::now();
    shard.metrics.record_request(
        api as i16,
        now.saturating_duration_since(started),
        now,
        failed,
    );
}

/// Decodes, handles and encodes one request frame. `turn`: the request's place
/// among its connection's produce requests (None for other APIs); `session`:
/// the connection's listener and who the client is.
pub async fn handle_frame(
    shard: &Rc<Shard>,
    frame: Bytes,
    peer: &str,
    turn: Option<crate::partition::Ticket>,
    session: &Session,
) -> Outcome {
    let started = std::time::Instant::now();
    let req = match decode_request(frame) {
        Ok(r) => r,
        Err(DecodeError::UnsupportedVersion {
            api: kafka_protocol::messages::ApiKey::ApiVersions,
            correlation_id,
            version,
        }) => {
            info!(
                peer,
                version, "ApiVersions version not supported; answering with v0 and our ranges"
            );
            let ranges = api_versions::for_listener(session.listener.protocol.sasl());
            return Outcome::Respond(api_versions_fallback(correlation_id, ranges));
        }
        Err(e) => {
            warn!(peer, error = %e, "closing connection: request cannot be handled");
            return Outcome::Close;
        }
    };
    let (api, version, correlation_id) = (req.api, req.version, req.correlation_id());
    let client_id = req.header.client_id.clone();
    let client = || {
        client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default()
    };
    // Authorization (KAFSCALE_AUTHORIZER=acl): refused parts are taken out here
    // and answered in the response below (`authz.rs`). Without an authorizer
    // nothing is built or checked.
    let authorizer = &shard.settings.security.authorizer;
    let check = authorizer
        .enabled()
        .then(|| authorizer.check(session.principal().to_string(), peer_host(peer)));
    let gated = match &check {
        None => Ok((req.body, authz::Pending::Nothing)),
        Some(check) => authz::gate(shard, check, req.body, version),
    };
    let (mut response, pending) = match gated {
        // Refused as a whole: answered, counted and traced like any response.
        Err(refused) => (*refused, authz::Pending::Nothing),
        Ok((body, pending)) => {
            let response = match body {
                RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(
                    api_versions::for_listener(session.listener.protocol.sasl()),
                ),
                RequestKind::SaslHandshake(r) => {
                    ResponseKind::SaslHandshake(sasl::handshake(shard, session, r, version))
                }
                RequestKind::SaslAuthenticate(r) => ResponseKind::SaslAuthenticate(
                    sasl::authenticate(shard, session, r, peer).await,
                ),
                RequestKind::DescribeUserScramCredentials(r) => {
                    ResponseKind::DescribeUserScramCredentials(scram_credentials::describe(
                        shard, r,
                    ))
                }
                RequestKind::AlterUserScramCredentials(r) => {
                    ResponseKind::AlterUserScramCredentials(
                        scram_credentials::alter(shard, r).await,
                    )
                }
                RequestKind::CreateAcls(r) => {
                    ResponseKind::CreateAcls(acls::create(shard, r).await)
                }
                RequestKind::DescribeAcls(r) => {
                    ResponseKind::DescribeAcls(acls::describe(shard, r))
                }
                RequestKind::DeleteAcls(r) => {
                    ResponseKind::DeleteAcls(acls::delete(shard, r).await)
                }
                RequestKind::InitProducerId(r) => {
                    ResponseKind::InitProducerId(init_producer_id::handle(r))
                }
                RequestKind::Metadata(r) => ResponseKind::Metadata(
                    metadata::handle(shard, r, version, &session.listener.name).await,
                ),
                RequestKind::Produce(r) => {
                    let acks = r.acks;
                    let resp = produce::handle(shard, r, version, turn).await;
                    if acks == 0 && pending.refused_any() {
                        // Kafka closes an acks=0 producer's connection on an error: it
                        // would hear of the refusal no other way.
                        info!(
                            peer,
                            "closing connection: acks=0 produce to a topic not authorized"
                        );
                        return Outcome::Close;
                    }
                    if acks == 0 {
                        record(shard, api, started, false);
                        if shard.settings.trace_kafka {
                            trace::log(trace::Request {
                                peer,
                                api,
                                version,
                                correlation_id,
                                client_id: client_id.as_deref().unwrap_or(""),
                                started,
                                error_code: None,
                                detail: Some(trace::produce_detail(&resp)),
                            });
                        }
                        return Outcome::Silent;
                    }
                    ResponseKind::Produce(resp)
                }
                RequestKind::Fetch(r) => {
                    ResponseKind::Fetch(fetch::handle(shard, r, version).await)
                }
                RequestKind::ListOffsets(r) => {
                    ResponseKind::ListOffsets(list_offsets::handle(shard, r, version).await)
                }
                RequestKind::CreateTopics(r) => {
                    ResponseKind::CreateTopics(topics::create(shard, r, version).await)
                }
                RequestKind::DeleteTopics(r) => {
                    ResponseKind::DeleteTopics(topics::delete(shard, r, version).await)
                }
                RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
                    groups::find_coordinator::handle(shard, r, version, &session.listener.name),
                ),
                RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
                    groups::join::handle(shard, r, version, client(), format!("/{peer}")).await,
                ),
                RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
                    groups::consumer_heartbeat::handle(
                        shard,
                        r,
                        version,
                        client(),
                        format!("/{peer}"),
                    )
                    .await,
                ),
                RequestKind::ConsumerGroupDescribe(r) => ResponseKind::ConsumerGroupDescribe(
                    groups::consumer_describe::handle(shard, r, version).await,
                ),
                RequestKind::SyncGroup(r) => {
                    ResponseKind::SyncGroup(groups::sync::handle(shard, r, version).await)
                }
                RequestKind::Heartbeat(r) => {
                    ResponseKind::Heartbeat(groups::heartbeat::handle(shard, r).await)
                }
                RequestKind::LeaveGroup(r) => {
                    ResponseKind::LeaveGroup(groups::leave::handle(shard, r, version).await)
                }
                RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
                    groups::offset_commit::handle(shard, r, version).await,
                ),
                RequestKind::OffsetFetch(r) => {
                    ResponseKind::OffsetFetch(groups::offset_fetch::handle(shard, r, version).await)
                }
                RequestKind::DescribeGroups(r) => {
                    ResponseKind::DescribeGroups(groups::describe::handle(shard, r, version).await)
                }
                RequestKind::ListGroups(r) => {
                    ResponseKind::ListGroups(groups::list::handle(shard, r, version).await)
                }
                RequestKind::DeleteGroups(r) => {
                    ResponseKind::DeleteGroups(groups::delete::handle(shard, r, version).await)
                }
                RequestKind::DescribeConfigs(r) => {
                    ResponseKind::DescribeConfigs(configs::describe(shard, r, version))
                }
                RequestKind::AlterConfigs(r) => {
                    ResponseKind::AlterConfigs(configs::alter(shard, r, version).await)
                }
                RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
                    configs::incremental_alter(shard, r, version).await,
                ),
                RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
                    create_partitions::handle(shard, r, version).await,
                ),
                RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
                    offset_for_leader_epoch::handle(shard, r, version).await,
                ),
                RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(
                    groups::offset_delete::handle(shard, r, version).await,
                ),
                RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(
                    describe_cluster::handle(shard, r, version, &session.listener.name),
                ),
                RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(
                    describe_log_dirs::handle(shard, r, version).await,
                ),
                RequestKind::DeleteRecords(r) => {
                    ResponseKind::DeleteRecords(delete_records::handle(shard, r, version).await)
                }
                RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(
                    describe_producers::handle(shard, r, version).await,
                ),
                RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
                    describe_topic_partitions::handle(shard, r, version),
                ),
                RequestKind::ElectLeaders(r) => {
                    ResponseKind::ElectLeaders(elect_leaders::handle(shard, r, version))
                }
                RequestKind::ListPartitionReassignments(r) => {
                    ResponseKind::ListPartitionReassignments(list_partition_reassignments::handle(
                        r, version,
                    ))
                }
                _ => {
                    // decode_request only admits APIs from the version table, all handled above.
                    warn!(peer, ?api, "closing connection: no handler");
                    return Outcome::Close;
                }
            };
            (response, pending)
        }
    };
    if let Some(check) = &check {
        authz::finish(check, &mut response, pending);
    }
    record(
        shard,
        api,
        started,
        trace::admin_failed(api as i16, &response),
    );
    if shard.settings.trace_kafka {
        trace::log(trace::Request {
            peer,
            api,
            version,
            correlation_id,
            client_id: client_id.as_deref().unwrap_or(""),
            started,
            error_code: Some(trace::error_code(&response)),
            detail: trace::detail(&response),
        });
    }
    encode(api, version, correlation_id, response, peer)
}

fn encode(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
    peer: &str,
) -> Outcome {
    let encoded = match response {
        ResponseKind::Fetch(body) => {
            encode_fetch_response(version, correlation_id, body).map(Outcome::Chunks)
        }
        other => encode_response(api, version, correlation_id, &other).map(Outcome::Respond),
    };
    match encoded {
        Ok(o) => o,
        Err(e) => {
            warn!(peer, error = %e, "closing connection: response cannot be encoded");
            Outcome::Close
        }
    }
}

/// The address part of a peer's `ip:port` (IPv6 in brackets), as ACL hosts
/// name clients.
fn peer_host(peer: &str) -> &str {
    let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
