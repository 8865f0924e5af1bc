//! The I/O runtime: a small tokio runtime on its own threads for everything that
//! speaks HTTP or gRPC to the outside (object store, etcd). Shards decide what to
//! send and when, hand the future over, and await the result; glommio wakes the
//! shard from the tokio thread through its foreign-waker path.

use std::future::Future;

#[derive(Clone)]
pub struct Io {
    handle: tokio::runtime::Handle,
}

#[derive(Debug, thiserror::Error)]
#[error("the I/O runtime dropped a task: {0}")]
pub struct IoGone(String);

impl Io {
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Io { handle }
    }

    /// Runs `fut` on the I/O runtime and resolves with its output.
    pub async fn run<T, F>(&self, fut: F) -> Result<T, IoGone>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| IoGone(e.to_string()))
    }

    /// Runs a fallible `fut` on the I/O runtime; a lost task becomes `E` too.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<IoGone> + Send + 'static,
    {
        self.run(fut).await?
    }
}
