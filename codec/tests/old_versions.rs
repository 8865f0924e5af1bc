//! The request versions Kafka 3.x accepted and Kafka 4.0 removed (KIP-896), as
//! old clients (Sarama 1.x, kafka-python 2.x, librdkafka before 2.x) send them.
//! The bytes are built by hand from Kafka 3.9's message schemas, not by the
//! codec's own encoder, so that a symmetric mistake cannot pass.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DeleteTopicsResponse, DescribeConfigsResponse,
    ListOffsetsResponse, OffsetForLeaderEpochResponse, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_codec::request::{decode_request, encode_response};
use kafscale_codec::versions::is_supported;

fn string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

/// A request frame without its size prefix: header v1 (client id "old").
fn frame(api: ApiKey, version: i16, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(api as i16);
    b.put_i16(version);
    b.put_i32(5);
    string(&mut b, "old");
    body(&mut b);
    b.freeze()
}

/// The response body after the size prefix and correlation id.
fn response_body(api: ApiKey, version: i16, r: &ResponseKind) -> Vec<u8> {
    let b = encode_response(api, version, 5, r).unwrap();
    assert_eq!(&b[4..8], &5i32.to_be_bytes());
    b[8..].to_vec()
}

#[test]
fn every_removed_minimum_is_supported_again() {
    for api in [
        ApiKey::ListOffsets,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::OffsetForLeaderEpoch,
        ApiKey::DescribeConfigs,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::DescribeLogDirs,
    ] {
        assert!(is_supported(api, 0), "{api:?} v0");
    }
}

#[test]
fn offset_commit_v0_has_no_generation_or_member() {
    let f = frame(ApiKey::OffsetCommit, 0, |b| {
        string(b, "g");
        b.put_i32(1);
        string(b, "t");
        b.put_i32(1);
        b.put_i32(3); // partition
        b.put_i64(42); // offset
        string(b, "meta");
    });
    let RequestKind::OffsetCommit(r) = decode_request(f).unwrap().body else {
        panic!("not an OffsetCommit")
    };
    assert_eq!(&*r.group_id, "g");
    assert_eq!(r.generation_id_or_member_epoch, -1);
    assert_eq!(&*r.member_id, "");
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.partition_index, p.committed_offset), (3, 42));
    assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
}

#[test]
fn offset_commit_v1_as_sarama_sends_it() {
    let f = frame(ApiKey::OffsetCommit, 1, |b| {
        string(b, "g");
        b.put_i32(7); // generation
        string(b, "member-1");
        b.put_i32(1);
        string(b, "t");
        b.put_i32(2);
        for (p, o) in [(0, 10i64), (1, 20)] {
            b.put_i32(p);
            b.put_i64(o);
            b.put_i64(1_700_000_000_000); // commit timestamp (v1 only)
            b.put_i16(-1); // null metadata
        }
    });
    let RequestKind::OffsetCommit(r) = decode_request(f).unwrap().body else {
        panic!("not an OffsetCommit")
    };
    assert_eq!(r.generation_id_or_member_epoch, 7);
    assert_eq!(&*r.member_id, "member-1");
    let ps = &r.topics[0].partitions;
    assert_eq!(ps.len(), 2);
    assert_eq!((ps[1].partition_index, ps[1].committed_offset), (1, 20));
    assert_eq!(ps[1].commit_timestamp, 1_700_000_000_000);
    assert_eq!(ps[1].committed_metadata, None);
}

#[test]
fn offset_fetch_v0_is_v1s_format() {
    let f = frame(ApiKey::OffsetFetch, 0, |b| {
        string(b, "g");
        b.put_i32(1);
        string(b, "t");
        b.put_i32(1);
        b.put_i32(4);
    });
    let RequestKind::OffsetFetch(r) = decode_request(f).unwrap().body else {
        panic!("not an OffsetFetch")
    };
    assert_eq!(&*r.group_id, "g");
    let t = &r.topics.as_ref().unwrap()[0];
    assert_eq!(t.partition_indexes, vec![4]);
}

#[test]
fn list_offsets_v0_carries_max_num_offsets_and_answers_a_list() {
    let f = frame(ApiKey::ListOffsets, 0, |b| {
        b.put_i32(-1); // replica id
        b.put_i32(1);
        string(b, "t");
        b.put_i32(1);
        b.put_i32(0);
        b.put_i64(-1); // latest
        b.put_i32(1); // max_num_offsets
    });
    let RequestKind::ListOffsets(r) = decode_request(f).unwrap().body else {
        panic!("not a ListOffsets")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.timestamp, p.max_num_offsets), (-1, 1));

    let mut part = ListOffsetsPartitionResponse::default();
    part.partition_index = 0;
    part.old_style_offsets = vec![99];
    let mut topic = ListOffsetsTopicResponse::default();
    topic.name = TopicName(StrBytes::from_static_str("t"));
    topic.partitions = vec![part];
    let mut resp = ListOffsetsResponse::default();
    resp.topics = vec![topic];
    let got = response_body(ApiKey::ListOffsets, 0, &ResponseKind::ListOffsets(resp));
    let mut want = BytesMut::new();
    want.put_i32(1); // no throttle time in v0
    string(&mut want, "t");
    want.put_i32(1);
    want.put_i32(0);
    want.put_i16(0);
    want.put_i32(1);
    want.put_i64(99);
    assert_eq!(got, want.to_vec());
}

#[test]
fn create_topics_v0_has_no_validate_only_and_answers_without_messages() {
    let f = frame(ApiKey::CreateTopics, 0, |b| {
        b.put_i32(1);
        string(b, "t");
        b.put_i32(3); // partitions
        b.put_i16(1); // replication factor
        b.put_i32(0); // assignments
        b.put_i32(1); // configs
        string(b, "retention.ms");
        string(b, "1000");
        b.put_i32(5000); // timeout
    });
    let RequestKind::CreateTopics(r) = decode_request(f).unwrap().body else {
        panic!("not a CreateTopics")
    };
    assert!(!r.validate_only);
    assert_eq!(r.timeout_ms, 5000);
    assert_eq!(r.topics[0].num_partitions, 3);
    assert_eq!(&*r.topics[0].configs[0].name, "retention.ms");

    let mut t = kafka_protocol::messages::create_topics_response::CreatableTopicResult::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.error_code = 36;
    t.error_message = Some(StrBytes::from_static_str("exists"));
    let mut resp = CreateTopicsResponse::default();
    resp.topics = vec![t];
    let got = response_body(ApiKey::CreateTopics, 0, &ResponseKind::CreateTopics(resp));
    let mut want = BytesMut::new();
    want.put_i32(1);
    string(&mut want, "t");
    want.put_i16(36);
    assert_eq!(got, want.to_vec());
}

#[test]
fn delete_topics_v0_response_has_no_throttle_time() {
    let f = frame(ApiKey::DeleteTopics, 0, |b| {
        b.put_i32(1);
        string(b, "t");
        b.put_i32(5000);
    });
    let RequestKind::DeleteTopics(r) = decode_request(f).unwrap().body else {
        panic!("not a DeleteTopics")
    };
    assert_eq!(&*r.topic_names[0], "t");
    let mut d = kafka_protocol::messages::delete_topics_response::DeletableTopicResult::default();
    d.name = Some(TopicName(StrBytes::from_static_str("t")));
    let mut resp = DeleteTopicsResponse::default();
    resp.throttle_time_ms = 9;
    resp.responses = vec![d];
    let got = response_body(ApiKey::DeleteTopics, 0, &ResponseKind::DeleteTopics(resp));
    let mut want = BytesMut::new();
    want.put_i32(1);
    string(&mut want, "t");
    want.put_i16(0);
    assert_eq!(got, want.to_vec());
}

#[test]
fn describe_configs_v0_answers_is_default_instead_of_source() {
    let f = frame(ApiKey::DescribeConfigs, 0, |b| {
        b.put_i32(1);
        b.put_i8(2); // topic
        string(b, "t");
        b.put_i32(-1); // all keys
    });
    let RequestKind::DescribeConfigs(r) = decode_request(f).unwrap().body else {
        panic!("not a DescribeConfigs")
    };
    assert!(!r.include_synonyms);
    assert!(r.resources[0].configuration_keys.is_none());

    let mut e = DescribeConfigsResourceResult::default();
    e.name = StrBytes::from_static_str("retention.ms");
    e.value = Some(StrBytes::from_static_str("-1"));
    e.is_default = true;
    e.config_source = 5;
    let mut res = DescribeConfigsResult::default();
    res.error_message = None;
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("t");
    res.configs = vec![e];
    let mut resp = DescribeConfigsResponse::default();
    resp.results = vec![res];
    let got = response_body(
        ApiKey::DescribeConfigs,
        0,
        &ResponseKind::DescribeConfigs(resp),
    );
    let mut want = BytesMut::new();
    want.put_i32(0); // throttle time
    want.put_i32(1);
    want.put_i16(0);
    want.put_i16(-1); // null error message
    want.put_i8(2);
    string(&mut want, "t");
    want.put_i32(1);
    string(&mut want, "retention.ms");
    string(&mut want, "-1");
    want.put_u8(0); // read only
    want.put_u8(1); // is default
    want.put_u8(0); // sensitive
    assert_eq!(got, want.to_vec());
}

#[test]
fn offset_for_leader_epoch_v0_has_no_epochs_in_request_or_response() {
    let f = frame(ApiKey::OffsetForLeaderEpoch, 0, |b| {
        b.put_i32(1);
        string(b, "t");
        b.put_i32(1);
        b.put_i32(2); // partition
        b.put_i32(0); // leader epoch
    });
    let RequestKind::OffsetForLeaderEpoch(r) = decode_request(f).unwrap().body else {
        panic!("not an OffsetForLeaderEpoch")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.partition, p.current_leader_epoch, p.leader_epoch),
        (2, -1, 0)
    );

    let mut e = EpochEndOffset::default();
    e.partition = 2;
    e.leader_epoch = 0;
    e.end_offset = 17;
    let mut t = OffsetForLeaderTopicResult::default();
    t.topic = TopicName(StrBytes::from_static_str("t"));
    t.partitions = vec![e];
    let mut resp = OffsetForLeaderEpochResponse::default();
    resp.topics = vec![t];
    let got = response_body(
        ApiKey::OffsetForLeaderEpoch,
        0,
        &ResponseKind::OffsetForLeaderEpoch(resp),
    );
    let mut want = BytesMut::new();
    want.put_i32(1);
    string(&mut want, "t");
    want.put_i32(1);
    want.put_i16(0);
    want.put_i32(2);
    want.put_i64(17);
    assert_eq!(got, want.to_vec());
}

#[test]
fn produce_v0_to_v2_decode_and_answer_in_their_layout() {
    for version in 0..=2 {
        // acks, timeout, [topic, [partition, records]]: no transactional id before v3.
        let req = decode_request(frame(ApiKey::Produce, version, |b| {
            b.put_i16(-1);
            b.put_i32(1500);
            b.put_i32(1);
            string(b, "t");
            b.put_i32(1);
            b.put_i32(3);
            b.put_i32(4);
            b.put_slice(b"abcd");
        }))
        .unwrap();
        let RequestKind::Produce(r) = req.body else {
            panic!("not a produce")
        };
        assert_eq!((r.acks, r.timeout_ms, r.transactional_id), (-1, 1500, None));
        let p = &r.topic_data[0].partition_data[0];
        assert_eq!((p.index, p.records.as_deref()), (3, Some(&b"abcd"[..])));

        let mut resp = kafka_protocol::messages::ProduceResponse::default();
        let mut t = kafka_protocol::messages::produce_response::TopicProduceResponse::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        let mut pr =
            kafka_protocol::messages::produce_response::PartitionProduceResponse::default();
        pr.index = 3;
        pr.base_offset = 7;
        pr.log_append_time_ms = -1;
        pr.log_start_offset = 0;
        t.partition_responses.push(pr);
        resp.responses.push(t);
        resp.throttle_time_ms = 0;
        let got = response_body(ApiKey::Produce, version, &ResponseKind::Produce(resp));
        let mut want = BytesMut::new();
        want.put_i32(1);
        string(&mut want, "t");
        want.put_i32(1);
        want.put_i32(3);
        want.put_i16(0);
        want.put_i64(7);
        if version >= 2 {
            want.put_i64(-1); // log_append_time_ms
        }
        if version >= 1 {
            want.put_i32(0); // throttle_time_ms
        }
        assert_eq!(got, want.to_vec(), "v{version}");
    }
}

#[test]
fn fetch_v0_to_v3_decode_and_answer_in_their_layout() {
    for version in 0..=3 {
        // replica, max wait, min bytes, [v3: max bytes], [topic, [partition, offset, max bytes]].
        let req = decode_request(frame(ApiKey::Fetch, version, |b| {
            b.put_i32(-1);
            b.put_i32(500);
            b.put_i32(1);
            if version == 3 {
                b.put_i32(1000);
            }
            b.put_i32(1);
            string(b, "t");
            b.put_i32(1);
            b.put_i32(2);
            b.put_i64(42);
            b.put_i32(4096);
        }))
        .unwrap();
        let RequestKind::Fetch(r) = req.body else {
            panic!("not a fetch")
        };
        let max = if version == 3 { 1000 } else { i32::MAX };
        assert_eq!(
            (r.max_wait_ms, r.min_bytes, r.max_bytes, r.isolation_level),
            (500, 1, max, 0)
        );
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.partition, p.fetch_offset, p.partition_max_bytes),
            (2, 42, 4096)
        );

        let mut resp = kafka_protocol::messages::FetchResponse::default();
        let mut t = kafka_protocol::messages::fetch_response::FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        let mut pd = kafka_protocol::messages::fetch_response::PartitionData::default();
        pd.partition_index = 2;
        pd.high_watermark = 50;
        pd.last_stable_offset = 50;
        pd.records = Some(Bytes::from_static(b"set"));
        t.partitions.push(pd);
        resp.responses.push(t);
        let got = response_body(ApiKey::Fetch, version, &ResponseKind::Fetch(resp));
        let mut want = BytesMut::new();
        if version >= 1 {
            want.put_i32(0); // throttle_time_ms
        }
        want.put_i32(1);
        string(&mut want, "t");
        want.put_i32(1);
        want.put_i32(2);
        want.put_i16(0);
        want.put_i64(50);
        want.put_i32(3);
        want.put_slice(b"set");
        assert_eq!(got, want.to_vec(), "v{version}");
    }
}

#[test]
fn describe_log_dirs_v0_is_v1() {
    let req = decode_request(frame(ApiKey::DescribeLogDirs, 0, |b| {
        b.put_i32(-1); // null: every topic
    }))
    .unwrap();
    let RequestKind::DescribeLogDirs(r) = req.body else {
        panic!("not DescribeLogDirs")
    };
    assert!(r.topics.is_none());
}
