//! `report.md`: the report's tables for people. Every number comes from `report.json`.

use std::fmt::Write;

use super::report::{EstimatorMetrics, Report, VariantReport, MAXPROB, SELECTOR, SELECTOR_F16};

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn est_label(e: &str) -> &str {
    match e {
        MAXPROB => "MaxProb",
        SELECTOR => "Selector",
        SELECTOR_F16 => "f16 Selector",
        other => other,
    }
}

fn row(out: &mut String, v: &VariantReport, acc: f64, est: &str, m: &EstimatorMetrics) {
    let c = |r: u32| {
        m.coverage_at_risk
            .get(&r)
            .map_or("-".into(), |c| pct(c.coverage))
    };
    let phi = |k: u32| m.phi.get(&k).map_or("-".into(), |p| pct(p.phi));
    let _ = writeln!(
        out,
        "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        v.variant,
        v.total_bytes,
        v.bytes_ratio,
        pct(acc),
        est_label(est),
        pct(m.auc),
        c(1),
        c(5),
        c(10),
        c(20),
        phi(1),
        phi(10),
        phi(100),
        pct(m.ece)
    );
}

fn mixture_table(out: &mut String, r: &Report, pct_ood: u32) {
    let _ = writeln!(
        out,
        "| variant | bytes | ×f16 | acc | confidence | AUC ↓ | C@1 | C@5 | C@10 | C@20 | Φ1 | Φ10 | Φ100 | ECE ↓ |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for v in &r.variants {
        let Some(m) = v.mixtures.iter().find(|m| m.ood_percent == pct_ood) else {
            continue;
        };
        for (est, em) in &m.estimators {
            row(out, v, m.accuracy, est, em);
        }
    }
    let notes: Vec<String> = r
        .variants
        .iter()
        .flat_map(|v| {
            v.mixtures
                .iter()
                .filter(|m| m.ood_percent == pct_ood)
                .flat_map(move |m| {
                    m.estimators.iter().filter_map(move |(e, em)| {
                        em.note
                            .as_ref()
                            .map(|n| format!("- {} {}: {n}", v.variant, est_label(e)))
                    })
                })
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", notes.join("\n"));
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# relvqa reliability report\n");
    let _ = writeln!(
        out,
        "Model `{}`; {} test questions per mixture, Selector trained on {} dev answers, \
         thresholds (Φ) chosen on {} val answers. All numbers in %, except bytes. AUC is the \
         area under the risk–coverage curve (lower is better); C@R is the largest coverage \
         with risk ≤ R; Φc is effective reliability with cost c for a wrong answer, at the \
         val-chosen threshold. `predictions/` holds every answer, so each number can be \
         recomputed (`python3 tools/metrics_reference.py`).\n",
        r.model, r.test_n, r.dev_n, r.val_n
    );
    for &p in &r.ood_percents {
        let title = if p == 0 {
            "In distribution (ID 100% ; OOD 0%)".to_string()
        } else {
            format!("ID {}% ; OOD {p}%", 100 - p)
        };
        let _ = writeln!(out, "## {title}\n");
        mixture_table(&mut out, r, p);
        let _ = writeln!(out);
    }

    selector_vs_maxprob(&mut out, r);
    let _ = writeln!(out, "## Accuracy by kind of question\n");
    let kinds: Vec<String> = r
        .variants
        .first()
        .map(|v| v.by_kind.keys().cloned().collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| variant | {} | easy_vqa (answerable) |",
        kinds.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---:|", "---:|".repeat(kinds.len()));
    for v in &r.variants {
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| v.by_kind.get(k).map_or("-".into(), |g| pct(g.accuracy)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.variant,
            cells.join(" | "),
            pct(v.easy_vqa_answerable.accuracy)
        );
    }

    let e = &r.easy_vqa;
    let _ = writeln!(
        out,
        "\n## easy-VQA\n\n{} test questions from `{}`; {} have an answer in the model's \
         vocabulary. Answers it cannot say: {}. Question words it does not know (they become \
         `<unk>`): {}.\n",
        e.questions,
        e.dir,
        e.answerable,
        fmt_counts(&e.unmappable_answers),
        fmt_counts(&e.unmapped_question_words)
    );

    let _ = writeln!(out, "## Selectors\n");
    let _ = writeln!(out, "| variant | trained on | dev | val | best epoch | val AUC (Selector) | val AUC (MaxProb) |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for v in &r.variants {
        let s = &v.selector;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            v.variant,
            s.trained_on,
            s.dev_n,
            s.val_n,
            s.best_epoch,
            pct(s.val_auc),
            pct(s.val_auc_maxprob)
        );
    }
    let _ = writeln!(
        out,
        "\nPlots: `risk_coverage.svg`, `bytes.svg`, `ood_coverage.svg` (and PNGs), per-variant \
         curves in `plots/`."
    );
    out
}

fn fmt_counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .take(20)
        .map(|(w, n)| format!("`{w}` ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the Selector beats MaxProb and where it does not, with the numbers: the question the
/// study asks of every variant and mixture.
fn selector_vs_maxprob(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Selector against MaxProb\n");
    let _ = writeln!(
        out,
        "| variant | OOD % | AUC MaxProb | AUC Selector | C@5 MaxProb | C@5 Selector | Selector better on |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    let (mut wins, mut total) = (0usize, 0usize);
    for v in &r.variants {
        for m in &v.mixtures {
            let (Some(mp), Some(sel)) = (m.estimators.get(MAXPROB), m.estimators.get(SELECTOR))
            else {
                continue;
            };
            let c5 = |e: &EstimatorMetrics| e.coverage_at_risk.get(&5).map_or(0.0, |c| c.coverage);
            let auc_better = sel.auc < mp.auc;
            let c5_better = c5(sel) > c5(mp);
            let verdict = match (auc_better, c5_better) {
                (true, true) => "both",
                (true, false) => "AUC only",
                (false, true) => "C@5 only",
                (false, false) => "neither",
            };
            total += 1;
            wins += (auc_better && c5_better) as usize;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {verdict} |",
                v.variant,
                m.ood_percent,
                pct(mp.auc),
                pct(sel.auc),
                pct(c5(mp)),
                pct(c5(sel))
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThe Selector beats MaxProb on both AUC and C@5% in {wins} of {total} variant × mixture \
         cells.\n"
    );
}
