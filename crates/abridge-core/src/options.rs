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

/// A batch's processing options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// Summarizer backend for this batch (`extractive`, `openai`, `anthropic`, `noop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Model name for an LLM backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<SummaryLength>,
    /// Transcript language preference for this batch, most preferred first (`de` or `de,en`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl BatchOptions {
    /// Checks the shape of each field; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.backend
            && (b.is_empty()
                || b.len() > 32
                || !b
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(format!("summarizer.backend {b:?} is not a backend name"));
        }
        if let Some(m) = &self.model
            && (m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control))
        {
            return Err("summarizer.model must be 1 to 200 printable characters".into());
        }
        if let Some(l) = &self.language {
            let ok = !l.is_empty()
                && l.len() <= 100
                && l.split(',').all(|tag| {
                    let tag = tag.trim();
                    (2..=12).contains(&tag.len())
                        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(format!(
                    "summarizer.language {l:?} must be language codes such as \"en\" or \"pt-BR,en\""
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
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
}
