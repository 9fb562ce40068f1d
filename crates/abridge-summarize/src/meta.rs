//! How a summary was made, stored with the item (`result_meta`) and with a cached summary.
//! One struct, so the shape the API serves is written down once.

use abridge_core::Backend;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ResultMeta {
    pub backend: Backend,
    /// The model, or `lexrank` for the extractive summarizer.
    pub model: String,
    pub prompt_version: String,
    pub length: &'static str,
    /// The language of the transcript summarized.
    pub language: String,
    pub transcript: TranscriptMeta,
    /// `hit`: the summary came from the cache; `miss`: it was made for this item.
    pub summary_cache: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Only for a model: what it cost as made, `null` without a price for the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_batch_id: Option<String>,
    /// Only for a model: how the answer was made.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub model_run: Option<ModelRun>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TranscriptMeta {
    /// `supplied`, `checkpoint`, `cache` or `youtube`.
    pub source: &'static str,
    pub language: String,
    pub kind: Option<String>,
    pub segments: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelRun {
    pub llm_requests: u64,
    pub chunks: u64,
    pub reused_chunks: u64,
    pub truncated: bool,
    /// Only when the summary was made now (not from the cache): `json`, `prose` or `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamps_clamped: Option<u32>,
}

impl ResultMeta {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("result metadata serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(model_run: Option<ModelRun>, cost_usd: Option<Option<f64>>) -> serde_json::Value {
        ResultMeta {
            backend: Backend::Openai,
            model: "m".into(),
            prompt_version: "v".into(),
            length: "short",
            language: "en".into(),
            transcript: TranscriptMeta {
                source: "youtube",
                language: "en".into(),
                kind: None,
                segments: 3,
            },
            summary_cache: "miss",
            input_tokens: 1,
            output_tokens: 2,
            cost_usd,
            provider_batch_id: None,
            model_run,
            duration_ms: 5,
        }
        .to_json()
    }

    #[test]
    fn a_model_s_fields_appear_only_for_a_model_and_an_unpriced_cost_is_null() {
        let extractive = meta(None, None);
        for absent in ["cost_usd", "llm_requests", "answer", "provider_batch_id"] {
            assert!(extractive.get(absent).is_none(), "{absent}: {extractive}");
        }
        assert!(extractive["transcript"]["kind"].is_null());
        let run = ModelRun {
            llm_requests: 1,
            chunks: 1,
            reused_chunks: 0,
            truncated: false,
            answer: Some("json"),
            stamps_clamped: Some(0),
        };
        let unpriced = meta(Some(run), Some(None));
        assert!(unpriced["cost_usd"].is_null() && unpriced.get("cost_usd").is_some());
        assert_eq!(
            (&unpriced["llm_requests"], &unpriced["answer"]),
            (&serde_json::json!(1), &serde_json::json!("json"))
        );
    }
}
