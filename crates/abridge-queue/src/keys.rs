//! Redis key names. The layout is documented once, at the top of `lua/lib.lua`.

use abridge_core::{BatchId, Priority};

/// Every key of one queue. All share the `{queue}` hash tag, so one queue lives in one
/// Redis Cluster slot and every script's keys are co-located.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `{redis_prefix}:{{queue}}:`; scripts build per-batch keys from it.
    pub prefix: String,
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
}

impl Keys {
    pub fn new(redis_prefix: &str, queue: &str) -> Self {
        let prefix = format!("{redis_prefix}:{{{queue}}}:");
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
            prefix,
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
}
