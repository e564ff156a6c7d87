//! VQA accuracy of one prediction against its ground-truth answers.
//!
//! Follows the official VQA evaluation (GT-Vision-Lab/VQA `vqaEval.py`, as reused by
//! reliable_vqa's `eval_scripts/reliable_vqa_eval.py`) with one simplification: the
//! normalisation is always applied, where the official script skips it when all ten annotators
//! agree. Our answers are short words, for which that branch changes nothing but letter case.

/// The standard VQA answer normalisation, reduced to what single-word answers need: lower case,
/// punctuation stripped, articles dropped, number words mapped to digits.
pub fn normalize_answer(a: &str) -> String {
    let lower = a.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| match w {
            "none" | "zero" => "0",
            "one" => "1",
            "two" => "2",
            "three" => "3",
            "four" => "4",
            "five" => "5",
            "six" => "6",
            "seven" => "7",
            "eight" => "8",
            "nine" => "9",
            "ten" => "10",
            other => other,
        })
        .collect();
    words.join(" ")
}

/// Annotators per VQA v2 question; only then is the soft accuracy defined.
const VQA_ANNOTATORS: usize = 10;
/// Matching annotators needed for full credit (the "3 humans said so" rule).
const FULL_CREDIT_MATCHES: f64 = 3.0;

/// VQA accuracy in [0, 1].
///
/// With exactly ten answers: the official soft accuracy, the mean over the ten leave-one-out
/// subsets of `min(1, matches among the other nine / 3)`, so 1, 2, 3 matching annotators score
/// 0.3, 0.6, 0.9 and four or more score 1. Datasets with one answer (or any other count) have
/// no annotator agreement to average over, so they get exact match. No answers scores 0 rather
/// than failing: a question without ground truth cannot be answered right.
pub fn vqa_accuracy(prediction: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let pred = normalize_answer(prediction);
    let matches: Vec<bool> = answers
        .iter()
        .map(|a| normalize_answer(a) == pred)
        .collect();
    if answers.len() != VQA_ANNOTATORS {
        return if matches.iter().any(|&m| m) { 1.0 } else { 0.0 };
    }
    let total = matches.iter().filter(|&&m| m).count();
    let sum: f64 = matches
        .iter()
        .map(|&m| {
            let others = (total - usize::from(m)) as f64;
            (others / FULL_CREDIT_MATCHES).min(1.0)
        })
        .sum();
    sum / VQA_ANNOTATORS as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalisation_matches_the_vqa_rules() {
        assert_eq!(normalize_answer("The Red, ball!"), "red ball");
        assert_eq!(normalize_answer("Two"), "2");
        assert_eq!(normalize_answer("  none "), "0");
        assert_eq!(normalize_answer("an apple"), "apple");
    }

    #[test]
    fn soft_accuracy_over_ten_annotators() {
        let mut gt = vec!["no"; 10];
        // k matching annotators: each of the k left out sees k-1 matches, each of the 10-k
        // others sees k. Score = (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10.
        for (k, want) in [
            (0, 0.0),
            // k=1: (1*0 + 9*(1/3)) / 10 = 0.3
            (1, 0.3),
            // k=2: (2*(1/3) + 8*(2/3)) / 10 = 0.6
            (2, 0.6),
            // k=3: (3*(2/3) + 7*1) / 10 = 0.9
            (3, 0.9),
            // k=4: (4*1 + 6*1) / 10 = 1
            (4, 1.0),
        ] {
            if k > 0 {
                gt[k - 1] = "Yes";
            }
            let got = vqa_accuracy("yes.", &answers(&gt));
            assert!((got - want).abs() < 1e-12, "k={k}: {got} vs {want}");
        }
    }

    #[test]
    fn other_counts_use_exact_match() {
        assert_eq!(vqa_accuracy("3", &answers(&["three"])), 1.0);
        assert_eq!(
            vqa_accuracy("a circle", &answers(&["square", "circle"])),
            1.0
        );
        assert_eq!(vqa_accuracy("circle", &answers(&["square"; 9])), 0.0);
        assert_eq!(vqa_accuracy("circle", &[]), 0.0);
    }
}
