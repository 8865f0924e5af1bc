//! `/healthz` asks every shard: a shard that stops running jobs turns it into a
//! 503 that names the shard, and it recovers when the shard does.

mod support;

use std::time::{Duration, Instant};

use support::{Setup, TestBroker};

#[test]
fn healthz_lists_every_shard_and_names_a_stuck_one() {
    let b = TestBroker::start(Setup {
        shards: 3,
        ..Setup::default()
    });
    assert_eq!(
        b.http_get("/healthz"),
        (
            200,
            "ok\nshard 0: ok\nshard 1: ok\nshard 2: ok\n".to_string()
        )
    );

    // Shard 1 blocks its thread for longer than /healthz waits.
    assert!(b
        .broker()
        .run_on_shard_for_testing(1, || std::thread::sleep(Duration::from_millis(2500))));
    let (status, body) = b.http_get("/healthz");
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "shard 1 did not answer\nshard 0: ok\nshard 1: no answer within 1000 ms\nshard 2: ok\n"
        )
    );

    // Once the shard runs again, so does /healthz.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.http_get("/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "/healthz stays 503");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!b.broker().run_on_shard_for_testing(3, || {}));
}
