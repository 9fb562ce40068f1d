//! Token estimates. Providers tokenize differently (and Anthropic's tokenizer is not public),
//! so abridge fits prompts with an estimate that errs high: English BPE tokenizers average
//! about 4 characters per token; we count 3.5 for ASCII text, a token per CJK character and
//! half a token per other non-ASCII character. Real counts come back in each answer's usage.

/// Estimated tokens in `text`.
pub fn estimate(text: &str) -> u64 {
    let mut ascii = 0u64;
    let mut wide = 0u64;
    let mut other = 0u64;
    for c in text.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else if ('\u{2E80}'..='\u{9FFF}').contains(&c)
            || ('\u{AC00}'..='\u{D7AF}').contains(&c)
            || ('\u{F900}'..='\u{FAFF}').contains(&c)
        {
            wide += 1;
        } else {
            other += 1;
        }
    }
    (ascii * 2).div_ceil(7) + wide + other.div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_err_high_for_english_and_count_cjk_per_character() {
        let english = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        // cl100k_base: 10 tokens per sentence -> 200; the estimate must not be lower.
        let n = estimate(&english);
        assert!((200..=300).contains(&n), "{n}");
        assert_eq!(estimate("日本語"), 3);
        assert_eq!(estimate(""), 0);
    }
}
