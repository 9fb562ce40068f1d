//! The `noop` processor: no network, no model. It returns the first sentence of a supplied
//! transcript (or a line naming the video) after `ABRIDGE_NOOP_DELAY_MS`. Benchmarks use it to
//! measure the queue alone; fault drills steer it with directives in the transcript:
//!
//! - `abridge:sleep MS`: take MS milliseconds instead of the configured delay.
//! - `abridge:fail transient KIND` / `abridge:fail permanent KIND`: fail every attempt.
//! - `abridge:fail-first N KIND`: fail transiently on attempts 1..=N, then succeed.
//! - `abridge:exit`: kill the whole worker process mid-item (a poison pill).
//!
//! Directives are only honoured by this backend; real backends summarise such text as text.
//! The summarizer reaches it only where the operator turned drills on (`ABRIDGE_DRILLS=1`);
//! otherwise a `noop` batch is refused at enqueue and failed by a worker.

use std::time::Duration;

use abridge_core::{Backend, ErrorKind, ItemError};
use async_trait::async_trait;

use abridge_processor::{Job, JobOutput, Processor};

#[derive(Clone, Debug)]
pub struct Noop {
    /// How long each item "takes".
    pub delay: Duration,
}

#[async_trait]
impl Processor for Noop {
    fn name(&self) -> &str {
        Backend::Noop.as_str()
    }

    async fn process(&self, job: &Job) -> Result<JobOutput, ItemError> {
        let result = self.summarize(job).await;
        abridge_telemetry::metrics::summarizer_request(
            Backend::Noop.as_str(),
            if result.is_ok() { "ok" } else { "error" },
        );
        result
    }
}

impl Noop {
    async fn summarize(&self, job: &Job) -> Result<JobOutput, ItemError> {
        let transcript = job.transcript.as_deref().unwrap_or("");
        let mut delay = self.delay;
        for line in transcript.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("abridge:sleep"), Some(ms), _) => {
                    delay = Duration::from_millis(ms.parse().unwrap_or(0));
                }
                (Some("abridge:fail"), Some(mode), kind) => {
                    let kind = ErrorKind::new(kind.unwrap_or("drill"));
                    let message = format!("drill failure on attempt {}", job.attempt);
                    return Err(if mode == "permanent" {
                        ItemError::permanent(kind, message)
                    } else {
                        ItemError::transient(kind, message)
                    });
                }
                (Some("abridge:fail-first"), Some(n), kind)
                    if job.attempt <= n.parse().unwrap_or(0) =>
                {
                    return Err(ItemError::transient(
                        ErrorKind::new(kind.unwrap_or("drill")),
                        format!("drill failure on attempt {}", job.attempt),
                    ));
                }
                (Some("abridge:exit"), _, _) => {
                    tracing::error!(item = %job.item_id, "noop drill: exiting the process mid-item");
                    std::process::exit(86);
                }
                _ => {}
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let summary = first_sentence(transcript)
            .unwrap_or_else(|| format!("Video {} ({}).", job.video_id, job.url));
        Ok(JobOutput {
            summary,
            title: None,
            meta: serde_json::json!({ "backend": Backend::Noop }),
        })
    }
}

/// The first sentence of `text` that is not a drill directive.
fn first_sentence(text: &str) -> Option<String> {
    let prose: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("abridge:"))
        .collect::<Vec<_>>()
        .join(" ");
    let prose = prose.trim();
    if prose.is_empty() {
        return None;
    }
    let end = prose
        .char_indices()
        .find(|(i, c)| {
            matches!(c, '.' | '!' | '?')
                && prose[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(prose.len());
    Some(prose[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::first_sentence;

    #[test]
    fn first_sentence_skips_directives() {
        assert_eq!(
            first_sentence("abridge:sleep 5\nHello there. General Kenobi!").as_deref(),
            Some("Hello there.")
        );
        assert_eq!(
            first_sentence("v1.2 is out today").as_deref(),
            Some("v1.2 is out today")
        );
        assert_eq!(first_sentence("  "), None);
    }
}
