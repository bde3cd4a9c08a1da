//! A fixed set of recognizers shared by every connection: at most `max_concurrent` jobs run, at
//! most `max_queue` more wait, anything beyond is answered "busy" at once (memory stays bounded).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Recognizer;

/// The answer when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy {
    pub max_concurrent: usize,
    pub max_queue: usize,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server busy: {} requests running and {} waiting already (--max-concurrent, \
             --max-queue); retry later",
            self.max_concurrent, self.max_queue
        )
    }
}

/// Why a job did not run to completion.
#[derive(Debug)]
pub enum JobError {
    Busy(Busy),
    /// The job panicked (a bug: reported, the server goes on).
    Failed(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Busy(b) => b.fmt(f),
            JobError::Failed(m) => f.write_str(m),
        }
    }
}

pub struct Pool {
    free: Mutex<Vec<Recognizer>>,
    permits: Arc<Semaphore>,
    /// Jobs admitted and not finished: running plus waiting.
    admitted: AtomicUsize,
    max_concurrent: usize,
    max_queue: usize,
}

/// A recognizer checked out of the pool; it goes back when this is dropped (also when the job
/// that held it panicked or its client went away).
pub struct Lease {
    pool: Arc<Pool>,
    recognizer: Option<Recognizer>,
    _permit: OwnedSemaphorePermit,
    _admission: Admission,
}

impl Lease {
    pub fn recognizer(&mut self) -> &mut Recognizer {
        self.recognizer.as_mut().expect("held until drop")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.recognizer.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r);
        }
    }
}

/// One admitted job, counted until dropped (cancelled while waiting included).
struct Admission(Arc<Pool>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    pub fn new(recognizers: Vec<Recognizer>, max_queue: usize) -> Arc<Self> {
        let n = recognizers.len();
        Arc::new(Pool {
            free: Mutex::new(recognizers),
            permits: Arc::new(Semaphore::new(n)),
            admitted: AtomicUsize::new(0),
            max_concurrent: n,
            max_queue,
        })
    }

    /// Jobs running or waiting now.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Wait for a recognizer, or `Busy` at once when `max_concurrent + max_queue` jobs are
    /// already admitted.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, Busy> {
        let limit = self.max_concurrent + self.max_queue;
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let admission = Admission(self.clone());
        if before >= limit {
            return Err(Busy {
                max_concurrent: self.max_concurrent,
                max_queue: self.max_queue,
            });
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let recognizer = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .expect("a permit guarantees a free recognizer");
        Ok(Lease {
            pool: self.clone(),
            recognizer: Some(recognizer),
            _permit: permit,
            _admission: admission,
        })
    }

    /// Run `job` on a leased recognizer on the blocking thread pool. The lease moves into the
    /// job, so a client that goes away does not lose the recognizer.
    pub async fn run<T, F>(self: &Arc<Self>, job: F) -> Result<T, JobError>
    where
        F: FnOnce(&mut Recognizer) -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut lease = self.lease().await.map_err(JobError::Busy)?;
        let handle = tokio::task::spawn_blocking(move || job(lease.recognizer()));
        handle.await.map_err(|e| {
            tracing::error!("inference job failed: {e}");
            JobError::Failed(format!("inference failed: {e}"))
        })
    }
}
