//! A batch with playlists and channels: read at enqueue from the YouTube stand-in, expanded in
//! place, duplicates dropped, unreadable lists rejected with their reason.

use abridge_standins::youtube::YoutubeStandin;
use abridge_standins::youtube::lists::{ListBehaviour, StandinList, numbered_videos};
use serde_json::{Value, json};

use crate::support::App;

const CHANNEL_ID: &str = "UCabcdefghijklmnopqrstuv";

#[tokio::test]
async fn playlists_and_channels_expand_in_place_and_a_broken_list_is_a_rejected_input() {
    let yt = YoutubeStandin::start(vec![]);
    let playlist = numbered_videos("pl", 250);
    yt.add_list(StandinList::playlist(
        "PLbig",
        "Big playlist",
        playlist.clone(),
    ));
    yt.add_list(StandinList::channel(
        CHANNEL_ID,
        "@standin",
        "Stand-in",
        numbered_videos("ch", 40),
    ));
    yt.add_list(
        StandinList::playlist("PLlimited", "t", numbered_videos("rl", 3))
            .behaving(ListBehaviour::RateLimited),
    );
    let app = App::start(&[("ABRIDGE_YOUTUBE_BASE_URL", &yt.url())]).await;
    let token = app.token("acme").await;

    let created: Value = app
        .http
        .post(app.url("/v1/batches"))
        .bearer_auth(&token)
        .json(&json!({
            "urls": [
                "aaaaaaaaaaa",
                "https://www.youtube.com/playlist?list=PLbig",
                "https://www.youtube.com/@standin/videos",
                "https://www.youtube.com/playlist?list=PLlimited",
                "https://youtu.be/pl-----0003",
                "https://www.youtube.com/watch?v=bbbbbbbbbbb&list=PLbig",
            ],
            "max_per_list": 30,
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();

    // 1 + 30 of the playlist + 30 of the channel + the watch URL's one video.
    assert_eq!(created["accepted"], 62, "{created}");
    assert_eq!(
        created["duplicates"], 1,
        "line 5 is the playlist's 4th video"
    );
    let rejected = created["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{created}");
    assert_eq!(rejected[0]["index"], 3);
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("playlist PLlimited could not be read: ") && reason.contains("HTTP 429"),
        "{reason}"
    );

    let id = created["id"].as_str().unwrap();
    let page: Value = app
        .http
        .get(app.url(&format!("/v1/batches/{id}/items?limit=100")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    let row = |i: usize| {
        (
            items[i]["position"].as_i64().unwrap(),
            items[i]["video_id"].as_str().unwrap(),
            items[i]["url"].as_str().unwrap(),
        )
    };
    assert_eq!(
        row(0),
        (
            0,
            "aaaaaaaaaaa",
            "https://www.youtube.com/watch?v=aaaaaaaaaaa"
        )
    );
    assert_eq!(
        row(1),
        (
            1,
            "pl-----0000",
            "https://www.youtube.com/watch?v=pl-----0000&list=PLbig&index=1"
        )
    );
    assert_eq!(items[1]["title"], "pl video 1");
    assert_eq!(row(30).1, "pl-----0029");
    assert_eq!(
        row(31),
        (
            31,
            "ch-----0000",
            "https://www.youtube.com/watch?v=ch-----0000&list=UULFabcdefghijklmnopqrstuv&index=1"
        )
    );
    assert_eq!(row(60).1, "ch-----0029");
    assert_eq!(
        row(61),
        (
            61,
            "bbbbbbbbbbb",
            "https://www.youtube.com/watch?v=bbbbbbbbbbb"
        )
    );
    assert_eq!(items.len(), 62);
    assert_eq!(
        yt.list_requests("PLbig"),
        1,
        "30 of 250 need the first page only"
    );
}

#[tokio::test]
async fn a_watch_url_with_a_list_expands_when_asked_and_max_per_list_is_bounded() {
    let yt = YoutubeStandin::start(vec![]);
    yt.add_list(StandinList::playlist(
        "PLsmall",
        "t",
        numbered_videos("sm", 5),
    ));
    let app = App::start(&[("ABRIDGE_YOUTUBE_BASE_URL", &yt.url())]).await;
    let token = app.token("acme").await;
    let post = |body: Value| {
        app.http
            .post(app.url("/v1/batches"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let created: Value = post(json!({
        "urls": ["https://www.youtube.com/watch?v=sm-----0002&list=PLsmall"],
        "expand_lists": true,
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(created["accepted"], 5, "{created}");

    for bad in [0, 5001] {
        let answer = post(json!({"urls": ["aaaaaaaaaaa"], "max_per_list": bad}))
            .await
            .unwrap();
        assert_eq!(answer.status(), 422);
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_per_list"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_tenant_over_its_rate_reads_no_list_and_list_reads_take_turns() {
    let yt = YoutubeStandin::start(vec![]);
    yt.add_list(StandinList::playlist(
        "PLrate",
        "t",
        numbered_videos("rt", 5),
    ));
    yt.add_list(
        StandinList::playlist("PLslow", "t", numbered_videos("sl", 5))
            .behaving(ListBehaviour::Stall),
    );
    let app = App::start(&[
        ("ABRIDGE_YOUTUBE_BASE_URL", &yt.url()),
        ("ABRIDGE_API_LIST_TIME_LIMIT_MS", "700"),
    ])
    .await;
    let token = app.token("acme").await;
    let operator = app.operator_token().await;
    let answer = app
        .http
        .put(app.url("/v1/tenants/acme"))
        .bearer_auth(&operator)
        .json(&json!({"max_batches_per_minute": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (status, _) = app
        .post(&token, "/v1/batches", json!({"urls": ["aaaaaaaaaaa"]}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = app
        .post(
            &token,
            "/v1/batches",
            json!({"urls": ["https://www.youtube.com/playlist?list=PLrate"]}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(yt.list_requests("PLrate"), 0, "no YouTube request for it");

    // One create per tenant reads lists at a time: its second waits its turn (within the
    // limit), while another tenant's create reads at once.
    let globex = app.token("globex").await;
    let initech = app.token("initech").await;
    let started = std::time::Instant::now();
    let slow = app.post(
        &globex,
        "/v1/batches",
        json!({"urls": ["bbbbbbbbbbb", "https://www.youtube.com/playlist?list=PLslow"]}),
    );
    let timed = |token: String, urls: Value| {
        let app = &app;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let (status, body) = app.post(&token, "/v1/batches", json!({"urls": urls})).await;
            (status, body, started.elapsed())
        }
    };
    let same_tenant = timed(
        globex.clone(),
        json!([
            "ccccccccccc",
            "https://www.youtube.com/playlist?list=PLrate"
        ]),
    );
    let other_tenant = timed(
        initech.clone(),
        json!([
            "ddddddddddd",
            "https://www.youtube.com/playlist?list=PLrate"
        ]),
    );
    let ((s1, first), (s2, second, waited), (s3, third, quick)) =
        tokio::join!(slow, same_tenant, other_tenant);
    assert_eq!((s1, s2, s3), (201, 201, 201), "{first} {second} {third}");
    assert_eq!(third["accepted"], 6, "{third}");
    assert!(quick < std::time::Duration::from_millis(550), "{quick:?}");
    assert!(
        waited >= std::time::Duration::from_millis(650),
        "the second create of a tenant waited for its first: {waited:?} {second}"
    );
}
