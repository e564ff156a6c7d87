//! One error type per layer, each variant carrying the context a user needs to act on it.
//!
//! Library code never panics on input: every failure that a file, an image, a question or a
//! stream can cause is one of these variants. The wasm boundary converts them to `JsError`.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A tensor operation failed inside a backend (shape mismatch in an op, device failure).
    #[error("backend `{backend}` failed in op `{op}`: {msg}")]
    Backend {
        backend: &'static str,
        op: &'static str,
        msg: String,
    },

    /// The model directory or package is unusable as a whole.
    #[error("model at `{path}`: {msg}")]
    Model { path: String, msg: String },

    /// `config.json` parsed but describes something we cannot run.
    #[error("config: {0}")]
    Config(String),

    /// A weight file is corrupt, truncated or not safetensors.
    #[error("weights `{file}` are unreadable: {msg}. Re-download or re-export the file.")]
    WeightsFile { file: String, msg: String },

    /// A tensor the config needs is absent.
    #[error("weights have no tensor `{name}` (needed by the config); is this checkpoint for a different architecture?")]
    MissingTensor { name: String },

    /// A tensor exists but its shape disagrees with the config.
    #[error("tensor `{name}` has shape {found:?} but the config needs {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor exists but is not a floating-point tensor we can convert.
    #[error("tensor `{name}` has dtype {dtype}; expected F16, BF16 or F32")]
    TensorDtype { name: String, dtype: String },

    /// The bytes given as an image are not a decodable image, or are too large to accept.
    #[error("image: {0}")]
    Image(String),

    /// The question cannot be asked (empty, too long for the context).
    #[error("question: {0}")]
    Question(String),

    /// Tokenizer file missing, malformed, or lacking a required special token.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Training setup or numerical failure (NaN loss and friends).
    #[error("training: {0}")]
    Train(String),

    /// A file system operation failed; `path` says which file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A chat template that does not parse or render (it comes from the checkpoint).
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// A source checkpoint `relvqa convert` cannot turn into a model directory.
    #[error("convert `{path}`: {msg}")]
    Convert { path: String, msg: String },

    /// A quantized package (`manifest.json` plus shards) is malformed, inconsistent or corrupt.
    /// The message names the tensor or shard and the fix (usually: re-export or re-download).
    #[error("package: {0}")]
    Package(String),

    /// A golden reference file (`golden.safetensors` from tools/golden/) is missing a tensor,
    /// has a wrong shape or dtype, or does not fit the model it is checked against.
    #[error("golden file `{file}`: {msg}")]
    Golden { file: String, msg: String },

    /// A valid request this build cannot do for this architecture yet (`--vision` on Qwen2-VL); the
    /// message says what is supported instead.
    #[error("{what} is not supported for {arch} models yet; {instead}")]
    Unsupported {
        what: String,
        arch: &'static str,
        instead: String,
    },

    /// Invalid argument to a public API (bad split name, bad option value).
    #[error("{0}")]
    Invalid(String),

    /// Reliability metrics got unusable input (length mismatch, empty split, NaN or
    /// out-of-range values); the message names the first bad question index.
    #[error("metrics: {0}")]
    Metrics(String),

    /// An external dataset (easy-VQA) is not installed, or its files are malformed. The message
    /// names the file and the fix (usually `make easy-vqa`).
    #[error("dataset: {0}")]
    Dataset(String),

    /// The GPU (wgpu/WebGPU) failed or cannot run what was asked. `kind` lets callers react
    /// (fall back to the CPU backend when there is no adapter, re-create the device after a
    /// loss, use smaller tensors when a limit is hit); `msg` says what happened and the fix.
    #[error("gpu ({kind}): {msg}")]
    Gpu { kind: GpuErrorKind, msg: String },
}

/// Why a GPU operation failed, coarse enough for a caller to choose a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuErrorKind {
    /// The device went away (driver reset, tab in background too long, `destroy`): re-create it.
    DeviceLost,
    /// An allocation failed on the device.
    OutOfMemory,
    /// A buffer, binding or dispatch exceeds the adapter's limits.
    LimitExceeded,
    /// No WebGPU/Vulkan/Metal/DX12 adapter: the caller should fall back to the CPU backend.
    NoAdapter,
    /// Anything else wgpu reports (validation, internal, shader compilation).
    Other,
}

impl std::fmt::Display for GpuErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuErrorKind::DeviceLost => "device lost",
            GpuErrorKind::OutOfMemory => "out of memory",
            GpuErrorKind::LimitExceeded => "limit exceeded",
            GpuErrorKind::NoAdapter => "no adapter",
            GpuErrorKind::Other => "error",
        })
    }
}

impl Error {
    pub fn gpu(kind: GpuErrorKind, msg: impl Into<String>) -> Self {
        Error::Gpu {
            kind,
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Backend {
            backend: "cpu",
            op: "candle",
            msg: e.to_string(),
        }
    }
}
