//! Trace propagation through the queue, checked with an in-test OTLP/HTTP receiver: the
//! spans that `abridge enqueue` and `abridge worker` export must form one trace per batch,
//! with the item's spans under the enqueue span, and the summarizer's stages and LLM calls
//! under the item's (with their metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_testkit::TestEnv;
use axum::body::Bytes;
use axum::routing::post;
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

use crate::support::*;

/// A span as the receiver got it, ids in hex.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    start_ns: u64,
    end_ns: u64,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP (protobuf) trace receiver on a free port, as a collector would run one.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for rs in request.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| text(kv.value.as_ref()))
                            .unwrap_or_default();
                        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                            sink.push(Received {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                start_ns: span.start_time_unix_nano,
                                end_ns: span.end_time_unix_nano,
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                                    .collect(),
                            });
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, spans }
    }

    /// The standard variables that point an abridge process at this receiver.
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ]
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

// Multi-threaded: the receiver must answer while the test waits on an `abridge` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_enqueue_through_the_queue_to_the_outcome_write() {
    let receiver = Receiver::start().await;
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "20")]).await;
    let otel = receiver.vars();
    let mut worker_vars: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    worker_vars.push(("ABRIDGE_LOG_FORMAT", "json"));
    fleet.spawn("worker", &["worker", "--concurrency", "4"], &worker_vars);

    // Enqueued with traces on: the batch carries the enqueue span's context.
    let mut traced_vars = fleet.vars.clone();
    traced_vars.extend(otel.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    // One item succeeds; one fails (and logs a line in its span).
    let input = "{\"url\": \"o0000000000\", \"transcript\": \"Fine.\"}\n\
                 {\"url\": \"o0000000001\", \"transcript\": \"abridge:fail permanent drill\"}\n";
    let (code, out, err) = run_with(&traced_vars, &["enqueue", "--json"], Some(input));
    assert_eq!(code, 0, "{err}");
    let traced: abridge_core::BatchId =
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["batch_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    // Enqueued with traces off: nothing to continue.
    let untraced = fleet.enqueue(&video_lines('u', 1));
    fleet.wait_finished(traced, Duration::from_secs(30)).await;
    fleet.wait_finished(untraced, Duration::from_secs(30)).await;
    fleet.workers[0].signal(Signal::SIGTERM);
    assert_eq!(fleet.workers[0].wait_exit(Duration::from_secs(20)), Some(0));

    wait_for(Duration::from_secs(10), "the worker's spans", || async {
        receiver
            .spans()
            .iter()
            .filter(|s| s.name == "write outcome")
            .count()
            >= 3
    })
    .await;
    let spans = receiver.spans();
    let enqueue = spans
        .iter()
        .find(|s| s.name == "enqueue")
        .unwrap_or_else(|| panic!("no enqueue span: {spans:#?}"));
    assert_eq!(enqueue.service, "abridge-enqueue");
    assert_eq!(
        enqueue.parent_span_id, "",
        "the CLI's enqueue is the trace's root"
    );
    assert_eq!(enqueue.attributes["batch"], traced.to_string());
    let trace = &enqueue.trace_id;

    let items: Vec<&Received> = spans.iter().filter(|s| s.name == "item").collect();
    assert_eq!(items.len(), 3, "{items:#?}");
    let in_trace: Vec<&&Received> = items.iter().filter(|s| &s.trace_id == trace).collect();
    assert_eq!(
        in_trace.len(),
        2,
        "both items of the traced batch continue its trace"
    );
    let mut outcomes = Vec::new();
    for item in &in_trace {
        assert_eq!(item.service, "abridge-worker");
        assert_eq!(
            item.parent_span_id, enqueue.span_id,
            "item under the enqueue span"
        );
        assert_eq!(item.attributes["batch"], traced.to_string());
        assert_eq!(item.attributes["attempt"], "1");
        assert!(item.attributes["video"].starts_with('o'));
        // The write happened inside the item's work, under its span.
        let writes: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "write outcome" && s.parent_span_id == item.span_id)
            .collect();
        assert_eq!(writes.len(), 1, "one outcome write under {item:?}");
        assert_eq!(writes[0].trace_id, *trace);
        outcomes.push(writes[0].attributes["outcome"].clone());
    }
    outcomes.sort();
    assert_eq!(outcomes, ["failed", "succeeded"]);
    // The wait in the queue and the claim, recorded after the fact, beside each item.
    for name in ["queue wait", "claim"] {
        let recorded: Vec<_> = spans
            .iter()
            .filter(|s| s.name == name && &s.trace_id == trace)
            .collect();
        assert_eq!(recorded.len(), 2, "{name}: {recorded:#?}");
        for s in recorded {
            assert_eq!(s.parent_span_id, enqueue.span_id);
            assert!(s.end_ns >= s.start_ns);
        }
    }
    let wait = spans
        .iter()
        .find(|s| s.name == "queue wait" && &s.trace_id == trace)
        .unwrap();
    assert!(
        wait.start_ns + 2_000_000_000 >= enqueue.start_ns,
        "the wait starts around the enqueue"
    );

    // The untraced batch's item starts a trace of its own.
    let lone = items.iter().find(|s| &s.trace_id != trace).unwrap();
    assert_eq!(lone.parent_span_id, "");
    assert_eq!(lone.attributes["batch"], untraced.to_string());

    // Log lines about a traced item name its trace, to jump from logs to traces.
    let logs = fleet.workers[0].logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"] == "item" && l["batch"] == traced.to_string())
        .unwrap_or_else(|| panic!("no log line in a traced item's span:\n{logs}"));
    assert_eq!(line["trace_id"], *trace);
}

/// The summarizer's own stages in the metrics and the trace: a transcript fetch from YouTube
/// and an LLM call per item, against the local stand-ins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summarizers_stages_and_llm_calls_are_measured_and_traced() {
    use abridge_standins::llm::{LlmStandin, Provider};
    use abridge_standins::youtube::{Track, Video, YoutubeStandin};

    let lines = |words: &str| -> Vec<(f64, f64, String)> {
        (0..6)
            .map(|i| {
                (
                    i as f64 * 10.0,
                    10.0,
                    format!("{words} sentence number {i} is here."),
                )
            })
            .collect()
    };
    let youtube = YoutubeStandin::start(vec![
        Video::new(
            "otelVideo01",
            "One",
            vec![Track::new("en", true, lines("First"))],
        ),
        Video::new(
            "otelVideo02",
            "Two",
            vec![Track::new("en", true, lines("Second"))],
        ),
    ]);
    let openai = LlmStandin::start(Provider::OpenAi);
    let (yt, oa) = (youtube.url(), openai.url());
    let receiver = Receiver::start().await;
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            ("ABRIDGE_SUMMARIZER", "openai"),
            ("ABRIDGE_YOUTUBE_BASE_URL", &yt),
            ("ABRIDGE_OPENAI_BASE_URL", &oa),
            ("ABRIDGE_OPENAI_API_KEY", "sk-otel-test"),
        ],
    )
    .await;
    let otel = receiver.vars();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker_vars: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.spawn(
        "worker",
        &["worker", "--concurrency", "2", "--metrics-listen", &addr],
        &worker_vars,
    );
    wait_healthy(port).await;
    let mut traced_vars = fleet.vars.clone();
    traced_vars.extend(otel.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let (code, out, err) = run_with(
        &traced_vars,
        &["enqueue", "--json"],
        Some("otelVideo01\notelVideo02\n"),
    );
    assert_eq!(code, 0, "{err}");
    let batch: abridge_core::BatchId =
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["batch_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let done = fleet.wait_finished(batch, Duration::from_secs(60)).await;
    assert_eq!(done.counts.succeeded, 2, "{:?}", done.counts);

    let s = scrape(port).await;
    let openai_ok = [("backend", "openai"), ("outcome", "ok")];
    assert_eq!(s.get("abridge_summarizer_requests_total", &openai_ok), 2.0);
    assert_eq!(openai.requests(), 2);
    for direction in ["input", "output"] {
        let tokens = s.get(
            "abridge_summarizer_tokens_total",
            &[("backend", "openai"), ("direction", direction)],
        );
        assert!(tokens > 0.0, "{direction} tokens: {tokens}");
    }
    for stage in ["transcript", "summarize", "process"] {
        assert_eq!(
            s.get("abridge_item_duration_seconds_count", &[("stage", stage)]),
            2.0,
            "{stage}"
        );
    }

    fleet.workers[0].signal(Signal::SIGTERM);
    assert_eq!(fleet.workers[0].wait_exit(Duration::from_secs(20)), Some(0));
    wait_for(
        Duration::from_secs(10),
        "the summarizer's spans",
        || async {
            receiver
                .spans()
                .iter()
                .filter(|s| s.name == "llm call")
                .count()
                >= 2
        },
    )
    .await;
    let spans = receiver.spans();
    let enqueue = spans
        .iter()
        .find(|s| s.name == "enqueue")
        .expect("enqueue span");
    let items: Vec<&Received> = spans.iter().filter(|s| s.name == "item").collect();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item.trace_id, enqueue.trace_id);
        let child = |name: &str, parent: &Received| -> Received {
            spans
                .iter()
                .find(|s| s.name == name && s.parent_span_id == parent.span_id)
                .unwrap_or_else(|| panic!("no {name} span under {parent:?}: {spans:#?}"))
                .clone()
        };
        child("transcript", item);
        let summarize = child("summarize", item);
        assert_eq!(summarize.attributes["backend"], "openai");
        let call = child("llm call", &summarize);
        assert_eq!(call.attributes["backend"], "openai");
        assert_eq!(call.trace_id, enqueue.trace_id);
    }
}
