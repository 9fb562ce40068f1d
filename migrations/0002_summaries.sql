-- Real summaries (issue 3): the transcript cache, the summary cache, and per-item checkpoints.

-- A video's captions in one language, fetched from YouTube once for every batch that names the
-- video. Keyed by (video, language): a later batch that prefers another language the video has
-- fetches that track; `tracks` lets a preference be answered without asking YouTube again.
CREATE TABLE transcripts (
    video_id   text NOT NULL,
    language   text NOT NULL,                             -- the track's language code (en, pt-BR)
    kind       text NOT NULL CHECK (kind IN ('manual', 'asr')),
    title      text,
    channel    text,
    duration_s integer,
    segments   jsonb NOT NULL,                            -- [{start_ms, dur_ms, text}]
    tracks     jsonb NOT NULL DEFAULT '[]'::jsonb,        -- every track offered: [{language, name, kind}]
    fetched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, language)
);

-- Finished summaries, reused instead of paying for the same summary twice.
CREATE TABLE summaries (
    video_id       text NOT NULL,
    backend        text NOT NULL,                         -- extractive, openai, anthropic
    model          text NOT NULL,                         -- '' for extractive
    length         text NOT NULL CHECK (length IN ('short', 'standard', 'detailed')),
    language       text NOT NULL,                         -- the transcript's language
    prompt_version text NOT NULL,                         -- bumped when prompts or the algorithm change
    -- '' for YouTube's captions; a supplied transcript's SHA-256, so two different supplied
    -- transcripts of one video never share a summary.
    source         text NOT NULL DEFAULT '',
    summary        text NOT NULL,
    title          text,
    meta           jsonb NOT NULL DEFAULT '{}'::jsonb,   -- tokens, model, chunks of the run that made it
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, backend, model, length, language, prompt_version, source)
);

-- Work an attempt finished for an item (the transcript it used, each chunk summary of a
-- map-reduce), so a retry resumes instead of fetching or paying again. Written fenced: only the
-- holder of the item's current lease can write.
CREATE TABLE item_checkpoints (
    item_id     bigint NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    stage       text NOT NULL,                            -- 'transcript', 'map:<run>:<level>:<index>'
    data        jsonb NOT NULL,
    lease_token bigint NOT NULL,                          -- the attempt that wrote it
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, stage)
);
