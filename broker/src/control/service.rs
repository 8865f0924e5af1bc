//! The BrokerControl RPCs: check the request, run its work on the shards
//! (`ops`), and put the shards' answers together.

use std::sync::Arc;
use std::time::Duration;

use kafscale_proto::control::broker_control_server::BrokerControl;
use kafscale_proto::control::{
    DrainPartitionsRequest, DrainPartitionsResponse, GetStatusRequest, GetStatusResponse,
    PartitionOffsets, ResumePartitionsRequest, ResumePartitionsResponse, TriggerFlushRequest,
    TriggerFlushResponse,
};
use tonic::{Request, Response, Status};

use super::ops::{self, ControlError};
use super::Control;
use crate::shard::ShardGone;

/// Status and resume only read or flip in-memory state.
const QUICK: Duration = Duration::from_secs(10);
/// Flush and drain wait this long for durability unless the request says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Longest wait a request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);

pub struct Service(pub Arc<Control>);

/// The durability wait a request asks for (0: the default), bounded.
fn wait_of(timeout_ms: u32) -> Duration {
    match timeout_ms {
        0 => DEFAULT_WAIT,
        ms => Duration::from_millis(ms as u64).min(MAX_WAIT),
    }
}

/// Every shard's answer, in shard order, or the first shard that did not answer.
fn all<R>(answers: Vec<Result<R, ShardGone>>) -> Result<Vec<R>, ControlError> {
    answers
        .into_iter()
        .map(|r| r.map_err(|ShardGone(i)| ControlError::ShardGone(i)))
        .collect()
}

fn sorted(mut v: Vec<PartitionOffsets>) -> Vec<PartitionOffsets> {
    v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    v
}

#[tonic::async_trait]
impl BrokerControl for Service {
    async fn get_status(
        &self,
        req: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let topics = req.into_inner().topics;
        let broker_id = self.0.broker_id;
        let resp = self
            .0
            .on_shards(QUICK, move |sh| async move {
                let sel = ops::select(&sh, &topics)?;
                let cluster_id = sh.cluster().cluster_id.clone();
                let answers = all(sh.on_all(move |s| ops::shard_status(s, sel.clone())).await)?;
                let mut resp = GetStatusResponse {
                    broker_id,
                    cluster_id,
                    ..Default::default()
                };
                for (shard, parts) in answers {
                    resp.shards.push(shard);
                    resp.partitions.extend(parts);
                }
                resp.partitions
                    .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                Ok(resp)
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn trigger_flush(
        &self,
        req: Request<TriggerFlushRequest>,
    ) -> Result<Response<TriggerFlushResponse>, Status> {
        let req = req.into_inner();
        let wait = wait_of(req.timeout_ms);
        let topics = req.topics;
        let partitions = self
            .0
            .on_shards(wait + QUICK, move |sh| async move {
                let sel = ops::select(&sh, &topics)?;
                let answers = all(sh
                    .on_all(move |s| ops::shard_flush(s, sel.clone(), wait))
                    .await)?;
                Ok(sorted(answers.into_iter().flatten().collect()))
            })
            .await?;
        Ok(Response::new(TriggerFlushResponse { partitions }))
    }

    async fn drain_partitions(
        &self,
        req: Request<DrainPartitionsRequest>,
    ) -> Result<Response<DrainPartitionsResponse>, Status> {
        let req = req.into_inner();
        let wait = wait_of(req.timeout_ms);
        let topics = req.topics;
        let partitions = self
            .0
            .on_shards(wait + QUICK, move |sh| async move {
                let sel = ops::select(&sh, &topics)?;
                let whole = sel.is_none();
                let answers = all(sh
                    .on_all(move |s| ops::shard_drain(s, sel.clone(), wait))
                    .await)?;
                if whole {
                    // In a cluster the controller moves a drained broker's
                    // partitions and coordinator slots to the others, which
                    // claim them as soon as this broker has released them.
                    ops::set_broker_draining(&sh, true).await?;
                }
                Ok(sorted(answers.into_iter().flatten().collect()))
            })
            .await?;
        tracing::info!(
            partitions = partitions.len(),
            "partitions drained through BrokerControl"
        );
        Ok(Response::new(DrainPartitionsResponse { partitions }))
    }

    async fn resume_partitions(
        &self,
        req: Request<ResumePartitionsRequest>,
    ) -> Result<Response<ResumePartitionsResponse>, Status> {
        let topics = req.into_inner().topics;
        let resp = self
            .0
            .on_shards(QUICK, move |sh| async move {
                let sel = ops::select(&sh, &topics)?;
                if sel.is_some() {
                    let whole = all(sh.on_all(|s| async move { s.logs.draining_all() }).await)?;
                    if whole.contains(&true) {
                        return Err(ControlError::FailedPrecondition(
                            "the whole broker is drained: resume it without naming partitions"
                                .into(),
                        ));
                    }
                }
                let whole = sel.is_none();
                let answers = all(sh.on_all(move |s| ops::shard_resume(s, sel.clone())).await)?;
                let resumed_all = answers.iter().any(|(all, _)| *all);
                if whole {
                    ops::set_broker_draining(&sh, false).await?;
                }
                let partitions = sorted(answers.into_iter().flat_map(|(_, p)| p).collect());
                Ok(ResumePartitionsResponse {
                    partitions,
                    resumed_all,
                })
            })
            .await?;
        tracing::info!(
            partitions = resp.partitions.len(),
            whole_broker = resp.resumed_all,
            "partitions resumed through BrokerControl"
        );
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_default_and_are_bounded() {
        assert_eq!(wait_of(0), DEFAULT_WAIT);
        assert_eq!(wait_of(1500), Duration::from_millis(1500));
        assert_eq!(wait_of(u32::MAX), MAX_WAIT);
    }
}
