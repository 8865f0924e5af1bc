//! The log through the Kafka API, with brokers in this process: produce and fetch
//! across shards, a new broker recovering from the store, the flush tick, time-
//! based offsets, retention.

mod support;

use std::time::{Duration, Instant};

use kafscale_codec::batch::build_batch;
use support::{list_offset, produce, produce_results, Setup, TestBroker};

/// Polls `cond` until it holds: a bounded wait for a state, never a result.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn produce_and_fetch_across_shards_and_connections() {
    let b = TestBroker::start(Setup {
        shards: 3,
        ..Setup::default()
    });
    let mut admin = b.client();
    assert_eq!(admin.create_topic("spread", 6), 0);
    // Several connections (the kernel spreads them over the shards), each
    // writing every partition; values say who wrote what.
    let mut clients: Vec<_> = (0..4).map(|_| b.client()).collect();
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 6];
    for round in 0..5 {
        for (c, client) in clients.iter_mut().enumerate() {
            let parts: Vec<(i32, Vec<u8>)> = (0..6)
                .map(|p| {
                    let v = format!("c{c}-r{round}-p{p}").into_bytes();
                    (p, build_batch(0, 1000 + round, &[&v]))
                })
                .collect();
            let r = client.call(&produce("spread", -1, parts.clone()), 8);
            for (p, code, base) in produce_results(&r) {
                assert_eq!(code, 0);
                assert_eq!(base as usize, expected[p as usize].len());
                expected[p as usize].push(parts[p as usize].1.clone());
            }
        }
    }
    for p in 0..6 {
        let got = admin.fetch_batches("spread", p);
        assert_eq!(got.len(), 20, "partition {p}");
        for (i, (h, bytes)) in got.iter().enumerate() {
            assert_eq!(h.base_offset, i as i64);
            // Stored as sent, but for the base offset the broker assigned (bytes 0..8).
            assert_eq!(
                &bytes[8..],
                &expected[p as usize][i][8..],
                "partition {p} batch {i}"
            );
        }
    }
}

#[test]
fn a_new_broker_recovers_every_acknowledged_batch_from_the_store() {
    let b = TestBroker::start(Setup::default());
    let mut c = b.client();
    assert_eq!(c.create_topic("kept", 3), 0);
    for n in 0..10 {
        let r = c.call(
            &produce(
                "kept",
                -1,
                (0..3)
                    .map(|p| (p, build_batch(0, n, &[b"x", b"y"])))
                    .collect(),
            ),
            8,
        );
        assert!(produce_results(&r)
            .iter()
            .all(|&(_, code, base)| code == 0 && base == n * 2));
    }
    drop(c);
    // A different shard count moves partitions between shards: state comes from
    // the store, not from memory.
    let b = b.restart(3);
    let mut c = b.client();
    for p in 0..3 {
        let got = c.fetch_all("kept", p);
        assert_eq!(
            got.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
            (0..10).map(|n| n * 2).collect::<Vec<_>>()
        );
        assert_eq!(list_offset(&mut c, "kept", p, -1), (0, 20, -1));
    }
    // Offsets go on after the recovered ones.
    let r = c.call(
        &produce("kept", -1, vec![(1, build_batch(0, 99, &[b"z"]))]),
        8,
    );
    assert_eq!(produce_results(&r), vec![(1, 0, 20)]);
}

#[test]
fn the_flush_tick_makes_acks1_data_readable() {
    // acks=1 is answered before the data is durable; only the flush tick (10 ms
    // here) seals and uploads it, and only then may consumers see it.
    let b = TestBroker::start(Setup::default());
    let mut c = b.client();
    assert_eq!(c.create_topic("ticked", 1), 0);
    let r = c.call(
        &produce("ticked", 1, vec![(0, build_batch(0, 5, &[b"once"]))]),
        8,
    );
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);
    wait_for("the high watermark to pass the batch", || {
        list_offset(&mut c, "ticked", 0, -1).1 == 1
    });
    assert_eq!(c.fetch_all("ticked", 0).len(), 1);
    let objects = futures::executor::block_on(async {
        use futures::TryStreamExt;
        b.store.list(None).try_collect::<Vec<_>>().await.unwrap()
    });
    assert!(objects.iter().any(|o| o
        .location
        .as_ref()
        .ends_with("segment-00000000000000000000.kfs")));
}

#[test]
fn offsets_for_times() {
    let b = TestBroker::start(Setup::default());
    let mut c = b.client();
    assert_eq!(c.create_topic("timed", 1), 0);
    for (n, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let r = c.call(
            &produce("timed", -1, vec![(0, build_batch(0, ts, &[b"a", b"b"]))]),
            8,
        );
        assert_eq!(produce_results(&r), vec![(0, 0, n as i64 * 2)]);
    }
    // The first record at or after the time (every record of a batch built
    // here carries the batch's timestamp).
    assert_eq!(list_offset(&mut c, "timed", 0, 1_500), (0, 2, 2_000));
    assert_eq!(list_offset(&mut c, "timed", 0, 3_000), (0, 4, 3_000));
    assert_eq!(list_offset(&mut c, "timed", 0, 999), (0, 0, 1_000));
    assert_eq!(list_offset(&mut c, "timed", 0, 3_001).1, -1);
    assert_eq!(list_offset(&mut c, "timed", 0, -2), (0, 0, -1));
    assert_eq!(list_offset(&mut c, "timed", 0, -1), (0, 6, -1));
    // The same after a restart, when the time bounds are read from the store.
    drop(c);
    let b = b.restart(2);
    let mut c = b.client();
    assert_eq!(list_offset(&mut c, "timed", 0, 1_500), (0, 2, 2_000));
}
