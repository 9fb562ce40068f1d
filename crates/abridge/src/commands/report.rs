//! What an enqueue prints, the same for a local enqueue and one through the API.

use abridge_control::Enqueued;
use abridge_core::input::Rejected;

/// What an enqueue made: the `--json` line, or a line for people with each rejected input
/// line on stderr. The same for a local and an API enqueue.
pub(super) fn report(json: bool, done: &Enqueued) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(done)?);
        return Ok(());
    }
    println!(
        "batch {}: {} accepted, {} duplicate{}, {} rejected",
        done.batch_id,
        done.accepted,
        done.duplicates,
        if done.duplicates == 1 { "" } else { "s" },
        done.rejected.len()
    );
    for r in &done.rejected {
        eprintln!("line {}: {}: {}", r.line, r.input, r.reason);
    }
    Ok(())
}

/// No input line held a video: reports the rejected lines and returns the error to exit with.
pub(super) fn nothing_enqueued(json: bool, rejected: &[Rejected]) -> anyhow::Error {
    if json {
        println!(
            "{}",
            serde_json::json!({ "batch_id": null, "accepted": 0, "duplicates": 0, "rejected": rejected })
        );
    }
    for r in rejected {
        eprintln!("line {}: {}: {}", r.line, r.input, r.reason);
    }
    anyhow::anyhow!(
        "nothing enqueued: no line held a valid video URL or id ({} rejected)",
        rejected.len()
    )
}
