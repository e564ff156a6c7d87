//! Model definitions, written once against [`crate::backend::Backend`].

pub mod any_vqa;
pub mod arch;
pub mod chat;
pub mod decoder;
pub mod definition;
pub mod generate;
pub mod golden;
pub mod idefics3;
pub mod image;
pub mod image_tokens;
pub mod linear;
pub mod loader;
pub mod params;
pub mod prompt;
pub mod qwen2vl;
pub mod resample;
pub mod safetensors_stream;
pub mod streamed_folder;
pub mod text_gen;
pub mod tokenizer;
pub mod weights;
