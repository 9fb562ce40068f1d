//! Pub/sub: progress notices to API processes, and cancel notices to workers, and the one
//! re-subscribing loop both listeners use ([`resubscribing`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use abridge_core::BatchId;
use abridge_core::backoff::Doubling;
use futures::{Stream, StreamExt};
use tracing::{debug, warn};

use crate::{Context, Queue, Result};

/// What a [`resubscribing`] stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscribed<T> {
    /// The subscription was made again after a drop: notices sent meanwhile were missed.
    Again,
    Notice(T),
}

/// One endless stream over a subscription that Redis may drop (a restart, a failover): when
/// the stream ends or cannot be made, `subscribe` is called again after a backoff (100 ms,
/// doubling to 5 s, reset by a subscription that holds). `what` names it in the logs.
pub fn resubscribing<T, S, F, Fut>(
    what: &'static str,
    subscribe: F,
) -> impl Stream<Item = Subscribed<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S>>,
    S: Stream<Item = T>,
{
    const FIRST: Duration = Duration::from_millis(100);
    const LONGEST: Duration = Duration::from_secs(5);
    struct State<F, S> {
        subscribe: F,
        current: Option<Pin<Box<S>>>,
        waits: Doubling,
        subscribed_before: bool,
    }
    let state: State<F, S> = State {
        subscribe,
        current: None,
        waits: Doubling::new(FIRST, LONGEST),
        subscribed_before: false,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(stream) = state.current.as_mut() {
                match stream.next().await {
                    Some(item) => return Some((Subscribed::Notice(item), state)),
                    None => {
                        warn!("{what}: subscription dropped; re-subscribing");
                        state.current = None;
                        tokio::time::sleep(state.waits.next_wait()).await;
                    }
                }
            }
            match (state.subscribe)().await {
                Ok(stream) => {
                    state.current = Some(Box::pin(stream));
                    state.waits.reset();
                    if std::mem::replace(&mut state.subscribed_before, true) {
                        return Some((Subscribed::Again, state));
                    }
                }
                Err(e) => {
                    debug!(error = %e, "{what}: cannot subscribe; retrying");
                    tokio::time::sleep(state.waits.next_wait()).await;
                }
            }
        }
    })
}

impl Queue {
    /// [`Queue::publish_progress`] for callers that carry on whatever happens: a lost notice
    /// only delays a progress event (listeners re-read now and then).
    pub async fn notify_progress(&self, batches: &[BatchId]) {
        if let Err(e) = self.publish_progress(batches).await {
            debug!(error = %e, "cannot publish progress; API listeners will re-read on their own");
        }
    }

    /// Tells API processes that items of these batches changed state (started, finished,
    /// cancelled, retried): one PUBLISH of space-separated ids, whatever the number of items.
    /// A notice carries no state; listeners read it from Postgres. Pub/sub is lossy, so
    /// listeners also re-read now and then.
    pub async fn publish_progress(&self, batches: &[BatchId]) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let message = batches
            .iter()
            .map(BatchId::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut conn = self.conn("publish progress").await?;
        redis::cmd("PUBLISH")
            .arg(&self.keys.progress)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .context("publish progress")?;
        Ok(())
    }

    /// A stream of progress notices (the batches each one names), from the moment it is
    /// subscribed. Ends when the connection drops; the caller re-subscribes and re-reads.
    pub async fn progress_notices(&self) -> Result<impl Stream<Item = Vec<BatchId>> + use<>> {
        let payloads = self
            .subscribe(&self.keys.progress, "subscribe to progress")
            .await?;
        Ok(payloads.map(|payload| {
            payload
                .split_ascii_whitespace()
                .filter_map(|id| id.parse().ok())
                .collect()
        }))
    }

    /// A stream of cancelled batch ids, from the moment it is subscribed. Ends when the
    /// connection drops; the caller re-subscribes (renewals catch what was missed).
    pub async fn cancellations(&self) -> Result<impl Stream<Item = BatchId> + use<>> {
        let payloads = self
            .subscribe(&self.keys.events, "subscribe to cancellations")
            .await?;
        Ok(payloads
            .filter_map(|payload| async move { payload.strip_prefix("cancel ")?.parse().ok() }))
    }

    /// The text payloads published on `channel`, on a connection of their own (through a
    /// node that answers, on a cluster).
    async fn subscribe(
        &self,
        channel: &str,
        context: &'static str,
    ) -> Result<impl Stream<Item = String> + use<>> {
        let mut pubsub = self
            .connector
            .client()
            .await
            .context(context)?
            .get_async_pubsub()
            .await
            .context(context)?;
        pubsub.subscribe(channel).await.context(context)?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move { msg.get_payload::<String>().ok() }))
    }
}
