//! `relvqa dataset`: write samples of a shapes split as PNG files plus `questions.jsonl`, for
//! looking at the data, for the web page's sample images and for checking the model elsewhere.
//! With `--ood KIND` it writes the out-of-distribution counterparts instead, so each shift can
//! be inspected by eye before it is trusted in a report.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::eval::ood::{self, EasyVqa, OodKind};
use crate::eval::shapes::{self, Split};

#[derive(clap::Args, Debug)]
pub struct DatasetArgs {
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(long, default_value_t = 20)]
    limit: u64,
    #[arg(long)]
    out: PathBuf,
    /// Write OOD items of this kind (conversational, noise, blur, jpeg, low_light, easy_vqa), or
    /// `all` for the cycling mix the OOD test sets use.
    #[arg(long)]
    ood: Option<String>,
    /// easy-VQA data folder (default: $RELVQA_EASY_VQA or .cache/easy-vqa/easy_vqa/data).
    #[arg(long)]
    easy_vqa: Option<PathBuf>,
}

pub fn run(a: DatasetArgs) -> Result<()> {
    let split = Split::parse(&a.split)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(a.out.display().to_string(), e))?;
    let qpath = a.out.join("questions.jsonl");
    let mut f =
        std::fs::File::create(&qpath).map_err(|e| Error::io(qpath.display().to_string(), e))?;
    let kind = match a.ood.as_deref() {
        None => None,
        Some("all") => Some(None),
        Some(k) => Some(Some(OodKind::parse(k)?)),
    };
    // easy-VQA is read only when asked for, so the other shifts work without the install.
    let easy = match kind {
        Some(None) | Some(Some(OodKind::EasyVqa)) => {
            EasyVqa::load(&a.easy_vqa.clone().unwrap_or_else(EasyVqa::default_dir))?
        }
        _ => EasyVqa::default(),
    };
    for i in 0..a.limit {
        let line = match kind {
            None => {
                let s = shapes::sample(split, i);
                let name = format!("{}_{i:05}.png", split.name());
                save(&s.image, &a, &name)?;
                serde_json::json!({
                    "index": i, "split": split.name(), "image": name,
                    "question": s.question.text, "answer": s.question.answer,
                    "family": s.question.family,
                })
            }
            Some(k) => {
                let item = match k {
                    Some(k) => ood::ood_item_of_kind(split, i, k, &easy)?,
                    None => ood::ood_item(split, i, &easy)?,
                };
                let kind_name = item.ood.map_or("id", |k| k.name());
                let name = format!("{}_{i:05}_{kind_name}.png", split.name());
                save(&item.image, &a, &name)?;
                serde_json::json!({
                    "index": i, "id": item.id, "split": item.split, "image": name,
                    "ood": item.ood, "question": item.question, "answers": item.answers,
                    "answerable": item.answerable, "family": item.family,
                })
            }
        };
        writeln!(f, "{line}").map_err(|e| Error::io(qpath.display().to_string(), e))?;
    }
    println!(
        "wrote {} {}samples of `{}` to {}",
        a.limit,
        a.ood
            .as_ref()
            .map_or(String::new(), |k| format!("OOD ({k}) ")),
        split.name(),
        a.out.display()
    );
    Ok(())
}

fn save(img: &image::RgbImage, a: &DatasetArgs, name: &str) -> Result<()> {
    let p = a.out.join(name);
    img.save(&p)
        .map_err(|e| Error::Image(format!("{}: {e}", p.display())))
}
