//! What one connection sends to a partition is stored in that order, and a topic
//! the broker confirmed is never answered with a retriable error (issue 12).
//! Each test pipelines produce requests on one connection while the store or the
//! spread of a new snapshot is slowed, then reads the partitions back and checks
//! that the batches' timestamps (the request number) follow the offsets.

mod support;

use std::time::Duration;

use kafscale_codec::batch::build_batch;
use kafscale_segstore::ReadFault;
use support::{owner_shard, produce, produce_results, Setup, TestBroker};

/// A batch whose timestamp is the request number, so stored order can be checked.
fn batch(n: i64) -> Vec<u8> {
    build_batch(0, n, &[format!("req-{n}").as_bytes()])
}

/// Base timestamps of a partition's batches in offset order.
fn stored_order(b: &TestBroker, topic: &str, partition: i32) -> Vec<i64> {
    let mut c = b.client();
    c.fetch_all(topic, partition)
        .iter()
        .map(|h| h.base_timestamp)
        .collect()
}

/// Two partitions of `topic` owned by the same shard.
fn same_owner(topic: &str, shards: usize) -> (i32, i32) {
    for a in 0..64 {
        for b in (a + 1)..64 {
            if owner_shard(topic, a, shards) == owner_shard(topic, b, shards) {
                return (a, b);
            }
        }
    }
    unreachable!("64 partitions on {shards} shards share an owner")
}

#[test]
fn pipelined_requests_keep_their_order_while_a_partition_loads() {
    let shards = 2;
    let b = TestBroker::start(Setup {
        shards,
        ..Setup::default()
    });
    let topic = "ordered";
    let (existing, fresh) = same_owner(topic, shards);
    let mut c = b.client();
    assert_eq!(c.create_topic(topic, 64), 0);
    // Load one partition, then make loading the next one slow.
    let r = c.call(&produce(topic, -1, vec![(existing, batch(0))]), 8);
    assert_eq!(produce_results(&r), vec![(existing, 0, 0)]);
    b.faults.lock().unwrap().list = ReadFault::Slow(Duration::from_millis(400));
    // Request 1 writes the fresh partition (which must load) and the existing one;
    // requests 2..=30 write only the existing one and need no wait.
    let mut sent = Vec::new();
    sent.push(c.send(
        &produce(topic, -1, vec![(fresh, batch(1)), (existing, batch(1))]),
        8,
    ));
    for n in 2..=30 {
        sent.push(c.send(&produce(topic, -1, vec![(existing, batch(n))]), 8));
    }
    let mut offsets = Vec::new();
    for corr in sent {
        let r = c.recv::<kafka_protocol::messages::ProduceRequest>(corr, 8);
        for (p, code, base) in produce_results(&r) {
            assert_eq!(code, 0, "partition {p} answered error {code}");
            if p == existing {
                offsets.push(base);
            }
        }
    }
    assert_eq!(
        offsets,
        (1..=30).collect::<Vec<i64>>(),
        "offsets in request order"
    );
    b.faults.lock().unwrap().list = ReadFault::None;
    assert_eq!(
        stored_order(&b, topic, existing),
        (0..=30).collect::<Vec<i64>>()
    );
    assert_eq!(stored_order(&b, topic, fresh), vec![1]);
}

#[test]
fn owner_waits_for_a_snapshot_the_client_was_shown() {
    // Shard 1 installs new snapshots late, as a busy core would. A client whose
    // connection is on another shard sees the new topic in Metadata and writes
    // to it at once; the partitions shard 1 owns must accept those writes.
    let shards = 3;
    let slow = 1;
    let b = TestBroker::start(Setup {
        shards,
        snapshot_delay: Some((slow, Duration::from_millis(1500))),
        args: vec!["--auto-create-topics".into(), "false".into()],
        ..Setup::default()
    });
    let topic = "spread";
    let partitions = 6;
    let on_slow: Vec<i32> = (0..partitions)
        .filter(|&p| owner_shard(topic, p, shards) == slow)
        .collect();
    assert!(
        !on_slow.is_empty(),
        "some partition lives on the slow shard"
    );
    let addr = b.addr();
    let creator = std::thread::spawn(move || {
        let mut c = support::Client::connect(addr);
        c.create_topic(topic, partitions)
    });
    // Find a connection whose shard already shows the topic.
    let mut c = loop {
        let mut c = b.client();
        let m = c.metadata(&[topic]);
        if m.topics.first().is_some_and(|t| t.error_code == 0) {
            break c;
        }
        assert!(
            !creator.is_finished(),
            "the topic appeared only after every shard had it"
        );
    };
    let sent: Vec<i32> = (0..5)
        .map(|n| {
            c.send(
                &produce(topic, -1, (0..partitions).map(|p| (p, batch(n))).collect()),
                8,
            )
        })
        .collect();
    for corr in sent {
        let r = c.recv::<kafka_protocol::messages::ProduceRequest>(corr, 8);
        for (p, code, _) in produce_results(&r) {
            assert_eq!(
                code,
                0,
                "partition {p} (slow shard: {}) answered error {code}",
                on_slow.contains(&p)
            );
        }
    }
    assert_eq!(creator.join().unwrap(), 0);
    for p in 0..partitions {
        assert_eq!(
            stored_order(&b, topic, p),
            (0..5).collect::<Vec<i64>>(),
            "partition {p}"
        );
    }
}

#[test]
fn a_load_that_fails_for_a_while_is_retried_not_answered() {
    let b = TestBroker::start(Setup::default());
    let mut c = b.client();
    assert_eq!(c.create_topic("flaky", 2), 0);
    b.faults.lock().unwrap().list = ReadFault::Fail;
    let faults = b.faults.clone();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        faults.lock().unwrap().list = ReadFault::None;
    });
    let sent: Vec<i32> = (0..10)
        .map(|n| c.send(&produce("flaky", -1, vec![(0, batch(n)), (1, batch(n))]), 8))
        .collect();
    for corr in sent {
        let r = c.recv::<kafka_protocol::messages::ProduceRequest>(corr, 8);
        for (p, code, _) in produce_results(&r) {
            assert_eq!(code, 0, "partition {p} answered error {code}");
        }
    }
    healer.join().unwrap();
    for p in 0..2 {
        assert_eq!(stored_order(&b, "flaky", p), (0..10).collect::<Vec<i64>>());
    }
}
