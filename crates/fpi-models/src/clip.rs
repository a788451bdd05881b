//! SD1.5's CLIP text encoder: token and position embeddings, pre-LN causal transformer, final layer norm.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::attention::Attention;
use crate::config::{Activation, ClipConfig};
use crate::error::{Error, Result};
use crate::precision::layer_norm;

/// The two-layer MLP.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// To the hidden layer.
    pub fc1: Linear,
    /// Back to the text states' width.
    pub fc2: Linear,
    /// Between the two.
    #[module(skip)]
    pub activation: Activation,
}

/// One pre-LN transformer layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Before the attention.
    pub layer_norm1: LayerNorm,
    /// transformers' `q_proj/k_proj/v_proj/out_proj`, loaded as `to_q/to_k/to_v/to_out`.
    pub self_attn: Attention,
    /// Before the MLP.
    pub layer_norm2: LayerNorm,
    /// The feed-forward part.
    pub mlp: ClipMlp,
}

/// The layers (transformers' `encoder.layers`).
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// The layers, first to last.
    pub layers: Vec<ClipEncoderLayer>,
}

/// The embeddings that live on the device. The token table stays on the host (see [`TokenTable`]).
#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    /// One row per position, added to the tokens' rows.
    pub position_embedding: burn::nn::Embedding,
}

/// CLIP's token embedding table, kept in host memory: SD1.5's is 151.8 MB in f32, more than many GPUs bind in one
/// buffer, and a prompt needs only 77 of its rows.
#[derive(Debug, Clone)]
pub struct TokenTable {
    /// Row-major `[vocab, dim]`.
    pub rows: Vec<f32>,
    /// The width of a row (CLIP's `hidden_size`).
    pub dim: usize,
}

impl TokenTable {
    /// The rows of `ids` as a `[ids.len(), dim]` matrix; ids past the table are an error.
    pub fn lookup(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let vocab = self.rows.len() / self.dim;
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        for &id in ids {
            let row = id as usize;
            if row >= vocab {
                return Err(Error::TokenOutOfRange { id, vocab });
            }
            out.extend_from_slice(&self.rows[row * self.dim..(row + 1) * self.dim]);
        }
        Ok(out)
    }
}

/// The text model: `[B, 77]` token ids → last hidden state `[B, 77, hidden]`.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// The position table.
    pub embeddings: ClipEmbeddings,
    /// The transformer layers.
    pub encoder: ClipEncoder,
    /// After the last layer.
    pub final_layer_norm: LayerNorm,
    /// The token table, in host memory.
    #[module(skip)]
    pub token_table: TokenTable,
}

impl ClipTextModel {
    /// A text model shaped by `config` (weights to be loaded) around an already loaded token table.
    pub fn new(config: &ClipConfig, token_table: TokenTable, device: &Device) -> Self {
        let d = config.hidden_size;
        let norm = || LayerNormConfig::new(d).with_epsilon(config.options.layer_norm_eps).init(device);
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..config.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: norm(),
                self_attn: Attention::new(d, d, config.num_attention_heads, true, device).causal(),
                layer_norm2: norm(),
                mlp: ClipMlp {
                    fc1: linear(d, config.intermediate_size),
                    fc2: linear(config.intermediate_size, d),
                    activation: config.options.hidden_act,
                },
            })
            .collect();
        Self {
            embeddings: ClipEmbeddings {
                position_embedding: burn::nn::EmbeddingConfig::new(config.max_position_embeddings, d).init(device),
            },
            encoder: ClipEncoder { layers },
            final_layer_norm: norm(),
            token_table,
        }
    }

    /// The last hidden state for each row of token ids (each row as long as the position table, 77 for SD).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor<3>> {
        let positions: &Param<Tensor<2>> = &self.embeddings.position_embedding.weight;
        let [max_len, dim] = positions.dims();
        let batch = ids.len();
        let mut rows = Vec::with_capacity(batch * max_len * dim);
        for row in ids {
            if row.len() != max_len {
                return Err(Error::TokenCount { expected: max_len, found: row.len() });
            }
            rows.extend(self.token_table.lookup(row)?);
        }
        let positions = positions.val();
        let tokens = Tensor::<3>::from_data(TensorData::new(rows, [batch, max_len, dim]), (device, positions.dtype()));
        let mut h = tokens + positions.unsqueeze_dim::<3>(0);
        for layer in &self.encoder.layers {
            h = layer.forward(h);
        }
        Ok(layer_norm(&self.final_layer_norm, h).cast(FloatDType::F32))
    }

    /// The float type it computes in (its weights'): see [`crate::precision`].
    pub fn dtype(&self) -> FloatDType {
        self.embeddings.position_embedding.weight.val().dtype().into()
    }
}

impl ClipEncoderLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.self_attn.forward(layer_norm(&self.layer_norm1, x.clone()), None) + x;
        self.mlp.forward(layer_norm(&self.layer_norm2, x.clone())) + x
    }
}

impl ClipMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.fc1.forward(x);
        let h = match self.activation {
            Activation::QuickGelu => h.clone() * sigmoid(h.mul_scalar(1.702)),
            Activation::Gelu => gelu(h),
        };
        self.fc2.forward(h)
    }
}
