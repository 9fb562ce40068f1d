//! The provider clients against local stand-ins speaking the OpenAI and Anthropic formats.

use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_llm::{ChatRequest, LlmClient, LlmConfig, LlmErrorKind, Provider};
use abridge_standins::llm::{Failure, LlmStandin, Provider as Standin};

const KEY: &str = "sk-test-0123456789abcdef";

fn client(provider: Provider, url: &str) -> LlmClient {
    LlmClient::new(LlmConfig {
        provider,
        base_url: url.to_owned(),
        api_key: Some(Secret::new(KEY)),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "test-model".into(),
        system: "You summarize.".into(),
        user: "Transcript:\n[00:05] Hello there.\n[01:10] More things.\n".into(),
        max_tokens: 300,
        temperature: 0.2,
        structure: None,
    }
}

#[tokio::test]
async fn openai_chat_completions() {
    let s = LlmStandin::start(Standin::OpenAi);
    let r = client(Provider::OpenAi, &s.url())
        .complete(&request())
        .await
        .unwrap();
    assert!(
        r.text.contains("KEY POINTS:\n- [00:05] Hello there."),
        "{}",
        r.text
    );
    assert_eq!(r.model, "test-model");
    assert!(r.input_tokens > 0 && r.output_tokens > 0);
    let got = &s.received()[0];
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(got.body["messages"][0]["role"], "system");
    assert_eq!(got.body["messages"][1]["role"], "user");
    assert_eq!(got.body["max_tokens"], 300);
}

#[tokio::test]
async fn anthropic_messages() {
    let s = LlmStandin::start(Standin::Anthropic);
    // A base URL given with /v1 works too.
    let r = client(Provider::Anthropic, &format!("{}/v1", s.url()))
        .complete(&request())
        .await
        .unwrap();
    assert!(r.text.starts_with("TL;DR:"), "{}", r.text);
    let got = &s.received()[0];
    assert_eq!(got.headers["x-api-key"], KEY);
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert_eq!(got.body["system"], "You summarize.");
    assert_eq!(got.body["max_tokens"], 300);
}

#[tokio::test]
async fn failures_are_classified_with_retry_hints() {
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let standin = match provider {
            Provider::OpenAi => Standin::OpenAi,
            Provider::Anthropic => Standin::Anthropic,
        };
        let s = LlmStandin::start(standin);
        let c = client(provider, &s.url());
        s.push_failure(Failure::new(standin, 429, "rate limited").header("retry-after", "2"));
        s.push_failure(Failure::new(standin, 429, "rate limited").header("retry-after-ms", "1500"));
        s.push_failure(Failure::new(standin, 529, "Overloaded"));
        s.push_failure(Failure::new(standin, 503, "unavailable"));
        s.push_failure(Failure::new(standin, 408, "timeout"));
        s.push_failure(Failure::new(standin, 409, "conflict"));
        s.push_failure(Failure::new(
            standin,
            401,
            &format!("Incorrect API key provided: {KEY}"),
        ));
        s.push_failure(Failure::new(standin, 403, "forbidden"));
        s.push_failure(Failure::new(standin, 404, "model: nope"));
        s.push_failure(Failure::new(standin, 400, "bad"));
        let expect = [
            (LlmErrorKind::RateLimited, Some(Duration::from_secs(2))),
            (LlmErrorKind::RateLimited, Some(Duration::from_millis(1500))),
            (LlmErrorKind::Overloaded, None),
            (LlmErrorKind::Server, None),
            (LlmErrorKind::Timeout, None),
            (LlmErrorKind::Conflict, None),
            (LlmErrorKind::Auth, None),
            (LlmErrorKind::Forbidden, None),
            (LlmErrorKind::NotFound, None),
            (LlmErrorKind::BadRequest, None),
        ];
        for (kind, retry_after) in expect {
            let e = c.complete(&request()).await.unwrap_err();
            assert_eq!(
                (e.kind, e.retry_after),
                (kind, retry_after),
                "{provider}: {e}"
            );
            assert!(!e.to_string().contains(KEY), "{e}");
        }
        // The context window: the stand-in refuses a prompt that does not fit.
        s.set_context_tokens(100);
        let e = c.complete(&request()).await.unwrap_err();
        assert_eq!(e.kind, LlmErrorKind::ContextLength, "{provider}: {e}");
        assert!(!e.kind.is_transient());
        assert_eq!(e.kind.as_str(), "context_length_exceeded");
    }
    let s = LlmStandin::start(Standin::OpenAi);
    s.push_failure(Failure::insufficient_quota());
    let e = client(Provider::OpenAi, &s.url())
        .complete(&request())
        .await
        .unwrap_err();
    assert_eq!(e.kind, LlmErrorKind::InsufficientQuota);
    assert!(!e.kind.is_transient());
}

#[tokio::test]
async fn unreachable_provider_is_a_transient_connection_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = client(Provider::OpenAi, &url)
        .complete(&request())
        .await
        .unwrap_err();
    assert_eq!(e.kind, LlmErrorKind::Connection, "{e}");
    assert!(e.kind.is_transient() && e.kind.means_provider_down());
}
