//! Scoring many questions on all cores behind one progress bar (native).

use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::eval::ood::Item;
use crate::eval::predict::{predict, Scored, Selectors};
use crate::model::generate::Vqa;

pub fn progress_bar(n: usize, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    if let Ok(s) = ProgressStyle::with_template(
        "{msg:>24} {elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        pb.set_style(s);
    }
    pb.set_message(label.to_string());
    pb
}

/// Answer and score items `0..n` (built by `item`) with one worker thread per core.
/// Questions are independent, so a worker takes every `workers`-th index; the result is in
/// index order whatever the interleaving.
pub fn score<B: Backend, F>(
    vqa: &Vqa<B>,
    n: usize,
    item: F,
    sel: Selectors<'_>,
    label: &str,
) -> Result<Vec<Scored>>
where
    F: Fn(usize) -> Result<Item> + Sync,
    Vqa<B>: Sync,
{
    // A GPU already runs each op in parallel, and its ops share one queue: one worker.
    let cores = match vqa.backend.name() {
        "cpu" => std::thread::available_parallelism().map_or(1, |w| w.get()),
        _ => 1,
    };
    let workers = cores.clamp(1, n.max(1));
    let pb = progress_bar(n, label);
    let run = |w: usize| -> Result<Vec<(usize, Scored)>> {
        let mut out = Vec::new();
        for i in (w..n).step_by(workers) {
            let it = item(i)?;
            out.push((i, pollster::block_on(predict(vqa, &it, sel))?));
            pb.inc(1);
        }
        Ok(out)
    };
    let run = &run;
    let parts: Vec<Result<Vec<(usize, Scored)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|w| s.spawn(move || run(w))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("a scoring worker panicked".into())))
            })
            .collect()
    });
    pb.finish_and_clear();
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, s)| s).collect())
}
