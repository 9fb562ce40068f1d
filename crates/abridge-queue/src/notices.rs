//! Pub/sub: progress notices to API processes, cancel notices to workers, and the one
//! re-subscribing loop both listeners use ([`resubscribing`]); and the shards' notices of
//! urgent work to a worker's claim loops ([`Queue::hear_ready_ranks`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use abridge_core::BatchId;
use abridge_core::backoff::Doubling;
use futures::{Stream, StreamExt};
use tracing::{debug, warn};

use crate::{Context, Queue, Result, ShardId};

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

/// How often the ready-ranks listener checks that its subscription answers, and how long it
/// waits for the answer.
const HEARING_CHECK: Duration = Duration::from_secs(1);

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

    /// Hears every shard's `ranks` notices for this process's claim loops, until dropped: a
    /// round then asks a shard it was told has urgent work, and does not look at the shards
    /// it did not ask (one LLEN each, every round). While it is not subscribed (Redis away, a
    /// failover, one shard), the rounds look as before; it subscribes again when the shards
    /// change, or when its connection does not answer a PING within `HEARING_CHECK` (a dead
    /// peer that sent no reset would otherwise leave the shards covered and unheard). After
    /// each PING every shard counts as having urgent work until a claim asks it, so a notice
    /// lost on the way costs at most `HEARING_CHECK`.
    pub async fn hear_ready_ranks(&self) {
        let heard = &self.shards.heard;
        let mut waits = Doubling::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let shards = self.active_shards();
            if shards.len() > 1 {
                let channels: Vec<String> = shards
                    .iter()
                    .map(|s| self.shard_keys(*s).ranks.clone())
                    .collect();
                let subscribed =
                    tokio::time::timeout(HEARING_CHECK * 5, self.subscribe_ranks(&channels));
                match subscribed.await {
                    Ok(Ok((sink, notices))) => {
                        waits.reset();
                        let _covering = heard.cover(shards.clone());
                        self.hear(&shards, &channels, sink, notices).await;
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "cannot subscribe to ready ranks; claims look")
                    }
                    Err(_) => debug!("subscribing to ready ranks timed out; claims look"),
                }
            }
            tokio::time::sleep(waits.next_wait()).await;
        }
    }

    async fn subscribe_ranks(
        &self,
        channels: &[String],
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        const CONTEXT: &str = "subscribe to ready ranks";
        let (mut sink, stream) = self
            .connector
            .client()
            .await
            .context(CONTEXT)?
            .get_async_pubsub()
            .await
            .context(CONTEXT)?
            .split();
        sink.subscribe(channels).await.context(CONTEXT)?;
        Ok((sink, stream))
    }

    /// The shards whose notices of urgent work this process hears now.
    pub fn heard_shards(&self) -> Vec<ShardId> {
        self.shards.heard.covered()
    }

    /// How many notices of urgent work this process has heard (or assumed, on subscribing).
    pub fn notices_heard(&self) -> u64 {
        self.shards.heard.generation()
    }

    /// Applies `notices` (on `channels`, one per shard of `shards`) until the subscription
    /// drops, stops answering, or the shards change.
    async fn hear(
        &self,
        shards: &[ShardId],
        channels: &[String],
        mut sink: redis::aio::PubSubSink,
        mut notices: redis::aio::PubSubStream,
    ) {
        let mut check = tokio::time::interval(HEARING_CHECK);
        loop {
            tokio::select! {
                notice = notices.next() => {
                    let Some(msg) = notice else { return };
                    let channel = msg.get_channel_name();
                    let shard = channels.iter().position(|c| c == channel).map(|i| shards[i]);
                    let rank = msg.get_payload::<String>().ok().and_then(|r| r.parse::<u8>().ok());
                    if let (Some(shard), Some(rank)) = (shard, rank) {
                        self.shards.heard.notice(shard, rank);
                    }
                }
                _ = check.tick() => {
                    if self.active_shards() != shards {
                        return;
                    }
                    let ping = tokio::time::timeout(HEARING_CHECK, sink.ping::<redis::Value>());
                    if !matches!(ping.await, Ok(Ok(_))) {
                        warn!("ready ranks: the subscription does not answer; subscribing again");
                        return;
                    }
                    // On a cluster a shard's notice reaches this node over the cluster bus,
                    // which may drop one while this connection answers: a missed notice
                    // costs at most this check's period.
                    self.shards.heard.doubt(shards);
                }
            }
        }
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
