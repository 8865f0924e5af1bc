//! S3 validation: before brokers are rolled out, the operator lists the bucket and
//! writes a probe object with the cluster's own credentials, so a wrong bucket,
//! region, endpoint, key or policy shows in the status instead of in crash-looping
//! brokers.

use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::crd::S3Spec;

/// The object written by the probe (overwritten each time, so it never piles up).
pub const PROBE_KEY: &str = "_kafscale/operator-probe";

/// Credentials from the referenced Secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// The error with its causes: object_store's own text often ends in a generic
/// "HTTP error", with the useful part (the S3 error code) in a source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Lists the bucket and puts the probe object; the error text says which step
/// failed and why.
pub async fn validate(
    s3: &S3Spec,
    creds: Option<&S3Credentials>,
    timeout: Duration,
) -> Result<(), String> {
    // Without a Secret the brokers use the pod's AWS environment; so does the probe.
    let mut b = if creds.is_some() {
        AmazonS3Builder::new()
    } else {
        AmazonS3Builder::from_env()
    };
    b = b
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_virtual_hosted_style_request(!s3.force_path_style)
        // A wrong setting must fail fast: the store's default retries would hold
        // the reconcile for minutes.
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: timeout,
            ..Default::default()
        })
        .with_client_options(
            // (allow_http lives in the client options: set it here, not before.)
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(timeout)
                .with_connect_timeout(timeout),
        );
    if let Some(e) = &s3.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(c) = creds {
        b = b
            .with_access_key_id(&c.access_key)
            .with_secret_access_key(&c.secret_key);
        if let Some(t) = &c.session_token {
            b = b.with_token(t);
        }
    }
    if let Some(k) = &s3.kms_key_arn {
        b = b.with_sse_kms_encryption(k);
    }
    let store = b
        .build()
        .map_err(|e| format!("S3 settings of bucket {:?}: {e}", s3.bucket))?;
    let probe = async {
        let prefix = Path::from("_kafscale");
        let mut list = store.list(Some(&prefix));
        if let Some(Err(e)) = list.next().await {
            return Err(format!(
                "list of bucket {:?} failed: {}",
                s3.bucket,
                chain(&e)
            ));
        }
        drop(list);
        store
            .put(
                &Path::from(PROBE_KEY),
                PutPayload::from_static(b"kafscale operator probe\n"),
            )
            .await
            .map_err(|e| {
                format!(
                    "put of {PROBE_KEY} to bucket {:?} failed: {}",
                    s3.bucket,
                    chain(&e)
                )
            })?;
        Ok(())
    };
    // The retry timeout bounds each request; this bounds the whole probe.
    match tokio::time::timeout(timeout * 3, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "bucket {:?} did not answer within {:?}",
            s3.bucket,
            timeout * 3
        )),
    }
}
