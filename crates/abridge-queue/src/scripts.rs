//! The queue's transitions, one Lua file each under `lua/`, every one opening with a header
//! that documents its KEYS, ARGV and reply. `lua/lib.lua` (key layout and shared helpers) is
//! prepended to each.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/lib.lua"),
                "\n",
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

pub(crate) static ENQUEUE: LazyLock<Script> = script!("enqueue.lua");
pub(crate) static ACTIVATE: LazyLock<Script> = script!("activate.lua");
pub(crate) static CLAIM: LazyLock<Script> = script!("claim.lua");
pub(crate) static RENEW: LazyLock<Script> = script!("renew.lua");
pub(crate) static ACK: LazyLock<Script> = script!("ack.lua");
pub(crate) static REQUEUE: LazyLock<Script> = script!("requeue.lua");
pub(crate) static REAP: LazyLock<Script> = script!("reap.lua");
pub(crate) static RELEASE_WORKER: LazyLock<Script> = script!("release_worker.lua");
pub(crate) static CANCEL: LazyLock<Script> = script!("cancel.lua");
pub(crate) static HELD: LazyLock<Script> = script!("held.lua");
pub(crate) static STATS: LazyLock<Script> = script!("stats.lua");
pub(crate) static LIMITS: LazyLock<Script> = script!("limits.lua");
pub(crate) static PAUSE: LazyLock<Script> = script!("pause.lua");
pub(crate) static BUDGET: LazyLock<Script> = script!("budget.lua");
pub(crate) static BREAKER_PASS: LazyLock<Script> = script!("breaker_pass.lua");
pub(crate) static ADOPT_KEYS: LazyLock<Script> = script!("adopt_keys.lua");
pub(crate) static BREAKER_REPORT: LazyLock<Script> = script!("breaker_report.lua");
pub(crate) static WAKE: LazyLock<Script> = script!("wake.lua");
