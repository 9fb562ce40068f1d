//! Redis key names. The layout is documented once, at the top of `lua/lib.lua`.

use abridge_core::{BatchId, Priority};

/// Every key of one shard of a queue. All share the shard's hash tag, so a shard lives in
/// one Redis Cluster slot and every script's keys are co-located. The first shard's tag is
/// the queue's name; it also holds what is fleet-wide (the pause's source of truth aside:
/// Postgres), such as budgets, breakers and the reconciler's turn.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `{redis_prefix}:{{tag}}:`; scripts build per-batch keys from it.
    pub prefix: String,
    /// The hash tag: the queue's name for the first shard (see [`shard_tags`]).
    pub tag: String,
    /// Rotation lists of batch ids, by priority rank.
    pub rotation: [String; 3],
    /// Claimed items scored by lease deadline: what the reaper scans.
    pub lease_deadlines: String,
    /// Claimed item -> its holder and where it goes back (`token|worker|batch|rank|position`).
    pub lease_holders: String,
    pub delayed: String,
    /// Delayed item -> where it goes when due (`batch|rank|position`).
    pub delayed_places: String,
    /// Leases a reaper took (`item|token`, scored by when): their old holders may not
    /// re-create them (renew.lua), only a holder whose lease Redis lost may.
    pub taken: String,
    pub wake: String,
    /// Present while an operator has the queue paused: no claim takes an item.
    pub paused: String,
    /// The generation of the pause copy Redis holds (pause.lua writes only a newer one).
    pub pause_generation: String,
    pub epoch: String,
    pub reconcile_lock: String,
    /// The last reconcile pass's findings, for the fleet gauges.
    pub reconciled: String,
    /// Pub/sub channel for cancellations (channels are not keys; named alike for clarity).
    pub events: String,
    /// Pub/sub channel for "these batches changed" notices, which the API turns into progress
    /// events. Separate from `events` so workers are not sent every progress notice.
    pub progress: String,
    /// Pub/sub channel on which the shard says that a priority rank it had no work of got
    /// some (`list_owner` in `lua/lib.lua`): claim loops working other shards hear of urgent
    /// work here instead of polling every shard (`Queue::hear_ready_ranks`).
    pub ranks: String,
    /// The hash tags of every shard that may hold items (first shard only): the shards of
    /// each layout a process runs with, until a shard outside them all is found empty.
    pub shards: String,
}

impl Keys {
    /// The keys of the shard whose hash tag is `tag` (the queue's name for the first).
    pub fn new(redis_prefix: &str, tag: &str) -> Self {
        let prefix = format!("{redis_prefix}:{{{tag}}}:");
        let k = |name: &str| format!("{prefix}{name}");
        Self {
            rotation: [k("owners:0"), k("owners:1"), k("owners:2")],
            lease_deadlines: k("lease-deadlines"),
            lease_holders: k("lease-holders"),
            delayed: k("delayed"),
            delayed_places: k("delayed-places"),
            taken: k("taken"),
            wake: k("wake"),
            paused: k("paused"),
            pause_generation: k("pause-generation"),
            epoch: k("epoch"),
            reconcile_lock: k("reconcile-lock"),
            reconciled: k("reconciled"),
            events: k("events"),
            progress: k("progress"),
            ranks: k("ranks"),
            shards: k("shards"),
            prefix,
            tag: tag.to_owned(),
        }
    }

    pub fn ready(&self, batch: BatchId) -> String {
        format!("{}q:{batch}", self.prefix)
    }

    /// A large batch's items, staged while its rows are written (see `lua/activate.lua`).
    pub fn staged(&self, batch: BatchId) -> String {
        format!("{}staged:{batch}", self.prefix)
    }

    pub fn cancelled(&self, batch: BatchId) -> String {
        format!("{}cancelled:{batch}", self.prefix)
    }

    /// A fleet-wide token bucket (`youtube`, `openai:tokens`, ...).
    pub fn budget(&self, name: &str) -> String {
        format!("{}budget:{name}", self.prefix)
    }

    /// A fleet-wide circuit breaker for one backend.
    pub fn breaker(&self, name: &str) -> String {
        format!("{}breaker:{name}", self.prefix)
    }

    /// Present while an LLM server is known to refuse structured answers for a model: `what`
    /// names the server and the model (hashed by the caller: a URL may hold anything).
    pub fn text_only(&self, what: &str) -> String {
        format!("{}text-only:{what}", self.prefix)
    }

    /// The YouTube session the fleet reuses (innertube's key, the consent cookie), as JSON.
    pub fn youtube_session(&self) -> String {
        format!("{}youtube-session", self.prefix)
    }

    /// Present (with a TTL) while a YouTube proxy of the pool is quarantined.
    pub fn egress_quarantine(&self, egress: &str) -> String {
        format!("{}egress-quarantine:{egress}", self.prefix)
    }

    /// LLM tokens a tenant's items spent on one UTC day (`YYYYMMDD`).
    pub fn tenant_tokens(&self, tenant: &str, day: &str) -> String {
        format!("{}tokens:{tenant}:{day}", self.prefix)
    }

    pub fn rotation_for(&self, priority: Priority) -> &str {
        &self.rotation[usize::from(priority.rank())]
    }
}

/// Redis Cluster's slot count.
const SLOTS: u32 = 16384;

/// A key's cluster slot: CRC16 (XMODEM) of its hash tag, as Redis Cluster computes it.
pub fn slot(tag: &str) -> u16 {
    (u32::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes())) % SLOTS) as u16
}

/// The hash tags of a queue spread over `n` shards. The first is the queue's name (so one
/// shard is the layout every build before sharding used). Shard `s`'s tag is the first of
/// `queue.s`, `queue.s.1`, `queue.s.2`, ... whose slot lies in the middle half of the `s`-th
/// of `n` equal slot ranges counted from the queue's own range: a cluster whose `n` masters own
/// equal ranges (what `redis-cli --cluster create` makes) then has one shard on each master.
/// The tags depend on `n`: another `n` is another layout (see `Queue::with_shards`).
pub fn shard_tags(queue: &str, n: usize) -> Vec<String> {
    let n32 = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let width = SLOTS / n32;
    let home = (u32::from(slot(queue)) / width.max(1)).min(n32 - 1);
    let mut tags = vec![queue.to_owned()];
    for s in 1..n32 {
        let range = (home + s) % n32;
        let (lo, hi) = (range * width + width / 4, range * width + 3 * width / 4);
        let fits = |tag: &str| (lo..hi.max(lo + 1)).contains(&u32::from(slot(tag)));
        let mut tag = format!("{queue}.{s}");
        let mut k = 0;
        while !fits(&tag) && k < 100_000 {
            k += 1;
            tag = format!("{queue}.{s}.{k}");
        }
        tags.push(tag);
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let keys = Keys::new("abridge", "default");
        assert_eq!(keys.lease_deadlines, "abridge:{default}:lease-deadlines");
        assert_eq!(
            keys.rotation_for(Priority::Low),
            "abridge:{default}:owners:2"
        );
        let batch = BatchId::new();
        assert_eq!(keys.ready(batch), format!("abridge:{{default}}:q:{batch}"));
    }

    #[test]
    fn slots_are_redis_clusters() {
        // As CLUSTER KEYSLOT answers (5718 is the slot the issue saw `default` MOVED for).
        assert_eq!(slot("default"), 5718);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
    }

    #[test]
    fn shard_tags_land_on_separate_thirds_of_the_slots() {
        for queue in ["default", "summaries", "q", "abridge-bench"] {
            let tags = shard_tags(queue, 3);
            assert_eq!(tags[0], queue);
            let mut thirds: Vec<u16> = tags.iter().map(|t| slot(t) / 5462).collect();
            thirds.sort();
            thirds.dedup();
            assert_eq!(thirds.len(), 3, "{queue}: {tags:?}");
            // Deterministic: every process computes the same layout.
            assert_eq!(tags, shard_tags(queue, 3));
        }
        assert_eq!(shard_tags("default", 1), vec!["default".to_owned()]);
    }
}
