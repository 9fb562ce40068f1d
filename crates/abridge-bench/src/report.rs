//! Results: one JSON object per scenario result, and a human table of the headline figures
//! against the targets.

use serde_json::{Map, Value};

/// One result line: `{"scenario": ..., <figures>}`.
#[derive(Clone, Debug)]
pub struct Record {
    pub scenario: &'static str,
    pub fields: Map<String, Value>,
}

impl Record {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            fields: Map::new(),
        }
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    pub fn json(&self) -> String {
        let mut m = Map::new();
        m.insert("scenario".into(), self.scenario.into());
        m.extend(self.fields.clone());
        Value::Object(m).to_string()
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }
}

/// A headline figure and its target.
struct Check {
    what: &'static str,
    scenario: &'static str,
    key: &'static str,
    unit: &'static str,
    /// (target, higher is better)
    target: (f64, bool),
}

const CHECKS: &[Check] = &[
    Check {
        what: "burn-down, durable",
        scenario: "burndown",
        key: "items_per_s",
        unit: "items/s",
        target: (20_000.0, true),
    },
    Check {
        what: "Postgres alone (the ceiling)",
        scenario: "ceiling",
        key: "items_per_s",
        unit: "items/s",
        target: (0.0, true),
    },
    Check {
        what: "enqueue, 100k batch (CLI)",
        scenario: "enqueue",
        key: "items_per_s",
        unit: "items/s",
        target: (100_000.0, true),
    },
    Check {
        what: "enqueue, 100k batch (API)",
        scenario: "enqueue-api",
        key: "items_per_s",
        unit: "items/s",
        target: (100_000.0, true),
    },
    Check {
        what: "idle enqueue-to-start p50",
        scenario: "latency-idle",
        key: "p50_ms",
        unit: "ms",
        target: (1.0, false),
    },
    Check {
        what: "idle enqueue-to-start p99",
        scenario: "latency-idle",
        key: "p99_ms",
        unit: "ms",
        target: (5.0, false),
    },
    Check {
        what: "max rate with p99 < 50 ms",
        scenario: "latency-max",
        key: "max_rate_p99_under_50ms",
        unit: "items/s",
        target: (0.0, true),
    },
    Check {
        what: "claim cost, 1M vs 10 backlog",
        scenario: "scale",
        key: "claim_cost_ratio",
        unit: "x",
        target: (1.5, false),
    },
    Check {
        what: "Redis memory per queued item",
        scenario: "scale",
        key: "redis_bytes_per_item",
        unit: "bytes",
        target: (200.0, false),
    },
    Check {
        what: "worker RSS at concurrency 256",
        scenario: "scale",
        key: "worker_rss_mb",
        unit: "MB",
        target: (64.0, false),
    },
];

/// The table of headline figures.
pub fn table(records: &[Record]) -> String {
    let mut out = format!(
        "{:<32} {:>14} {:>12}  {}\n",
        "figure", "measured", "target", "met"
    );
    for c in CHECKS {
        let Some(v) = records
            .iter()
            .find(|r| r.scenario == c.scenario)
            .and_then(|r| r.get(c.key))
        else {
            continue;
        };
        let (target, higher) = c.target;
        let met = if higher { v >= target } else { v <= target };
        let target_text = if target == 0.0 {
            "-".to_owned()
        } else {
            format!(
                "{}{} {}",
                if higher { ">=" } else { "<=" },
                fmt(target),
                c.unit
            )
        };
        out.push_str(&format!(
            "{:<32} {:>14} {:>12}  {}\n",
            c.what,
            format!("{} {}", fmt(v), c.unit),
            target_text,
            if target == 0.0 {
                ""
            } else if met {
                "yes"
            } else {
                "NO"
            }
        ));
    }
    out
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 0.999), 100.0);
    }

    #[test]
    fn table_marks_targets() {
        let r = Record::new("burndown").set("items_per_s", 25_000.0);
        let t = table(&[r]);
        assert!(t.contains("burn-down, durable") && t.contains("yes"), "{t}");
    }
}
