//! Store calls gathered into one statement each. Every OAuth request records its assertion's `jti` (a write), and
//! with a shared database every introspection asks whether a token was revoked (a read); one statement each would
//! make the database's round trips and commits (a disk flush on PostgreSQL, the one writer connection on SQLite)
//! the limit of all of them. One task per kind runs what has queued meanwhile as one statement (group commit), with
//! up to `IN_FLIGHT` statements at once; each request still gets its own answer before it is answered, from a
//! statement that started after it arrived, and the database still decides races with other processes.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::EventStore;

use super::{Error, Result};

/// The most requests one statement carries.
const BATCH: usize = 64;
/// Requests waiting for the task at most; more wait to queue.
const QUEUE: usize = 4096;
/// Statements of one kind running at once. With one, requests that arrive while it waits for the database wait for
/// its whole round trip before theirs starts; with two, they start as soon as the next batch is gathered, and the
/// batches stay large, since a batch is gathered only once a slot is free.
const IN_FLIGHT: usize = 2;

/// One statement for a batch: an answer per input, in order.
pub(super) type Run<In, Out> =
    fn(Arc<dyn EventStore>, Vec<In>) -> Pin<Box<dyn Future<Output = crate::store::Result<Vec<Out>>> + Send>>;

/// The queue of one kind of store call, and the task that runs it (started by the first call).
pub(super) struct Batched<In, Out> {
    run: Run<In, Out>,
    queue: OnceLock<mpsc::Sender<Pending<In, Out>>>,
}

struct Pending<In, Out> {
    input: In,
    reply: oneshot::Sender<Result<Out>>,
}

impl<In: Send + 'static, Out: Send + 'static> Batched<In, Out> {
    pub fn new(run: Run<In, Out>) -> Self {
        Batched { run, queue: OnceLock::new() }
    }

    /// Queues the input and waits for its answer.
    pub async fn call(&self, store: &Arc<dyn EventStore>, input: In) -> Result<Out> {
        let queue = self.queue.get_or_init(|| start(store.clone(), self.run));
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Internal("a batching task stopped".into());
        queue.send(Pending { input, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl<In, Out> std::fmt::Debug for Batched<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

/// The task: ends when the queue (and with it every sender) is dropped.
fn start<In: Send + 'static, Out: Send + 'static>(
    store: Arc<dyn EventStore>,
    run: Run<In, Out>,
) -> mpsc::Sender<Pending<In, Out>> {
    let (sender, mut queue) = mpsc::channel::<Pending<In, Out>>(QUEUE);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            // The semaphore is never closed, so a slot always comes.
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            // Requests that are already runnable get to queue first: a larger batch is fewer statements, and fewer
            // wake-ups of the database's thread.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (inputs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.input, p.reply)).unzip();
            let statement = run(store.clone(), inputs);
            tokio::spawn(async move {
                answer(statement.await, replies);
                drop(slot);
            });
        }
    });
    sender
}

/// Hands each request of a batch its answer, or the statement's error.
fn answer<Out>(answers: crate::store::Result<Vec<Out>>, replies: Vec<oneshot::Sender<Result<Out>>>) {
    match answers {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let wrong = format!("{} answers for {} requests", answers.len(), replies.len());
            for reply in replies {
                let _ = reply.send(Err(Error::Internal(wrong.clone())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(Error::from(&e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::StoreError;

    /// Statements the doubling batch ran.
    static STATEMENTS: AtomicUsize = AtomicUsize::new(0);

    fn doubled(
        _: Arc<dyn EventStore>,
        inputs: Vec<u32>,
    ) -> Pin<Box<dyn Future<Output = crate::store::Result<Vec<u32>>> + Send>> {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(inputs.into_iter().map(|i| i * 2).collect()) })
    }

    async fn store() -> (Arc<dyn EventStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        (crate::store::open(None, dir.path()).await.expect("store"), dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_request_gets_its_own_answer_from_fewer_statements() {
        let (store, _dir) = store().await;
        let batched = Arc::new(Batched::new(doubled));
        let calls: Vec<_> = (0..500u32)
            .map(|i| {
                let (batched, store) = (batched.clone(), store.clone());
                tokio::spawn(async move { (i, batched.call(&store, i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.expect("task");
            assert_eq!(answer.expect("answer"), i * 2);
        }
        let statements = STATEMENTS.load(Ordering::Relaxed);
        assert!(statements < 500, "500 requests in {statements} statements");
    }

    /// Statements of the slow batch running now, and the most at once.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    fn slow(
        _: Arc<dyn EventStore>,
        inputs: Vec<u32>,
    ) -> Pin<Box<dyn Future<Output = crate::store::Result<Vec<u32>>> + Send>> {
        Box::pin(async move {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MOST.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            Ok(inputs)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_that_arrive_during_a_statement_start_the_next_without_waiting_for_it() {
        let (store, _dir) = store().await;
        let batched = Arc::new(Batched::new(slow));
        let mut calls = Vec::new();
        for i in 0..12u32 {
            let (batched, store) = (batched.clone(), store.clone());
            calls.push(tokio::spawn(async move { (i, batched.call(&store, i).await) }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for call in calls {
            let (i, answer) = call.await.expect("task");
            assert_eq!(answer.expect("answer"), i);
        }
        assert_eq!(MOST.load(Ordering::SeqCst), IN_FLIGHT, "statements at once");
    }

    #[tokio::test]
    async fn a_failed_statement_fails_every_request_of_its_batch() {
        let (store, _dir) = store().await;
        let unreachable = Batched::<u32, u32>::new(|_, _| {
            Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
        });
        assert!(matches!(unreachable.call(&store, 1).await, Err(Error::Unavailable(_))));
        let short = Batched::<u32, u32>::new(|_, _| Box::pin(async { Ok(vec![]) }));
        assert!(matches!(short.call(&store, 1).await, Err(Error::Internal(_))));
    }
}
