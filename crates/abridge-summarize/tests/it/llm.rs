//! LLM backends inside the worker: the shared shape, map-reduce with checkpoints, provider
//! failures (retried, or failing the item with a clear kind), keys kept out of everything.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use abridge_core::{BatchOptions, ItemStatus};
use abridge_standins::llm::{Failure, Provider};
use abridge_standins::youtube::{Track, Video};

use crate::support::*;

fn options(backend: &str) -> BatchOptions {
    BatchOptions {
        backend: Some(backend.parse().unwrap()),
        ..BatchOptions::default()
    }
}

#[tokio::test]
async fn openai_and_anthropic_summaries_have_the_shared_shape() {
    let video = "vid_LlmTalk";
    let s = Setup::new(vec![normal_video(video, "Ownership in Rust")], &[]).await;

    let (batch, items) = s.run_batch(&format!("{video}\n"), options("openai")).await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let summary = items[0].summary.as_deref().unwrap();
    let seconds = assert_shape(summary, video, "Ownership in Rust");
    assert!(seconds.iter().all(|s| s % 20 == 0), "{seconds:?}");
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(meta["backend"], "openai");
    assert_eq!(meta["model"], "gpt-4.1-mini");
    assert_eq!(meta["prompt_version"], "llm-1");
    assert!(meta["input_tokens"].as_u64().unwrap() > 100, "{meta}");
    assert!(meta["output_tokens"].as_u64().unwrap() > 10, "{meta}");
    assert_eq!(meta["llm_requests"], 1);
    let sent = &s.openai.received()[0];
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {OPENAI_KEY}").as_str()
    );
    assert_eq!(sent.body["model"], "gpt-4.1-mini");
    assert!(
        sent.body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("[00:40] When the owner goes out of scope")
    );

    // Anthropic, with the batch's own model; the transcript is already cached.
    let (_, items) = s
        .run_batch(
            &format!("{video}\n"),
            BatchOptions {
                model: Some("claude-test-1".into()),
                ..options("anthropic")
            },
        )
        .await;
    assert_shape(
        items[0].summary.as_deref().unwrap(),
        video,
        "Ownership in Rust",
    );
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(
        (&meta["backend"], &meta["model"]),
        (&"anthropic".into(), &"claude-test-1".into())
    );
    assert_eq!(meta["transcript"]["source"], "cache");
    let sent = &s.anthropic.received()[0];
    assert_eq!(sent.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(sent.body["model"], "claude-test-1");

    // The same request again is served from the summary cache: nothing paid.
    let (_, items) = s.run_batch(&format!("{video}\n"), options("openai")).await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["summary_cache"],
        "hit"
    );
    assert_eq!(s.openai.requests(), 1);
    assert_eq!(s.youtube.counts(video).total(), 3);
}

/// A talk long enough for map-reduce in a small window: 120 lines, one every 30 seconds.
fn long_video(id: &str) -> Video {
    let lines = (0..120)
        .map(|i| {
            let topic = ["compilers", "memory", "networking", "databases"][i / 30];
            (i as f64 * 30.0, 30.0, format!("In part {i} we discuss {topic} and why {topic} matter for systems programmers today."))
        })
        .collect();
    Video::new(id, "A long lecture", vec![Track::new("en", false, lines)])
}

#[tokio::test]
async fn long_transcripts_are_map_reduced_and_a_retry_resumes_from_the_chunks() {
    let video = "vid_LongOne";
    let s = Setup::new(
        vec![long_video(video)],
        &[
            ("ABRIDGE_OPENAI_CONTEXT_TOKENS", "3000"),
            ("ABRIDGE_LLM_CHUNK_TOKENS", "600"),
            ("ABRIDGE_LLM_MAX_RETRIES", "0"),
        ],
    )
    .await;
    // The stand-in refuses any request over the window, so each one must fit.
    s.openai.set_context_tokens(3000);
    // The first attempt dies on its 5th request (a chunk, or the reduce): 503.
    s.openai.fail_nth(
        5,
        Failure::new(Provider::OpenAi, 503, "upstream unavailable"),
    );

    let (batch, items) = s.run_batch(&format!("{video}\n"), options("openai")).await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item.attempts, 2, "the 503 failed the first attempt");
    let meta = item.result_meta.as_ref().unwrap();
    let chunks = meta["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "{meta}");
    assert_eq!(
        meta["reused_chunks"].as_u64().unwrap(),
        4,
        "the 4 chunks done before the 503: {meta}"
    );

    let received = s.openai.received();
    let prompts: Vec<String> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            r.body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let maps: Vec<&String> = prompts
        .iter()
        .filter(|p| p.starts_with("This is part"))
        .collect();
    let unique: HashSet<&String> = maps.iter().copied().collect();
    assert_eq!(maps.len(), unique.len(), "a chunk was summarized twice");
    assert!(
        prompts.last().unwrap().contains("Notes:"),
        "the last request reduces the notes"
    );
    // Every request fit the window (else the stand-in would have refused it).
    assert!(received.iter().all(|r| r.status == 200 || r.status == 503));

    // The final summary keeps timestamps from across the whole lecture.
    let seconds = assert_shape(item.summary.as_deref().unwrap(), video, "A long lecture");
    assert!(
        seconds.iter().any(|s| *s < 600) && seconds.iter().any(|s| *s >= 1800),
        "{seconds:?}"
    );
}

#[tokio::test]
async fn provider_failures_retry_or_fail_with_a_clear_kind() {
    let video = "vid_Provide";
    let s = Setup::new(
        vec![normal_video(video, "P")],
        &[
            ("ABRIDGE_MAX_ATTEMPTS", "4"),
            ("ABRIDGE_LLM_MAX_RETRIES", "1"),
        ],
    )
    .await;
    let line = format!("{video}\n");

    // 429 with retry-after-ms: waited out in process, then success.
    s.openai.push_failure(
        Failure::new(Provider::OpenAi, 429, "slow down").header("retry-after-ms", "700"),
    );
    let started = Instant::now();
    let (_, items) = s.run_batch(&line, options("openai")).await;
    assert_eq!(
        (items[0].status, items[0].attempts),
        (ItemStatus::Succeeded, 1)
    );
    assert_eq!(items[0].result_meta.as_ref().unwrap()["llm_requests"], 2);
    assert!(started.elapsed() >= Duration::from_millis(700));

    // 529 four times: the in-process retry and the next attempt both fail, the third works.
    for _ in 0..4 {
        s.anthropic
            .push_failure(Failure::new(Provider::Anthropic, 529, "Overloaded"));
    }
    let (_, items) = s.run_batch(&line, options("anthropic")).await;
    assert_eq!(
        (items[0].status, items[0].attempts),
        (ItemStatus::Succeeded, 3),
        "{:?}",
        items[0].error_message
    );
    assert_eq!(s.anthropic.requests(), 5);

    // Permanent: one attempt, a clear kind, and never the key (even when echoed back).
    let cases = [
        (
            Failure::new(
                Provider::OpenAi,
                401,
                &format!("Incorrect API key provided: {OPENAI_KEY}"),
            ),
            "llm_auth_failed",
        ),
        (
            Failure::new(Provider::OpenAi, 404, "The model does not exist"),
            "llm_not_found",
        ),
        (Failure::insufficient_quota(), "insufficient_quota"),
    ];
    for (failure, kind) in cases {
        s.openai.push_failure(failure);
        let (_, items) = s
            .run_batch(
                &line,
                BatchOptions {
                    length: Some("short".parse().unwrap()),
                    ..options("openai")
                },
            )
            .await;
        let item = &items[0];
        assert_eq!(
            (item.status, item.attempts),
            (ItemStatus::Failed, 1),
            "{kind}"
        );
        assert_eq!(item.error_kind.as_deref(), Some(kind));
        assert!(
            !item.error_message.as_deref().unwrap().contains(OPENAI_KEY),
            "{:?}",
            item.error_message
        );
    }

    // A context-length error is permanent.
    s.anthropic.set_context_tokens(100);
    let (_, items) = s
        .run_batch(
            &line,
            BatchOptions {
                length: Some("short".parse().unwrap()),
                ..options("anthropic")
            },
        )
        .await;
    assert_eq!(
        items[0].error_kind.as_deref(),
        Some("context_length_exceeded"),
        "{:?}",
        items[0].error_message
    );
    assert_eq!(items[0].attempts, 1);

    // No key anywhere in the database.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(s.env.database_url.expose())
        .await
        .unwrap();
    let dump: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(i::text, ' '), '') FROM (SELECT * FROM items) i",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let caches: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(s::text, ' '), '') || (SELECT coalesce(string_agg(c::text, ' '), '') FROM item_checkpoints c) FROM summaries s",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert!(
            !dump.contains(key) && !caches.contains(key),
            "a key reached the database"
        );
    }
}

#[tokio::test]
async fn a_batch_for_an_unconfigured_backend_fails_clearly() {
    let video = "vid_NoKey01";
    let s = Setup::new(vec![normal_video(video, "K")], &[]).await;
    let vars: Vec<(String, String)> = s
        .vars
        .iter()
        .filter(|(k, _)| k != "ABRIDGE_ANTHROPIC_API_KEY")
        .cloned()
        .collect();
    let s = Setup { vars, ..s };
    let (_, items) = s
        .run_batch(&format!("{video}\n"), options("anthropic"))
        .await;
    assert_eq!(
        items[0].error_kind.as_deref(),
        Some("backend_not_configured")
    );
    assert!(
        items[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("ABRIDGE_ANTHROPIC_API_KEY")
    );
    assert_eq!(s.anthropic.requests(), 0);
}

/// Any model's answer: prose is read, not retried; a refusal is asked once more, then fails;
/// timestamps past the video's end are clamped and counted; a near-empty transcript never
/// reaches a model.
#[tokio::test]
async fn prose_is_read_refusals_fail_after_one_retry_and_empty_transcripts_reach_no_model() {
    let s = Setup::new(
        vec![
            normal_video("vid_Prose01", "Bees"),
            normal_video("vid_Refuse1", "Refused"),
            normal_video("vid_Refuse2", "Refused once"),
            normal_video("vid_Stamps1", "Late stamps"),
        ],
        &[
            ("ABRIDGE_RETRY_BASE_MS", "10"),
            ("ABRIDGE_RETRY_MAX_MS", "20"),
        ],
    )
    .await;

    // Prose, as small local models answer: the first paragraph is the TL;DR.
    s.openai.push_answer(
        "The talk explains how bees dance to share directions.\n\nIt then shows a hive at work.",
    );
    let (batch, items) = s.run_batch("vid_Prose01\n", options("openai")).await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    assert_eq!(items[0].attempts, 1, "read, not retried");
    let summary = items[0].summary.as_deref().unwrap();
    assert!(
        summary.contains("**TL;DR:** The talk explains how bees dance to share directions."),
        "{summary}"
    );
    assert!(
        summary.contains("- It then shows a hive at work."),
        "{summary}"
    );
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(meta["answer"], "prose", "{meta}");

    // A refusal twice: one retry, then `llm_refused`, two requests paid.
    let before = s.openai.requests();
    s.openai
        .push_answer("I'm sorry, but I can't help with summarizing this video.");
    s.openai
        .push_answer("Could you please provide the transcript? I don't see one.");
    let (batch, items) = s.run_batch("vid_Refuse1\n", options("openai")).await;
    assert_eq!(batch.counts.failed, 1, "{items:?}");
    assert_eq!(items[0].error_kind.as_deref(), Some("llm_refused"));
    assert_eq!(items[0].attempts, 2);
    assert_eq!(s.openai.requests() - before, 2);

    // A refusal once, then an answer: it succeeds on the second attempt.
    s.openai.push_answer("As an AI, I cannot watch videos.");
    let (batch, items) = s.run_batch("vid_Refuse2\n", options("openai")).await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    assert_eq!(items[0].attempts, 2);

    // A key point past the video's end (the talk lasts minutes, not hours) is clamped, and
    // counted.
    s.openai.push_answer(
        "TL;DR: A talk.\nKEY POINTS:\n- [00:20] Early point\n- [9:59:00] A point past the end\n",
    );
    let (_, items) = s.run_batch("vid_Stamps1\n", options("openai")).await;
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(meta["answer"], "text", "{meta}");
    assert_eq!(meta["stamps_clamped"], 1, "{meta}");
    assert!(
        !items[0].summary.as_deref().unwrap().contains("9:59:00"),
        "{:?}",
        items[0].summary
    );

    // A near-empty transcript (a caption track of "[Music]") fails at once, unsent.
    let before = s.openai.requests();
    let (batch, items) = s
        .run_batch(
            "{\"url\": \"vid_Music01\", \"transcript\": \"[Music]\"}\n",
            options("openai"),
        )
        .await;
    assert_eq!(batch.counts.failed, 1, "{items:?}");
    assert_eq!(items[0].error_kind.as_deref(), Some("transcript_too_short"));
    assert_eq!(items[0].attempts, 1, "permanent");
    assert_eq!(s.openai.requests(), before, "nothing was sent to the model");
}

/// Structure is asked for where the server takes it (OpenAI's `response_format` with a JSON
/// schema, Anthropic's forced tool call) and read first; a server that refuses it is asked for
/// text, once for every later item of that model too.
#[tokio::test]
async fn a_structured_answer_is_asked_for_and_a_server_without_it_gets_text() {
    let s = Setup::new(
        vec![
            normal_video("vid_Json001", "Structured"),
            normal_video("vid_Json002", "Structured too"),
            normal_video("vid_Text001", "Text only"),
            normal_video("vid_Text002", "Text only too"),
        ],
        &[],
    )
    .await;
    let (_, items) = s.run_batch("vid_Json001\n", options("openai")).await;
    assert_shape(
        items[0].summary.as_deref().unwrap(),
        "vid_Json001",
        "Structured",
    );
    assert_eq!(items[0].result_meta.as_ref().unwrap()["answer"], "json");
    let sent = &s.openai.received()[0].body;
    assert_eq!(sent["response_format"]["type"], "json_schema", "{sent}");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);

    let (_, items) = s.run_batch("vid_Json002\n", options("anthropic")).await;
    assert_shape(
        items[0].summary.as_deref().unwrap(),
        "vid_Json002",
        "Structured too",
    );
    assert_eq!(items[0].result_meta.as_ref().unwrap()["answer"], "json");
    let sent = &s.anthropic.received()[0].body;
    assert_eq!(sent["tool_choice"]["type"], "tool", "{sent}");
    assert_eq!(sent["tools"][0]["name"], sent["tool_choice"]["name"]);

    // A server without JSON-schema support: a 400, then text; no attempt is lost.
    s.openai.reject_structure();
    let before = s.openai.requests();
    // (One item, then the next: two at once could both ask before either heard the answer.)
    for video in ["vid_Text001", "vid_Text002"] {
        let (batch, items) = s.run_batch(&format!("{video}\n"), options("openai")).await;
        assert_eq!(batch.counts.succeeded, 1, "{items:?}");
        assert_eq!(items[0].attempts, 1);
        assert_eq!(items[0].result_meta.as_ref().unwrap()["answer"], "text");
    }
    let sent: Vec<bool> = s.openai.received()[before..]
        .iter()
        .map(|r| r.body.get("response_format").is_some())
        .collect();
    assert_eq!(
        sent.iter().filter(|asked| **asked).count(),
        1,
        "asked for structure once, then remembered: {sent:?}"
    );
    assert_eq!(
        sent.len(),
        3,
        "one refused request, two text ones: {sent:?}"
    );
}
