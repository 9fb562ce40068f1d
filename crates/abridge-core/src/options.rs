//! Per-batch processing options, chosen by the producer at enqueue (CLI flags or the API's
//! `summarizer` object) and stored with the batch. Every field is optional: unset means the
//! fleet's configured default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How long a summary should be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryLength {
    Short,
    #[default]
    Standard,
    Detailed,
}

impl SummaryLength {
    pub const ALL: [SummaryLength; 3] = [Self::Short, Self::Standard, Self::Detailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Standard => "standard",
            Self::Detailed => "detailed",
        }
    }
}

impl fmt::Display for SummaryLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SummaryLength {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown length {s:?}: expected one of short, standard, detailed")
            })
    }
}

/// A summarizer backend a batch may ask for. Read in any case (`OpenAI`), written in lower case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Backend {
    #[default]
    Extractive,
    Openai,
    Anthropic,
    /// The drill backend: no model, and it obeys `abridge:` directives in a transcript (sleep,
    /// fail, exit the process). Offered only where the operator sets `ABRIDGE_DRILLS=1`.
    Noop,
}

impl Backend {
    pub const ALL: [Backend; 4] = [Self::Extractive, Self::Openai, Self::Anthropic, Self::Noop];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Noop => "noop",
        }
    }

    /// The backends a process offers: `noop` only with drills on.
    pub fn offered(drills: bool) -> impl Iterator<Item = Backend> {
        Self::ALL
            .into_iter()
            .filter(move |b| drills || *b != Self::Noop)
    }

    /// Whether the backend sends transcripts (and titles) to a model.
    pub fn is_llm(self) -> bool {
        matches!(self, Self::Openai | Self::Anthropic)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Backend {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown backend {s:?}: expected one of extractive, openai, anthropic")
            })
    }
}

/// What a caller's batches may ask for, beyond the shape of the options. The CLI (the
/// operator, with database access) may ask for anything the fleet offers; an API tenant gets
/// what the operator set for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Backends the caller may name; `None`: any the fleet offers.
    pub backends: Option<Vec<Backend>>,
    /// Models the caller may name; `None`: any. An empty list allows only the fleet's
    /// configured model (no `model` field).
    pub models: Option<Vec<String>>,
}

impl Allowed {
    pub fn anything() -> Self {
        Self::default()
    }
}

/// A batch's processing options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// Summarizer backend for this batch; `None`: the fleet's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Model name for an LLM backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<SummaryLength>,
    /// Transcript language preference for this batch, most preferred first (`de` or `de,en`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Stop starting model items once the batch's spent cost (from the fleet's price table)
    /// reaches this many US dollars: the rest end `cancelled` with `budget_reached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
}

/// The largest `max_cost_usd` a batch may set: far above any real batch, and small enough
/// to add up exactly in Postgres's `numeric`.
pub const MAX_COST_USD: f64 = 1_000_000.0;

impl BatchOptions {
    /// Checks the shape of each field; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = &self.model
            && (m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control))
        {
            return Err("summarizer.model must be 1 to 200 printable characters".into());
        }
        if let Some(l) = &self.language {
            let ok = !l.is_empty()
                && l.len() <= 100
                && l.split(',').all(|tag| is_language_tag(tag.trim()));
            if !ok {
                return Err(format!(
                    "summarizer.language {l:?} must be language codes such as \"en\" or \"pt-BR,en\""
                ));
            }
        }
        if let Some(usd) = self.max_cost_usd
            && !(usd.is_finite() && usd > 0.0 && usd <= MAX_COST_USD)
        {
            return Err(format!(
                "summarizer.max_cost_usd must be a number of US dollars above 0 and at most {MAX_COST_USD}"
            ));
        }
        Ok(())
    }

    /// Checks the options against what this process offers (`drills`: `ABRIDGE_DRILLS`) and
    /// what the caller may use; `default` is the fleet's backend for a batch that names none.
    /// The message names the field and the allowed values.
    pub fn admit(&self, drills: bool, default: Backend, allowed: &Allowed) -> Result<(), String> {
        let backend = self.backend.unwrap_or(default);
        if self.backend == Some(Backend::Noop) && !drills {
            return Err(
                "summarizer.backend: \"noop\" is the drill backend, offered only \
                        where the operator sets ABRIDGE_DRILLS=1"
                    .into(),
            );
        }
        if let Some(backends) = &allowed.backends
            && !backends.contains(&backend)
        {
            let names: Vec<&str> = backends.iter().map(|b| b.as_str()).collect();
            return Err(format!(
                "summarizer.backend: {backend:?} is not allowed for this tenant; allowed: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
                backend = backend.as_str(),
            ));
        }
        if let (Some(model), Some(models)) = (&self.model, &allowed.models)
            && !models.iter().any(|m| m == model)
        {
            return Err(format!(
                "summarizer.model: {model:?} is not allowed for this tenant; allowed: {}",
                if models.is_empty() {
                    "only the fleet's configured model (leave `model` out)".to_owned()
                } else {
                    models.join(", ")
                }
            ));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A language code as YouTube and the settings take them (`en`, `pt-BR`, `zh-Hans`): 2 to 12
/// letters, digits and hyphens. Checked, not parsed: YouTube decides which exist.
pub fn is_language_tag(tag: &str) -> bool {
    (2..=12).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_validate() {
        let o: BatchOptions =
            serde_json::from_str(r#"{"backend":"openai","length":"short","language":"de,en"}"#)
                .unwrap();
        assert_eq!(o.length, Some(SummaryLength::Short));
        assert!(o.validate().is_ok());
        assert_eq!(
            serde_json::to_string(&BatchOptions::default()).unwrap(),
            "{}"
        );
        assert!(serde_json::from_str::<BatchOptions>(r#"{"lenght":"short"}"#).is_err());
        let bad = BatchOptions {
            language: Some("english please".into()),
            ..BatchOptions::default()
        };
        assert!(bad.validate().unwrap_err().contains("summarizer.language"));
    }

    #[test]
    fn noop_is_admitted_only_with_drills() {
        let noop = BatchOptions {
            backend: Some(Backend::Noop),
            ..BatchOptions::default()
        };
        let any = Allowed::anything();
        let refused = noop.admit(false, Backend::Extractive, &any).unwrap_err();
        assert!(refused.contains("summarizer.backend") && refused.contains("ABRIDGE_DRILLS"));
        assert!(noop.admit(true, Backend::Extractive, &any).is_ok());
        // A name that is no backend does not even decode.
        let unknown = serde_json::from_str::<BatchOptions>(r#"{"backend":"gpt"}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown backend"));
        let any_case: BatchOptions = serde_json::from_str(r#"{"backend":" OpenAI"}"#).unwrap();
        assert_eq!(any_case.backend, Some(Backend::Openai));
        assert_eq!(
            serde_json::to_string(&any_case).unwrap(),
            r#"{"backend":"openai"}"#
        );
    }

    #[test]
    fn a_tenant_gets_only_its_backends_and_models() {
        let allowed = Allowed {
            backends: Some(vec![Backend::Extractive]),
            models: Some(vec![]),
        };
        // Unset backend: the fleet's default, allowed when listed.
        assert!(
            BatchOptions::default()
                .admit(false, Backend::Extractive, &allowed)
                .is_ok()
        );
        let openai = BatchOptions {
            backend: Some(Backend::Openai),
            ..BatchOptions::default()
        };
        let e = openai
            .admit(false, Backend::Extractive, &allowed)
            .unwrap_err();
        assert!(
            e.contains("\"openai\" is not allowed") && e.contains("allowed: extractive"),
            "{e}"
        );
        let model = BatchOptions {
            model: Some("gpt-5".into()),
            ..BatchOptions::default()
        };
        assert!(
            model
                .admit(false, Backend::Extractive, &allowed)
                .unwrap_err()
                .contains("summarizer.model")
        );
        let models = Allowed {
            backends: None,
            models: Some(vec!["gpt-5".into()]),
        };
        assert!(model.admit(false, Backend::Extractive, &models).is_ok());
    }
}
