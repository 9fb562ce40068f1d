//! Hot statements keep their index plans when the table's statistics mislead: a mature
//! `items` table is analyzed while almost nothing in it is queued, then a big batch arrives.

use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_core::{ItemId, LeaseToken, Priority};
use abridge_store::Store;
use sqlx::{Connection, Row};

use crate::support::*;

/// Index scans and index tuples read, per index of `items` (summed over its partitions).
async fn index_use(db: &mut sqlx::PgConnection, index: &str) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT coalesce(sum(idx_scan), 0)::int8, coalesce(sum(idx_tup_read), 0)::int8
         FROM pg_stat_user_indexes
         WHERE indexrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
    )
    .bind(index)
    .fetch_one(db)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn reading_one_claimed_item_is_a_primary_key_lookup_whatever_the_statistics_say() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let mut db = sqlx::PgConnection::connect(env.database_url.expose())
        .await
        .unwrap();
    // Statistics taken while nothing is queued, and kept (no autovacuum in between).
    let old = enqueue(&w, &video_lines('o', 2_000), Priority::Normal).await;
    // On each partition: a partitioned table has no storage parameters of its own.
    sqlx::query(
        "DO $$ DECLARE p text; BEGIN
             FOR p IN SELECT name FROM item_partitions LOOP
                 EXECUTE format('ALTER TABLE %I SET (autovacuum_enabled = false)', p);
             END LOOP;
         END $$",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE items SET status = 'succeeded', finished_at = now(), attempts = 1
         WHERE batch_id = $1",
    )
    .bind(old.batch_id.0)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("ANALYZE items").execute(&mut db).await.unwrap();
    let new = enqueue(&w, &video_lines('n', 20_000), Priority::Normal).await;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM items WHERE batch_id = $1 ORDER BY position LIMIT 3")
            .bind(new.batch_id.0)
            .fetch_all(&mut db)
            .await
            .unwrap();

    // Generic plans from the first execution, as a worker's long-lived connections use.
    let url = format!(
        "{}?options=-c%20plan_cache_mode%3Dforce_generic_plan",
        env.database_url.expose()
    );
    let store = Store::connect_lazy(&Secret::new(url), 2).unwrap();
    let (pkey_before, _) = index_use(&mut db, "items_pkey").await;
    let (_, ready_before) = index_use(&mut db, "items_ready_since").await;
    for id in &ids {
        let read = store
            .read_claimed(&[(ItemId(*id), LeaseToken(7))])
            .await
            .unwrap();
        assert_eq!(read.len(), 1, "the queued item is read");
        assert_eq!(read[0].id, ItemId(*id));
    }
    // Closing the connections flushes their statistics.
    store.close().await;
    let mut pkey_after = pkey_before;
    for _ in 0..100 {
        pkey_after = index_use(&mut db, "items_pkey").await.0;
        if pkey_after >= pkey_before + ids.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pkey_after >= pkey_before + ids.len() as i64,
        "each read looks its item up by primary key (items_pkey scans {pkey_before} -> {pkey_after})"
    );
    let (_, ready_after) = index_use(&mut db, "items_ready_since").await;
    assert!(
        ready_after - ready_before < 1_000,
        "no read walks the queued items' index ({} entries read)",
        ready_after - ready_before
    );
}
