//! Command-line interface (native only): `train`, `ask`, `eval`, `bench`, `check-reference`, ….

mod ask;
mod bench;
mod bench_gpu;
mod bench_model;
mod calibrate;
mod check_reference;
mod convert;
mod dataset;
mod demo;
mod eval;
mod quantize;
mod report;
mod report_md;
mod report_plots;
mod scoring;
mod selector;
mod serve;
mod text;
mod train;
mod variants;
mod web_models;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::cpu::CpuBackend;
use crate::error::Result;
use crate::model::generate::Vqa;

pub const DEFAULT_MODEL_DIR: &str = "models/default";

#[derive(Parser, Debug)]
#[command(
    name = "relvqa",
    version,
    about = "Reliable VQA with quantized multimodal LLMs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train the default model on the shapes dataset and write a model directory.
    Train(train::TrainArgs),
    /// Answer a question about an image.
    Ask(ask::AskArgs),
    /// Accuracy on a split of the shapes dataset, overall and per question family.
    Eval(eval::EvalArgs),
    /// Choose MaxProb abstention thresholds on the val split (writes calibration.json).
    Calibrate(calibrate::CalibrateArgs),
    /// Answer the first test questions with confidence and abstain decisions.
    Demo(demo::DemoArgs),
    /// Write samples of a shapes split as PNG + questions.jsonl.
    Dataset(dataset::DatasetArgs),
    /// Quantize a model (RTN, HQQ or MBQ at 8/4/3/2 bits) into a package directory.
    Quantize(quantize::QuantizeArgs),
    /// Train a model's Selector (learned confidence) and store it with the model.
    Selector(selector::SelectorArgs),
    /// Performance measurements (`bench kernels`: fused int-N matmul vs candle and bandwidth).
    Bench(bench::BenchArgs),
    /// Serve the built web page (`make web` → dist/web) over HTTP, with Range requests.
    Serve(serve::ServeArgs),
    /// Compare the model with a transformers golden file (tools/golden/): max |Δlogit| and
    /// greedy ids; exit code 0 only when both agree.
    CheckReference(check_reference::CheckReferenceArgs),
    /// Write the packages the web page offers (and models/index.json) into its models folder.
    WebModels(web_models::WebModelsArgs),
    /// A model directory from a real checkpoint: a GGUF Llama (SmolLM2) or a local HF directory.
    Convert(convert::ConvertArgs),
    /// Text-only generation with the model's chat template (the language model alone).
    Generate(text::GenerateArgs),
    /// Perplexity of the language model on a text file.
    Perplexity(text::PerplexityArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Train(a) => train::run(a),
        Cmd::Ask(a) => ask::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Dataset(a) => dataset::run(a),
        Cmd::Calibrate(a) => calibrate::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Quantize(a) => quantize::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Selector(a) => selector::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::WebModels(a) => web_models::run(a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::Generate(a) => text::generate(a),
        Cmd::Perplexity(a) => text::perplexity(a),
        Cmd::CheckReference(a) => check_reference::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Model directory argument shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArg {
    /// Model directory (Hugging Face layout: config.json, tokenizer.json, model.safetensors)
    /// or a quantized package directory (manifest.json + shards).
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    pub model: PathBuf,
}

impl ModelArg {
    pub fn load(&self) -> Result<Vqa<CpuBackend>> {
        self.load_on(CpuBackend::new())
    }

    pub fn load_on<B: crate::backend::Backend>(&self, b: B) -> Result<Vqa<B>> {
        crate::model::loader::load_path(b, &self.model)
    }
}

/// Where the model runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// candle on the CPU, all cores.
    #[default]
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 (lavapipe, Vulkan on the CPU, where there is no GPU).
    Gpu,
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct BackendArg {
    /// `cpu` or `gpu` (the WGSL kernels through wgpu; same answers, see tests/gpu_backend.rs).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
}

/// Open the GPU backend and say which adapter it got (on stderr, so `--json` stays clean).
pub fn open_gpu() -> Result<crate::backend::wgpu::WgpuBackend> {
    let b = pollster::block_on(crate::backend::wgpu::WgpuBackend::new())?;
    let i = b.context().info();
    eprintln!(
        "gpu: {} ({}{})",
        i.adapter,
        i.backend,
        if i.is_software { ", software" } else { "" }
    );
    Ok(b)
}

/// Run `$body` with `$b` bound to the chosen backend. The commands are generic over the
/// backend, so this is the one place that picks it.
macro_rules! with_backend {
    ($choice:expr, |$b:ident| $body:expr) => {
        match $choice {
            $crate::cli::BackendChoice::Cpu => {
                let $b = $crate::backend::cpu::CpuBackend::new();
                $body
            }
            $crate::cli::BackendChoice::Gpu => {
                let $b = $crate::cli::open_gpu()?;
                $body
            }
        }
    };
}
pub(crate) use with_backend;
