//! InitProducerId for idempotent producers (the default of Kafka 3+ clients).
//! Transactions are not supported: a transactional id is refused.
//!
//! Producer ids are random positive 62-bit numbers: unique in practice across
//! restarts and brokers without a counter to persist or coordinate. A producer
//! that re-initialises with its id and epoch (KIP-360) gets the next epoch.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::errors::{NONE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};

pub fn handle(req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        resp.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return resp;
    }
    let (id, epoch) =
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
            (req.producer_id.0, req.producer_epoch + 1)
        } else {
            (new_producer_id(), 0)
        };
    resp.error_code = NONE;
    resp.producer_id = ProducerId(id);
    resp.producer_epoch = epoch;
    resp
}

fn new_producer_id() -> i64 {
    // uuid's v4 generator is the random source already in the build.
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    (r >> 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_bumped_epochs_and_refused_transactions() {
        let a = handle(
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_eq!((a.error_code, a.producer_epoch), (0, 0));
        assert!(a.producer_id.0 >= 0);
        let b = handle(
            InitProducerIdRequest::default()
                .with_producer_id(a.producer_id)
                .with_producer_epoch(0),
        );
        assert_eq!((b.producer_id, b.producer_epoch), (a.producer_id, 1));
        let t = handle(InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_static_str("tx"),
            ),
        )));
        assert_eq!(t.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
}
