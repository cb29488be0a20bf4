//! The Whisper network: weights (loaded from a CTranslate2 or safetensors directory and
//! laid out for the kernels) and the forward passes: the audio encoder, and the text
//! decoder one token at a time with a persistent self-attention KV cache and cross-attention
//! keys/values computed once per 30-s window.

use crate::error::ModelError;
use crate::kernels::{self, f32_to_f16, SimdPath};
use crate::panels;
use crate::quant::QuantLinear;
use crate::tensor_file::{read_ct2, read_safetensors, TensorSet};
use rayon::prelude::*;
use std::cell::RefCell;
use std::path::Path;
use std::sync::Mutex;

/// Network dimensions, derived from tensor shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    pub n_mels: usize,
    pub n_audio_ctx: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    pub n_vocab: usize,
    pub n_text_ctx: usize,
}

impl Dims {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

pub struct Linear {
    /// `[out, in]` row-major (empty once moved to another form below).
    pub weight: Vec<f32>,
    /// The same weights laid out for [`panels::dot_rows`], for f32 layers that run over
    /// many rows at once (the encoder's, and the cross-attention keys and values).
    pub weight_panels: Vec<f32>,
    /// The same weights in half precision, for layers only ever run one token at a time,
    /// where reading the weights from memory is the cost.
    pub weight_f16: Vec<u16>,
    /// The same weights in int8, for the encoder's large products when the model was
    /// loaded with [`EncoderPrecision::Int8`].
    pub weight_i8: Option<QuantLinear>,
    pub bias: Option<Vec<f32>>,
    pub n_out: usize,
    pub n_in: usize,
}

/// The arithmetic of the encoder's weight products (its projections, feed-forward
/// layers and second convolution, and the decoder's cross-attention keys and values,
/// which run over every encoder position). Attention scores, the first convolution and
/// the decoder's per-token products stay in floating point either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderPrecision {
    /// f32 weights and f32 products.
    F32,
    /// int8 weights (one scale per output), activations quantised per row at run time,
    /// products summed exactly in i32 ([`crate::quant`]).
    Int8,
}

impl EncoderPrecision {
    pub fn name(self) -> &'static str {
        match self {
            EncoderPrecision::F32 => "f32",
            EncoderPrecision::Int8 => "int8",
        }
    }

    /// The precision used on a kernel path when none is set. On `avx2` the encoder's f32
    /// products run at the cores' peak and still leave short clips slower than the goal,
    /// while the exact int8 kernel ([`crate::quant`], `avx2-maddwd`) kept every batch
    /// set's word errors (one word more in a streaming programme; docs/speech.md), so
    /// AVX2-only CPUs get int8.
    /// With AVX-512 f32 is fast enough and keeps every set's words exactly; the scalar
    /// path is the reference and stays f32.
    pub fn default_for(path: SimdPath) -> Self {
        match path {
            SimdPath::Avx2 => EncoderPrecision::Int8,
            SimdPath::Avx512 | SimdPath::Scalar => EncoderPrecision::F32,
        }
    }

    /// The precision set by `HARK_ENCODER_PRECISION` (`f32`, `int8` or `auto`), else
    /// [`Self::default_for`] the kernel path in use (an unknown value is ignored;
    /// [`kernels::cpu_summary`] says so). Decided once per process.
    pub fn configured() -> Self {
        static CONFIGURED: std::sync::OnceLock<EncoderPrecision> = std::sync::OnceLock::new();
        *CONFIGURED.get_or_init(|| {
            Self::from_env().unwrap_or_else(|| Self::default_for(kernels::simd_path()))
        })
    }

    /// The precision `HARK_ENCODER_PRECISION` names, if it names one.
    fn from_env() -> Option<Self> {
        std::env::var(Self::ENV).ok().and_then(|v| Self::parse(&v))
    }

    /// Whether `HARK_ENCODER_PRECISION` chose the precision (rather than the kernel path).
    pub fn is_set() -> bool {
        Self::from_env().is_some()
    }

    /// The variable that sets the precision.
    pub const ENV: &'static str = "HARK_ENCODER_PRECISION";

    /// The variable's value when it is set but names no precision (and so is ignored).
    pub fn unrecognised_setting() -> Option<String> {
        std::env::var(Self::ENV).ok().filter(|text| {
            let text = text.trim();
            !text.is_empty() && !text.eq_ignore_ascii_case("auto") && Self::parse(text).is_none()
        })
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(EncoderPrecision::F32),
            "int8" | "i8" => Some(EncoderPrecision::Int8),
            // `auto` (or nothing) leaves the choice to the kernel path.
            _ => None,
        }
    }
}

impl Linear {
    /// A layer of plain f32 weights (`[n_out, n_in]`), before any move to another form.
    fn f32(weight: Vec<f32>, bias: Option<Vec<f32>>, n_out: usize, n_in: usize) -> Self {
        Linear {
            weight,
            weight_panels: Vec::new(),
            weight_f16: Vec::new(),
            weight_i8: None,
            bias,
            n_out,
            n_in,
        }
    }

    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        if let Some(q) = &self.weight_i8 {
            q.forward(x, rows, out);
        } else if !self.weight_panels.is_empty() {
            self.forward_panels(x, rows, out);
        } else if self.weight_f16.is_empty() {
            kernels::linear(
                x,
                rows,
                self.n_in,
                &self.weight,
                self.n_out,
                self.bias.as_deref(),
                out,
            );
        } else {
            for (xr, or) in x
                .chunks_exact(self.n_in)
                .zip(out.chunks_exact_mut(self.n_out))
                .take(rows)
            {
                kernels::matvec_f16(xr, &self.weight_f16, self.n_out, self.bias.as_deref(), or);
            }
        }
    }

    /// As [`Self::forward`] for `rows` inputs at once, reading the weights once; the
    /// results are bit-identical to `rows` separate calls.
    fn forward_rows(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        if self.weight_f16.is_empty() {
            self.forward(x, rows, out);
        } else {
            kernels::matmul_f16_rows(
                &x[..rows * self.n_in],
                rows,
                &self.weight_f16,
                self.n_out,
                self.bias.as_deref(),
                &mut out[..rows * self.n_out],
            );
        }
    }

    /// [`Self::forward`] on the panel-packed weights.
    fn forward_panels(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        self.forward_then(x, rows, out, panels::Epilogue::Store);
    }

    /// [`Self::forward`], then `epilogue` on the outputs: fused into the product's blocks
    /// on panel-packed weights, as a pass of its own on the other forms (the same bits).
    fn forward_then(&self, x: &[f32], rows: usize, out: &mut [f32], epilogue: panels::Epilogue) {
        if self.weight_i8.is_none() && !self.weight_panels.is_empty() {
            panels::linear(
                kernels::simd_path(),
                x,
                rows,
                self.n_in,
                &self.weight_panels,
                self.n_out,
                self.bias.as_deref(),
                out,
                epilogue,
            );
            return;
        }
        self.forward(x, rows, out);
        epilogue.apply(&mut out[..rows * self.n_out]);
    }

    /// Moves the f32 weights to the panel layout of [`Self::forward_panels`].
    fn into_panels(mut self) -> Self {
        if !self.weight.is_empty() {
            let mut packed = vec![0.0; panels::row_panels_len(self.n_out, self.n_in)];
            panels::pack_row_panels(&self.weight, self.n_in, self.n_out, self.n_in, &mut packed);
            self.weight_panels = packed;
            self.weight = Vec::new();
        }
        self
    }

    fn into_half(mut self) -> Self {
        self.weight_f16 = self.weight.iter().map(|v| f32_to_f16(*v)).collect();
        self.weight = Vec::new();
        self
    }

    fn into_int8(mut self) -> Self {
        if !self.weight.is_empty() {
            self.weight_i8 = Some(QuantLinear::quantize(
                &self.weight,
                self.n_out,
                self.n_in,
                self.bias.as_deref(),
            ));
            self.weight = Vec::new();
        }
        self
    }
}

impl DecoderLayer {
    /// Move the per-token projections to half precision (cross K/V stay f32: they run over
    /// every encoder position at once).
    fn into_half(self) -> Self {
        DecoderLayer {
            self_qkv: self.self_qkv.into_half(),
            self_out: self.self_out.into_half(),
            cross_q: self.cross_q.into_half(),
            cross_out: self.cross_out.into_half(),
            fc1: self.fc1.into_half(),
            fc2: self.fc2.into_half(),
            ..self
        }
    }
}

pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

pub struct EncoderLayer {
    attn_ln: LayerNorm,
    /// Fused `[3d, d]` Q, K, V projection (K bias is zero).
    qkv: Linear,
    attn_out: Linear,
    ffn_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct DecoderLayer {
    self_ln: LayerNorm,
    self_qkv: Linear,
    self_out: Linear,
    cross_ln: LayerNorm,
    cross_q: Linear,
    /// Fused `[2d, d]` K, V projection of the encoder output.
    cross_kv: Linear,
    cross_out: Linear,
    ffn_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// All weights of one Whisper model, immutable and shared across threads (beside them,
/// only the pool of idle encoder buffers changes).
pub struct Whisper {
    pub dims: Dims,
    /// conv1 (kernel 3, padding 1) as a linear layer over `[n_mels · 3]` im2col rows; f32
    /// (on panels once [`Whisper::with_encoder_precision`] has run) at either precision.
    conv1: Linear,
    /// conv2 (kernel 3, stride 2) as a linear layer over `[d_in · 3]` im2col rows.
    conv2: Linear,
    enc_pos: Vec<f32>,
    enc_layers: Vec<EncoderLayer>,
    enc_ln: LayerNorm,
    tok_emb: Vec<f32>,
    /// The token embedding again in f16, for the bandwidth-bound logits product.
    tok_emb_f16: Vec<u16>,
    dec_pos: Vec<f32>,
    dec_layers: Vec<DecoderLayer>,
    dec_ln: LayerNorm,
    /// Working buffers of finished encodes, reused by the next ones: a 30-s window's
    /// activations are ~40 MB, and freshly allocated they are fresh pages that fault in
    /// (and are zeroed by the kernel) on every window.
    encoder_scratch: Mutex<Vec<EncoderScratch>>,
}

/// At most this many idle sets of encoder buffers are kept (one per encode that ran at
/// the same time as others, up to this bound); more concurrent encodes allocate their own.
const ENCODER_SCRATCH_KEPT: usize = 4;

/// The activations of one encode, sized on use.
#[derive(Default)]
struct EncoderScratch {
    cols: Vec<f32>,
    h1: Vec<f32>,
    cols2: Vec<f32>,
    x: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    packed_keys: Vec<f32>,
    packed_values: Vec<f32>,
}

/// `buffer` as `len` values, keeping its allocation and what it held: for buffers the
/// caller overwrites whole before reading them (every buffer of an encode).
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

thread_local! {
    /// One block's attention scores per thread, kept between encodes for the same reason
    /// as [`EncoderScratch`].
    static ATTENTION_SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Name scheme of a weight file.
enum Naming {
    Ct2,
    HuggingFace { prefix: String },
}

struct Loader<'a> {
    set: &'a TensorSet,
    naming: Naming,
}

impl Loader<'_> {
    fn f32(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        self.set.f32_dequantized(name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        Ok(self.set.get(name)?.shape.clone())
    }
    fn checked(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let v = self.f32(name)?;
        if v.len() != len {
            return Err(ModelError::Invalid(format!(
                "{name} has {} values, expected {len}",
                v.len()
            )));
        }
        Ok(v)
    }
    fn linear(
        &self,
        w: &str,
        b: Option<&str>,
        n_out: usize,
        n_in: usize,
    ) -> Result<Linear, ModelError> {
        let weight = self.checked(w, n_out * n_in)?;
        let bias = match b {
            Some(b) if self.set.tensors.contains_key(b) => Some(self.checked(b, n_out)?),
            _ => None,
        };
        Ok(Linear::f32(weight, bias, n_out, n_in))
    }
    /// Stack several `[d_i, n_in]` linears (with optional biases, zero when absent) into one.
    fn fused(
        &self,
        parts: &[(&str, Option<&str>)],
        d: usize,
        n_in: usize,
    ) -> Result<Linear, ModelError> {
        let mut weight = Vec::with_capacity(parts.len() * d * n_in);
        let mut bias = Vec::with_capacity(parts.len() * d);
        for (w, b) in parts {
            weight.extend(self.checked(w, d * n_in)?);
            match b {
                Some(b) if self.set.tensors.contains_key(*b) => bias.extend(self.checked(b, d)?),
                _ => bias.extend(std::iter::repeat_n(0.0, d)),
            }
        }
        Ok(Linear::f32(weight, Some(bias), parts.len() * d, n_in))
    }
    fn norm(&self, base: &str, d: usize) -> Result<LayerNorm, ModelError> {
        let (g, b) = match self.naming {
            Naming::Ct2 => (format!("{base}/gamma"), format!("{base}/beta")),
            Naming::HuggingFace { .. } => (format!("{base}.weight"), format!("{base}.bias")),
        };
        Ok(LayerNorm {
            gamma: self.checked(&g, d)?,
            beta: self.checked(&b, d)?,
        })
    }
}

fn count_layers(set: &TensorSet, prefix: &str) -> usize {
    let mut n = 0;
    while set
        .tensors
        .keys()
        .any(|k| k.starts_with(&format!("{prefix}{n}")))
    {
        n += 1;
    }
    n
}

/// Sinusoidal position table as in Whisper's encoder (used if a file lacks the tensor).
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let inc = (10000f64).ln() / (half as f64 - 1.0).max(1.0);
    let mut out = vec![0.0f32; length * channels];
    for t in 0..length {
        for i in 0..half {
            let angle = t as f64 * (-inc * i as f64).exp();
            out[t * channels + i] = angle.sin() as f32;
            out[t * channels + half + i] = angle.cos() as f32;
        }
    }
    out
}

impl Whisper {
    /// Load from a directory holding `model.bin` (CTranslate2) or `model.safetensors` (HF).
    pub fn load_dir(dir: &Path) -> Result<Self, ModelError> {
        let ct2 = dir.join("model.bin");
        let st = dir.join("model.safetensors");
        if ct2.is_file() {
            let data = std::fs::read(&ct2).map_err(|e| ModelError::io(&ct2, e))?;
            let set = read_ct2(&data, false)?;
            drop(data);
            Self::from_tensors(&set, Naming::Ct2, dir)
        } else if st.is_file() {
            let data = std::fs::read(&st).map_err(|e| ModelError::io(&st, e))?;
            let set = read_safetensors(&data)?;
            drop(data);
            let prefix = if set.tensors.contains_key("model.encoder.conv1.weight") {
                "model."
            } else {
                ""
            };
            Self::from_tensors(
                &set,
                Naming::HuggingFace {
                    prefix: prefix.to_string(),
                },
                dir,
            )
        } else {
            Err(ModelError::NotAModel(dir.display().to_string()))
        }
    }

    fn from_tensors(set: &TensorSet, naming: Naming, dir: &Path) -> Result<Self, ModelError> {
        let ld = Loader { set, naming };
        let ct2 = matches!(ld.naming, Naming::Ct2);
        let p = match &ld.naming {
            Naming::HuggingFace { prefix } => prefix.clone(),
            Naming::Ct2 => String::new(),
        };
        let (conv1, conv2, emb, dec_pos_name, enc_pos_name) = if ct2 {
            (
                "encoder/conv1".to_string(),
                "encoder/conv2".to_string(),
                "decoder/embeddings/weight".to_string(),
                "decoder/position_encodings/encodings".to_string(),
                "encoder/position_encodings/encodings".to_string(),
            )
        } else {
            (
                format!("{p}encoder.conv1"),
                format!("{p}encoder.conv2"),
                format!("{p}decoder.embed_tokens.weight"),
                format!("{p}decoder.embed_positions.weight"),
                format!("{p}encoder.embed_positions.weight"),
            )
        };
        let sep = if ct2 { "/" } else { "." };
        let conv1_shape = ld.shape(&format!("{conv1}{sep}weight"))?;
        let emb_shape = ld.shape(&emb)?;
        let dec_pos_shape = ld.shape(&dec_pos_name)?;
        if conv1_shape.len() != 3
            || conv1_shape[2] != 3
            || emb_shape.len() != 2
            || dec_pos_shape.len() != 2
        {
            return Err(ModelError::Invalid(
                "unexpected conv1/embedding shapes".into(),
            ));
        }
        let d = conv1_shape[0];
        let n_mels = conv1_shape[1];
        let n_vocab = emb_shape[0];
        let n_text_ctx = dec_pos_shape[0];
        if emb_shape[1] != d || dec_pos_shape[1] != d || d == 0 {
            return Err(ModelError::Invalid("inconsistent model width".into()));
        }
        let n_heads = if ct2 {
            set.get("encoder/num_heads")
                .ok()
                .and_then(|t| t.scalar())
                .map(|v| v as usize)
        } else {
            None
        }
        .or_else(|| heads_from_config(dir))
        .unwrap_or(d / 64);
        if n_heads == 0 || d % n_heads != 0 {
            return Err(ModelError::Invalid(format!(
                "{n_heads} heads do not divide width {d}"
            )));
        }
        let (enc_prefix, dec_prefix) = if ct2 {
            ("encoder/layer_".to_string(), "decoder/layer_".to_string())
        } else {
            (format!("{p}encoder.layers."), format!("{p}decoder.layers."))
        };
        let n_enc = count_layers(set, &enc_prefix);
        let n_dec = count_layers(set, &dec_prefix);
        if n_enc == 0 || n_dec == 0 {
            return Err(ModelError::Invalid(
                "model has no encoder or decoder layers".into(),
            ));
        }
        let n_audio_ctx = match ld.shape(&enc_pos_name) {
            Ok(s) if s.len() == 2 => s[0],
            _ => 1500,
        };
        let dims = Dims {
            n_mels,
            n_audio_ctx,
            d_model: d,
            n_heads,
            n_encoder_layers: n_enc,
            n_decoder_layers: n_dec,
            n_vocab,
            n_text_ctx,
        };
        let ffn = ld.shape(&if ct2 {
            "encoder/layer_0/ffn/linear_0/weight".to_string()
        } else {
            format!("{p}encoder.layers.0.fc1.weight")
        })?;
        let d_ff = ffn.first().copied().unwrap_or(4 * d);

        let mut enc_layers = Vec::with_capacity(n_enc);
        for i in 0..n_enc {
            enc_layers.push(if ct2 {
                let b = format!("encoder/layer_{i}");
                EncoderLayer {
                    attn_ln: ld.norm(&format!("{b}/self_attention/layer_norm"), d)?,
                    qkv: ld.linear(
                        &format!("{b}/self_attention/linear_0/weight"),
                        Some(&format!("{b}/self_attention/linear_0/bias")),
                        3 * d,
                        d,
                    )?,
                    attn_out: ld.linear(
                        &format!("{b}/self_attention/linear_1/weight"),
                        Some(&format!("{b}/self_attention/linear_1/bias")),
                        d,
                        d,
                    )?,
                    ffn_ln: ld.norm(&format!("{b}/ffn/layer_norm"), d)?,
                    fc1: ld.linear(
                        &format!("{b}/ffn/linear_0/weight"),
                        Some(&format!("{b}/ffn/linear_0/bias")),
                        d_ff,
                        d,
                    )?,
                    fc2: ld.linear(
                        &format!("{b}/ffn/linear_1/weight"),
                        Some(&format!("{b}/ffn/linear_1/bias")),
                        d,
                        d_ff,
                    )?,
                }
            } else {
                let b = format!("{p}encoder.layers.{i}");
                EncoderLayer {
                    attn_ln: ld.norm(&format!("{b}.self_attn_layer_norm"), d)?,
                    qkv: hf_qkv(&ld, &format!("{b}.self_attn"), d)?,
                    attn_out: ld.linear(
                        &format!("{b}.self_attn.out_proj.weight"),
                        Some(&format!("{b}.self_attn.out_proj.bias")),
                        d,
                        d,
                    )?,
                    ffn_ln: ld.norm(&format!("{b}.final_layer_norm"), d)?,
                    fc1: ld.linear(
                        &format!("{b}.fc1.weight"),
                        Some(&format!("{b}.fc1.bias")),
                        d_ff,
                        d,
                    )?,
                    fc2: ld.linear(
                        &format!("{b}.fc2.weight"),
                        Some(&format!("{b}.fc2.bias")),
                        d,
                        d_ff,
                    )?,
                }
            });
        }
        let mut dec_layers = Vec::with_capacity(n_dec);
        for i in 0..n_dec {
            dec_layers.push(if ct2 {
                let b = format!("decoder/layer_{i}");
                DecoderLayer {
                    self_ln: ld.norm(&format!("{b}/self_attention/layer_norm"), d)?,
                    self_qkv: ld.linear(
                        &format!("{b}/self_attention/linear_0/weight"),
                        Some(&format!("{b}/self_attention/linear_0/bias")),
                        3 * d,
                        d,
                    )?,
                    self_out: ld.linear(
                        &format!("{b}/self_attention/linear_1/weight"),
                        Some(&format!("{b}/self_attention/linear_1/bias")),
                        d,
                        d,
                    )?,
                    cross_ln: ld.norm(&format!("{b}/attention/layer_norm"), d)?,
                    cross_q: ld.linear(
                        &format!("{b}/attention/linear_0/weight"),
                        Some(&format!("{b}/attention/linear_0/bias")),
                        d,
                        d,
                    )?,
                    cross_kv: ld.linear(
                        &format!("{b}/attention/linear_1/weight"),
                        Some(&format!("{b}/attention/linear_1/bias")),
                        2 * d,
                        d,
                    )?,
                    cross_out: ld.linear(
                        &format!("{b}/attention/linear_2/weight"),
                        Some(&format!("{b}/attention/linear_2/bias")),
                        d,
                        d,
                    )?,
                    ffn_ln: ld.norm(&format!("{b}/ffn/layer_norm"), d)?,
                    fc1: ld.linear(
                        &format!("{b}/ffn/linear_0/weight"),
                        Some(&format!("{b}/ffn/linear_0/bias")),
                        d_ff,
                        d,
                    )?,
                    fc2: ld.linear(
                        &format!("{b}/ffn/linear_1/weight"),
                        Some(&format!("{b}/ffn/linear_1/bias")),
                        d,
                        d_ff,
                    )?,
                }
            } else {
                let b = format!("{p}decoder.layers.{i}");
                let ca = format!("{b}.encoder_attn");
                DecoderLayer {
                    self_ln: ld.norm(&format!("{b}.self_attn_layer_norm"), d)?,
                    self_qkv: hf_qkv(&ld, &format!("{b}.self_attn"), d)?,
                    self_out: ld.linear(
                        &format!("{b}.self_attn.out_proj.weight"),
                        Some(&format!("{b}.self_attn.out_proj.bias")),
                        d,
                        d,
                    )?,
                    cross_ln: ld.norm(&format!("{b}.encoder_attn_layer_norm"), d)?,
                    cross_q: ld.linear(
                        &format!("{ca}.q_proj.weight"),
                        Some(&format!("{ca}.q_proj.bias")),
                        d,
                        d,
                    )?,
                    cross_kv: ld.fused(
                        &[
                            (
                                &format!("{ca}.k_proj.weight"),
                                Some(&format!("{ca}.k_proj.bias")),
                            ),
                            (
                                &format!("{ca}.v_proj.weight"),
                                Some(&format!("{ca}.v_proj.bias")),
                            ),
                        ],
                        d,
                        d,
                    )?,
                    cross_out: ld.linear(
                        &format!("{ca}.out_proj.weight"),
                        Some(&format!("{ca}.out_proj.bias")),
                        d,
                        d,
                    )?,
                    ffn_ln: ld.norm(&format!("{b}.final_layer_norm"), d)?,
                    fc1: ld.linear(
                        &format!("{b}.fc1.weight"),
                        Some(&format!("{b}.fc1.bias")),
                        d_ff,
                        d,
                    )?,
                    fc2: ld.linear(
                        &format!("{b}.fc2.weight"),
                        Some(&format!("{b}.fc2.bias")),
                        d,
                        d_ff,
                    )?,
                }
            });
        }
        let dec_layers: Vec<DecoderLayer> = dec_layers
            .into_iter()
            .map(DecoderLayer::into_half)
            .collect();
        let (enc_ln_name, dec_ln_name) = if ct2 {
            (
                "encoder/layer_norm".to_string(),
                "decoder/layer_norm".to_string(),
            )
        } else {
            (
                format!("{p}encoder.layer_norm"),
                format!("{p}decoder.layer_norm"),
            )
        };
        let tok_emb = ld.checked(&emb, n_vocab * d)?;
        let tok_emb_f16 = tok_emb.iter().map(|v| f32_to_f16(*v)).collect();
        let enc_pos = match ld.checked(&enc_pos_name, n_audio_ctx * d) {
            Ok(v) => v,
            Err(_) => sinusoids(n_audio_ctx, d),
        };
        Ok(Whisper {
            conv1: Linear::f32(
                ld.checked(&format!("{conv1}{sep}weight"), d * n_mels * 3)?,
                Some(ld.checked(&format!("{conv1}{sep}bias"), d)?),
                d,
                n_mels * 3,
            ),
            conv2: Linear::f32(
                ld.checked(&format!("{conv2}{sep}weight"), d * d * 3)?,
                Some(ld.checked(&format!("{conv2}{sep}bias"), d)?),
                d,
                d * 3,
            ),
            enc_pos,
            enc_layers,
            enc_ln: ld.norm(&enc_ln_name, d)?,
            tok_emb,
            tok_emb_f16,
            dec_pos: ld.checked(&dec_pos_name, n_text_ctx * d)?,
            dec_layers,
            dec_ln: ld.norm(&dec_ln_name, d)?,
            dims,
            encoder_scratch: Mutex::new(Vec::new()),
        })
    }

    /// Moves the encoder's weight products (and the decoder's cross-attention keys and
    /// values) to `precision`: int8, or f32 laid out in panels for [`panels::dot_rows`].
    /// Either drops the plain f32 copies of those weights, so it is done once per model.
    pub fn with_encoder_precision(mut self, precision: EncoderPrecision) -> Self {
        let convert: fn(Linear) -> Linear = match precision {
            EncoderPrecision::Int8 => Linear::into_int8,
            EncoderPrecision::F32 => Linear::into_panels,
        };
        // The first convolution's products are few (80 mel channels deep) and stay f32.
        self.conv1 = self.conv1.into_panels();
        self.conv2 = convert(self.conv2);
        self.enc_layers = self
            .enc_layers
            .into_iter()
            .map(|l| EncoderLayer {
                qkv: convert(l.qkv),
                attn_out: convert(l.attn_out),
                fc1: convert(l.fc1),
                fc2: convert(l.fc2),
                ..l
            })
            .collect();
        self.dec_layers = self
            .dec_layers
            .into_iter()
            .map(|l| DecoderLayer {
                cross_kv: convert(l.cross_kv),
                ..l
            })
            .collect();
        self
    }

    /// The precision of the encoder's weight products.
    pub fn encoder_precision(&self) -> EncoderPrecision {
        if self.conv2.weight_i8.is_some() {
            EncoderPrecision::Int8
        } else {
            EncoderPrecision::F32
        }
    }

    /// Encode one window of log-mel features (`[n_mels, 2·n_audio_ctx]`, channel-major)
    /// into `[n_audio_ctx, d]` states.
    pub fn encode(&self, mel: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.encode_ctx(mel, self.dims.n_audio_ctx)
    }

    /// As [`Self::encode`] over the first `n_audio_ctx` positions only (`mel` is
    /// `[n_mels, 2·n_audio_ctx]`): a shorter window for short audio, at a fraction of the
    /// cost (the positional embedding's prefix; the decoder attends to what is there).
    pub fn encode_ctx(&self, mel: &[f32], n_audio_ctx: usize) -> Result<Vec<f32>, ModelError> {
        self.encode_ctx_checked(mel, n_audio_ctx, &|| Ok(()))
    }

    /// As [`Self::encode_ctx`], calling `check` before each layer and stopping with its
    /// error (a cancelled decode stops within one layer's time).
    pub fn encode_ctx_checked(
        &self,
        mel: &[f32],
        n_audio_ctx: usize,
        check: &dyn Fn() -> Result<(), ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let n_mels = self.dims.n_mels;
        if n_audio_ctx == 0 || n_audio_ctx > self.dims.n_audio_ctx {
            return Err(ModelError::Invalid(format!(
                "audio context {n_audio_ctx} outside 1..={}",
                self.dims.n_audio_ctx
            )));
        }
        let frames = 2 * n_audio_ctx;
        if mel.len() != n_mels * frames {
            return Err(ModelError::Invalid(format!(
                "mel window has {} values, expected {}",
                mel.len(),
                n_mels * frames
            )));
        }
        let mut scratch = self
            .encoder_scratch
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default();
        let encoded = self.encode_into(mel, n_audio_ctx, &mut scratch, check);
        if let Ok(mut kept) = self.encoder_scratch.lock() {
            if kept.len() < ENCODER_SCRATCH_KEPT {
                kept.push(scratch);
            }
        }
        encoded
    }

    /// The encoder's layers over a checked window, in `scratch`'s buffers.
    fn encode_into(
        &self,
        mel: &[f32],
        n_audio_ctx: usize,
        scratch: &mut EncoderScratch,
        check: &dyn Fn() -> Result<(), ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let Dims {
            n_mels, d_model: d, ..
        } = self.dims;
        let frames = 2 * n_audio_ctx;
        // conv1 (kernel 3, padding 1) as im2col [frames, n_mels·3] · W^T.
        let k1 = n_mels * 3;
        // Every buffer of the encode is written whole before it is read (the im2col rows
        // their padding too, every product its output), so none is cleared first: that
        // was ~40 MB of stores a 30-s window.
        let cols = sized(&mut scratch.cols, frames * k1);
        cols.par_chunks_mut(k1).enumerate().for_each(|(t, row)| {
            for c in 0..n_mels {
                for k in 0..3 {
                    let src = t as isize + k as isize - 1;
                    row[c * 3 + k] = if src >= 0 && (src as usize) < frames {
                        mel[c * frames + src as usize]
                    } else {
                        0.0
                    };
                }
            }
        });
        let h1 = sized(&mut scratch.h1, frames * d);
        self.conv1
            .forward_then(cols, frames, h1, panels::Epilogue::Gelu);
        // conv2 (kernel 3, stride 2, padding 1) on the time-major [frames, d] states.
        let h1 = &*h1;
        let k2 = d * 3;
        let cols2 = sized(&mut scratch.cols2, n_audio_ctx * k2);
        cols2.par_chunks_mut(k2).enumerate().for_each(|(t, row)| {
            for k in 0..3 {
                let src = 2 * t as isize + k as isize - 1;
                if src >= 0 && (src as usize) < frames {
                    let s = &h1[src as usize * d..(src as usize + 1) * d];
                    for c in 0..d {
                        row[c * 3 + k] = s[c];
                    }
                } else {
                    for c in 0..d {
                        row[c * 3 + k] = 0.0;
                    }
                }
            }
        });
        let x = sized(&mut scratch.x, n_audio_ctx * d);
        self.conv2
            .forward_then(cols2, n_audio_ctx, x, panels::Epilogue::Gelu);
        for (v, p) in x.iter_mut().zip(&self.enc_pos) {
            *v += p;
        }
        let t = n_audio_ctx;
        // The output is the caller's to keep, so it alone is allocated per encode.
        let mut h = vec![0.0f32; t * d];
        let qkv = sized(&mut scratch.qkv, t * 3 * d);
        let attn = sized(&mut scratch.attn, t * d);
        let proj = sized(&mut scratch.proj, t * d);
        let d_ff = self.enc_layers.first().map_or(4 * d, |l| l.fc1.n_out);
        let ff = sized(&mut scratch.ff, t * d_ff);
        for layer in &self.enc_layers {
            check()?;
            kernels::layer_norm_par(x, d, &layer.attn_ln.gamma, &layer.attn_ln.beta, &mut h);
            layer.qkv.forward(&h, t, qkv);
            self.encoder_attention(
                qkv,
                t,
                attn,
                &mut scratch.packed_keys,
                &mut scratch.packed_values,
            );
            layer
                .attn_out
                .forward_then(attn, t, proj, panels::Epilogue::AddTo(x));
            kernels::layer_norm_par(x, d, &layer.ffn_ln.gamma, &layer.ffn_ln.beta, &mut h);
            layer.fc1.forward_then(&h, t, ff, panels::Epilogue::Gelu);
            layer
                .fc2
                .forward_then(ff, t, proj, panels::Epilogue::AddTo(x));
        }
        kernels::layer_norm_par(x, d, &self.enc_ln.gamma, &self.enc_ln.beta, &mut h);
        Ok(h)
    }

    /// Full (non-causal) multi-head attention over `t` positions of a fused QKV buffer.
    /// Every head's keys and values are first laid out for the attention kernels, once
    /// for all queries. Then queries go in blocks of rows, every head of a block in turn,
    /// so a block's scores (`ATTENTION_BLOCK × t`) stay in the core's cache instead of a
    /// `t × t` matrix per head making round trips through memory; blocks run in
    /// parallel, each writing its own rows of `out`.
    fn encoder_attention(
        &self,
        qkv: &[f32],
        t: usize,
        out: &mut [f32],
        packed_keys: &mut Vec<f32>,
        packed_values: &mut Vec<f32>,
    ) {
        // A multiple of the kernels' six rows; 96 × 1,500 scores are 576 KB.
        const ATTENTION_BLOCK: usize = 96;
        let d = self.dims.d_model;
        let hd = self.dims.head_dim();
        let heads = self.dims.n_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let path = kernels::simd_path();
        let keys_len = panels::row_panels_len(t, hd);
        let values_len = panels::column_panels_len(t, hd);
        let packed_keys = sized(packed_keys, heads * keys_len);
        let packed_values = sized(packed_values, heads * values_len);
        packed_keys
            .par_chunks_mut(keys_len)
            .zip(packed_values.par_chunks_mut(values_len))
            .enumerate()
            .for_each(|(h, (keys, values))| {
                panels::pack_row_panels(&qkv[d + h * hd..], 3 * d, t, hd, keys);
                panels::pack_column_panels(&qkv[2 * d + h * hd..], 3 * d, t, hd, values);
            });
        let (packed_keys, packed_values) = (&*packed_keys, &*packed_values);
        out[..t * d]
            .par_chunks_mut(ATTENTION_BLOCK * d)
            .enumerate()
            .for_each(|(block, out_rows)| {
                let mut attend = |scores: &mut Vec<f32>| {
                    let rows = out_rows.len() / d;
                    let first = block * ATTENTION_BLOCK;
                    if scores.len() < rows * t {
                        scores.resize(rows * t, 0.0);
                    }
                    let scores = &mut scores[..rows * t];
                    for h in 0..heads {
                        panels::dot_rows(
                            path,
                            &qkv[first * 3 * d + h * hd..],
                            3 * d,
                            rows,
                            &packed_keys[h * keys_len..(h + 1) * keys_len],
                            t,
                            hd,
                            scale,
                            None,
                            scores,
                            t,
                        );
                        for row in scores.chunks_exact_mut(t) {
                            kernels::softmax(row);
                        }
                        // Straight into the head's columns of the block's rows.
                        panels::weighted_rows(
                            path,
                            scores,
                            rows,
                            t,
                            &packed_values[h * values_len..(h + 1) * values_len],
                            hd,
                            &mut out_rows[h * hd..],
                            d,
                        );
                    }
                };
                // Nothing in `attend` re-enters rayon, so the thread's buffer is free
                // here; a fresh one would do if it were not.
                ATTENTION_SCORES.with(|kept| match kept.try_borrow_mut() {
                    Ok(mut scores) => attend(&mut scores),
                    Err(_) => attend(&mut Vec::new()),
                });
            });
    }

    /// Cross-attention keys and values for every decoder layer, from the encoder output.
    pub fn cross_kv(&self, encoded: &[f32]) -> CrossKv {
        let d = self.dims.d_model;
        let (heads, hd) = (self.dims.n_heads, self.dims.head_dim());
        let t = encoded.len() / d;
        let layers = self
            .dec_layers
            .iter()
            .map(|layer| {
                let mut kv = vec![0.0f32; t * 2 * d];
                layer.cross_kv.forward(encoded, t, &mut kv);
                // `[position][K | V][head][head_dim]` to `[head][position][head_dim]`.
                let mut keys = vec![0u16; heads * t * hd];
                let mut values = vec![0u16; heads * t * hd];
                for (j, row) in kv.chunks_exact(2 * d).enumerate() {
                    for head in 0..heads {
                        let at = (head * t + j) * hd;
                        let (k, v) = (head * hd, d + head * hd);
                        kernels::f32_to_f16_slice(&row[k..k + hd], &mut keys[at..at + hd]);
                        kernels::f32_to_f16_slice(&row[v..v + hd], &mut values[at..at + hd]);
                    }
                }
                (keys, values)
            })
            .collect();
        CrossKv {
            positions: t,
            head_dim: hd,
            layers,
        }
    }

    /// A fresh decoder state for one window.
    pub fn new_decoder_state<'m>(&'m self, cross: &'m CrossKv) -> DecoderState<'m> {
        let d = self.dims.d_model;
        let n_layers = self.dims.n_decoder_layers;
        DecoderState {
            model: self,
            cross,
            self_kv: vec![vec![0.0f32; self.dims.n_text_ctx * 2 * d]; n_layers],
            len: 0,
            x: vec![0.0; d],
            h: vec![0.0; d],
            qkv: vec![0.0; 3 * d],
            attn: vec![0.0; d],
            proj: vec![0.0; d],
            ff: vec![0.0; self.dec_layers.first().map_or(4 * d, |l| l.fc1.n_out)],
            scores: vec![0.0; self.dims.n_audio_ctx.max(self.dims.n_text_ctx)],
            head_scores: vec![0.0; self.dims.n_heads * cross.positions.max(1)],
            head_align: vec![0.0; self.dims.n_heads * cross.positions.max(1)],
            logits: vec![0.0; self.dims.n_vocab],
        }
    }
}

fn heads_from_config(dir: &Path) -> Option<usize> {
    let text = std::fs::read(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    json.get("encoder_attention_heads")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
}

fn hf_qkv(ld: &Loader, base: &str, d: usize) -> Result<Linear, ModelError> {
    ld.fused(
        &[
            (
                &format!("{base}.q_proj.weight"),
                Some(&format!("{base}.q_proj.bias")),
            ),
            (&format!("{base}.k_proj.weight"), None),
            (
                &format!("{base}.v_proj.weight"),
                Some(&format!("{base}.v_proj.bias")),
            ),
        ],
        d,
        d,
    )
}

/// One window's cross-attention keys and values for every decoder layer, in f16 and
/// head-major (`[head][position][head_dim]`). Every token reads all of them, so they are
/// kept at half the bytes of f32, and each head's rows lie together.
pub struct CrossKv {
    positions: usize,
    head_dim: usize,
    /// Per layer: the keys, then the values.
    layers: Vec<(Vec<u16>, Vec<u16>)>,
}

impl CrossKv {
    /// Encoder positions of the window.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Layer `layer`'s keys for head `head`: `[positions, head_dim]`.
    fn keys(&self, layer: usize, head: usize) -> &[u16] {
        let size = self.positions * self.head_dim;
        &self.layers[layer].0[head * size..(head + 1) * size]
    }

    /// Layer `layer`'s values for head `head`: `[positions, head_dim]`.
    fn values(&self, layer: usize, head: usize) -> &[u16] {
        let size = self.positions * self.head_dim;
        &self.layers[layer].1[head * size..(head + 1) * size]
    }
}

/// One head's cross-attention for one token: the scaled scores of `q` against every key
/// into `scores` (the first `align.len()` of them, before the softmax, also into `align`
/// for an alignment head), their softmax, and the weighted sum of the values into `out`.
/// Both [`DecoderState::step`] and [`DecoderState::step_batch`] use it, so their results
/// agree to the bit.
fn cross_attend_head(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    scale: f32,
    scores: &mut [f32],
    align: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let path = kernels::simd_path();
    let hd = q.len();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        *s = kernels::dot_f16(path, q, k) * scale;
    }
    if let Some(align) = align {
        let n = align.len().min(scores.len());
        align[..n].copy_from_slice(&scores[..n]);
    }
    kernels::softmax(scores);
    kernels::weighted_sum_f16(scores, values, out);
}

/// Requested cross-attention heads whose raw scores are recorded at every step (for
/// word alignment): `(layer, head)` pairs.
pub type AlignmentHeads = [(usize, usize)];

/// The decoder's per-window state: KV cache and scratch buffers, reused every token.
pub struct DecoderState<'m> {
    model: &'m Whisper,
    cross: &'m CrossKv,
    /// Per layer `[n_text_ctx, 2d]`: self-attention keys and values so far.
    self_kv: Vec<Vec<f32>>,
    len: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    scores: Vec<f32>,
    /// Per head: cross-attention scores, and the raw ones recorded for alignment.
    head_scores: Vec<f32>,
    head_align: Vec<f32>,
    pub logits: Vec<f32>,
}

impl DecoderState<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.model.dims.n_text_ctx
    }

    /// Forget every position from `len` on (they are recomputed when fed again).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Feed `tokens` at once, exactly as that many [`Self::step`] calls would (the same
    /// kernels on the same values, so bit-identical results), but reading each weight
    /// row and each cached key/value once for all of them. Returns the logits after
    /// every token (`tokens.len() × n_vocab`); `self.logits` is left untouched. The
    /// alignment rows are appended token by token, as `step` appends them.
    pub fn step_batch(
        &mut self,
        tokens: &[u32],
        align_heads: &AlignmentHeads,
        align_frames: usize,
        align_out: &mut Vec<f32>,
    ) -> Result<Vec<f32>, ModelError> {
        let m = self.model;
        let dims = &m.dims;
        let (d, hd, n_vocab) = (dims.d_model, dims.head_dim(), dims.n_vocab);
        let n = tokens.len();
        let pos0 = self.len;
        if n == 0 {
            return Ok(Vec::new());
        }
        if pos0 + n > dims.n_text_ctx {
            return Err(ModelError::Invalid("decoder context is full".into()));
        }
        if let Some(t) = tokens.iter().find(|t| **t as usize >= n_vocab) {
            return Err(ModelError::Invalid(format!(
                "token {t} outside the vocabulary"
            )));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = vec![0.0f32; n * d];
        for (r, t) in tokens.iter().enumerate() {
            let (t, pos) = (*t as usize, pos0 + r);
            for i in 0..d {
                x[r * d + i] = m.tok_emb[t * d + i] + m.dec_pos[pos * d + i];
            }
        }
        let d_ff = self.ff.len();
        let mut h = vec![0.0f32; n * d];
        let mut qkv = vec![0.0f32; n * 3 * d];
        let mut attn = vec![0.0f32; n * d];
        let mut proj = vec![0.0f32; n * d];
        let mut ff = vec![0.0f32; n * d_ff];
        let t_audio = self.cross.positions();
        let mut scores = vec![0.0f32; n * (pos0 + n)];
        let heads = dims.n_heads;
        let mut head_out = vec![0.0f32; heads * n * hd];
        let mut head_scores = vec![0.0f32; heads * n * t_audio.max(1)];
        let mut head_align = vec![0.0f32; heads * n * align_frames.min(t_audio).max(1)];
        let mut align_rows: Vec<Vec<f32>> = vec![Vec::new(); n];
        for (li, layer) in m.dec_layers.iter().enumerate() {
            // Causal self-attention: token r sees the cache up to its own position.
            for r in 0..n {
                kernels::layer_norm(
                    &x[r * d..(r + 1) * d],
                    d,
                    &layer.self_ln.gamma,
                    &layer.self_ln.beta,
                    &mut h[r * d..(r + 1) * d],
                );
            }
            layer.self_qkv.forward_rows(&h, n, &mut qkv);
            let cache = &mut self.self_kv[li];
            for r in 0..n {
                let at = (pos0 + r) * 2 * d;
                cache[at..at + 2 * d].copy_from_slice(&qkv[r * 3 * d + d..(r + 1) * 3 * d]);
            }
            for r in 0..n {
                let keys = pos0 + r + 1;
                for head in 0..dims.n_heads {
                    let q = &qkv[r * 3 * d + head * hd..r * 3 * d + (head + 1) * hd];
                    let s = &mut scores[..keys];
                    for (j, v) in s.iter_mut().enumerate() {
                        *v = kernels::dot(
                            q,
                            &cache[j * 2 * d + head * hd..j * 2 * d + (head + 1) * hd],
                        ) * scale;
                    }
                    kernels::softmax(s);
                    let out = &mut attn[r * d + head * hd..r * d + (head + 1) * hd];
                    out.iter_mut().for_each(|v| *v = 0.0);
                    for (j, p) in s.iter().enumerate() {
                        kernels::axpy(
                            *p,
                            &cache[j * 2 * d + d + head * hd..j * 2 * d + d + (head + 1) * hd],
                            out,
                        );
                    }
                }
            }
            layer.self_out.forward_rows(&attn, n, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            // Cross-attention: every token's scores against each encoder position in
            // turn, so each key and value is read once for all tokens.
            for r in 0..n {
                kernels::layer_norm(
                    &x[r * d..(r + 1) * d],
                    d,
                    &layer.cross_ln.gamma,
                    &layer.cross_ln.beta,
                    &mut h[r * d..(r + 1) * d],
                );
            }
            let q = &mut qkv[..n * d];
            layer.cross_q.forward_rows(&h, n, q);
            // Each head on its own task; each token's scores and sum are computed as
            // `step` computes them.
            let align_n = align_frames.min(t_audio);
            let cross = self.cross;
            let q = &*q;
            head_out
                .par_chunks_mut(n * hd)
                .zip(head_scores.par_chunks_mut(n * t_audio.max(1)))
                .zip(head_align.par_chunks_mut(n * align_n.max(1)))
                .enumerate()
                .for_each(|(head, ((out, scores), align))| {
                    let record = align_heads.contains(&(li, head));
                    for r in 0..n {
                        cross_attend_head(
                            &q[r * d + head * hd..r * d + (head + 1) * hd],
                            cross.keys(li, head),
                            cross.values(li, head),
                            scale,
                            &mut scores[r * t_audio..(r + 1) * t_audio],
                            record.then(|| &mut align[r * align_n..(r + 1) * align_n]),
                            &mut out[r * hd..(r + 1) * hd],
                        );
                    }
                });
            for head in 0..dims.n_heads {
                for r in 0..n {
                    attn[r * d + head * hd..r * d + (head + 1) * hd]
                        .copy_from_slice(&head_out[(head * n + r) * hd..(head * n + r + 1) * hd]);
                }
                if align_heads.contains(&(li, head)) {
                    for (r, rows) in align_rows.iter_mut().enumerate() {
                        let at = (head * n + r) * align_n;
                        rows.extend_from_slice(&head_align[at..at + align_n]);
                    }
                }
            }
            layer.cross_out.forward_rows(&attn, n, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            // Feed-forward.
            for r in 0..n {
                kernels::layer_norm(
                    &x[r * d..(r + 1) * d],
                    d,
                    &layer.ffn_ln.gamma,
                    &layer.ffn_ln.beta,
                    &mut h[r * d..(r + 1) * d],
                );
            }
            layer.fc1.forward_rows(&h, n, &mut ff);
            for row in ff.chunks_exact_mut(d_ff) {
                kernels::gelu(row);
            }
            layer.fc2.forward_rows(&ff, n, &mut proj);
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        self.len += n;
        for r in 0..n {
            kernels::layer_norm(
                &x[r * d..(r + 1) * d],
                d,
                &m.dec_ln.gamma,
                &m.dec_ln.beta,
                &mut h[r * d..(r + 1) * d],
            );
        }
        let mut logits = vec![0.0f32; n * n_vocab];
        kernels::matmul_f16_rows(&h, n, &m.tok_emb_f16, n_vocab, None, &mut logits);
        for rows in align_rows {
            align_out.extend(rows);
        }
        Ok(logits)
    }

    /// Feed one token. When `want_logits`, fills `self.logits`. The raw (scaled,
    /// pre-softmax) cross-attention scores of `align_heads` over the first `align_frames`
    /// audio positions are appended to `align_out`, one row per head.
    pub fn step(
        &mut self,
        token: u32,
        want_logits: bool,
        align_heads: &AlignmentHeads,
        align_frames: usize,
        align_out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let m = self.model;
        let dims = &m.dims;
        let d = dims.d_model;
        let hd = dims.head_dim();
        let pos = self.len;
        let token = token as usize;
        if pos >= dims.n_text_ctx {
            return Err(ModelError::Invalid("decoder context is full".into()));
        }
        if token >= dims.n_vocab {
            return Err(ModelError::Invalid(format!(
                "token {token} outside the vocabulary"
            )));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        for i in 0..d {
            self.x[i] = m.tok_emb[token * d + i] + m.dec_pos[pos * d + i];
        }
        // The window's encoder length (shorter than n_audio_ctx for short audio).
        let t_audio = self.cross.positions();
        for (li, layer) in m.dec_layers.iter().enumerate() {
            // Causal self-attention over the cache.
            kernels::layer_norm(
                &self.x,
                d,
                &layer.self_ln.gamma,
                &layer.self_ln.beta,
                &mut self.h,
            );
            layer.self_qkv.forward(&self.h, 1, &mut self.qkv);
            let cache = &mut self.self_kv[li];
            cache[pos * 2 * d..pos * 2 * d + 2 * d].copy_from_slice(&self.qkv[d..3 * d]);
            let n = pos + 1;
            for head in 0..dims.n_heads {
                let q = &self.qkv[head * hd..(head + 1) * hd];
                let scores = &mut self.scores[..n];
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = kernels::dot(
                        q,
                        &cache[j * 2 * d + head * hd..j * 2 * d + (head + 1) * hd],
                    ) * scale;
                }
                kernels::softmax(scores);
                let out = &mut self.attn[head * hd..(head + 1) * hd];
                out.iter_mut().for_each(|v| *v = 0.0);
                for (j, p) in scores.iter().enumerate() {
                    kernels::axpy(
                        *p,
                        &cache[j * 2 * d + d + head * hd..j * 2 * d + d + (head + 1) * hd],
                        out,
                    );
                }
            }
            layer.self_out.forward(&self.attn, 1, &mut self.proj);
            self.x.iter_mut().zip(&self.proj).for_each(|(a, b)| *a += b);

            // Cross-attention over the window's encoder states.
            kernels::layer_norm(
                &self.x,
                d,
                &layer.cross_ln.gamma,
                &layer.cross_ln.beta,
                &mut self.h,
            );
            layer.cross_q.forward(&self.h, 1, &mut self.qkv[..d]);
            // Each head on its own task.
            let (cross, q) = (self.cross, &self.qkv[..d]);
            let align_n = align_frames.min(t_audio);
            let span = t_audio.max(1);
            self.attn
                .par_chunks_mut(hd)
                .zip(self.head_scores.par_chunks_mut(span))
                .zip(self.head_align.par_chunks_mut(span))
                .enumerate()
                .for_each(|(head, ((out, scores), align))| {
                    cross_attend_head(
                        &q[head * hd..(head + 1) * hd],
                        cross.keys(li, head),
                        cross.values(li, head),
                        scale,
                        &mut scores[..t_audio],
                        align_heads
                            .contains(&(li, head))
                            .then(|| &mut align[..align_n]),
                        out,
                    );
                });
            for head in 0..dims.n_heads {
                if align_heads.contains(&(li, head)) {
                    align_out
                        .extend_from_slice(&self.head_align[head * span..head * span + align_n]);
                }
            }
            layer.cross_out.forward(&self.attn, 1, &mut self.proj);
            self.x.iter_mut().zip(&self.proj).for_each(|(a, b)| *a += b);

            // Feed-forward.
            kernels::layer_norm(
                &self.x,
                d,
                &layer.ffn_ln.gamma,
                &layer.ffn_ln.beta,
                &mut self.h,
            );
            layer.fc1.forward(&self.h, 1, &mut self.ff);
            kernels::gelu(&mut self.ff);
            layer.fc2.forward(&self.ff, 1, &mut self.proj);
            self.x.iter_mut().zip(&self.proj).for_each(|(a, b)| *a += b);
        }
        self.len += 1;
        if want_logits {
            kernels::layer_norm(&self.x, d, &m.dec_ln.gamma, &m.dec_ln.beta, &mut self.h);
            kernels::logits_f16(&self.h, &m.tok_emb_f16, dims.n_vocab, &mut self.logits);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_avx2_only_cpus_default_to_the_int8_encoder() {
        assert_eq!(
            EncoderPrecision::default_for(SimdPath::Avx2),
            EncoderPrecision::Int8
        );
        assert_eq!(
            EncoderPrecision::default_for(SimdPath::Avx512),
            EncoderPrecision::F32
        );
        assert_eq!(
            EncoderPrecision::default_for(SimdPath::Scalar),
            EncoderPrecision::F32
        );
    }

    #[test]
    fn a_set_precision_is_read_and_auto_leaves_it_to_the_path() {
        assert_eq!(
            EncoderPrecision::parse(" F32 "),
            Some(EncoderPrecision::F32)
        );
        assert_eq!(
            EncoderPrecision::parse("int8"),
            Some(EncoderPrecision::Int8)
        );
        assert_eq!(EncoderPrecision::parse("auto"), None);
        assert_eq!(EncoderPrecision::parse("fp16"), None);
    }
}
