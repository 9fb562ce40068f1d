//! Playlists and channels read through the stand-in's innertube `browse`, continuations and
//! `resolve_url`, in YouTube's web shapes.

use std::time::{Duration, Instant};

use abridge_core::input::BatchInput;
use abridge_core::lists::{ChannelRef, ListOptions, ListRef};
use abridge_standins::youtube::YoutubeStandin;
use abridge_standins::youtube::lists::{ListBehaviour, StandinList, numbered_videos};
use abridge_youtube::YoutubeError;
use abridge_youtube::browse::{ListError, expand_lists};

use crate::client;

const CHANNEL_ID: &str = "UCabcdefghijklmnopqrstuv";

fn ids(list: &abridge_core::lists::ReadList) -> Vec<&str> {
    list.videos.iter().map(|v| v.video_id.as_str()).collect()
}

#[tokio::test]
async fn a_playlist_is_read_across_its_continuations_in_order_without_its_private_videos() {
    let yt = YoutubeStandin::start(vec![]);
    let videos = numbered_videos("pl", 250);
    let mut list = StandinList::playlist("PLlong", "A long playlist", videos.clone());
    list.unplayable = vec![5];
    yt.add_list(list);

    let read = client(&yt.url())
        .read_list(&ListRef::Playlist("PLlong".into()), 5_000)
        .await
        .unwrap();

    let want: Vec<&str> = videos
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, (id, _))| id.as_str())
        .collect();
    assert_eq!(ids(&read), want);
    assert_eq!(read.playlist_id, "PLlong");
    assert_eq!(read.videos[0].title.as_deref(), Some("pl video 1"));
    assert_eq!(yt.list_requests("PLlong"), 3, "100 + 100 + 50");
}

#[tokio::test]
async fn the_limit_stops_the_walk_at_the_page_it_needs() {
    let yt = YoutubeStandin::start(vec![]);
    yt.add_list(StandinList::playlist(
        "PLlong",
        "t",
        numbered_videos("pl", 250),
    ));

    let read = client(&yt.url())
        .read_list(&ListRef::Playlist("PLlong".into()), 120)
        .await
        .unwrap();

    assert_eq!(read.videos.len(), 120);
    assert_eq!(read.videos[119].video_id.as_str(), "pl-----0119");
    assert_eq!(yt.list_requests("PLlong"), 2);
}

#[tokio::test]
async fn a_channel_is_read_by_handle_and_by_id_through_its_videos_tab() {
    let yt = YoutubeStandin::start(vec![]);
    let videos = numbered_videos("ch", 70);
    let mut channel = StandinList::channel(CHANNEL_ID, "@standin", "Stand-in", videos.clone());
    channel.lockups = true;
    yt.add_list(channel);
    let c = client(&yt.url());

    let by_handle = c
        .read_list(&ListRef::Channel(ChannelRef::Path("@standin".into())), 200)
        .await
        .unwrap();
    let by_id = c
        .read_list(&ListRef::Channel(ChannelRef::Id(CHANNEL_ID.into())), 200)
        .await
        .unwrap();

    let want: Vec<&str> = videos.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids(&by_handle), want);
    assert_eq!(ids(&by_id), want);
    assert_eq!(by_handle.playlist_id, "UULFabcdefghijklmnopqrstuv");
    assert_eq!(by_handle.videos[69].title.as_deref(), Some("ch video 70"));
    assert_eq!(yt.list_requests(CHANNEL_ID), 6, "30 + 30 + 10, twice");
}

#[tokio::test]
async fn lists_that_cannot_be_read_say_why() {
    let yt = YoutubeStandin::start(vec![]);
    yt.add_list(
        StandinList::playlist("PLprivate", "t", numbered_videos("pv", 3))
            .behaving(ListBehaviour::Private),
    );
    yt.add_list(
        StandinList::playlist("PLlimited", "t", numbered_videos("rl", 3))
            .behaving(ListBehaviour::RateLimited),
    );
    yt.add_list(StandinList::playlist("PLempty", "t", vec![]));
    let c = client(&yt.url());
    let read = |list: ListRef| {
        let c = c.clone();
        async move { c.read_list(&list, 10).await.unwrap_err() }
    };

    assert_eq!(
        read(ListRef::Playlist("PLmissing".into())).await,
        ListError::Unavailable("The playlist does not exist.".into())
    );
    assert_eq!(
        read(ListRef::Playlist("PLprivate".into())).await,
        ListError::Unavailable("This playlist is private.".into())
    );
    assert!(matches!(
        read(ListRef::Playlist("PLlimited".into())).await,
        ListError::Youtube(YoutubeError::RateLimited { retry_after: Some(d), .. })
            if d == Duration::from_secs(30)
    ));
    assert_eq!(
        read(ListRef::Playlist("PLempty".into())).await,
        ListError::Unavailable("it has no videos".into())
    );
    assert!(matches!(
        read(ListRef::Channel(ChannelRef::Path("@nobody".into()))).await,
        ListError::Unavailable(reason) if reason.contains("HTTP 404")
    ));
    assert!(matches!(
        read(ListRef::Channel(ChannelRef::Id("UCzzzzzzzzzzzzzzzzzzzzzz".into()))).await,
        ListError::Unavailable(reason) if reason.contains("HTTP 404")
    ));
}

#[tokio::test]
async fn expanding_a_batch_rejects_what_cannot_be_read_in_time_and_keeps_the_rest() {
    let yt = YoutubeStandin::start(vec![]);
    yt.add_list(StandinList::playlist(
        "PLgood",
        "t",
        numbered_videos("gd", 3),
    ));
    yt.add_list(
        StandinList::playlist("PLslow", "t", numbered_videos("sl", 3))
            .behaving(ListBehaviour::Stall),
    );
    let mut input = BatchInput::with_lists(ListOptions::default());
    input.push_lines(
        "https://www.youtube.com/playlist?list=PLslow\n\
         https://www.youtube.com/playlist?list=PLgood\n\
         gd-----0001\n",
    );

    let started = Instant::now();
    expand_lists(&client(&yt.url()), &mut input, Duration::from_millis(500)).await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let got: Vec<(usize, &str)> = input
        .items
        .iter()
        .map(|i| (i.line, i.video_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [(2, "gd-----0000"), (2, "gd-----0001"), (2, "gd-----0002")]
    );
    assert_eq!(
        input.duplicates, 1,
        "line 3 repeats the playlist's second video"
    );
    assert_eq!(input.rejected.len(), 1);
    assert_eq!(input.rejected[0].line, 1);
    assert!(
        input.rejected[0].reason.contains("within the 0.5 s"),
        "{}",
        input.rejected[0].reason
    );
}
