//! KafscaleTopic reconcile against the mocked API server and a real etcd: the
//! topic lands in the snapshot and topic-config keys the brokers read (protobuf of
//! kafscale-proto), partition increases are applied, decreases refused in the status.

mod support;

use std::sync::Arc;

use kafscale_operator::crd::KafscaleTopic;
use kafscale_operator::topic;
use kafscale_proto::metadata as pb;
use kafscale_proto::{keys, Message};
use serde_json::{json, Value};
use support::*;

const CLUSTER: &str = "/apis/kafscale.io/v1alpha1/namespaces/kafscale/kafscaleclusters/prod";
const STATUS: &str = "/apis/kafscale.io/v1alpha1/namespaces/kafscale/kafscaletopics/orders/status";

fn cluster_json(etcd: &Etcd) -> Value {
    json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster",
        "metadata": {"name": "prod", "namespace": NS, "uid": "u1"},
        "spec": {"s3": {"bucket": "b"}, "etcd": {"endpoints": [etcd.endpoint()]}}
    })
}

fn topic(partitions: i32, generation: i64, status: Option<Value>) -> KafscaleTopic {
    let mut v = json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic",
        "metadata": {"name": "orders", "namespace": NS, "generation": generation},
        "spec": {"clusterRef": "prod", "partitions": partitions, "retentionMs": 86400000,
                 "config": {"segment.bytes": "1048576"}}
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("topic")
}

/// One reconcile; returns the status body it applied (None: no status change).
async fn reconcile(api: &mut ApiServer, etcd: &Etcd, t: KafscaleTopic) -> Option<Value> {
    let (ctx, mock_api) = mock();
    *api = mock_api;
    let t = Arc::new(t);
    let mut task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (_, r) = api.expect("GET", CLUSTER).await;
    r.json(200, &cluster_json(etcd));
    let status = tokio::select! {
        biased;
        done = &mut task => {
            done.expect("join").expect("reconcile");
            None
        }
        Some((seen, r)) = api.next_opt() => {
            assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", STATUS));
            assert_eq!(seen.query.get("fieldManager").map(String::as_str), Some("kafscale-operator"));
            r.object_with_status(&*t, &seen);
            Some(seen.body)
        }
    };
    if status.is_some() {
        task.await.expect("join").expect("reconcile");
    }
    api.assert_idle();
    status
}

async fn stored(etcd: &Etcd) -> (pb::ClusterSnapshot, pb::TopicConfig, i64) {
    let mut c = etcd.client().await;
    let snap = c.get(keys::SNAPSHOT, None).await.expect("get");
    let kv = &snap.kvs()[0];
    let rev = kv.mod_revision();
    let snap = pb::ClusterSnapshot::decode(kv.value()).expect("snapshot");
    let cfg = c
        .get(keys::topic_config("orders"), None)
        .await
        .expect("get");
    let cfg = pb::TopicConfig::decode(cfg.kvs()[0].value()).expect("topic config");
    (snap, cfg, rev)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn topic_is_created_grown_and_never_shrunk_in_etcd() {
    let etcd = Etcd::start();
    let mut c = etcd.client().await;
    // A topic a broker created before (auto-create): the operator must keep it.
    let other = pb::TopicConfig {
        name: "events".into(),
        topic_id: vec![9; 16],
        partitions: 2,
        configs: Default::default(),
        created_ms: 1,
        deleting: false,
    };
    let snap = pb::ClusterSnapshot {
        cluster_id: "kafscale-test".into(),
        brokers: vec![],
        topics: vec![other.clone()],
    };
    c.put(keys::SNAPSHOT, snap.encode_to_vec(), None)
        .await
        .expect("put");
    let (_, mut api) = mock();

    // Created with 3 partitions and its configs.
    let st = reconcile(&mut api, &etcd, topic(3, 1, None))
        .await
        .expect("status");
    let (snap, cfg, _) = stored(&etcd).await;
    assert_eq!(snap.cluster_id, "kafscale-test");
    assert_eq!(
        snap.topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["events", "orders"]
    );
    assert_eq!(snap.topics[0], other);
    assert_eq!(snap.topics[1], cfg);
    assert_eq!(cfg.partitions, 3);
    assert_eq!(
        cfg.configs,
        [
            ("retention.ms".to_string(), "86400000".to_string()),
            ("segment.bytes".to_string(), "1048576".to_string()),
        ]
        .into()
    );
    let id = uuid::Uuid::from_slice(&cfg.topic_id).expect("16-byte id");
    assert_eq!(st["status"]["phase"], "Ready");
    assert_eq!(st["status"]["partitions"], 3);
    assert_eq!(st["status"]["topicId"], id.to_string());
    assert_eq!(condition(&st, "Ready")["status"], "True");
    assert_eq!(condition(&st, "EtcdAvailable")["status"], "True");

    // Unchanged: nothing written to etcd, no status patch.
    let (_, _, rev) = stored(&etcd).await;
    let none = reconcile(&mut api, &etcd, topic(3, 1, Some(st["status"].clone()))).await;
    assert!(none.is_none(), "{none:?}");
    assert_eq!(stored(&etcd).await.2, rev);

    // Grown to 5: same topic id, more partitions, in both keys.
    let st = reconcile(&mut api, &etcd, topic(5, 2, Some(st["status"].clone())))
        .await
        .expect("status");
    let (snap, cfg, _) = stored(&etcd).await;
    assert_eq!(
        (cfg.partitions, cfg.topic_id.clone()),
        (5, id.as_bytes().to_vec())
    );
    assert_eq!(snap.topics[1], cfg);
    assert_eq!(st["status"]["partitions"], 5);
    assert_eq!(st["status"]["observedGeneration"], 2);

    // Shrinking to 2 is refused: etcd keeps 5, the status says why.
    let (_, _, rev) = stored(&etcd).await;
    let st = reconcile(&mut api, &etcd, topic(2, 3, Some(st["status"].clone())))
        .await
        .expect("status");
    let (_, cfg, rev_after) = stored(&etcd).await;
    assert_eq!(cfg.partitions, 5);
    assert_eq!(
        rev_after, rev,
        "nothing may be written for a refused decrease"
    );
    assert_eq!(st["status"]["phase"], "Failed");
    assert_eq!(st["status"]["partitions"], 5);
    let ready = condition(&st, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PartitionDecreaseRefused");
    assert_eq!(
        ready["message"],
        "spec.partitions is 2 but the topic has 5: partitions can only be added"
    );
}

#[tokio::test]
async fn unknown_config_and_missing_cluster_are_reported() {
    let etcd = Etcd::start();
    etcd.client().await;
    let (ctx, mut api) = mock();
    let mut t = topic(1, 1, None);
    t.spec
        .config
        .insert("cleanup.policy".into(), "compact".into());
    let t = Arc::new(t);
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*t, &seen);
    task.await.expect("join").expect("reconcile");
    let ready = condition(&seen.body, "Ready");
    assert_eq!(ready["reason"], "InvalidConfig");
    assert!(ready["message"].as_str().unwrap_or("").contains("compact"));

    let (ctx, mut api) = mock();
    let t = Arc::new(topic(1, 1, None));
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (_, r) = api.expect("GET", CLUSTER).await;
    r.not_found("kafscaleclusters.kafscale.io", "prod");
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*t, &seen);
    task.await.expect("join").expect("reconcile");
    assert_eq!(condition(&seen.body, "Ready")["reason"], "ClusterNotFound");
    // Nothing reached etcd.
    let mut c = etcd.client().await;
    assert!(c
        .get(keys::SNAPSHOT, None)
        .await
        .expect("get")
        .kvs()
        .is_empty());
}

/// Writers racing on the snapshot (operators of several topics at once, as a
/// broker's CreateTopics would): the compare-and-swap of kafscale_proto::snapshot
/// keeps every topic, each with its config key; re-applying writes nothing.
#[tokio::test]
async fn concurrent_writers_keep_each_others_topics() {
    use kafscale_operator::etcd::{DesiredTopic, Metadata};
    use std::time::Duration;

    let etcd = Etcd::start();
    etcd.client().await;
    let endpoints = [etcd.endpoint()];
    let want = |i: usize| DesiredTopic {
        name: format!("t{i}"),
        partitions: 1 + i as i32,
        configs: [("retention.ms".to_string(), "1000".to_string())].into(),
    };
    let mut writers = Vec::new();
    for i in 0..8 {
        let m = Metadata::connect(&endpoints, None, Duration::from_secs(10))
            .await
            .expect("connect");
        writers.push(tokio::spawn(async move { m.apply_topic(&want(i)).await }));
    }
    for w in writers {
        let applied = w.await.expect("join").expect("apply");
        assert!(applied.written);
    }
    let m = Metadata::connect(&endpoints, None, Duration::from_secs(10))
        .await
        .expect("connect");
    let (snap, rev) = m.snapshot().await.expect("snapshot");
    assert_eq!(
        snap.topics
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>(),
        (0..8).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    let mut c = etcd.client().await;
    for t in &snap.topics {
        let cfg = c.get(keys::topic_config(&t.name), None).await.expect("get");
        assert_eq!(
            &pb::TopicConfig::decode(cfg.kvs()[0].value()).expect("config"),
            t
        );
    }
    // Applying what is stored again changes nothing.
    let again = m.apply_topic(&want(3)).await.expect("apply");
    assert!(!again.written);
    assert_eq!(m.snapshot().await.expect("snapshot").1, rev);
}
