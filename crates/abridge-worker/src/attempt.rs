//! How an attempt ended, and what the worker writes for it: the retry policy as one pure
//! function (no clock, no randomness of its own, no I/O), so every rule has a unit test.
//!
//! Whether a retry on the item's last allowed attempt fails it instead is decided where the
//! attempt count lives, in the outcome write (`Store::finish_items`).

use std::time::Duration;

use abridge_core::{ErrorKind, ItemError, Settings};
use abridge_store::Outcome;

use crate::JobOutput;
use crate::backoff::{defer_delay, retry_delay_with};
use crate::holdings::StopReason;

/// How an attempt ended, as its item's task saw it.
#[derive(Debug)]
pub enum AttemptEnd {
    /// The processor returned.
    Returned(Result<JobOutput, ItemError>),
    /// It ran past `item_timeout`.
    TimedOut,
    /// The processor panicked, with this message.
    Panicked(String),
    /// The worker stopped it before it returned.
    Stopped(StopReason),
}

/// The settings the policy reads.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The longest any item waits, whatever a service asked for.
    pub max_wait: Duration,
    /// For the timeout's message.
    pub item_timeout: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            retry_base: s.retry_base,
            retry_max: s.retry_max,
            max_wait: s.max_wait,
            item_timeout: s.item_timeout,
        }
    }

    /// What to write for attempt number `attempt` (1-based) that ended so; `None`: nothing,
    /// the item is not this claim's any more (taken over, its batch cancelled, the session
    /// buried). `jitter` (in [0.5, 1.0]) spreads retries of items that failed together.
    pub fn outcome(&self, end: AttemptEnd, attempt: u32, jitter: f64) -> Option<Outcome> {
        let retry = |e: &ItemError| Outcome::Retry {
            kind: e.kind().clone(),
            message: e.message().to_owned(),
            delay: retry_delay_with(
                attempt,
                self.retry_base,
                self.retry_max,
                e.retry_after(),
                self.max_wait,
                jitter,
            ),
        };
        Some(match end {
            AttemptEnd::Returned(Ok(out)) => Outcome::Succeeded {
                summary: out.summary,
                title: out.title,
                meta: out.meta,
            },
            AttemptEnd::Returned(Err(ItemError::Deferred {
                kind,
                message,
                retry_after,
            })) => Outcome::Defer {
                kind,
                message,
                delay: defer_delay(retry_after, self.retry_base, self.max_wait),
            },
            AttemptEnd::Returned(Err(ItemError::Cancelled { kind, message })) => {
                Outcome::Cancelled { kind, message }
            }
            AttemptEnd::Returned(Err(e)) if e.is_transient() => retry(&e),
            AttemptEnd::Returned(Err(e)) => Outcome::Failed {
                kind: e.kind().clone(),
                message: e.message().to_owned(),
            },
            AttemptEnd::TimedOut => retry(&ItemError::transient(
                ErrorKind::TIMEOUT,
                format!(
                    "attempt took longer than {} ms",
                    self.item_timeout.as_millis()
                ),
            )),
            AttemptEnd::Panicked(message) => retry(&ItemError::transient(
                ErrorKind::INTERNAL,
                format!("processor panicked: {message}"),
            )),
            AttemptEnd::Stopped(StopReason::Shutdown) => Outcome::Release,
            AttemptEnd::Stopped(
                StopReason::Lost | StopReason::Cancelled | StopReason::SessionBuried,
            ) => return None,
        })
    }
}

/// A panic's message, as far as its payload has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "processor panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retry_base: SECOND,
            retry_max: Duration::from_secs(60),
            max_wait: HOUR,
            item_timeout: Duration::from_secs(90),
        }
    }

    fn failed(e: ItemError) -> AttemptEnd {
        AttemptEnd::Returned(Err(e))
    }

    fn delay(o: &Option<Outcome>) -> Duration {
        match o {
            Some(Outcome::Retry { delay, .. } | Outcome::Defer { delay, .. }) => *delay,
            other => panic!("not a wait: {other:?}"),
        }
    }

    #[test]
    fn a_summary_is_written_as_it_came() {
        let out = JobOutput {
            summary: "# s".into(),
            title: Some("t".into()),
            meta: serde_json::json!({"backend": "extractive"}),
        };
        match policy().outcome(AttemptEnd::Returned(Ok(out)), 1, 1.0) {
            Some(Outcome::Succeeded {
                summary,
                title,
                meta,
            }) => {
                assert_eq!((summary.as_str(), title.as_deref()), ("# s", Some("t")));
                assert_eq!(meta["backend"], "extractive");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transient_error_retries_exponentially_with_the_jitter_given() {
        let e = || {
            failed(ItemError::transient(
                ErrorKind::from_static("upstream"),
                "503",
            ))
        };
        let p = policy();
        assert_eq!(delay(&p.outcome(e(), 1, 1.0)), SECOND);
        assert_eq!(delay(&p.outcome(e(), 3, 1.0)), 4 * SECOND);
        assert_eq!(delay(&p.outcome(e(), 3, 0.5)), 2 * SECOND);
        // Capped at `retry_max`, whatever the attempt.
        assert_eq!(delay(&p.outcome(e(), 30, 1.0)), Duration::from_secs(60));
        match p.outcome(e(), 1, 1.0) {
            Some(Outcome::Retry { kind, message, .. }) => {
                assert_eq!(
                    (kind, message.as_str()),
                    (ErrorKind::from_static("upstream"), "503")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_service_s_retry_after_is_honoured_up_to_the_longest_wait() {
        let hinted = |after| {
            failed(ItemError::Transient {
                kind: ErrorKind::from_static("rate_limited"),
                message: "slow down".into(),
                retry_after: Some(after),
            })
        };
        let p = policy();
        assert_eq!(delay(&p.outcome(hinted(30 * SECOND), 1, 1.0)), 30 * SECOND);
        assert_eq!(delay(&p.outcome(hinted(Duration::MAX), 1, 1.0)), HOUR);
    }

    #[test]
    fn a_permanent_error_fails_the_item() {
        let o = policy().outcome(
            failed(ItemError::permanent(
                ErrorKind::from_static("no_transcript"),
                "none",
            )),
            1,
            1.0,
        );
        assert!(
            matches!(&o, Some(Outcome::Failed { kind, .. }) if *kind == ErrorKind::from_static("no_transcript")),
            "{o:?}"
        );
    }

    #[test]
    fn a_deferral_waits_at_least_the_base_and_at_most_the_longest_wait() {
        let deferred = |after| {
            failed(ItemError::Deferred {
                kind: ErrorKind::from_static("breaker_open"),
                message: "open".into(),
                retry_after: after,
            })
        };
        let p = policy();
        assert_eq!(delay(&p.outcome(deferred(Duration::ZERO), 9, 1.0)), SECOND);
        assert_eq!(
            delay(&p.outcome(deferred(10 * SECOND), 9, 0.5)),
            10 * SECOND
        );
        assert_eq!(delay(&p.outcome(deferred(Duration::MAX), 1, 1.0)), HOUR);
        assert!(matches!(
            p.outcome(deferred(SECOND), 1, 1.0),
            Some(Outcome::Defer { .. })
        ));
    }

    #[test]
    fn a_cancellation_by_the_processor_ends_the_item_cancelled() {
        let o = policy().outcome(
            failed(ItemError::Cancelled {
                kind: ErrorKind::from_static("budget_spent"),
                message: "spent".into(),
            }),
            2,
            1.0,
        );
        assert!(matches!(o, Some(Outcome::Cancelled { .. })), "{o:?}");
    }

    #[test]
    fn a_timeout_and_a_panic_are_retried_with_their_own_kinds() {
        let p = policy();
        match p.outcome(AttemptEnd::TimedOut, 2, 1.0) {
            Some(Outcome::Retry {
                kind,
                message,
                delay,
            }) => {
                assert_eq!(kind, ErrorKind::TIMEOUT);
                assert_eq!(message, "attempt took longer than 90000 ms");
                assert_eq!(delay, 2 * SECOND);
            }
            other => panic!("{other:?}"),
        }
        match p.outcome(AttemptEnd::Panicked("boom".into()), 1, 1.0) {
            Some(Outcome::Retry { kind, message, .. }) => {
                assert_eq!(kind, ErrorKind::INTERNAL);
                assert_eq!(message, "processor panicked: boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stopped_attempt_is_released_at_shutdown_and_otherwise_writes_nothing() {
        let p = policy();
        assert!(matches!(
            p.outcome(AttemptEnd::Stopped(StopReason::Shutdown), 1, 1.0),
            Some(Outcome::Release)
        ));
        for reason in [
            StopReason::Lost,
            StopReason::Cancelled,
            StopReason::SessionBuried,
        ] {
            assert!(p.outcome(AttemptEnd::Stopped(reason), 1, 1.0).is_none());
        }
    }

    #[test]
    fn a_panic_s_message_is_read_from_either_payload() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&7_u8), "processor panicked");
    }
}
