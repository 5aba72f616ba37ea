//! A fixed set of threads that run the claims' blocking work: the journal
//! lookup, the token's decryption and the affidavit's signature.
//!
//! Why not tokio's blocking pool: it starts one OS thread per waiting task.
//! With 64 claims in flight the daemon ran 64 RSA decryptions at once on a
//! 2-CPU machine; the sequencer's lock holder (who signs the next affidavit
//! while the others wait for their chain position) was preempted by
//! runnable RSA threads, every claim paid two hand-offs to the pool and
//! back, and latency was a lottery. Here at most `threads` operations run
//! at once (by default one per CPU, which is all a software token such as
//! SoftHSM can use; a network HSM with its own cores may want more, see
//! `[limits] device_threads`), and claims wait in one FIFO queue, so they
//! are served in arrival order.
//!
//! A job that panics takes only itself down: its caller sees
//! [`PoolStopped`] (the claim is answered `Unavailable`, nothing was
//! released) and the thread goes on with the next job.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::error;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The job did not run to completion: the pool is shutting down, or the
/// job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the device thread pool stopped or the job failed")]
pub struct PoolStopped;

struct Queue {
    jobs: VecDeque<Job>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// `queue.jobs.len()`, readable without the lock.
    waiting: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs never run under this lock, so it cannot be poisoned by one.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See the module documentation.
pub struct DevicePool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
}

impl DevicePool {
    /// Start `threads` threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<DevicePool> {
        let size = threads.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                stopping: false,
            }),
            ready: Condvar::new(),
            waiting: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(size);
        for i in 0..size {
            let s = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("vtp-device-{i}"))
                    .spawn(move || work(&s))?,
            );
        }
        Ok(DevicePool {
            shared,
            threads: Mutex::new(handles),
            size,
        })
    }

    /// How many operations may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs waiting for a thread (not counting those running).
    pub fn queued(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// A cheap "are jobs waiting?" for the journal writer's group commit
    /// ([`crate::journal::writer::Writer::hold_batches`]).
    pub fn backlog_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.waiting.load(Ordering::Relaxed) > 0
    }

    /// Run `f` on a device thread once the jobs queued before it have
    /// started; wait for its result without blocking the async runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolStopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.shared.lock();
            if q.stopping {
                return Err(PoolStopped);
            }
            q.jobs.push_back(Box::new(move || {
                // The caller may have gone away (connection closed): the
                // job's own effects (a committed record) stand regardless.
                let _ = tx.send(f());
            }));
            self.shared.waiting.store(q.jobs.len(), Ordering::Relaxed);
        }
        self.shared.ready.notify_one();
        rx.await.map_err(|_| PoolStopped)
    }

    /// Run the jobs already queued, refuse new ones, and join the threads.
    /// Blocking.
    pub fn shutdown(&self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    shared.waiting.store(q.jobs.len(), Ordering::Relaxed);
                    break job;
                }
                if q.stopping {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            error!("a device job panicked; its claim is answered `Unavailable` and nothing was released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_and_bounds_concurrency() {
        let pool = Arc::new(DevicePool::start(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..16usize {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                })
                .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().unwrap());
        }
        assert_eq!(results, (0..16).map(|i| i * 2).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} jobs ran at once on a pool of 2");
        assert!(most >= 1);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = DevicePool::start(1).unwrap();
        let failed = pool.run(|| -> u8 { panic!("injected panic (test)") }).await;
        assert_eq!(failed, Err(PoolStopped));
        assert_eq!(pool.run(|| 7u8).await, Ok(7));
    }

    #[tokio::test]
    async fn refuses_after_shutdown() {
        let pool = DevicePool::start(1).unwrap();
        pool.shutdown();
        assert_eq!(pool.run(|| 1u8).await, Err(PoolStopped));
    }
}
