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
const TOPIC: &str = "/apis/kafscale.io/v1alpha1/namespaces/kafscale/kafscaletopics/orders";

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
        "metadata": {"name": "orders", "namespace": NS, "generation": generation,
                     "finalizers": ["kafscale.io/topic"]},
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
    reconcile_with_events(api, etcd, t).await.0
}

/// One reconcile; the status body it applied and the Events it published.
async fn reconcile_with_events(
    api: &mut ApiServer,
    etcd: &Etcd,
    t: KafscaleTopic,
) -> (Option<Value>, Vec<Value>) {
    let (ctx, mock_api) = mock();
    *api = mock_api;
    let t = Arc::new(t);
    let mut task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (_, r) = api.expect("GET", CLUSTER).await;
    r.json(200, &cluster_json(etcd));
    // The status patch (only when the status changed) and Events, in the order
    // the reconcile sends them: a revert's Event comes before the status.
    let (mut status, mut events) = (None, Vec::new());
    loop {
        tokio::select! {
            biased;
            done = &mut task => {
                done.expect("join").expect("reconcile");
                break;
            }
            Some((seen, r)) = api.next_opt() => {
                if seen.path.starts_with(EVENTS) {
                    r.json(201, &seen.body);
                    events.push(seen.body);
                    continue;
                }
                assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", STATUS));
                assert_eq!(seen.query.get("fieldManager").map(String::as_str), Some("kafscale-operator"));
                assert!(status.is_none(), "the status was patched twice");
                r.object_with_status(&*t, &seen);
                status = Some(seen.body);
            }
        }
    }
    api.assert_idle();
    (status, events)
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
        .insert("cleanup.policy".into(), "archive".into());
    let t = Arc::new(t);
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*t, &seen);
    let (done, events) = finish(&mut api, task).await;
    done.expect("reconcile");
    assert_eq!(summary(&events)[0].0, "Warning");
    assert_eq!(summary(&events)[0].1, "InvalidConfig");
    let ready = condition(&seen.body, "Ready");
    assert_eq!(ready["reason"], "InvalidConfig");
    assert!(ready["message"]
        .as_str()
        .unwrap_or("")
        .contains("cleanup.policy"));

    let (ctx, mut api) = mock();
    let t = Arc::new(topic(1, 1, None));
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (_, r) = api.expect("GET", CLUSTER).await;
    r.not_found("kafscaleclusters.kafscale.io", "prod");
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*t, &seen);
    finish(&mut api, task).await.0.expect("reconcile");
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
        ..DesiredTopic::default()
    };
    let mut writers = Vec::new();
    for i in 0..8 {
        let m = Metadata::connect(&endpoints, None, None, Duration::from_secs(10))
            .await
            .expect("connect");
        writers.push(tokio::spawn(async move { m.apply_topic(&want(i)).await }));
    }
    for w in writers {
        let applied = w.await.expect("join").expect("apply");
        assert!(applied.written);
    }
    let m = Metadata::connect(&endpoints, None, None, Duration::from_secs(10))
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

/// What a broker's AlterConfigs does to the topic in etcd: the snapshot's entry
/// and the topic-config key, in one transaction.
async fn alter_at_runtime(etcd: &Etcd, set: &[(&str, &str)]) {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let (mut snap, mut cfg, rev) = stored(etcd).await;
    for (k, v) in set {
        cfg.configs.insert(k.to_string(), v.to_string());
    }
    let i = snap
        .topics
        .iter()
        .position(|t| t.name == "orders")
        .expect("orders");
    snap.topics[i] = cfg.clone();
    let txn = Txn::new()
        .when([Compare::mod_revision(keys::SNAPSHOT, CompareOp::Equal, rev)])
        .and_then([
            TxnOp::put(keys::SNAPSHOT, snap.encode_to_vec(), None),
            TxnOp::put(keys::topic_config("orders"), cfg.encode_to_vec(), None),
        ]);
    let mut c = etcd.client().await;
    assert!(c.txn(txn).await.expect("txn").succeeded());
}

#[tokio::test]
async fn runtime_config_changes_are_reverted_with_an_event_and_runtime_keys_kept() {
    let etcd = Etcd::start();
    etcd.client().await;
    let (_, mut api) = mock();
    let st = reconcile(&mut api, &etcd, topic(1, 1, None))
        .await
        .expect("status");
    assert_eq!(
        st["status"]["appliedConfig"],
        json!({"retention.ms": "86400000", "segment.bytes": "1048576"})
    );
    assert_eq!(condition(&st, "ConfigInSync")["reason"], "InSync");

    // An AlterConfigs changes a key the resource sets and adds one it does not.
    alter_at_runtime(
        &etcd,
        &[("retention.ms", "60000"), ("max.message.bytes", "2000000")],
    )
    .await;
    let (st, events) =
        reconcile_with_events(&mut api, &etcd, topic(1, 1, Some(st["status"].clone()))).await;
    let st = st.expect("status");
    let (_, cfg, _) = stored(&etcd).await;
    assert_eq!(
        cfg.configs,
        [
            ("max.message.bytes".to_string(), "2000000".to_string()),
            ("retention.ms".to_string(), "86400000".to_string()),
            ("segment.bytes".to_string(), "1048576".to_string()),
        ]
        .into()
    );
    let c = condition(&st, "ConfigInSync");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("RuntimeConfigReverted"))
    );
    assert_eq!(c["message"], "set back to the spec: retention.ms");
    assert_eq!(
        summary(&events),
        [(
            "Warning".to_string(),
            "RuntimeConfigReverted".to_string(),
            "changed at runtime, set back to the spec (configDrift: Revert): retention.ms"
                .to_string()
        )]
    );
    assert_eq!(events[0]["regarding"]["kind"], "KafscaleTopic");

    // Next time round nothing differs: back to InSync, nothing written.
    let (_, _, rev) = stored(&etcd).await;
    let st = reconcile(&mut api, &etcd, topic(1, 1, Some(st["status"].clone())))
        .await
        .expect("status");
    assert_eq!(condition(&st, "ConfigInSync")["reason"], "InSync");
    assert_eq!(stored(&etcd).await.2, rev);
}

#[tokio::test]
async fn with_config_drift_keep_runtime_changes_stay_and_are_reported() {
    let etcd = Etcd::start();
    etcd.client().await;
    let (_, mut api) = mock();
    let keep = |generation, status| {
        let mut t = topic(1, generation, status);
        t.spec.config_drift = Some("Keep".into());
        t
    };
    let st = reconcile(&mut api, &etcd, keep(1, None))
        .await
        .expect("status");
    alter_at_runtime(&etcd, &[("retention.ms", "60000")]).await;
    let (_, _, rev) = stored(&etcd).await;
    let (st, events) =
        reconcile_with_events(&mut api, &etcd, keep(1, Some(st["status"].clone()))).await;
    let st = st.expect("status");
    assert_eq!(
        stored(&etcd).await.2,
        rev,
        "a kept runtime change is not written over"
    );
    let c = condition(&st, "ConfigInSync");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("RuntimeConfigDiffers"))
    );
    assert_eq!(
        c["message"],
        "changed at runtime and kept (configDrift: Keep): retention.ms: spec 86400000, runtime 60000"
    );
    assert_eq!(summary(&events)[0].0, "Warning");
    assert_eq!(summary(&events)[0].1, "RuntimeConfigDiffers");
    // The Ready condition is unaffected: the topic exists as asked.
    assert_eq!(condition(&st, "Ready")["status"], "True");

    // Editing the spec is the user's new intent: it is written over the runtime value.
    let mut edited = keep(2, Some(st["status"].clone()));
    edited.spec.retention_ms = Some(120000);
    let st = reconcile(&mut api, &etcd, edited).await.expect("status");
    let (_, cfg, _) = stored(&etcd).await;
    assert_eq!(cfg.configs["retention.ms"], "120000");
    assert_eq!(condition(&st, "ConfigInSync")["reason"], "InSync");
}

#[tokio::test]
async fn the_finalizer_is_added_before_anything_else() {
    let (ctx, mut api) = mock();
    let mut t = topic(1, 1, None);
    t.metadata.finalizers = None;
    let t = Arc::new(t);
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (seen, r) = api.expect("PATCH", TOPIC).await;
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["kafscale.io/topic"]}
        ])
    );
    let mut obj = serde_json::to_value(&*t).expect("json");
    obj["metadata"]["finalizers"] = json!(["kafscale.io/topic"]);
    r.json(200, &obj);
    task.await.expect("join").expect("reconcile");
    api.assert_idle();
}

/// A deleted resource: the cleanup, then the finalizer's removal.
async fn delete(api: &mut ApiServer, etcd: &Etcd, policy: &str) -> Vec<Value> {
    let (ctx, mock_api) = mock();
    *api = mock_api;
    let mut t = topic(1, 1, None);
    t.spec.deletion_policy = Some(policy.into());
    t.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let t = Arc::new(t);
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    if policy == "Delete" {
        let (_, r) = api.expect("GET", CLUSTER).await;
        r.json(200, &cluster_json(etcd));
    }
    let (seen, r) = api.expect("POST", EVENTS).await;
    r.json(201, &seen.body);
    let (patch, r) = api.expect("PATCH", TOPIC).await;
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "kafscale.io/topic"},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ])
    );
    r.json(200, &serde_json::to_value(&*t).expect("json"));
    task.await.expect("join").expect("reconcile");
    api.assert_idle();
    vec![seen.body]
}

#[tokio::test]
async fn deletion_retains_the_topic_or_removes_it_from_etcd() {
    let etcd = Etcd::start();
    etcd.client().await;
    let (_, mut api) = mock();
    reconcile(&mut api, &etcd, topic(2, 1, None))
        .await
        .expect("status");
    let (_, _, rev) = stored(&etcd).await;

    let events = delete(&mut api, &etcd, "Retain").await;
    assert_eq!(summary(&events)[0].1, "TopicRetained");
    assert_eq!(stored(&etcd).await.2, rev, "Retain writes nothing");

    // Delete marks the topic as a broker's DeleteTopics does: `deleting` set and the
    // assignment gone in one transaction; owner keys and the topic's config stay
    // for the brokers, which let go, delete the objects, then the keys.
    let mut c = etcd.client().await;
    c.put(keys::owner("orders", 0), "broker-0", None)
        .await
        .expect("put");
    c.put(keys::assignment("orders"), "assignment", None)
        .await
        .expect("put");
    let events = delete(&mut api, &etcd, "Delete").await;
    assert_eq!(
        summary(&events)[0],
        (
            "Normal".to_string(),
            "TopicDeleted".to_string(),
            "topic orders marked for deletion; the brokers delete its data (deletionPolicy: Delete)"
                .to_string()
        )
    );
    let snap = c.get(keys::SNAPSHOT, None).await.expect("get");
    let snap = pb::ClusterSnapshot::decode(snap.kvs()[0].value()).expect("snapshot");
    let marked = snap
        .topics
        .iter()
        .find(|t| t.name == "orders")
        .expect("orders");
    assert!(marked.deleting, "the topic is marked, not removed");
    assert!(c
        .get(keys::assignment("orders"), None)
        .await
        .expect("get")
        .kvs()
        .is_empty());
    assert_eq!(
        c.get(keys::owner("orders", 0), None)
            .await
            .expect("get")
            .kvs()[0]
            .value(),
        b"broker-0",
        "the owner lets go itself"
    );
    let (_, _, marked_rev) = stored(&etcd).await;

    // A resource of the same name meanwhile waits for the brokers and writes nothing.
    let status = reconcile(&mut api, &etcd, topic(4, 2, None))
        .await
        .expect("status");
    assert_eq!(status["status"]["phase"], "Pending");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "TopicBeingDeleted");
    assert_eq!(
        stored(&etcd).await.2,
        marked_rev,
        "a deleting topic is left alone"
    );

    // A second Delete (a retry) is answered without another write.
    delete(&mut api, &etcd, "Delete").await;
    assert_eq!(stored(&etcd).await.2, marked_rev);
}

/// A cluster whose etcd takes only TLS with client certificates: the topic
/// controller reaches it with the certificate in the cluster's `etcd.tls` Secret.
#[tokio::test]
async fn the_topic_is_written_over_tls_with_the_clusters_client_certificate() {
    let certs = Certs::make();
    let etcd = Etcd::start_tls(&certs);
    let mut c = etcd.tls_client(&certs).await;
    let (ctx, mut api) = mock();
    let t = Arc::new(topic(2, 1, None));
    let task = tokio::spawn(topic::reconcile(t.clone(), ctx));
    let (_, r) = api.expect("GET", CLUSTER).await;
    let mut k = cluster_json(&etcd);
    k["spec"]["etcd"]["tls"] = json!({"secretRef": {"name": "etcd-client"}});
    r.json(200, &k);
    let (_, r) = api
        .expect("GET", "/api/v1/namespaces/kafscale/secrets/etcd-client")
        .await;
    r.json(
        200,
        &secret(
            "etcd-client",
            &[
                ("ca.crt", &certs.read("ca.crt")),
                ("tls.crt", &certs.read("client.crt")),
                ("tls.key", &certs.read("client.key")),
            ],
        ),
    );
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*t, &seen);
    finish(&mut api, task).await.0.expect("reconcile");
    let ready = condition(&seen.body, "Ready");
    assert_eq!(ready["status"], "True", "{ready}");
    let cfg = c
        .get(keys::topic_config("orders"), None)
        .await
        .expect("get over TLS");
    let cfg = pb::TopicConfig::decode(cfg.kvs()[0].value()).expect("topic config");
    assert_eq!((cfg.name.as_str(), cfg.partitions), ("orders", 2));
}
