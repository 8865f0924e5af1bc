//! Log compaction (cleanup.policy=compact) with brokers in this process: the
//! newest record per key survives with offsets kept (gaps), fetches inside a
//! removed range get the next batch, tombstones go after delete.retention.ms,
//! min.compaction.lag.ms holds the cleaner back, idempotent producers keep
//! their last batch, a restart serves the same log, and the states a crash
//! in the middle of a cleaning leaves behind (new objects without a manifest,
//! replaced segments not deleted yet) are neither served nor kept.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use kafscale_broker::clock::ManualClock;
use kafscale_codec::batch::BatchHeader;
use kafscale_codec::records::{build_keyed_batch, records, KeyValue};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use support::{
    fetch_request, fetched, list_offset, on_manual_clock, produce, produce_results, wait_for,
    Client, Setup, TestBroker, START_MS,
};

/// (offset, key, value) of every record from offset 0 to the high watermark.
type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn rows(c: &mut Client, topic: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for (h, bytes) in c.fetch_batches(topic, 0) {
        for r in records(&bytes, &h).expect("uncompressed batches") {
            out.push((
                r.offset,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

fn row(offset: i64, key: &str, value: Option<&str>) -> Row {
    (
        offset,
        Some(key.as_bytes().to_vec()),
        value.map(|v| v.as_bytes().to_vec()),
    )
}

/// Appends one batch with `acks=-1` (its own segment: group commit seals it at
/// once); returns its base offset.
fn append(c: &mut Client, topic: &str, ts: i64, kvs: &[KeyValue<'_>]) -> i64 {
    let r = c.call(
        &produce(topic, -1, vec![(0, build_keyed_batch(0, ts, kvs))]),
        8,
    );
    let [(_, 0, offset)] = produce_results(&r)[..] else {
        panic!("produce failed: {:?}", produce_results(&r));
    };
    offset
}

/// Object names under the partition's prefix.
fn objects(store: &dyn ObjectStore, topic: &str) -> Vec<String> {
    let prefix = Path::from(format!("default/{topic}/0"));
    let mut names: Vec<String> =
        futures::executor::block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .expect("the store lists")
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
    names.sort();
    names
}

fn compacted(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.contains("-c")).collect()
}

const COMPACT: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("min.cleanable.dirty.ratio", "0.01"),
];

/// Five rounds over three keys (one segment each), then a newest segment the
/// cleaner leaves alone.
fn five_rounds(c: &mut Client, topic: &str) {
    for round in 0..5 {
        let vals: Vec<String> = (0..3).map(|k| format!("k{k}-r{round}")).collect();
        let kvs: Vec<KeyValue<'_>> = (0..3)
            .map(|k| (Some(KEYS[k].as_bytes()), Some(vals[k].as_bytes())))
            .collect();
        assert_eq!(append(c, topic, 1_000, &kvs), round * 3);
    }
    assert_eq!(
        append(c, topic, 1_000, &[(Some(b"k0"), Some(b"newest"))]),
        15
    );
}

const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn cleaned_rounds() -> Vec<Row> {
    vec![
        row(12, "k0", Some("k0-r4")),
        row(13, "k1", Some("k1-r4")),
        row(14, "k2", Some("k2-r4")),
        row(15, "k0", Some("newest")),
    ]
}

#[test]
fn the_newest_record_per_key_stays_with_its_offset_and_survives_a_restart() {
    let b = TestBroker::start(Setup {
        args: vec!["--log-cleaner-backoff-ms".into(), "20".into()],
        ..Setup::default()
    });
    let mut c = b.client();
    assert_eq!(c.create_topic_with("cmp", 1, COMPACT), 0);
    five_rounds(&mut c, "cmp");
    wait_for("the cleaner to rewrite the closed segments", || {
        rows(&mut c, "cmp") == cleaned_rounds()
    });
    // Offsets keep their gaps: the earliest is still 0 and the end 16; a fetch
    // inside the removed range gets the next batch, one at the start too.
    assert_eq!(list_offset(&mut c, "cmp", 0, -2).1, 0);
    assert_eq!(list_offset(&mut c, "cmp", 0, -1).1, 16);
    for at in [0, 3, 11, 12] {
        let f = fetched(&c.call(&fetch_request("cmp", 0, at, 0), 11));
        assert_eq!((f.error, f.log_start, f.high_watermark), (0, 0, 16));
        let first = BatchHeader::parse(&f.records).expect("a batch");
        let rs = records(&f.records, &first).expect("records");
        assert_eq!(rs[0].offset, 12, "fetch at {at}");
    }
    // The replaced segments are deleted once no reader uses them; the newest
    // stays plain.
    wait_for("the replaced segments to be deleted", || {
        let names = objects(b.store.as_ref(), "cmp");
        names.iter().filter(|n| n.ends_with(".kfs")).count() == 2 && compacted(&names).len() == 2
    });
    let names = objects(b.store.as_ref(), "cmp");
    assert!(names.contains(&"segment-00000000000000000015.kfs".to_string()));
    assert!(b.metric("kafscale_log_cleaner_runs_total") >= 1.0);
    assert!(b.metric("kafscale_log_cleaner_segments_rewritten_total") >= 5.0);
    // A restart serves the same log from the manifest and the objects.
    let b = b.restart(2);
    let mut c = b.client();
    assert_eq!(rows(&mut c, "cmp"), cleaned_rounds());
    assert_eq!(list_offset(&mut c, "cmp", 0, -2).1, 0);
    assert_eq!(list_offset(&mut c, "cmp", 0, -1).1, 16);
    // More rounds: the compacted range is cleaned again with the new ones.
    assert_eq!(
        append(&mut c, "cmp", 1_000, &[(Some(b"k1"), Some(b"later"))]),
        16
    );
    assert_eq!(
        append(&mut c, "cmp", 1_000, &[(Some(b"k9"), Some(b"last"))]),
        17
    );
    wait_for("the second cleaning", || {
        rows(&mut c, "cmp")
            == vec![
                row(14, "k2", Some("k2-r4")),
                row(15, "k0", Some("newest")),
                row(16, "k1", Some("later")),
                row(17, "k9", Some("last")),
            ]
    });
}

/// Moves the manual clock in small steps (the cleaner's backoff and the flush
/// tick are on it) until `cond` holds.
fn tick_until(clock: &ManualClock, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(what, || {
        clock.advance(Duration::from_millis(10));
        cond()
    });
}

#[test]
fn tombstones_go_after_delete_retention_and_the_lag_holds_the_cleaner_back() {
    let (b, clock) = on_manual_clock(2, &["--log-cleaner-backoff-ms", "10"]);
    let mut c = b.client();
    let cfg = [
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "60000"),
    ];
    assert_eq!(c.create_topic_with("tomb", 1, &cfg), 0);
    let now = START_MS;
    append(
        &mut c,
        "tomb",
        now,
        &[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"1"))],
    );
    append(&mut c, "tomb", now, &[(Some(b"a"), None)]);
    append(&mut c, "tomb", now, &[(Some(b"c"), Some(b"1"))]);
    // The first cleaning removes a's value and keeps its tombstone, marked
    // with the delete horizon (now + 60 s).
    tick_until(&clock, "the first cleaning", || {
        rows(&mut c, "tomb")
            == vec![
                row(1, "b", Some("1")),
                row(2, "a", None),
                row(3, "c", Some("1")),
            ]
    });
    let marked = c.fetch_batches("tomb", 0);
    let (h, bytes) = marked
        .iter()
        .find(|(h, _)| h.base_offset == 2)
        .expect("the tombstone's batch");
    assert_ne!(h.attributes & 0x40, 0, "delete horizon flag");
    let horizon = h.base_timestamp;
    assert!(
        (START_MS + 60_000..START_MS + 61_000).contains(&horizon),
        "{horizon}"
    );
    // The records' timestamps are what the producer sent.
    assert!(records(bytes, h)
        .expect("records")
        .iter()
        .all(|r| r.timestamp == now));
    // Before the horizon the tombstone stays, however many passes run.
    let to = Duration::from_millis((horizon - START_MS - 1) as u64);
    clock.advance(to.saturating_sub(clock.elapsed()));
    let runs = b.metric("kafscale_log_cleaner_runs_total");
    std::thread::sleep(Duration::from_millis(100));
    assert!(rows(&mut c, "tomb").contains(&row(2, "a", None)));
    assert_eq!(b.metric("kafscale_log_cleaner_runs_total"), runs);
    // After it, it goes: a consumer from the start sees no trace of `a`.
    clock.advance(Duration::from_millis(2));
    tick_until(&clock, "the tombstone's removal", || {
        rows(&mut c, "tomb") == vec![row(1, "b", Some("1")), row(3, "c", Some("1"))]
    });

    // min.compaction.lag.ms: records younger than the lag are not cleaned.
    let cfg = [
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "3600000"),
    ];
    assert_eq!(c.create_topic_with("lag", 1, &cfg), 0);
    let t = START_MS + clock.elapsed().as_millis() as i64;
    append(&mut c, "lag", t, &[(Some(b"x"), Some(b"1"))]);
    append(&mut c, "lag", t, &[(Some(b"x"), Some(b"2"))]);
    append(&mut c, "lag", t, &[(Some(b"y"), Some(b"1"))]);
    let runs = b.metric("kafscale_log_cleaner_runs_total");
    for _ in 0..20 {
        clock.advance(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rows(&mut c, "lag").len(), 3);
    assert_eq!(b.metric("kafscale_log_cleaner_runs_total"), runs);
    clock.advance(Duration::from_secs(3600));
    tick_until(&clock, "the cleaning after the lag", || {
        rows(&mut c, "lag") == vec![row(1, "x", Some("2")), row(2, "y", Some("1"))]
    });
}

/// An idempotent producer's batch (producer id, epoch 0, base sequence).
fn idempotent(kvs: &[KeyValue<'_>], pid: i64, seq: i32) -> Vec<u8> {
    let mut b = build_keyed_batch(0, 1_000, kvs);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn keyless_records_are_refused_and_an_idempotent_producers_state_survives() {
    let b = TestBroker::start(Setup {
        args: vec!["--log-cleaner-backoff-ms".into(), "20".into()],
        ..Setup::default()
    });
    let mut c = b.client();
    assert_eq!(c.create_topic_with("idem", 1, COMPACT), 0);
    // Kafka refuses a record without a key on a compacted topic.
    let r = c.call(
        &produce(
            "idem",
            -1,
            vec![(0, build_keyed_batch(0, 1, &[(None, Some(b"v"))]))],
        ),
        8,
    );
    assert_eq!(produce_results(&r)[0].1, 87, "INVALID_RECORD");
    let send = |c: &mut Client, batch: Vec<u8>| {
        let r = c.call(&produce("idem", -1, vec![(0, batch)]), 8);
        produce_results(&r)[0]
    };
    // Producer 42 writes k twice (its last batch is superseded by another
    // producer's record); then other segments follow.
    assert_eq!(
        send(&mut c, idempotent(&[(Some(b"k"), Some(b"1"))], 42, 0)).1,
        0
    );
    assert_eq!(
        send(&mut c, idempotent(&[(Some(b"k"), Some(b"2"))], 42, 1)).2,
        1
    );
    assert_eq!(
        append(&mut c, "idem", 1_000, &[(Some(b"k"), Some(b"3"))]),
        2
    );
    assert_eq!(
        append(&mut c, "idem", 1_000, &[(Some(b"z"), Some(b"1"))]),
        3
    );
    wait_for("the cleaning", || {
        rows(&mut c, "idem") == vec![row(2, "k", Some("3")), row(3, "z", Some("1"))]
    });
    // The producer's last batch stays, empty, with its sequence.
    let batches = c.fetch_all("idem", 0);
    let last = batches
        .iter()
        .find(|h| h.producer_id == 42)
        .expect("the producer's last batch");
    assert_eq!(
        (last.base_offset, last.record_count, last.base_sequence),
        (1, 0, 1)
    );
    assert!(!batches.iter().any(|h| h.base_offset == 0));
    // After a restart a retry of that batch is answered with its offset, not
    // written again, and the next sequence goes on.
    let b = b.restart(2);
    let mut c = b.client();
    let (_, code, offset) = send(&mut c, idempotent(&[(Some(b"k"), Some(b"2"))], 42, 1));
    assert_eq!((code, offset), (0, 1));
    assert_eq!(list_offset(&mut c, "idem", 0, -1).1, 4);
    assert_eq!(
        send(&mut c, idempotent(&[(Some(b"k"), Some(b"4"))], 42, 2)).2,
        4
    );
    assert_eq!(
        send(&mut c, idempotent(&[(Some(b"k"), Some(b"9"))], 42, 9)).1,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
}

#[test]
fn what_a_crash_mid_cleaning_leaves_is_neither_served_nor_kept() {
    // On a manual clock: the cleaner runs only when the test moves it.
    let (b, clock) = on_manual_clock(2, &["--log-cleaner-backoff-ms", "10"]);
    let mut c = b.client();
    assert_eq!(c.create_topic_with("crash", 1, COMPACT), 0);
    // The segments as they are before any cleaning (kept to put back later).
    five_rounds(&mut c, "crash");
    let prefix = "default/crash/0";
    let store = b.store.clone();
    let get = |name: &str| -> Bytes {
        futures::executor::block_on(async {
            store
                .get(&Path::from(format!("{prefix}/{name}")))
                .await
                .expect("object")
                .bytes()
                .await
                .expect("bytes")
        })
    };
    let originals: Vec<(String, Bytes)> = objects(store.as_ref(), "crash")
        .into_iter()
        .filter(|n| !n.contains("00000000000000000015"))
        .map(|n| {
            let bytes = get(&n);
            (n, bytes)
        })
        .collect();
    assert_eq!(originals.len(), 10, "five segments and their indexes");
    // A cleaning that failed to write its object changes nothing: no record
    // lost, none twice.
    b.faults.lock().expect("faults").put = kafscale_segstore::Fault::PutFail;
    for _ in 0..10 {
        clock.advance(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rows(&mut c, "crash").len(), 16);
    assert_eq!(b.metric("kafscale_log_cleaner_runs_total"), 0.0);
    assert!(compacted(&objects(store.as_ref(), "crash")).is_empty());
    b.faults.lock().expect("faults").put = kafscale_segstore::Fault::None;
    tick_until(&clock, "the cleaning", || {
        rows(&mut c, "crash") == cleaned_rounds()
    });
    tick_until(&clock, "the replaced segments to be deleted", || {
        objects(store.as_ref(), "crash")
            .iter()
            .filter(|n| n.ends_with(".kfs"))
            .count()
            == 2
    });
    // Stop, then put back what a crash right after the commit would have left
    // (the replaced segments) and what a crash before it would have left (an
    // object no manifest names: here a copy of the first original segment).
    let mut b = b;
    b.stop();
    let put = |name: String, bytes: Bytes| {
        futures::executor::block_on(store.put(
            &Path::from(format!("{prefix}/{name}")),
            PutPayload::from_bytes(bytes),
        ))
        .expect("put");
    };
    for (n, bytes) in &originals {
        put(n.clone(), bytes.clone());
    }
    let orphan = "segment-00000000000000000000-c00000000000abcde.kfs".to_string();
    put(orphan.clone(), originals[0].1.clone());
    let b = b.restart(2);
    let mut c = b.client();
    // Served: the committed cleaning only, exactly once.
    assert_eq!(rows(&mut c, "crash"), cleaned_rounds());
    // And the leftovers are deleted by the cleaner.
    let clock = b.manual_clock().clone();
    tick_until(&clock, "the leftovers to be deleted", || {
        let names = objects(b.store.as_ref(), "crash");
        !names.contains(&orphan) && names.iter().filter(|n| n.ends_with(".kfs")).count() == 2
    });
    assert_eq!(rows(&mut c, "crash"), cleaned_rounds());
}
