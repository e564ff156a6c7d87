//! A Hugging Face checkpoint folder loaded while its `model.safetensors` streams in: the
//! page's path for a folder named by URL or picked on disk. The config (small, fetched first)
//! names the family; once the file's header has arrived the sink knows which of its tensors
//! the model asks for, and each one goes to the backend as it completes (quantized with HQQ
//! first when asked), so peak memory is the model on its backend plus one tensor, not the
//! whole file plus the model.

use std::collections::BTreeSet;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::any_vqa::{architecture, AnySink, AnyVqa};
use crate::model::arch::Architecture;
use crate::model::chat::ChatTemplate;
use crate::model::idefics3::Idefics3Config;
use crate::model::loader::WEIGHTS_FILE;
use crate::model::qwen2vl::Qwen2VlConfig;
use crate::model::safetensors_stream::SafetensorsStream;
use crate::model::weights::WeightSink;
use crate::package::LoadedTensor;
use crate::quant::hqq::HqqOptions;
use crate::quant::load_time::HqqStage;
use crate::quant::spec::QuantSpec;

/// What [`StreamedFolder::progress`] reports.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FolderProgress {
    pub bytes_received: u64,
    /// 0 until the file's header has arrived.
    pub bytes_total: u64,
    pub tensors_uploaded: usize,
    pub quantized: usize,
    pub quantize_total: usize,
}

pub struct StreamedFolder<B: Backend> {
    config: String,
    arch: Architecture,
    stream: SafetensorsStream,
    /// The backend until the header names the tensors, then the sink that holds it.
    backend: Option<B>,
    sink: Option<AnySink<B>>,
    hqq: Option<(QuantSpec, HqqOptions)>,
    stage: Option<HqqStage>,
}

impl<B: Backend> StreamedFolder<B> {
    /// For the checkpoint whose `config.json` is `config`, onto `backend`; `hqq` quantizes the
    /// language model's linears as they arrive.
    pub fn new(backend: B, config: &[u8], hqq: Option<(QuantSpec, HqqOptions)>) -> Result<Self> {
        let arch = architecture(config)?;
        let config = String::from_utf8(config.to_vec())
            .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
        // Parse the family's config now, so a bad one fails before any download.
        match arch {
            Architecture::Idefics3 => drop(Idefics3Config::from_json(&config)?),
            Architecture::Qwen2Vl => drop(Qwen2VlConfig::from_json(&config)?),
        }
        if let Some((spec, _)) = &hqq {
            spec.validate()?;
        }
        Ok(Self {
            config,
            arch,
            stream: SafetensorsStream::new(WEIGHTS_FILE),
            backend: Some(backend),
            sink: None,
            hqq,
            stage: None,
        })
    }

    /// The sink and HQQ stage, once the header says which tensors the file holds.
    fn open_sink(&mut self) -> Result<()> {
        let Some(names) = self.stream.names() else {
            return Ok(());
        };
        let Some(backend) = self.backend.take() else {
            return Ok(());
        };
        let present: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let has = |n: &str| present.contains(n);
        self.sink = Some(match self.arch {
            Architecture::Idefics3 => AnySink::Idefics3(WeightSink::for_model(
                backend,
                &Idefics3Config::from_json(&self.config)?,
                &has,
            )?),
            Architecture::Qwen2Vl => AnySink::Qwen2Vl(WeightSink::for_model(
                backend,
                &Qwen2VlConfig::from_json(&self.config)?,
                &has,
            )?),
        });
        if let Some((spec, opts)) = self.hqq {
            self.stage = Some(HqqStage::for_model(&self.config, names, spec, opts)?);
        }
        Ok(())
    }

    /// Feed the file's next bytes; returns how many tensors they completed (each already on
    /// the backend). Tensors the model does not ask for are dropped as they complete.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<usize> {
        let mut done = 0;
        while !chunk.is_empty() {
            let (stream, sink, stage) = (&mut self.stream, &mut self.sink, &mut self.stage);
            let used = stream.push(chunk, |t: LoadedTensor| {
                let Some(sink) = sink.as_mut() else {
                    return Err(Error::Invalid("a tensor arrived before the header".into()));
                };
                if !sink.wants(&t.name) {
                    return Ok(());
                }
                let t = match stage {
                    Some(h) => h.apply(t)?,
                    None => t,
                };
                done += 1;
                sink.accept(t)
            })?;
            if self.sink.is_none() {
                self.open_sink()?;
            }
            chunk = chunk.get(used..).unwrap_or_default();
        }
        Ok(done)
    }

    pub fn progress(&self) -> FolderProgress {
        let (bytes_received, bytes_total) = self.stream.progress();
        let (quantized, quantize_total) = self.stage.as_ref().map_or((0, 0), HqqStage::progress);
        FolderProgress {
            bytes_received,
            bytes_total,
            tensors_uploaded: self.sink.as_ref().map_or(0, |s| s.uploaded().0),
            quantized,
            quantize_total,
        }
    }

    /// Every byte arrived: the model from the uploaded tensors and the folder's small files.
    pub fn finish(
        self,
        tokenizer: &[u8],
        template: Option<&ChatTemplate>,
        preprocessor: Option<&[u8]>,
    ) -> Result<AnyVqa<B>> {
        self.stream.finish()?;
        let sink = self
            .sink
            .ok_or_else(|| Error::Invalid("model.safetensors has no header".into()))?;
        sink.build(tokenizer, template, preprocessor)
    }
}
