//! A consumer group through the Kafka API with a broker in this process: join,
//! sync, commit, a second member causing a rebalance, committed offsets
//! surviving a restart, and a member's session expiring on the broker's clock.

mod support;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;

use kafscale_broker::clock::ManualClock;
use support::{topic_name, wait_for, Client, Setup, TestBroker};

const REBALANCE_IN_PROGRESS: i16 = 27;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(c: &mut Client, member: &str) -> JoinGroupResponse {
    join_with(c, member, 30_000)
}

fn join_with(c: &mut Client, member: &str, session_timeout_ms: i32) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(session_timeout_ms)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))]);
    c.call(&req, 3)
}

fn sync(
    c: &mut Client,
    generation: i32,
    member: &str,
    assignments: &[(&str, &str)],
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from(a.as_bytes().to_vec()))
                })
                .collect(),
        );
    c.call(&req, 2)
}

fn heartbeat(c: &mut Client, generation: i32, member: &str) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member));
    c.call(&req, 2).error_code
}

/// The group's state and its members' ids (sorted).
fn describe(c: &mut Client) -> (String, Vec<String>) {
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]);
    let r = c.call(&req, 5);
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0);
    let mut members: Vec<String> = g.members.iter().map(|m| m.member_id.to_string()).collect();
    members.sort();
    (g.group_state.to_string(), members)
}

fn committed(c: &mut Client) -> (i64, Option<String>) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name("events"))
            .with_partition_indexes(vec![0])]));
    let r = c.call(&req, 5);
    assert_eq!(r.error_code, 0);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        p.committed_offset,
        p.metadata.as_ref().map(|m| m.to_string()),
    )
}

#[test]
fn join_sync_commit_rebalance_and_restart() {
    let b = TestBroker::start(Setup {
        args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        ..Setup::default()
    });
    let mut a = b.client();
    assert_eq!(a.create_topic("events", 2), 0);

    let j = join(&mut a, "");
    assert_eq!(j.error_code, 0);
    let me = j.member_id.to_string();
    assert_eq!(j.leader.to_string(), me, "the only member leads");
    assert_eq!(j.members.len(), 1);
    let gen1 = j.generation_id;
    let sy = sync(&mut a, gen1, &me, &[(&me, "assign-a")]);
    assert_eq!((sy.error_code, &sy.assignment[..]), (0, &b"assign-a"[..]));

    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(gen1)
        .with_member_id(s(&me))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name("events"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("m")))])]);
    let r = a.call(&commit, 5);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(committed(&mut a), (42, Some("m".into())));

    // A second member joins: its JoinGroup waits until the first one rejoins,
    // which it learns from its heartbeat.
    let addr = b.addr();
    let second = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let j = join(&mut c, "");
        (c, j)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while heartbeat(&mut a, gen1, &me) != REBALANCE_IN_PROGRESS {
        assert!(
            std::time::Instant::now() < deadline,
            "no rebalance announced"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let j = join(&mut a, &me);
    let (mut c2, j2) = second.join().unwrap();
    assert_eq!((j.error_code, j2.error_code), (0, 0));
    let gen2 = j.generation_id;
    assert_eq!(gen2, gen1 + 1);
    assert_eq!(j2.generation_id, gen2);
    assert_eq!(j.leader.to_string(), me, "the leader stays");
    assert_eq!(j.members.len(), 2, "the leader sees both members");
    assert!(j2.members.is_empty(), "followers get no member list");
    let other = j2.member_id.to_string();
    assert_ne!(other, me);

    let follower = std::thread::spawn(move || {
        let r = sync(&mut c2, gen2, &other, &[]);
        (r.error_code, r.assignment.to_vec())
    });
    let sy = sync(
        &mut a,
        gen2,
        &me,
        &[(&me, "a-2"), (j2.member_id.as_str(), "b-2")],
    );
    assert_eq!((sy.error_code, &sy.assignment[..]), (0, &b"a-2"[..]));
    assert_eq!(follower.join().unwrap(), (0, b"b-2".to_vec()));
    // The old generation is gone.
    assert_eq!(heartbeat(&mut a, gen1, &me), 22, "ILLEGAL_GENERATION");
    assert_eq!(heartbeat(&mut a, gen2, &me), 0);

    // Committed offsets are durable: a new broker on the same data has them.
    drop(a);
    let b = b.restart(3);
    let mut c = b.client();
    assert_eq!(committed(&mut c), (42, Some("m".into())));
}

#[test]
fn a_silent_member_expires_when_the_clock_passes_its_session_timeout() {
    // Two minutes of session: longer than any wait here, so only the broker's
    // (manual) clock can end it.
    const SESSION_MS: i32 = 120_000;
    let clock = ManualClock::new(2_000_000_000_000);
    let b = TestBroker::start(Setup {
        args: vec!["--group-initial-rebalance-delay-ms".into(), "0".into()],
        clock: Some(clock.clone()),
        ..Setup::default()
    });
    let mut a = b.client();
    let j = join_with(&mut a, "", SESSION_MS);
    assert_eq!(j.error_code, 0);
    let me = j.member_id.to_string();
    let gen1 = j.generation_id;
    assert_eq!(sync(&mut a, gen1, &me, &[(&me, "a-1")]).error_code, 0);

    // A second member joins; the first rejoins when its heartbeat says so.
    let addr = b.addr();
    let second = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let j = join_with(&mut c, "", SESSION_MS);
        (c, j)
    });
    wait_for("the rebalance to be announced", || {
        heartbeat(&mut a, gen1, &me) == REBALANCE_IN_PROGRESS
    });
    let j = join_with(&mut a, &me, SESSION_MS);
    let (mut c2, j2) = second.join().unwrap();
    assert_eq!((j.error_code, j2.error_code), (0, 0));
    let gen2 = j.generation_id;
    let other = j2.member_id.to_string();
    let follower = std::thread::spawn(move || {
        let r = sync(&mut c2, gen2, &other, &[]);
        (c2, r.error_code)
    });
    let sy = sync(
        &mut a,
        gen2,
        &me,
        &[(&me, "a-2"), (j2.member_id.as_str(), "b-2")],
    );
    assert_eq!(sy.error_code, 0);
    let (c2, code) = follower.join().unwrap();
    assert_eq!(code, 0);
    let both = {
        let mut v = vec![me.clone(), j2.member_id.to_string()];
        v.sort();
        v
    };
    assert_eq!(describe(&mut a), ("Stable".to_string(), both.clone()));

    // The first member heartbeats, the second stays silent (its connection open).
    // Just short of the second one's session nothing has expired.
    clock.advance(Duration::from_secs(100));
    assert_eq!(heartbeat(&mut a, gen2, &me), 0);
    clock.advance(Duration::from_secs(19));
    assert_eq!(heartbeat(&mut a, gen2, &me), 0);
    assert_eq!(describe(&mut a), ("Stable".to_string(), both));

    // Past it: the broker's session timer removes the silent member, and the
    // group rebalances without it.
    clock.advance(Duration::from_secs(2));
    wait_for("the silent member to expire", || {
        describe(&mut a) == ("PreparingRebalance".to_string(), vec![me.clone()])
    });
    assert_eq!(heartbeat(&mut a, gen2, &me), REBALANCE_IN_PROGRESS);
    let j = join_with(&mut a, &me, SESSION_MS);
    assert_eq!(j.error_code, 0);
    assert_eq!(j.generation_id, gen2 + 1);
    assert_eq!(j.leader.to_string(), me);
    assert_eq!(
        j.members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect::<Vec<_>>(),
        vec![me.clone()]
    );
    drop(c2);
}
