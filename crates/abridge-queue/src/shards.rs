//! A queue over several hash tags (`ABRIDGE_QUEUE_SHARDS`), so that on a Redis Cluster one
//! queue's work spreads over several masters.
//!
//! Each shard is a whole queue in miniature (rotations, ready sets, leases, delays) under its
//! own hash tag, and every script runs on one shard. An item's shard is chosen when it is
//! placed, from its batch and position ([`Queue::placement_shard`]), so each batch is dealt
//! out evenly across the shards (single items first, then growing blocks, up to
//! [`PLACEMENT_BLOCK`] positions) and each shard holds the same mix of priorities, tenants and
//! batches: the rules a claim applies on one shard (strict priority, fair share) then hold
//! across shards to within one claim group. A lease remembers the shard it was claimed from,
//! and its renewal, acknowledgement and retry go there.
//!
//! A process places items on the shards of its own layout (`n` tags, [`shard_tags`]), but
//! claims from, reaps and counts every shard that may hold items: those of every layout a
//! process of the fleet runs with. The first shard records them (`Keys::shards`); each
//! process adds its layout's tags whenever it refreshes ([`Queue::refresh_shards`]), and the
//! reconciler drops a shard outside every layout once it is empty
//! ([`Queue::retire_empty_shards`]). Changing `n` on a live fleet is a rolling restart: the
//! new layout's shards fill while the old ones are worked off.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use abridge_core::BatchId;
use redis::AsyncCommands;

use crate::keys::shard_tags;
use crate::{Context, Keys, Queue, Result};

/// A shard, as this process numbers them: stable while it runs (a lease names its shard by
/// one), not across processes. The first shard (the queue's own tag) is always 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The first shard: the queue's own tag, home of its fleet-wide keys.
    pub const FIRST: ShardId = ShardId(0);
}

/// Which shards this process places items on, and every shard it knows.
pub(crate) struct Shards {
    redis_prefix: String,
    /// Where new items go: this process's `ABRIDGE_QUEUE_SHARDS` shards, the first first.
    layout: Vec<ShardId>,
    known: RwLock<Known>,
    /// When this process last recorded its layout. It records it before it places an item
    /// outside the first shard, and again every `RECORD_EVERY` while it places items, so
    /// that no item waits long where no claimer looks.
    recorded_at: Mutex<Option<Instant>>,
    /// Shards outside this layout found empty, and since when: one is retired only once it
    /// has stayed empty for the grace the reconciler gives.
    empty_since: Mutex<HashMap<ShardId, Instant>>,
    pub(crate) heard: Heard,
}

/// What the shards' `ranks` notices said ([`Queue::hear_ready_ranks`]): a claim loop applies
/// them in each round (after its idle wait), and skips its look at the shards they cover.
#[derive(Default)]
pub(crate) struct Heard {
    /// The number of notices so far: a claim loop applies those after the last it applied.
    generation: AtomicU64,
    /// The latest notices (generation, shard, rank), oldest first, at most `KEPT_NOTICES`.
    log: Mutex<VecDeque<(u64, ShardId, u8)>>,
    /// The shards whose notices are heard now (none while no listener is subscribed).
    covered: RwLock<Vec<ShardId>>,
}

/// Notices kept for claim loops that have not applied them yet. A loop further behind (a
/// burst of notices between two of its rounds) takes every shard for urgent until asked.
const KEPT_NOTICES: usize = 256;

impl Heard {
    pub(crate) fn notice(&self, shard: ShardId, rank: u8) {
        let mut log = self.log.lock().expect("heard lock");
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        log.push_back((generation, shard, rank));
        if log.len() > KEPT_NOTICES {
            log.pop_front();
        }
    }

    /// Lowers `seen` to what the notices after generation `since` named; returns the
    /// generation now applied.
    pub(crate) fn apply(&self, since: u64, seen: &mut HashMap<ShardId, u8>) -> u64 {
        if self.generation() == since {
            return since;
        }
        let log = self.log.lock().expect("heard lock");
        if log.front().is_some_and(|(first, ..)| *first > since + 1) {
            // Some were dropped unread: any shard may have urgent work.
            seen.values_mut().for_each(|rank| *rank = 0);
        }
        // A shard the loop has no view of counts as holding rank 0 already.
        for (_, shard, rank) in log.iter().filter(|(g, ..)| *g > since) {
            if let Some(at) = seen.get_mut(shard) {
                *at = (*at).min(*rank);
            }
        }
        self.generation()
    }

    pub(crate) fn covered(&self) -> Vec<ShardId> {
        self.covered.read().expect("heard lock").clone()
    }

    /// From now on the notices of `shards` are heard, until the guard is dropped. What they
    /// said before is unknown: each counts as having urgent work until a claim asks it.
    pub(crate) fn cover(&self, shards: Vec<ShardId>) -> Covering<'_> {
        self.doubt(&shards);
        *self.covered.write().expect("heard lock") = shards;
        Covering(self)
    }

    /// Takes every one of `shards` for having urgent work until a claim asks it: what a
    /// notice that never arrived would have said.
    pub(crate) fn doubt(&self, shards: &[ShardId]) {
        for shard in shards {
            self.notice(*shard, 0);
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Shards heard while it lives: a listener that stops (its subscription dropped, its task
/// cancelled) leaves the claim loops looking again.
pub(crate) struct Covering<'a>(&'a Heard);

impl Drop for Covering<'_> {
    fn drop(&mut self) {
        self.0.covered.write().expect("heard lock").clear();
    }
}

/// How often a process that places items records its layout again (a reconciler that found a
/// shard empty waits longer than this before it retires it).
pub const RECORD_EVERY: Duration = Duration::from_secs(10);

/// Most consecutive positions of a batch that go to one shard. Dealing single items would make
/// a claim's items every Nth row of a big batch, and Postgres would touch N times the pages to
/// start and finish them; blocks keep them neighbours.
pub const PLACEMENT_BLOCK: u64 = 64;

/// The block (counted from the batch's first shard) that `position` is in, over `shards`
/// shards: one item to each shard, then two to each, four, ... up to [`PLACEMENT_BLOCK`]. A
/// batch of a few items is on as many shards as it has items, so its tenant's cap (split over
/// the shards) and share are whole for it; a big one is in blocks of `PLACEMENT_BLOCK`.
fn placement_block(position: u64, shards: u64) -> u64 {
    let (mut rest, mut size, mut block) = (position, 1, 0);
    while size < PLACEMENT_BLOCK && rest >= size * shards {
        rest -= size * shards;
        block += shards;
        size *= 2;
    }
    block + rest / size
}

struct Known {
    /// By [`ShardId`]; only ever appended to.
    keys: Vec<Arc<Keys>>,
    /// What claims, reapers and counts cover: the layout and every recorded shard.
    active: Vec<ShardId>,
}

impl Shards {
    pub(crate) fn new(redis_prefix: &str, queue: &str, n: usize) -> Self {
        let keys: Vec<Arc<Keys>> = shard_tags(queue, n)
            .iter()
            .map(|tag| Arc::new(Keys::new(redis_prefix, tag)))
            .collect();
        let layout: Vec<ShardId> = (0..keys.len()).map(|i| ShardId(i as u16)).collect();
        Self {
            redis_prefix: redis_prefix.to_owned(),
            known: RwLock::new(Known {
                keys,
                active: layout.clone(),
            }),
            recorded_at: Mutex::new(None),
            empty_since: Mutex::new(HashMap::new()),
            heard: Heard::default(),
            layout,
        }
    }

    pub(crate) fn keys(&self, id: ShardId) -> Arc<Keys> {
        let known = self.known.read().expect("shards lock");
        known.keys[usize::from(id.0)].clone()
    }

    pub(crate) fn active(&self) -> Vec<ShardId> {
        self.known.read().expect("shards lock").active.clone()
    }

    /// Records `tags` (the first shard's `shards` set) as the shards that may hold items.
    fn set_recorded(&self, tags: &[String]) {
        let mut known = self.known.write().expect("shards lock");
        let mut active = self.layout.clone();
        for tag in tags {
            let id = match known.keys.iter().position(|k| &k.tag == tag) {
                Some(i) => ShardId(i as u16),
                None => {
                    known
                        .keys
                        .push(Arc::new(Keys::new(&self.redis_prefix, tag)));
                    ShardId((known.keys.len() - 1) as u16)
                }
            };
            if !active.contains(&id) {
                active.push(id);
            }
        }
        known.active = active;
    }
}

/// Gives a script on `shard` the wake list as its last key: only the first shard holds it,
/// and the other shards' scripts go without (`wake` in `lua/lib.lua`).
pub(crate) fn wake_key(inv: &mut redis::ScriptInvocation<'_>, keys: &Keys, shard: ShardId) {
    if shard == ShardId::FIRST {
        inv.key(&keys.wake);
    }
}

impl Queue {
    /// This queue spread over `n` shards (at least one): see the module's text.
    pub fn with_shards(mut self, n: usize) -> Self {
        self.shards = Arc::new(Shards::new(
            &self.shards.redis_prefix,
            &self.keys.tag,
            n.max(1),
        ));
        self
    }

    /// The shards new items go to.
    pub fn layout(&self) -> &[ShardId] {
        &self.shards.layout
    }

    /// Every shard that may hold items, as of the last [`Queue::refresh_shards`].
    pub fn active_shards(&self) -> Vec<ShardId> {
        self.shards.active()
    }

    pub fn shard_keys(&self, shard: ShardId) -> Arc<Keys> {
        self.shards.keys(shard)
    }

    /// The shard an item goes to: its batch's items are dealt out in turn, in growing blocks
    /// (`placement_block`), from a shard chosen by the batch id, so that small batches spread
    /// too.
    pub fn placement_shard(&self, batch: BatchId, position: i32) -> ShardId {
        let layout = &self.shards.layout;
        if layout.len() == 1 {
            return layout[0];
        }
        let n = layout.len() as u64;
        let start = batch.0.as_u64_pair().0 % n;
        let block = placement_block(u64::from(position.unsigned_abs()), n);
        layout[((start + block) % n) as usize]
    }

    /// Records this process's layout among the shards that may hold items, and learns the
    /// others' (processes run with another `ABRIDGE_QUEUE_SHARDS` during a change).
    pub async fn refresh_shards(&self) -> Result<()> {
        let mut conn = self.conn("refresh shards").await?;
        let mut pipe = redis::pipe();
        let tags: Vec<String> = self
            .shards
            .layout
            .iter()
            .map(|s| self.shards.keys(*s).tag.clone())
            .collect();
        pipe.sadd(&self.keys.shards, &tags)
            .ignore()
            .smembers(&self.keys.shards);
        let (recorded,): (Vec<String>,) = pipe
            .query_async(&mut conn)
            .await
            .context("refresh shards")?;
        self.shards.set_recorded(&recorded);
        *self.shards.recorded_at.lock().expect("shards lock") = Some(Instant::now());
        self.copy_pause().await
    }

    /// Records this process's layout before it places an item outside the first shard, and
    /// again every `RECORD_EVERY` (a reconciler may have retired a shard of it meanwhile).
    pub(crate) async fn ensure_recorded(&self) -> Result<()> {
        if self.shards.layout.len() == 1 {
            return Ok(()); // the first shard, which every process claims from
        }
        self.refresh_shards_if_stale().await
    }

    /// [`Queue::refresh_shards`], unless this process did it within `RECORD_EVERY`: for the
    /// figures, which a dashboard reads every second.
    pub(crate) async fn refresh_shards_if_stale(&self) -> Result<()> {
        let last = *self.shards.recorded_at.lock().expect("shards lock");
        if last.is_some_and(|at| at.elapsed() < RECORD_EVERY) {
            return Ok(());
        }
        self.refresh_shards().await
    }

    /// Gives every other shard the first shard's copy of the pause, where it holds an older
    /// one: a shard first used while the queue is paused must not hand out items.
    async fn copy_pause(&self) -> Result<()> {
        let others: Vec<ShardId> = self
            .active_shards()
            .into_iter()
            .filter(|s| *s != ShardId::FIRST)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn("copy the pause to every shard").await?;
        let (paused, generation): (bool, Option<i64>) = redis::pipe()
            .exists(&self.keys.paused)
            .get(&self.keys.pause_generation)
            .query_async(&mut conn)
            .await
            .context("copy the pause to every shard")?;
        let Some(generation) = generation else {
            return Ok(());
        };
        for shard in others {
            let keys = self.shard_keys(shard);
            crate::scripts::PAUSE
                .key(&keys.paused)
                .key(&keys.pause_generation)
                .arg(generation)
                .arg(i64::from(paused))
                .invoke_async::<i64>(&mut conn)
                .await
                .context("copy the pause to every shard")?;
        }
        Ok(())
    }

    /// Drops from the record every shard outside this process's layout that has held nothing
    /// (no ready, delayed or leased item) at every look for at least `grace`; returns how
    /// many. The grace covers what the looks cannot see at once (an item given back between
    /// two reads) and a process still placing there, which records its layout again within
    /// `RECORD_EVERY`.
    pub async fn retire_empty_shards(&self, grace: Duration) -> Result<usize> {
        let retired: Vec<ShardId> = self
            .shards
            .active()
            .into_iter()
            .filter(|s| !self.shards.layout.contains(s))
            .collect();
        let mut conn = self.conn("retire empty shards").await?;
        let mut gone = Vec::new();
        for shard in retired {
            let keys = self.shards.keys(shard);
            let mut pipe = redis::pipe();
            for rotation in &keys.rotation {
                pipe.llen(rotation);
            }
            pipe.zcard(&keys.delayed).zcard(&keys.lease_deadlines);
            let sizes: Vec<i64> = pipe
                .query_async(&mut conn)
                .await
                .context("retire empty shards")?;
            let mut empty_since = self.shards.empty_since.lock().expect("shards lock");
            if sizes.iter().any(|n| *n > 0) {
                empty_since.remove(&shard);
                continue;
            }
            let since = *empty_since.entry(shard).or_insert_with(Instant::now);
            if since.elapsed() >= grace {
                empty_since.remove(&shard);
                gone.push(keys.tag.clone());
            }
        }
        if !gone.is_empty() {
            let _: i64 = conn
                .srem(&self.keys.shards, &gone)
                .await
                .context("retire empty shards")?;
            self.refresh_shards().await?;
        }
        Ok(gone.len())
    }

    /// Wakes idle workers for `ready` items placed on `shard`, whose scripts could not (the
    /// fleet's wake list is on the first shard).
    pub(crate) async fn wake_for(
        &self,
        conn: &mut crate::pool::Connection,
        shard: ShardId,
        ready: i64,
    ) -> Result<()> {
        if shard == ShardId::FIRST || ready <= 0 {
            return Ok(());
        }
        crate::scripts::WAKE
            .key(&self.keys.wake)
            .arg(ready)
            .arg(crate::WAKE_LIMIT)
            .invoke_async::<()>(conn)
            .await
            .context("wake idle workers")
    }
}
