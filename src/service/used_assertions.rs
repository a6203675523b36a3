//! The IDs (`jti`) of the assertions applications present, recorded in batches. Every token, introspection and
//! revocation request uses one up, so recording each in a transaction of its own would make the database's commit
//! (a disk flush on PostgreSQL, the one writer connection on SQLite) the limit of all of them. One task writes
//! what has queued meanwhile in one transaction (group commit); each request still learns, before it is
//! answered, whether its `jti` was new, and the table's primary key still decides races with other processes.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::store::{EventStore, StoreError, UsedAssertion};

use super::{Error, Result};

/// The most assertions one transaction records.
const BATCH: usize = 64;
/// Requests waiting for the writer at most; more wait to queue.
const QUEUE: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct AssertionLog(OnceLock<mpsc::Sender<Pending>>);

#[derive(Debug)]
struct Pending {
    used: UsedAssertion,
    reply: oneshot::Sender<Result<bool>>,
}

impl AssertionLog {
    /// Records the assertion; false when its `jti` was used before.
    pub async fn record(&self, store: &Arc<dyn EventStore>, used: UsedAssertion) -> Result<bool> {
        let writer = self.0.get_or_init(|| start(store.clone()));
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Internal("the assertion log's writer stopped".into());
        writer.send(Pending { used, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer: ends when the log (and with it every sender) is dropped.
fn start(store: Arc<dyn EventStore>) -> mpsc::Sender<Pending> {
    let (sender, mut queue) = mpsc::channel::<Pending>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            // Requests that are already runnable get to queue their jti first: a larger batch is fewer
            // transactions, and fewer wake-ups of the database's thread.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (used, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.used, p.reply)).unzip();
            match store.use_assertions(&used).await {
                Ok(first_use) => {
                    for (reply, new) in replies.into_iter().zip(first_use) {
                        let _ = reply.send(Ok(new));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(each(&e)));
                    }
                }
            }
        }
    });
    sender
}

/// The error each request of a failed batch answers with.
fn each(error: &StoreError) -> Error {
    match error {
        StoreError::Unavailable(cause) => Error::Unavailable(cause.clone()),
        StoreError::Unwritable(why) => Error::Unwritable(*why),
        other => Error::Internal(other.to_string()),
    }
}
