//! The log through the Kafka API, with brokers in this process: produce and fetch
//! across shards, a new broker recovering from the store, the flush tick and
//! retention driven by a manual clock, time-based offsets, fetches cancelled by
//! their client.

mod support;

use std::time::Duration;

use kafscale_broker::clock::ManualClock;
use kafscale_codec::batch::build_batch;
use support::{
    fetch_request, fetched, list_offset, on_manual_clock, produce, produce_results, wait_for,
    Client, Setup, TestBroker, START_MS,
};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const MINUTE: Duration = Duration::from_secs(60);

/// Moves the clock to `START_MS + at`.
fn advance_to(clock: &ManualClock, at: Duration) {
    let now = clock.elapsed();
    assert!(at >= now, "the clock is already past {at:?}");
    clock.advance(at - now);
}

/// Appends one batch (`acks=1`) with record timestamp `ts` and moves the clock
/// in flush intervals (10 ms) until it is durable; returns its offset. (The
/// flush tick re-arms on its shard after each step, so a step taken before it
/// did is simply followed by another.)
fn append_durable(
    c: &mut Client,
    clock: &ManualClock,
    topic: &str,
    partition: i32,
    ts: i64,
) -> i64 {
    let r = c.call(
        &produce(topic, 1, vec![(partition, build_batch(0, ts, &[b"v"]))]),
        8,
    );
    let [(_, 0, offset)] = produce_results(&r)[..] else {
        panic!("produce failed: {:?}", produce_results(&r));
    };
    wait_for("the batch to become durable", || {
        clock.advance(Duration::from_millis(10));
        list_offset(c, topic, partition, -1).1 > offset
    });
    offset
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
fn the_flush_tick_follows_the_clock_and_makes_acks1_data_readable() {
    // acks=1 is answered before the data is durable; only the flush tick (every
    // 10 ms of the broker's clock, aligned to wall-clock multiples) seals and
    // uploads it, and only then may consumers see it.
    let (b, clock) = on_manual_clock(2, &[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("ticked", 1), 0);
    let sent = build_batch(0, START_MS, &[b"once", b"more"]);
    let r = c.call(&produce("ticked", 1, vec![(0, sent.clone())]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);

    // Ten intervals of real time, and then 9 ms of the clock: no tick yet, so
    // nothing is readable below the high watermark.
    std::thread::sleep(Duration::from_millis(100));
    clock.advance(Duration::from_millis(9));
    for _ in 0..3 {
        let f = fetched(&c.call(&fetch_request("ticked", 0, 0, 0), 11));
        assert_eq!((f.error, f.high_watermark, f.records.len()), (0, 0, 0));
        assert_eq!(list_offset(&mut c, "ticked", 0, -1).1, 0);
    }

    // The tick is due: the batch is sealed, uploaded and readable.
    clock.advance(Duration::from_millis(1));
    wait_for("the high watermark to pass the batch", || {
        list_offset(&mut c, "ticked", 0, -1).1 == 2
    });
    let f = fetched(&c.call(&fetch_request("ticked", 0, 0, 0), 11));
    assert_eq!((f.error, f.high_watermark, f.log_start), (0, 2, 0));
    assert_eq!(f.batches(), vec![(0, 1)]);
    // Stored as sent, but for the base offset the broker assigned (bytes 0..8).
    assert_eq!(&f.records[8..], &sent[8..]);
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
fn retention_by_time_follows_the_clock() {
    // One shard, so one retention pass visits partition 0, then partition 1.
    let (b, clock) = on_manual_clock(1, &["--retention-check-interval-ms", "60000"]);
    let mut c = b.client();
    assert_eq!(
        c.create_topic_with("aging", 2, &[("retention.ms", "3600000")]),
        0
    );
    let hour = 3_600_000;
    // Partition 0: segment A written at the start, B and C half an hour later
    // (each batch is stamped with the clock's wall time when it is produced).
    let a = append_durable(&mut c, &clock, "aging", 0, clock.wall_ms());
    advance_to(&clock, 30 * MINUTE);
    let b_ts = clock.wall_ms();
    let bo = append_durable(&mut c, &clock, "aging", 0, b_ts);
    let co = append_durable(&mut c, &clock, "aging", 0, clock.wall_ms());
    assert_eq!((a, bo, co), (0, 1, 2));
    // Partition 1, a witness: two segments stamped 2 minutes before the start,
    // so they are older than retention.ms from minute 58 on, and not before.
    append_durable(&mut c, &clock, "aging", 1, START_MS - 2 * 60_000);
    append_durable(&mut c, &clock, "aging", 1, START_MS - 2 * 60_000);
    assert_eq!(list_offset(&mut c, "aging", 1, -2).1, 0);

    // Minute 59: the pass that runs now deletes the witness's older segment, so
    // it has visited partition 0 too, where A is 59 minutes old: kept.
    advance_to(&clock, 59 * MINUTE);
    wait_for("a retention pass at minute 59", || {
        list_offset(&mut c, "aging", 1, -2).1 == 1
    });
    assert_eq!(list_offset(&mut c, "aging", 0, -2), (0, 0, -1));
    let f = fetched(&c.call(&fetch_request("aging", 0, 0, 0), 11));
    assert_eq!((f.error, f.log_start), (0, 0));
    assert_eq!(f.batches(), vec![(0, 0)]);

    // Minute 61: A is older than an hour and goes; B (30 minutes old) stays.
    advance_to(&clock, 61 * MINUTE);
    wait_for("A to be deleted", || {
        list_offset(&mut c, "aging", 0, -2).1 == 1
    });
    let f = fetched(&c.call(&fetch_request("aging", 0, 0, 0), 11));
    assert_eq!((f.error, f.log_start), (OFFSET_OUT_OF_RANGE, 1));
    let f = fetched(&c.call(&fetch_request("aging", 0, 1, 0), 11));
    assert_eq!((f.error, f.log_start, f.high_watermark), (0, 1, 3));
    assert_eq!(f.batches()[0], (1, 1));
    assert_eq!(list_offset(&mut c, "aging", 0, -1).1, 3);

    // An hour and a minute after B: B goes too; C, the newest, always stays.
    let b_at = Duration::from_millis((b_ts - START_MS) as u64);
    advance_to(&clock, b_at + Duration::from_millis(hour as u64) + MINUTE);
    wait_for("B to be deleted", || {
        list_offset(&mut c, "aging", 0, -2).1 == 2
    });
    let f = fetched(&c.call(&fetch_request("aging", 0, 2, 0), 11));
    assert_eq!((f.error, f.log_start), (0, 2));
    assert_eq!(f.batches(), vec![(2, 2)]);
}

#[test]
fn a_long_poll_cancelled_by_its_client_leaves_the_partition_serving() {
    let (b, clock) = on_manual_clock(1, &[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("polled", 1), 0);
    let open = |b: &TestBroker| b.metric("kafscale_open_connections");
    // A fetch at the high watermark waits up to max_wait_ms of the broker's
    // clock, which stands still: only its client closing ends it.
    let mut gone = b.client();
    gone.send(&fetch_request("polled", 0, 0, 60_000), 11);
    wait_for("the broker to see both connections", || open(&b) == 2.0);
    drop(gone);
    wait_for("the broker to cancel the fetch and close", || {
        open(&b) == 1.0
    });

    // The same wait on a new connection is woken by the data.
    let mut polling = b.client();
    let corr = polling.send(&fetch_request("polled", 0, 0, 60_000), 11);
    let offset = append_durable(&mut c, &clock, "polled", 0, START_MS);
    assert!(
        clock.elapsed() < Duration::from_secs(60),
        "answered before max_wait"
    );
    let f = fetched(&polling.recv::<kafka_protocol::messages::FetchRequest>(corr, 11));
    assert_eq!((f.error, f.high_watermark), (0, 1));
    assert_eq!(f.batches(), vec![(offset, offset)]);
}

#[test]
fn a_segment_read_cancelled_with_its_fetch_is_read_again_by_the_next() {
    // One shard: the fetch reads the segment inside its own request, so closing
    // the connection drops the reader that owns the GET (`ReadInFlight`).
    let b = TestBroker::start(Setup {
        shards: 1,
        ..Setup::default()
    });
    let mut c = b.client();
    assert_eq!(c.create_topic("cold", 1), 0);
    let sent = build_batch(0, 7, &[b"from", b"the", b"store"]);
    let r = c.call(&produce("cold", -1, vec![(0, sent.clone())]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);
    drop(c);
    // A new broker: nothing cached. Loading the partition reads its footer.
    let b = b.restart(1);
    let mut c = b.client();
    assert_eq!(list_offset(&mut c, "cold", 0, -1).1, 3);
    let gets = |b: &TestBroker| b.metric("kafscale_object_store_requests_total{operation=\"get\"}");
    let open = |b: &TestBroker| b.metric("kafscale_open_connections");
    let g0 = gets(&b);

    b.faults.lock().unwrap().get = kafscale_segstore::ReadFault::Slow(Duration::from_secs(2));
    let mut owner = b.client();
    owner.send(&fetch_request("cold", 0, 0, 0), 11);
    wait_for("the first fetch's GET to start", || gets(&b) == g0 + 1.0);
    // A second reader of the same segment (it waits on that GET, or starts its
    // own if it comes after the cancellation).
    let mut waiter = b.client();
    let corr = waiter.send(&fetch_request("cold", 0, 0, 0), 11);
    wait_for("the broker to see three connections", || open(&b) == 3.0);
    drop(owner);
    wait_for("the broker to cancel the first fetch and close", || {
        open(&b) == 2.0
    });

    // The waiter reads the segment with a GET of its own: the cancelled one's
    // answer is never used.
    let f = fetched(&waiter.recv::<kafka_protocol::messages::FetchRequest>(corr, 11));
    assert_eq!((f.error, f.high_watermark), (0, 3));
    assert_eq!(&f.records[8..], &sent[8..]);
    assert_eq!(gets(&b), g0 + 2.0);
    // And a fetch after it all is served (from the cache the second GET filled).
    b.faults.lock().unwrap().get = kafscale_segstore::ReadFault::None;
    let f = fetched(&c.call(&fetch_request("cold", 0, 0, 0), 11));
    assert_eq!(f.batches(), vec![(0, 2)]);
    assert_eq!(&f.records[8..], &sent[8..]);
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
