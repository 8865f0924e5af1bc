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

/// Why a fallible call on the I/O runtime (`Io::call`) failed: the call itself
/// failed, or its task was lost. Both show as the error they hold.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The call ran and returned this error.
    #[error(transparent)]
    Failed(E),
    /// The task did not finish (it panicked or the runtime shut down).
    #[error(transparent)]
    Gone(#[from] IoGone),
}

impl<E: From<IoGone>> CallError<E> {
    /// The error as `E`, for error types with a variant of their own for a lost
    /// task.
    pub fn flatten(self) -> E {
        match self {
            CallError::Failed(e) => e,
            CallError::Gone(g) => g.into(),
        }
    }
}

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

    /// Runs a fallible `fut` on the I/O runtime (as `run`) and resolves with its
    /// result, a lost task being one more error.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.run(fut).await?.map_err(CallError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    /// An error type with a variant for a lost task, as `flatten` wants.
    #[derive(Debug, thiserror::Error)]
    enum Flat {
        #[error("refused")]
        Refused,
        #[error(transparent)]
        Gone(#[from] IoGone),
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    }

    #[test]
    fn call_resolves_with_the_value() {
        let rt = runtime();
        let io = Io::new(rt.handle().clone());
        let r = rt.block_on(io.call(async { Ok::<_, Refused>(7) }));
        assert!(matches!(r, Ok(7)));
    }

    #[test]
    fn call_passes_the_error_on() {
        let rt = runtime();
        let io = Io::new(rt.handle().clone());
        let r = rt.block_on(io.call(async { Err::<(), _>(Refused) }));
        match r {
            Err(CallError::Failed(e)) => assert_eq!(e, Refused),
            other => panic!("expected the call's error, got {other:?}"),
        }
        assert!(matches!(
            rt.block_on(io.call(async { Err::<(), _>(Flat::Refused) }))
                .map_err(CallError::flatten),
            Err(Flat::Refused)
        ));
    }

    #[test]
    fn a_panicking_task_is_gone() {
        let rt = runtime();
        let io = Io::new(rt.handle().clone());
        let r = rt.block_on(io.call(async {
            panic!("the task fails");
            #[allow(unreachable_code)]
            Ok::<(), Refused>(())
        }));
        match r {
            Err(e @ CallError::Gone(_)) => {
                assert!(e.to_string().starts_with("the I/O runtime dropped a task"))
            }
            other => panic!("expected a lost task, got {other:?}"),
        }
        let flat = rt
            .block_on(io.call(async {
                panic!("the task fails");
                #[allow(unreachable_code)]
                Ok::<(), Flat>(())
            }))
            .map_err(CallError::flatten);
        assert!(matches!(flat, Err(Flat::Gone(_))));
    }
}
