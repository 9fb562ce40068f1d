//! What the summarizer keeps: the transcript cache (one row per video and language), the
//! summary cache, and per-item stage checkpoints.
//!
//! The caches are shared by every item and batch; checkpoints belong to one attempt of one
//! item. Every write here is fenced by the writing claim, like the worker's own writes (the
//! fencing rule, in `items`): a claim that was taken over fills no cache and writes no
//! checkpoint, and its refused write is recorded in `fenced_writes`.

use abridge_core::{ItemId, LeaseToken, WorkerId};
use chrono::{DateTime, Utc};

use crate::items::Claim;
use crate::text::{clean, clean_cow, clean_json};
use crate::{Context, Result, Store};

/// A cached transcript: one video's captions in one language.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedTranscript {
    pub video_id: String,
    pub language: String,
    /// `manual` or `asr`.
    pub kind: String,
    pub title: Option<String>,
    pub channel: Option<String>,
    pub duration_s: Option<i32>,
    /// `[{start_ms, dur_ms, text}]`, as the YouTube client returns them.
    pub segments: serde_json::Value,
    /// Every track the video offered when fetched: `[{language, name, kind}]`.
    pub tracks: serde_json::Value,
    pub fetched_at: DateTime<Utc>,
}

/// What a summary is cached under. Two runs with equal keys would produce the same summary,
/// and an entry one owner's item reads holds nothing another owner supplied: input that came
/// from a producer (a transcript, a title in the prompt) is part of the key and scopes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SummaryKey {
    pub video_id: String,
    pub backend: String,
    /// `""` for backends without models.
    pub model: String,
    pub length: String,
    /// The transcript's language.
    pub language: String,
    pub prompt_version: String,
    /// `""` for YouTube's captions, a supplied transcript's SHA-256 otherwise.
    pub source: String,
    /// `""` when only the video itself went into the summary (the entry is shared); the owner
    /// (`tenant:NAME`, `operator`) whose supplied input did otherwise.
    pub scope: String,
    /// SHA-256 of a producer-supplied title that went into the model's prompt, else `""`.
    pub prompt_title: String,
}

/// A cached summary.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedSummary {
    /// The summary's body (from its TL;DR on): the heading, which names the item's own
    /// title, is rendered per item.
    pub summary: String,
    pub title: Option<String>,
    /// How the summary was made (tokens, model, chunks), as first reported.
    pub meta: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Every cached language of `video_id`. A read keeps them cached (see `touch` below).
    pub async fn cached_transcripts(&self, video_id: &str) -> Result<Vec<CachedTranscript>> {
        // The touch: `last_used_at` moves at most once a day per row, so a hot entry costs one
        // write a day and a read that finds every row touched today writes nothing.
        let rows = sqlx::query!(
            r#"WITH touch AS (
                   UPDATE transcripts SET last_used_at = now()
                   WHERE video_id = $1 AND last_used_at < now() - interval '1 day'
               )
               SELECT video_id, language, kind, title, channel, duration_s, segments, tracks, fetched_at
               FROM transcripts WHERE video_id = $1 ORDER BY fetched_at"#,
            video_id
        )
        .fetch_all(&self.pool)
        .await
        .context("read cached transcripts")?;
        Ok(rows
            .into_iter()
            .map(|r| CachedTranscript {
                video_id: r.video_id,
                language: r.language,
                kind: r.kind,
                title: r.title,
                channel: r.channel,
                duration_s: r.duration_s,
                segments: r.segments,
                tracks: r.tracks,
                fetched_at: r.fetched_at,
            })
            .collect())
    }

    /// Caches a transcript (replacing an older fetch of the same video and language), if
    /// `claim` still holds its item. Returns false (and records the refusal) otherwise.
    pub async fn save_transcript(
        &self,
        t: &CachedTranscript,
        claim: &Claim,
        worker: WorkerId,
    ) -> Result<bool> {
        let (video_id, language, kind) = (clean(&t.video_id), clean(&t.language), clean(&t.kind));
        let written = sqlx::query!(
            r#"INSERT INTO transcripts (video_id, language, kind, title, channel, duration_s, segments, tracks)
               SELECT $1, $2, $3, $4, $5, $6, $7, $8
               WHERE EXISTS (SELECT 1 FROM items i WHERE i.id = $9
                               AND ((i.status = 'running' AND i.lease_token = $10)
                                    OR (i.status = 'queued' AND i.attempts = $11 - 1)))
               ON CONFLICT (video_id, language) DO UPDATE
               SET kind = EXCLUDED.kind, title = EXCLUDED.title, channel = EXCLUDED.channel,
                   duration_s = EXCLUDED.duration_s, segments = EXCLUDED.segments,
                   tracks = EXCLUDED.tracks, fetched_at = now()"#,
            video_id,
            language,
            kind,
            t.title.as_deref().map(clean),
            t.channel.as_deref().map(clean),
            t.duration_s,
            clean_json(&t.segments),
            clean_json(&t.tracks),
            claim.item.0,
            claim.token.0,
            claim.attempt,
        )
        .execute(&self.pool)
        .await
        .context("cache transcript")?
        .rows_affected()
            == 1;
        if !written {
            self.record_refused(worker, claim.item, claim.token, "cache transcript")
                .await?;
        }
        Ok(written)
    }

    /// The summary cached under `key`; a hit keeps it cached (touched at most once a day).
    pub async fn cached_summary(&self, key: &SummaryKey) -> Result<Option<CachedSummary>> {
        let row = sqlx::query!(
            r#"WITH touch AS (
                   UPDATE summaries SET last_used_at = now()
                   WHERE video_id = $1 AND backend = $2 AND model = $3 AND length = $4
                     AND language = $5 AND prompt_version = $6 AND source = $7
                     AND scope = $8 AND prompt_title = $9
                     AND last_used_at < now() - interval '1 day'
               )
               SELECT summary, title, meta, created_at FROM summaries
               WHERE video_id = $1 AND backend = $2 AND model = $3 AND length = $4
                 AND language = $5 AND prompt_version = $6 AND source = $7
                 AND scope = $8 AND prompt_title = $9"#,
            key.video_id,
            key.backend,
            key.model,
            key.length,
            key.language,
            key.prompt_version,
            key.source,
            key.scope,
            key.prompt_title,
        )
        .fetch_optional(&self.pool)
        .await
        .context("read cached summary")?;
        Ok(row.map(|r| CachedSummary {
            summary: r.summary,
            title: r.title,
            meta: r.meta,
            created_at: r.created_at,
        }))
    }

    /// Caches a summary, if `claim` still holds its item: the first one stored for a key
    /// stays (equal keys mean equal work). Returns false if the claim was refused (recorded).
    pub async fn save_summary(
        &self,
        key: &SummaryKey,
        summary: &str,
        title: Option<&str>,
        meta: &serde_json::Value,
        claim: &Claim,
        worker: WorkerId,
    ) -> Result<bool> {
        let summary = clean_cow(summary);
        let holds = sqlx::query_scalar!(
            r#"WITH holds AS (
                   SELECT 1 FROM items i WHERE i.id = $13
                     AND ((i.status = 'running' AND i.lease_token = $14)
                          OR (i.status = 'queued' AND i.attempts = $15 - 1))
               ),
               ins AS (
                   INSERT INTO summaries (video_id, backend, model, length, language, prompt_version,
                                          source, scope, prompt_title, summary, title, meta)
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM holds
                   ON CONFLICT DO NOTHING
               )
               SELECT EXISTS (SELECT 1 FROM holds) AS "holds!""#,
            key.video_id,
            key.backend,
            key.model,
            key.length,
            key.language,
            key.prompt_version,
            key.source,
            key.scope,
            key.prompt_title,
            summary.as_ref(),
            title.map(clean),
            clean_json(meta),
            claim.item.0,
            claim.token.0,
            claim.attempt,
        )
        .fetch_one(&self.pool)
        .await
        .context("cache summary")?;
        if !holds {
            self.record_refused(worker, claim.item, claim.token, "cache summary")
                .await?;
        }
        Ok(holds)
    }

    /// Records a write of the claim `token` on `item` that was refused because the claim no
    /// longer holds the item, with the status the item was found in.
    pub(crate) async fn record_refused(
        &self,
        worker: WorkerId,
        item: ItemId,
        token: LeaseToken,
        attempted: &str,
    ) -> Result<()> {
        sqlx::query!(
            "INSERT INTO fenced_writes (item_id, worker_id, lease_token, attempted, found)
             SELECT $1, $2, $3, $4, coalesce((SELECT status FROM items WHERE id = $1), 'missing')",
            item.0,
            worker.0,
            token.0,
            attempted,
        )
        .execute(&self.pool)
        .await
        .context("record a fenced write")?;
        Ok(())
    }

    /// The checkpoints earlier attempts (or this one) wrote for an item, by stage.
    pub async fn checkpoints(&self, item: ItemId) -> Result<Vec<(String, serde_json::Value)>> {
        let rows = sqlx::query!(
            "SELECT stage, data FROM item_checkpoints WHERE item_id = $1 ORDER BY stage",
            item.0
        )
        .fetch_all(&self.pool)
        .await
        .context("read item checkpoints")?;
        Ok(rows.into_iter().map(|r| (r.stage, r.data)).collect())
    }

    /// Shows where a running item stands in its `result_meta` (a provider batch it waits
    /// for), fenced like a checkpoint. Returns false when refused.
    pub async fn write_stage_meta(
        &self,
        item: ItemId,
        token: LeaseToken,
        meta: &serde_json::Value,
        worker: WorkerId,
    ) -> Result<bool> {
        let written = sqlx::query!(
            "UPDATE items SET result_meta = $3
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            item.0,
            token.0,
            clean_json(meta),
        )
        .execute(&self.pool)
        .await
        .context("write an item's stage")?
        .rows_affected()
            == 1;
        if !written {
            self.record_refused(worker, item, token, "stage").await?;
        }
        Ok(written)
    }

    /// Records a stage's result for an item, fenced: written only while `token` is the item's
    /// current claim and the item is `running` (the row is share-locked until commit, so a
    /// concurrent reclaim either waits for this write or refuses it). Returns false when refused (the lease is gone;
    /// the caller should stop working on the item).
    pub async fn write_checkpoint(
        &self,
        item: ItemId,
        token: LeaseToken,
        stage: &str,
        data: &serde_json::Value,
        worker: WorkerId,
    ) -> Result<bool> {
        let written = sqlx::query!(
            r#"INSERT INTO item_checkpoints (item_id, stage, data, lease_token)
               SELECT id, $3, $4, lease_token FROM items
               WHERE id = $1 AND lease_token = $2 AND status = 'running'
               FOR SHARE
               ON CONFLICT (item_id, stage) DO UPDATE
               SET data = EXCLUDED.data, lease_token = EXCLUDED.lease_token, written_at = now()"#,
            item.0,
            token.0,
            stage,
            clean_json(data),
        )
        .execute(&self.pool)
        .await
        .context("write item checkpoint")?
        .rows_affected()
            == 1;
        if !written {
            self.record_refused(worker, item, token, &format!("checkpoint {stage}"))
                .await?;
        }
        Ok(written)
    }
}
