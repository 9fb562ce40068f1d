//! Prometheus text exposition (format 0.0.4) for values computed at scrape time.
//!
//! The facade's recorder suits values a process accumulates; the fleet gauges are read fresh
//! from Redis and Postgres at each scrape and must vanish when their source cannot be read
//! (a stale gauge is worse than a missing one), so they are written directly with this.

use std::fmt::Write as _;

use crate::metrics::MetricDef;

/// A scrape's worth of families, written in order.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Every sample of the family must
    /// follow before the next family starts.
    pub fn family(&mut self, def: &MetricDef) -> &mut Self {
        let help = def.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {} {}", def.name, help);
        let _ = writeln!(self.out, "# TYPE {} {}", def.name, def.kind.as_str());
        self
    }

    /// One sample of the current family. `labels` are (name, value) pairs.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::def;

    #[test]
    fn writes_help_type_and_escaped_samples() {
        let mut e = Exposition::new();
        e.family(def("abridge_queue_depth").unwrap())
            .sample(
                "abridge_queue_depth",
                &[("queue", "a\"b\\c"), ("priority", "high")],
                3.0,
            )
            .sample("abridge_queue_depth", &[], 0.25);
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# HELP abridge_queue_depth "));
        assert_eq!(lines[1], "# TYPE abridge_queue_depth gauge");
        assert_eq!(
            lines[2],
            r#"abridge_queue_depth{queue="a\"b\\c",priority="high"} 3"#
        );
        assert_eq!(lines[3], "abridge_queue_depth 0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
    }
}
