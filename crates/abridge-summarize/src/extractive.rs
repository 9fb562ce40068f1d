//! The offline summarizer: LexRank (Erkan & Radev, 2004) over the transcript's sentences.
//!
//! Sentences become TF-IDF vectors (lower-cased, stop words dropped, light suffix stemming);
//! their cosine similarities form a weighted graph; the stationary distribution of a random
//! walk on it (power iteration, damping 0.85) ranks each sentence by how central it is. The
//! TL;DR is the most central sentences in spoken order; the key points are the most central
//! sentence of each equal stretch of the remaining transcript, so they cover the whole video.
//! Near-duplicates (cosine > 0.5 with a chosen sentence) are skipped.
//!
//! Deterministic: no randomness, no hash-order iteration in anything that is summed.

use std::collections::HashMap;

use abridge_core::SummaryLength;

use crate::render::{KeyPoint, Summary};
use crate::text::{Doc, Sentence, sentences};

/// Bumped whenever the output for the same transcript may change (the summary cache key).
pub const ALGORITHM_VERSION: &str = "lexrank-1";

/// Most sentences ranked: longer transcripts are ranked over runs of adjacent sentences.
const MAX_UNITS: usize = 1500;

/// (TL;DR sentences, key points) for a length.
pub fn shape(length: SummaryLength) -> (usize, usize) {
    match length {
        SummaryLength::Short => (2, 3),
        SummaryLength::Standard => (3, 6),
        SummaryLength::Detailed => (5, 12),
    }
}

/// [`summarize`] on a blocking thread: LexRank over a long transcript is a second or more
/// of CPU, which on the async runtime would hold back every timer of the worker (lease
/// renewals among them). A copy of the document goes to the thread; the work goes on there
/// if the item is dropped meanwhile, and its result is then unused.
pub async fn summarize_off_runtime(
    doc: &Doc,
    length: SummaryLength,
) -> Result<Summary, abridge_core::ItemError> {
    let doc = doc.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| summarize(&doc, length)))
        .await
        .map_err(|e| {
            abridge_core::ItemError::transient(
                abridge_core::ErrorKind::INTERNAL,
                format!("extractive summarizer failed: {e}"),
            )
        })
}

pub fn summarize(doc: &Doc, length: SummaryLength) -> Summary {
    let units = merge_to(sentences(&doc.segments), MAX_UNITS);
    let (n_tldr, n_points) = shape(length);
    let title = doc.title.clone();
    if units.is_empty() {
        return Summary {
            title,
            tldr: "The transcript has no speech to summarize.".into(),
            points: Vec::new(),
        };
    }
    let vectors = tfidf(&units);
    let scores = lexrank(&vectors);
    // Sentences too short to stand alone make poor key points; keep them only if nothing else.
    let words = |i: usize| units[i].text.split_whitespace().count();
    let mut candidates: Vec<usize> = (0..units.len()).filter(|&i| words(i) >= 6).collect();
    if candidates.len() < n_tldr + 1 {
        candidates = (0..units.len()).collect();
    }

    // TL;DR: the most central sentences, no near-duplicates, in spoken order.
    let mut by_score = candidates.clone();
    by_score.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = Vec::new();
    for &i in &by_score {
        if chosen.len() == n_tldr {
            break;
        }
        if chosen
            .iter()
            .all(|&j| cosine(&vectors[i], &vectors[j]) <= 0.5)
        {
            chosen.push(i);
        }
    }
    let mut tldr_ids = chosen.clone();
    tldr_ids.sort_unstable();

    // Key points: the best sentence of each equal stretch of what is left.
    let rest: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| !tldr_ids.contains(i))
        .collect();
    let pool = if rest.len() >= n_points.min(2) && !rest.is_empty() {
        rest
    } else {
        candidates.clone()
    };
    let sections = n_points.min(pool.len());
    let mut points = Vec::new();
    for s in 0..sections {
        let section = &pool[s * pool.len() / sections..(s + 1) * pool.len() / sections];
        let mut ranked = section.to_vec();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let pick = ranked
            .iter()
            .copied()
            .find(|&i| {
                points
                    .iter()
                    .all(|&j| cosine(&vectors[i], &vectors[j]) <= 0.5)
            })
            .or_else(|| ranked.first().copied());
        if let Some(i) = pick
            && !points.contains(&i)
        {
            points.push(i);
        }
    }
    points.sort_unstable();

    Summary {
        title,
        tldr: tldr_ids
            .iter()
            .map(|&i| units[i].text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        points: points
            .into_iter()
            .map(|i| KeyPoint {
                at_s: doc.timed.then_some(units[i].start_ms / 1000),
                text: units[i].text.clone(),
            })
            .collect(),
    }
}

/// Joins runs of adjacent sentences so that at most `max` remain.
fn merge_to(sentences: Vec<Sentence>, max: usize) -> Vec<Sentence> {
    if sentences.len() <= max {
        return sentences;
    }
    let per = sentences.len().div_ceil(max);
    sentences
        .chunks(per)
        .map(|run| Sentence {
            start_ms: run[0].start_ms,
            text: run
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

/// A sparse vector: (term id, weight), sorted by term id, unit length.
type Vector = Vec<(usize, f64)>;

fn tfidf(units: &[Sentence]) -> Vec<Vector> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let docs: Vec<Vec<usize>> = units
        .iter()
        .map(|u| {
            terms(&u.text)
                .map(|t| {
                    let n = ids.len();
                    *ids.entry(t).or_insert(n)
                })
                .collect()
        })
        .collect();
    let mut df = vec![0usize; ids.len()];
    for doc in &docs {
        let mut seen = doc.clone();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            df[t] += 1;
        }
    }
    let n = units.len() as f64;
    docs.iter()
        .map(|doc| {
            let mut tf: Vec<(usize, f64)> = Vec::new();
            let mut sorted = doc.clone();
            sorted.sort_unstable();
            for t in sorted {
                match tf.last_mut() {
                    Some((last, count)) if *last == t => *count += 1.0,
                    _ => tf.push((t, 1.0)),
                }
            }
            for (t, w) in &mut tf {
                *w *= ((1.0 + n) / (1.0 + df[*t] as f64)).ln() + 1.0;
            }
            let norm = tf.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
            if norm > 0.0 {
                for (_, w) in &mut tf {
                    *w /= norm;
                }
            }
            tf
        })
        .collect()
}

fn cosine(a: &Vector, b: &Vector) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    dot
}

/// Continuous LexRank: PageRank over the cosine-similarity graph (edges below 0.1 dropped).
fn lexrank(vectors: &[Vector]) -> Vec<f64> {
    let n = vectors.len();
    if n == 1 {
        return vec![1.0];
    }
    let mut edges: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            let w = cosine(&vectors[i], &vectors[j]);
            if w > 0.1 {
                edges[i].push((j, w));
                edges[j].push((i, w));
            }
        }
    }
    let out_weight: Vec<f64> = edges
        .iter()
        .map(|e| e.iter().map(|(_, w)| w).sum())
        .collect();
    let damping = 0.85;
    let mut rank = vec![1.0 / n as f64; n];
    for _ in 0..100 {
        // Rank held by sentences with no edges is spread evenly (a dangling node).
        let dangling: f64 = (0..n)
            .filter(|&i| out_weight[i] == 0.0)
            .map(|i| rank[i])
            .sum();
        let base = (1.0 - damping) / n as f64 + damping * dangling / n as f64;
        let mut next = vec![base; n];
        for i in 0..n {
            if out_weight[i] > 0.0 {
                let share = damping * rank[i] / out_weight[i];
                for &(j, w) in &edges[i] {
                    next[j] += share * w;
                }
            }
        }
        let delta: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        rank = next;
        if delta < 1e-9 {
            break;
        }
    }
    rank
}

/// Content terms of a sentence: lower-cased words without stop words, lightly stemmed.
fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() >= 2 && !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
}

fn stem(word: &str) -> String {
    let w = word.strip_suffix("'s").unwrap_or(word);
    for suffix in ["ing", "edly", "ed", "ies", "es", "ly", "s"] {
        if let Some(base) = w.strip_suffix(suffix)
            && base.chars().count() >= 3
        {
            return base.to_owned();
        }
    }
    w.to_owned()
}

const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "actually",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "could",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "even",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "go",
    "going",
    "gonna",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "i'm",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "kind",
    "know",
    "let's",
    "like",
    "lot",
    "me",
    "more",
    "most",
    "much",
    "my",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "oh",
    "okay",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "really",
    "right",
    "same",
    "say",
    "see",
    "she",
    "should",
    "so",
    "some",
    "something",
    "such",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "them",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they're",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "through",
    "to",
    "too",
    "uh",
    "um",
    "under",
    "until",
    "up",
    "very",
    "want",
    "was",
    "we",
    "we're",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "yeah",
    "yes",
    "you",
    "you're",
    "your",
    "yours",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;
    use abridge_youtube::Segment;

    fn doc(lines: &[&str]) -> Doc {
        Doc {
            video_id: "abcdefghijk".into(),
            title: "Ownership in Rust".into(),
            language: "en".into(),
            segments: lines
                .iter()
                .enumerate()
                .map(|(i, l)| Segment {
                    start_ms: i as u64 * 15_000,
                    dur_ms: 15_000,
                    text: (*l).into(),
                })
                .collect(),
            timed: true,
        }
    }

    const TALK: &[&str] = &[
        "Welcome back to the channel, today we look at ownership in Rust.",
        "Ownership is the rule that every value in Rust has exactly one owner at a time.",
        "When the owner goes out of scope the value is dropped and its memory is freed.",
        "Borrowing lets code use a value through a reference without taking ownership of it.",
        "A mutable borrow is exclusive, so no other reference to the value can exist meanwhile.",
        "The borrow checker enforces these ownership rules at compile time with no runtime cost.",
        "Lifetimes describe how long a reference stays valid relative to the owner of the value.",
        "Most lifetimes are inferred, so you rarely write lifetime annotations yourself.",
        "Moving a value transfers ownership, and the old variable can no longer be used.",
        "Types that implement Copy are duplicated instead of moved when assigned.",
        "Smart pointers like Rc allow shared ownership when one owner is not enough.",
        "To sum up, ownership and borrowing give memory safety without a garbage collector.",
        "Thanks for watching, and see you in the next video about traits.",
    ];

    #[test]
    fn output_has_the_shared_shape_for_every_length() {
        for length in SummaryLength::ALL {
            let s = summarize(&doc(TALK), length);
            let (n_tldr, n_points) = shape(length);
            assert_eq!(s.title, "Ownership in Rust");
            assert!(!s.tldr.is_empty());
            assert!(
                s.tldr.matches(". ").count() < n_tldr,
                "{length:?}: {}",
                s.tldr
            );
            assert!(
                s.points.len() <= n_points && s.points.len() >= n_points.min(3),
                "{length:?}: {:?}",
                s.points
            );
            // Key points are in spoken order, timed, and are sentences of the transcript.
            let times: Vec<u64> = s.points.iter().map(|p| p.at_s.unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
            for p in &s.points {
                assert!(
                    TALK.iter()
                        .any(|l| l.contains(p.text.trim_end_matches('.'))),
                    "{}",
                    p.text
                );
                assert!(
                    !s.tldr.contains(&p.text),
                    "TL;DR repeats a key point: {}",
                    p.text
                );
            }
            let md = render("abcdefghijk", &s);
            assert!(md.starts_with("# Ownership in Rust\n\n**TL;DR:** "), "{md}");
            assert!(md.contains("\n\n## Key points\n\n- ["), "{md}");
            for line in md.lines().filter(|l| l.starts_with("- ")) {
                let (stamp, rest) = line[3..]
                    .split_once("](https://youtu.be/abcdefghijk?t=")
                    .unwrap();
                let secs: u64 = rest.split(')').next().unwrap().parse().unwrap();
                assert_eq!(crate::text::stamp(secs), stamp);
            }
        }
    }

    #[test]
    fn ranks_central_sentences_first_and_is_deterministic() {
        let a = summarize(&doc(TALK), SummaryLength::Short);
        let b = summarize(&doc(TALK), SummaryLength::Short);
        assert_eq!(a, b);
        // The TL;DR is about ownership, not the greeting or the sign-off.
        assert!(a.tldr.to_lowercase().contains("ownership"), "{}", a.tldr);
        assert!(!a.tldr.contains("Thanks for watching"), "{}", a.tldr);
        let detailed = summarize(&doc(TALK), SummaryLength::Detailed);
        assert!(detailed.points.len() > a.points.len());
    }

    #[test]
    fn handles_tiny_and_empty_transcripts() {
        let s = summarize(
            &doc(&["Hello world, this is a very short clip about cats."]),
            SummaryLength::Standard,
        );
        assert_eq!(s.points.len(), 1);
        assert!(s.tldr.contains("cats"));
        let s = summarize(&doc(&[]), SummaryLength::Standard);
        assert!(s.points.is_empty());
        assert!(!s.tldr.is_empty());
    }
}
