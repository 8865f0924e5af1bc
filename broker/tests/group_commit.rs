//! Group commit through the Kafka API, with brokers in this process on a manual
//! clock that stands still: `acks=-1` data is made durable without a flush tick,
//! what arrives during an upload goes into the next object, and the minimum
//! interval holds a partition's next seal until the clock reaches it.

mod support;

use std::time::Duration;

use kafka_protocol::messages::ProduceRequest;
use kafscale_codec::batch::build_batch;
use kafscale_segstore::Fault;
use support::{
    list_offset, on_manual_clock, produce, produce_results, wait_for, Client, TestBroker, START_MS,
};

/// The `.kfs` objects the store holds for `topic`.
fn segments_of(b: &TestBroker, topic: &str) -> usize {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(format!("default/{topic}"));
    futures::executor::block_on(b.store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .expect("the store lists")
        .iter()
        .filter(|o| o.location.as_ref().ends_with(".kfs"))
        .count()
}

/// A batch of one record whose value names it.
fn batch(value: &str) -> Vec<u8> {
    build_batch(0, START_MS, &[value.as_bytes()])
}

fn log_end(b: &TestBroker, topic: &str, partition: i32) -> f64 {
    b.metric(&format!(
        "kafscale_partition_log_end_offset{{topic=\"{topic}\",partition=\"{partition}\"}}"
    ))
}

/// Asserts that the partition holds exactly `sent`, in this order, from offset 0
/// (each stored as sent but for its base offset, bytes 0..8).
fn assert_log(c: &mut Client, topic: &str, partition: i32, sent: &[Vec<u8>]) {
    let stored = c.fetch_batches(topic, partition);
    assert_eq!(stored.len(), sent.len(), "{topic}/{partition}: batch count");
    for (i, ((h, bytes), want)) in stored.iter().zip(sent).enumerate() {
        assert_eq!(
            h.base_offset, i as i64,
            "{topic}/{partition}: offset of batch {i}"
        );
        assert_eq!(&bytes[8..], &want[8..], "{topic}/{partition}: batch {i}");
    }
}

#[test]
fn acks_all_is_answered_without_a_flush_tick() {
    // The clock never moves, so the flush tick never fires: every answer comes
    // from group commit.
    let (b, clock) = on_manual_clock(2, &[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("eager", 3), 0);
    let mut sent = vec![Vec::new(); 3];
    for round in 0..20 {
        let parts: Vec<_> = (0..3)
            .map(|p| (p, batch(&format!("round {round} partition {p}"))))
            .collect();
        for (p, b) in &parts {
            sent[*p as usize].push(b.clone());
        }
        let r = c.call(&produce("eager", -1, parts), 8);
        assert_eq!(
            produce_results(&r),
            (0..3).map(|p| (p, 0, round)).collect::<Vec<_>>()
        );
    }
    assert_eq!(clock.elapsed(), Duration::ZERO);
    for (p, sent) in sent.iter().enumerate() {
        assert_log(&mut c, "eager", p as i32, sent);
        assert_eq!(list_offset(&mut c, "eager", p as i32, -1).1, 20);
    }
    // Each request waited for its answer before the next was sent: one object each.
    assert_eq!(segments_of(&b, "eager"), 60);
}

#[test]
fn what_arrives_during_an_upload_goes_into_the_next_object() {
    let (b, clock) = on_manual_clock(1, &[]);
    let mut admin = b.client();
    assert_eq!(admin.create_topic("grouped", 1), 0);
    let acks_all = |value: &str| -> (ProduceRequest, Vec<u8>) {
        let bytes = batch(value);
        (produce("grouped", -1, vec![(0, bytes.clone())]), bytes)
    };
    // The first request's object is held in the store's PUT.
    b.faults.lock().expect("faults").put = Fault::PutHang;
    let mut first = b.client();
    let (req, first_batch) = acks_all("first");
    let first_corr = first.send(&req, 8);
    wait_for("the first upload to start", || {
        b.metric("kafscale_uploads_in_flight{shard=\"0\"}") == 1.0
    });
    // Meanwhile three connections pipeline ten requests each.
    let mut clients: Vec<Client> = (0..3).map(|_| b.client()).collect();
    let mut sent: Vec<Vec<(i32, Vec<u8>)>> = vec![Vec::new(); 3];
    for i in 0..10 {
        for (n, c) in clients.iter_mut().enumerate() {
            let (req, bytes) = acks_all(&format!("connection {n} request {i}"));
            sent[n].push((c.send(&req, 8), bytes));
        }
    }
    wait_for("all 31 batches to be appended", || {
        log_end(&b, "grouped", 0) == 31.0
    });
    assert_eq!(
        list_offset(&mut admin, "grouped", 0, -1).1,
        0,
        "nothing durable yet"
    );
    b.faults.lock().expect("faults").put = Fault::None;

    let r = first.recv::<ProduceRequest>(first_corr, 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);
    let mut by_offset = vec![Vec::new(); 31];
    by_offset[0] = first_batch;
    for (c, sent) in clients.iter_mut().zip(&sent) {
        let mut previous = 0;
        for (corr, bytes) in sent {
            let r = c.recv::<ProduceRequest>(*corr, 8);
            let [(0, 0, offset)] = produce_results(&r)[..] else {
                panic!("produce failed: {:?}", produce_results(&r));
            };
            // One connection's requests are stored in the order it sent them.
            assert!(offset > previous, "offset {offset} after {previous}");
            previous = offset;
            by_offset[offset as usize] = bytes.clone();
        }
    }
    assert_log(&mut admin, "grouped", 0, &by_offset);
    // The first request's object, then one object for all thirty that waited.
    assert_eq!(segments_of(&b, "grouped"), 2);
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[test]
fn the_minimum_interval_holds_the_next_seal() {
    // The test broker's flush interval (the upper bound) is 10 ms.
    let (b, clock) = on_manual_clock(1, &["--flush-min-interval-ms", "10"]);
    let mut c = b.client();
    assert_eq!(c.create_topic("paced", 1), 0);
    // A partition that sealed nothing yet goes at once.
    let one = batch("one");
    let r = c.call(&produce("paced", -1, vec![(0, one.clone())]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);

    let mut waiting = b.client();
    let two = batch("two");
    let corr = waiting.send(&produce("paced", -1, vec![(0, two.clone())]), 8);
    wait_for("the second batch to be appended", || {
        log_end(&b, "paced", 0) == 2.0
    });
    assert_eq!(
        list_offset(&mut c, "paced", 0, -1).1,
        1,
        "held by the interval"
    );
    clock.advance(Duration::from_millis(10));
    let r = waiting.recv::<ProduceRequest>(corr, 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 1)]);
    assert_log(&mut c, "paced", 0, &[one, two]);
    assert_eq!(segments_of(&b, "paced"), 2);
}

#[test]
fn acks_1_data_still_waits_for_the_tick() {
    let (b, clock) = on_manual_clock(1, &[]);
    let mut c = b.client();
    assert_eq!(c.create_topic("lazy", 1), 0);
    let r = c.call(&produce("lazy", 1, vec![(0, batch("a"))]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 0)]);
    // An acks=all request behind it takes the acks=1 data along.
    let r = c.call(&produce("lazy", -1, vec![(0, batch("b"))]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 1)]);
    assert_eq!(segments_of(&b, "lazy"), 1);
    let r = c.call(&produce("lazy", 1, vec![(0, batch("c"))]), 8);
    assert_eq!(produce_results(&r), vec![(0, 0, 2)]);
    assert_eq!(
        list_offset(&mut c, "lazy", 0, -1).1,
        2,
        "nobody waits for it"
    );
    wait_for("the tick to make it durable", || {
        clock.advance(Duration::from_millis(10));
        list_offset(&mut c, "lazy", 0, -1).1 == 3
    });
    assert_eq!(segments_of(&b, "lazy"), 2);
}
