//! Tenants cannot reach each other through the summarizer: nothing a producer supplies (a
//! title, a transcript) reaches a cached summary another producer's item reads, and the drill
//! backend runs only where the operator turned drills on.

use abridge_core::{BatchOptions, ItemStatus};

use crate::support::*;

fn backend(name: &str) -> BatchOptions {
    BatchOptions {
        backend: Some(name.parse().unwrap()),
        ..BatchOptions::default()
    }
}

#[tokio::test]
async fn a_producers_title_never_reaches_another_producers_cached_summary() {
    let video = "vid_Shared1";
    let s = Setup::new(vec![normal_video(video, "Ownership in Rust")], &[]).await;

    // Tenant A names the video with a private title (extractive, then an LLM).
    let private = format!("{{\"url\": \"{video}\", \"title\": \"ACME private roadmap\"}}\n");
    for options in [BatchOptions::default(), backend("openai")] {
        let (batch, items) = s.run_batch_as(Some("acme"), &private, options).await;
        assert_eq!(batch.counts.succeeded, 1, "{items:?}");
        assert_shape(
            items[0].summary.as_deref().unwrap(),
            video,
            "ACME private roadmap",
        );
    }
    assert_eq!(s.openai.requests(), 1);
    assert!(
        s.openai.received()[0].body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("ACME private roadmap"),
        "A's title is in A's prompt"
    );

    // Tenant B asks for the same video: its summaries carry YouTube's title, never A's.
    for options in [BatchOptions::default(), backend("openai")] {
        let (batch, items) = s
            .run_batch_as(Some("globex"), &format!("{video}\n"), options)
            .await;
        assert_eq!(batch.counts.succeeded, 1, "{items:?}");
        let summary = items[0].summary.as_deref().unwrap();
        assert!(!summary.contains("ACME"), "{summary}");
        assert_shape(summary, video, "Ownership in Rust");
    }
    // The extractive summary is shared (A's title never reached it); B's LLM summary could
    // not reuse A's, whose prompt held A's title.
    assert_eq!(
        s.openai.requests(),
        2,
        "an LLM summary made with a producer's title is not shared"
    );
    let prompt = s.openai.received()[1].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!prompt.contains("ACME"), "{prompt}");

    // A third tenant with no title gets B's LLM summary from the cache: made from the video
    // alone, it is everyone's.
    let (_, items) = s
        .run_batch_as(Some("initech"), &format!("{video}\n"), backend("openai"))
        .await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["summary_cache"],
        "hit"
    );
    assert_eq!(s.openai.requests(), 2);
    assert_shape(
        items[0].summary.as_deref().unwrap(),
        video,
        "Ownership in Rust",
    );

    // A's own titled item is still a hit for A, heading and all.
    let (_, items) = s
        .run_batch_as(Some("acme"), &private, backend("openai"))
        .await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["summary_cache"],
        "hit"
    );
    assert_shape(
        items[0].summary.as_deref().unwrap(),
        video,
        "ACME private roadmap",
    );
}

#[tokio::test]
async fn a_supplied_transcript_is_summarized_for_its_producer_alone() {
    let s = Setup::new(Vec::new(), &[]).await;
    let line = |title: &str| {
        format!(
            r#"{{"url": "sup_0000001", "title": "{title}", "transcript": "Plant text: visit evil.example. The second sentence is here. A third one follows."}}"#
        )
    };
    let (_, a) = s
        .run_batch_as(Some("acme"), &format!("{}\n", line("A")), backend("openai"))
        .await;
    assert_eq!(a[0].status, ItemStatus::Succeeded, "{a:?}");
    // The same transcript from another tenant is summarized anew, never read from A's entry.
    let (_, b) = s
        .run_batch_as(
            Some("globex"),
            &format!("{}\n", line("A")),
            backend("openai"),
        )
        .await;
    assert_eq!(b[0].status, ItemStatus::Succeeded, "{b:?}");
    assert_eq!(b[0].result_meta.as_ref().unwrap()["summary_cache"], "miss");
    assert_eq!(s.openai.requests(), 2);
    // The operator's own (CLI) batches are a scope of their own too.
    let (_, cli) = s
        .run_batch_as(None, &format!("{}\n", line("A")), backend("openai"))
        .await;
    assert_eq!(
        cli[0].result_meta.as_ref().unwrap()["summary_cache"],
        "miss"
    );
}

#[tokio::test]
async fn without_drills_the_noop_backend_is_refused_and_its_directives_are_plain_text() {
    let s = Setup::new(Vec::new(), &[("ABRIDGE_DRILLS", "0")]).await;
    let poison = r#"{"url": "sup_0000002", "transcript": "abridge:exit\nabridge:sleep 60000\nHello there. General Kenobi. You are a bold one, as the saying goes."}"#;
    // A batch that asks for noop is refused at enqueue, naming the switch.
    let worker = s.worker();
    let offer = abridge_control::Offer::from(&*worker.settings);
    let done = enqueue_as(&worker, None, poison, backend("noop"), offer).await;
    assert!(
        matches!(&done, Err(abridge_control::ControlError::OptionsRefused(m)) if m.contains("ABRIDGE_DRILLS")),
        "{done:?}"
    );
    // A noop batch already stored (by an enqueuer with drills on): a worker without drills
    // fails it with `unknown_backend` and lives (`abridge:exit` would end this test process).
    let drills = abridge_control::Offer {
        drills: true,
        ..Default::default()
    };
    let batch_id = enqueue_as(&worker, None, poison, backend("noop"), drills)
        .await
        .unwrap();
    let store = worker.store.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(abridge_worker::run(worker, 4, async move {
        let _ = stopped.await;
    }));
    let batch = wait_finished(&store, batch_id, std::time::Duration::from_secs(30)).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(batch.counts.failed, 1);
    let items = store.items_of(batch_id, None, 0, 10).await.unwrap();
    assert_eq!(items[0].error_kind.as_deref(), Some("unknown_backend"));
    assert_eq!(items[0].attempts, 1, "permanent: no retry");

    // Directives in a real backend's transcript are text to summarize.
    let (batch, items) = s
        .run_batch(&format!("{poison}\n"), BatchOptions::default())
        .await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    assert!(items[0].summary.as_deref().unwrap().contains("Kenobi"));
}

/// A tenant whose daily LLM token budget is spent: its next LLM item waits (deferred,
/// `tenant_budget_exhausted`, no attempt used) and no model is asked; another tenant is not
/// held back.
#[tokio::test]
async fn a_tenant_over_its_daily_token_budget_waits_and_others_do_not() {
    let videos = vec![
        normal_video("vid_Budget1", "One"),
        normal_video("vid_Budget2", "Two"),
        normal_video("vid_Budget3", "Three"),
    ];
    let s = Setup::new(videos, &[]).await;
    s.worker()
        .store
        .ensure_tenant("acme", "whsec_test")
        .await
        .unwrap();
    let policy = abridge_store::tenants::TenantPolicy {
        daily_tokens: Some(10),
        ..Default::default()
    };
    assert!(
        s.worker()
            .store
            .set_tenant_policy("acme", &policy)
            .await
            .unwrap()
    );

    // The first item is under the budget and spends past it.
    let (_, items) = s
        .run_batch_as(Some("acme"), "vid_Budget1\n", backend("openai"))
        .await;
    assert_eq!(items[0].status, ItemStatus::Succeeded, "{items:?}");
    assert_eq!(s.openai.requests(), 1);

    // The next waits, without asking the model or using up an attempt.
    let worker = s.worker();
    let store = worker.store.clone();
    let offer = abridge_control::Offer::from(&*worker.settings);
    let batch_id = enqueue_as(
        &worker,
        Some("acme"),
        "vid_Budget2\n",
        backend("openai"),
        offer,
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(abridge_worker::run(worker, 4, async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let waiting = loop {
        let items = store.items_of(batch_id, None, 0, 10).await.unwrap();
        if items[0].error_kind.as_deref() == Some("tenant_budget_exhausted") {
            break items[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(waiting.status, ItemStatus::Queued);
    assert_eq!(waiting.attempts, 0, "waiting for a budget uses no attempt");
    assert_eq!(s.openai.requests(), 1, "no model was asked");

    // Another tenant's item runs.
    let (_, items) = s
        .run_batch_as(Some("globex"), "vid_Budget3\n", backend("openai"))
        .await;
    assert_eq!(items[0].status, ItemStatus::Succeeded, "{items:?}");
    assert_eq!(s.openai.requests(), 2);
}
