//! What model requests cost: a price table per model, in US dollars per million tokens.
//! The defaults are the providers' list prices for the models README.md names; the operator
//! overrides or adds to them with `ABRIDGE_LLM_PRICES` (a local model is `name=0/0`).

use std::collections::HashMap;

/// US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1_000_000.0
    }
}

/// Prices by model name (as the batch or the fleet's settings name it).
#[derive(Clone, Debug, PartialEq)]
pub struct Prices(HashMap<String, Price>);

/// List prices (USD per million tokens, in and out) when this table was written.
const DEFAULTS: &[(&str, f64, f64)] = &[
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-sonnet-4-5", 3.00, 15.00),
    ("claude-opus-4-1", 15.00, 75.00),
];

impl Default for Prices {
    fn default() -> Self {
        Self(
            DEFAULTS
                .iter()
                .map(|&(model, input, output)| (model.to_owned(), Price { input, output }))
                .collect(),
        )
    }
}

impl Prices {
    /// The defaults with `spec`'s entries over them: `model=IN/OUT,...`, dollars per million
    /// tokens. A model name may hold `/`, `:` and `=` (`llama3.1:8b`, `org/model`): the last
    /// `=` splits the name from its price.
    pub fn with_overrides(spec: &str) -> Result<Self, String> {
        let mut prices = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("{entry:?} is not MODEL=IN/OUT (US dollars per million tokens)");
            let (model, price) = entry.rsplit_once('=').ok_or_else(bad)?;
            let (input, output) = price.split_once('/').ok_or_else(bad)?;
            let number = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(bad)
            };
            let model = model.trim();
            if model.is_empty() {
                return Err(bad());
            }
            prices.0.insert(
                model.to_owned(),
                Price {
                    input: number(input)?,
                    output: number(output)?,
                },
            );
        }
        Ok(prices)
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        self.0.get(model).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_add_models() {
        let p = Prices::with_overrides("gpt-4.1-mini=1/2, llama3.1:8b=0/0,org/m=x=0.5/1").unwrap();
        assert_eq!(
            p.get("gpt-4.1-mini"),
            Some(Price {
                input: 1.0,
                output: 2.0
            })
        );
        assert_eq!(
            p.get("llama3.1:8b").unwrap().cost(1_000_000, 1_000_000),
            0.0
        );
        assert_eq!(p.get("org/m=x").unwrap().output, 1.0);
        assert!(p.get("claude-haiku-4-5").is_some(), "defaults stay");
        assert!(p.get("unknown").is_none());
        let cost = Prices::default()
            .get("gpt-4.1-mini")
            .unwrap()
            .cost(1_000_000, 500_000);
        assert!((cost - 1.2).abs() < 1e-9, "{cost}");
        for bad in ["gpt", "gpt=1", "gpt=-1/2", "=1/2", "gpt=a/b", "gpt=inf/1"] {
            assert!(
                Prices::with_overrides(bad)
                    .unwrap_err()
                    .contains("MODEL=IN/OUT"),
                "{bad}"
            );
        }
    }
}
