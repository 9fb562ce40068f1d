//! A Postgres failure inside the summarizer keeps its class: Postgres away is retried, a
//! statement Postgres refuses for good fails the item instead of being retried to the end.

use abridge_core::ItemError;
use abridge_core::settings::Secret;
use abridge_store::{Store, SummaryKey};
use abridge_summarize::checkpoints::store_error;
use abridge_testkit::TestEnv;

fn key() -> SummaryKey {
    SummaryKey {
        video_id: "aaaaaaaaaaa".into(),
        backend: "extractive".into(),
        model: String::new(),
        length: "medium".into(),
        language: "en".into(),
        prompt_version: "1".into(),
        source: String::new(),
        scope: String::new(),
        prompt_title: String::new(),
    }
}

#[tokio::test]
async fn postgres_away_is_retried_and_a_refused_statement_fails_the_item() {
    // Nothing listens on port 1: the database is unavailable.
    let away = Store::connect_lazy(&Secret::new("postgres://postgres@127.0.0.1:1/x"), 1).unwrap();
    let e = away.cached_summary(&key()).await.unwrap_err();
    match store_error(e) {
        ItemError::Transient { kind, .. } => assert_eq!(kind.as_str(), "database_unavailable"),
        other => panic!("Postgres away is worth another attempt: {other:?}"),
    }

    // A schema that does not match (the cache's table is gone): every attempt would fail.
    let env = TestEnv::new().await;
    let store = Store::connect_lazy(&env.database_url, 2).unwrap();
    sqlx::raw_sql("DROP TABLE summaries")
        .execute(store.pool())
        .await
        .unwrap();
    let e = store.cached_summary(&key()).await.unwrap_err();
    assert!(!e.is_unavailable() && !e.is_contention(), "{e}");
    match store_error(e) {
        ItemError::Permanent { kind, .. } => assert_eq!(kind.as_str(), "database_error"),
        other => panic!("a refused statement fails the item at once: {other:?}"),
    }
}
