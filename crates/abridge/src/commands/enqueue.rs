//! `abridge enqueue`.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use abridge_control::{ControlError, EnqueueRequest};
use abridge_core::BatchId;
use abridge_core::input::BatchInput;
use abridge_core::lists::ListOptions;
use abridge_youtube::YoutubeConfig;
use anyhow::Context;

use crate::cli::EnqueueArgs;
use crate::context::{self, Loaded};

pub async fn run(loaded: &Loaded, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let settings = &loaded.settings;
    let text = read_input(args.file.as_deref())?;
    if args.remote.api.is_some() {
        return super::remote::enqueue(args, &text).await;
    }
    let options = ListOptions::new(args.lists.expand_lists, args.lists.max_per_list as usize)
        .map_err(anyhow::Error::msg)?;
    let mut input = BatchInput::with_lists(options);
    input.push_lines(&text);
    read_lists(
        &loaded.youtube()?,
        &mut input,
        Duration::from_secs(args.lists.list_time_limit),
    )
    .await?;
    let store = context::store(settings).await?;
    let queue = context::queue(settings)?;
    let result = abridge_control::enqueue(
        &store,
        &queue,
        &settings.queue,
        input,
        EnqueueRequest {
            name: args.name.as_deref(),
            priority: args.priority,
            options: args.summary.options(),
            offer: abridge_control::Offer::from(settings),
        },
    )
    .await;
    match result {
        Ok(done) => {
            let id = done.batch_id;
            super::report::report(args.json, &done)?;
            if !args.wait {
                return Ok(ExitCode::SUCCESS);
            }
            let finished = follow(&store, id).await?;
            let results = super::results::Results::Local(store);
            let view = results.batch(finished).await?;
            if args.json {
                println!("{}", serde_json::to_string(&view)?);
            }
            super::results::hand_over(&results, &view, args.out.as_deref()).await
        }
        Err(ControlError::NothingToEnqueue { rejected }) => {
            Err(super::report::nothing_enqueued(args.json, &rejected))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the input's playlists and channels from YouTube (all within `time_limit`) and puts
/// their videos in place; a list that cannot be read becomes a rejected line.
pub async fn read_lists(
    youtube: &YoutubeConfig,
    input: &mut BatchInput,
    time_limit: Duration,
) -> anyhow::Result<()> {
    if input.lists.is_empty() {
        return Ok(());
    }
    let client = abridge_youtube::YoutubeClient::new(youtube)?;
    abridge_youtube::browse::expand_lists(&client, input, time_limit).await;
    Ok(())
}

/// Shows the batch's progress until it is finished (read from Postgres every 250 ms).
pub async fn follow(store: &abridge_store::Store, id: BatchId) -> anyhow::Result<BatchId> {
    let bar = super::batch_bar(0);
    loop {
        let b = abridge_control::status(store, id).await?;
        let c = b.counts;
        bar.set_length(u64::try_from(b.total).unwrap_or(0));
        bar.set_position(u64::try_from(c.terminal()).unwrap_or(0));
        bar.set_message(format!("{} running, {} failed", c.running, c.failed));
        if b.status.is_finished() {
            bar.finish_and_clear();
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn read_input(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let mut text = String::new();
    match file {
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read standard input")?;
        }
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read standard input")?;
        }
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", p.display()))?;
        }
    }
    Ok(text)
}
