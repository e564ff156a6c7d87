//! `relvqa dataset`: write samples of a shapes split as PNG files plus `questions.jsonl`, for
//! looking at the data, for the web page's sample images and for checking the model elsewhere.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::eval::shapes::{self, Split};

#[derive(clap::Args, Debug)]
pub struct DatasetArgs {
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(long, default_value_t = 20)]
    limit: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: DatasetArgs) -> Result<()> {
    let split = Split::parse(&a.split)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(a.out.display().to_string(), e))?;
    let qpath = a.out.join("questions.jsonl");
    let mut f =
        std::fs::File::create(&qpath).map_err(|e| Error::io(qpath.display().to_string(), e))?;
    for i in 0..a.limit {
        let s = shapes::sample(split, i);
        let name = format!("{}_{i:05}.png", split.name());
        let p = a.out.join(&name);
        s.image
            .save(&p)
            .map_err(|e| Error::Image(format!("{}: {e}", p.display())))?;
        let line = serde_json::json!({
            "index": i, "split": split.name(), "image": name,
            "question": s.question.text, "answer": s.question.answer, "family": s.question.family,
        });
        writeln!(f, "{line}").map_err(|e| Error::io(qpath.display().to_string(), e))?;
    }
    println!(
        "wrote {} samples of `{}` to {}",
        a.limit,
        split.name(),
        a.out.display()
    );
    Ok(())
}
