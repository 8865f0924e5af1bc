//! Kafscale's Kubernetes operator: `KafscaleCluster` and `KafscaleTopic`
//! controllers (kube-rs). The design is in operator/README.md.

pub mod cluster;
pub mod conditions;
pub mod context;
pub mod crd;
pub mod drift;
pub mod etcd;
pub mod lease;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod s3;
pub mod seccomp;
pub mod security;
pub mod topic;
