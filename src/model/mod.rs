//! EXAONE 4 on candle: config, layers, KV cache, the model, generation, tokenizer + chat template.

pub mod chat_template;
pub mod config;
pub mod cpu_exp;
pub mod exaone4;
pub mod generate;
pub mod grad_ops;
pub mod init;
pub mod kernels;
pub mod kv_cache;
pub mod layers;
pub mod tokenizer;

pub use config::{Exaone4Config, LayerType, Llama3Scaling};
pub use exaone4::{DecoderLayer, Exaone4};
pub use generate::{generate, GenerateOptions, Sampling};
pub use kernels::{Kernels, LinearKernel, QuantizedRows};
pub use kv_cache::{CacheShape, KvCache};
pub use layers::{ActQuant, Linear, Mode};
pub use tokenizer::{ChatMessage, Tokenizer};
