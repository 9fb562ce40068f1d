//! Identifiers. Newtypes so that an item id is never passed where a lease token is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A batch: one producer submission. UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub Uuid);

impl BatchId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for BatchId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim()).map(Self)
    }
}

/// An item: one video of a batch. A Postgres identity value, so it is small in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(pub i64);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The fence of one claim. A fresh random value per claim call, written into the item's
/// Postgres row when the item starts; every later write for the item must present it.
///
/// Random rather than a Redis counter: a counter would restart at zero after Redis loses its
/// data, and a zombie's old token could then equal a new claim's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub i64);

impl LeaseToken {
    /// A random positive token (63 bits, so it fits Postgres `bigint`).
    pub fn random() -> Self {
        let bytes = *Uuid::new_v4().as_bytes();
        let raw = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        Self((raw & i64::MAX).max(1))
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One worker process's session: registered at start, closed at stop or buried when it dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub Uuid);

impl WorkerId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkerId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim()).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_tokens_are_positive_and_distinct() {
        let tokens: std::collections::HashSet<i64> =
            (0..10_000).map(|_| LeaseToken::random().0).collect();
        assert_eq!(tokens.len(), 10_000);
        assert!(tokens.iter().all(|t| *t > 0));
    }

    #[test]
    fn batch_ids_parse_back() {
        let id = BatchId::new();
        assert_eq!(id.to_string().parse::<BatchId>().unwrap(), id);
        assert!("not-a-uuid".parse::<BatchId>().is_err());
    }
}

/// A claim on an item, as the fenced writes out of `queued` need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub item: ItemId,
    pub token: LeaseToken,
    /// The attempt this claim makes: the item's stored `attempts` plus one, as read after
    /// the claim. A start or an unstarted outcome is taken only while `attempts` is still one
    /// less; a take-over of the claim (a reaper, a dead worker's burial) counts an attempt.
    pub attempt: i32,
}

impl Claim {
    /// A claim of an item never attempted before (tests and tools).
    pub fn first(item: ItemId, token: LeaseToken) -> Self {
        Self {
            item,
            token,
            attempt: 1,
        }
    }
}
