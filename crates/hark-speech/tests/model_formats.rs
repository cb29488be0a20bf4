//! The model formats beyond the shipped CTranslate2 tiny.en: a Hugging Face safetensors
//! directory and a multilingual-vocabulary model. Only tiny.en is reachable here, so both
//! are made from it: its tensors are rewritten under Hugging Face names (Q/K/V and the
//! cross-attention K/V split apart, layer norms renamed, the tokenizer taken from
//! `tokenizer.json`), and for the multilingual case one text token is inserted before
//! `<|endoftext|>`, which shifts every control token up by one exactly as in Whisper's
//! multilingual vocabulary (51865 ids: `<|startoftranscript|>` = 50258, languages from
//! 50259). The weights stay tiny.en's, so the transcripts are checked against known text.

mod common;

use common::*;
use hark_core::speech::{SpeechEngine, TranscribeRequest};
use hark_speech::tensor_file::{read_ct2, StoredType, TensorSet};
use hark_speech::{EngineOptions, ModelFormat, ModelRegistry, WhisperEngine};
use serde_json::json;
use std::path::Path;

/// The first id after the byte-level BPE text tokens of the English-only vocabulary.
const EN_EOT: u32 = 50256;
/// `<|de|>` and `<|0.00|>` in Whisper's multilingual vocabulary.
const MULTI_DE: u32 = 50261;
const MULTI_TS0: u32 = 50364;

/// Tensors collected for one `.safetensors` file.
#[derive(Default)]
struct SafetensorsWriter {
    entries: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
}

impl SafetensorsWriter {
    fn put(&mut self, name: String, shape: Vec<usize>, values: &[f32], half: bool) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let (dtype, bytes) = if half {
            let b = values
                .iter()
                .flat_map(|v| hark_speech::kernels::f32_to_f16(*v).to_le_bytes())
                .collect();
            ("F16", b)
        } else {
            ("F32", values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        self.entries.push((name, dtype, shape, bytes));
    }

    fn write(self, path: &Path) {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({ "format": "pt" }));
        let mut offset = 0usize;
        for (name, dtype, shape, bytes) in &self.entries {
            header.insert(
                name.clone(),
                json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
            );
            offset += bytes.len();
        }
        let mut header = serde_json::to_vec(&header).unwrap();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        for (_, _, _, bytes) in self.entries {
            file.extend(bytes);
        }
        std::fs::write(path, file).unwrap();
    }
}

/// A CTranslate2 tensor as f32 values, with its shape and whether it was stored in f16.
fn tensor(set: &TensorSet, name: &str) -> (Vec<f32>, Vec<usize>, bool) {
    let t = set.get(name).unwrap();
    (
        set.f32_dequantized(name).unwrap(),
        t.shape.clone(),
        t.dtype == StoredType::F16,
    )
}

/// Rewrites the CTranslate2 tiny.en directory `src` as a Hugging Face Whisper directory in
/// `dst` (prefix `model.`). With `multilingual`, one text token is inserted at id 50256
/// (an all-zero embedding row, always suppressed) so that the vocabulary has 51865 ids.
fn write_hf_copy(src: &Path, dst: &Path, multilingual: bool) {
    std::fs::create_dir_all(dst).unwrap();
    let set = read_ct2(&std::fs::read(src.join("model.bin")).unwrap(), false).unwrap();
    let ct2_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let (_, conv1_shape, _) = tensor(&set, "encoder/conv1/weight");
    let d = conv1_shape[0];
    let heads = set
        .get("encoder/num_heads")
        .ok()
        .and_then(|t| t.scalar())
        .map_or(d / 64, |v| v as usize);
    let mut out = SafetensorsWriter::default();

    let copy = |out: &mut SafetensorsWriter, from: &str, to: String| {
        let (v, shape, half) = tensor(&set, from);
        out.put(to, shape, &v, half);
    };
    // A fused [parts·d, d] linear (and its [parts·d] bias) split into `names`; a part
    // whose name is given without bias must have a zero bias in the fused tensor.
    let split = |out: &mut SafetensorsWriter, from: &str, to: &[(&str, bool)]| {
        let (w, w_shape, half) = tensor(&set, &format!("{from}/weight"));
        let (b, _, b_half) = tensor(&set, &format!("{from}/bias"));
        assert_eq!(w_shape, vec![to.len() * d, d], "{from}");
        for (i, (name, has_bias)) in to.iter().enumerate() {
            out.put(
                format!("{name}.weight"),
                vec![d, d],
                &w[i * d * d..(i + 1) * d * d],
                half,
            );
            let part = &b[i * d..(i + 1) * d];
            if *has_bias {
                out.put(format!("{name}.bias"), vec![d], part, b_half);
            } else {
                assert!(
                    part.iter().all(|v| *v == 0.0),
                    "{from}: part {i} has a bias"
                );
            }
        }
    };
    let linear = |out: &mut SafetensorsWriter, from: &str, to: &str| {
        copy(out, &format!("{from}/weight"), format!("{to}.weight"));
        copy(out, &format!("{from}/bias"), format!("{to}.bias"));
    };
    let norm = |out: &mut SafetensorsWriter, from: &str, to: &str| {
        copy(out, &format!("{from}/gamma"), format!("{to}.weight"));
        copy(out, &format!("{from}/beta"), format!("{to}.bias"));
    };

    // Self-attention and feed-forward: the same in encoder and decoder layers.
    let self_attention_and_ffn = |out: &mut SafetensorsWriter, c: &str, h: &str| {
        norm(
            out,
            &format!("{c}/self_attention/layer_norm"),
            &format!("{h}.self_attn_layer_norm"),
        );
        split(
            out,
            &format!("{c}/self_attention/linear_0"),
            &[
                (&format!("{h}.self_attn.q_proj"), true),
                (&format!("{h}.self_attn.k_proj"), false),
                (&format!("{h}.self_attn.v_proj"), true),
            ],
        );
        linear(
            out,
            &format!("{c}/self_attention/linear_1"),
            &format!("{h}.self_attn.out_proj"),
        );
        norm(
            out,
            &format!("{c}/ffn/layer_norm"),
            &format!("{h}.final_layer_norm"),
        );
        linear(out, &format!("{c}/ffn/linear_0"), &format!("{h}.fc1"));
        linear(out, &format!("{c}/ffn/linear_1"), &format!("{h}.fc2"));
    };

    linear(&mut out, "encoder/conv1", "model.encoder.conv1");
    linear(&mut out, "encoder/conv2", "model.encoder.conv2");
    if set.get("encoder/position_encodings/encodings").is_ok() {
        copy(
            &mut out,
            "encoder/position_encodings/encodings",
            "model.encoder.embed_positions.weight".into(),
        );
    }
    let mut layer = 0;
    while set
        .get(&format!("encoder/layer_{layer}/ffn/linear_0/weight"))
        .is_ok()
    {
        let (c, h) = (
            format!("encoder/layer_{layer}"),
            format!("model.encoder.layers.{layer}"),
        );
        self_attention_and_ffn(&mut out, &c, &h);
        layer += 1;
    }
    assert!(layer > 0);
    norm(&mut out, "encoder/layer_norm", "model.encoder.layer_norm");

    let (mut emb, mut emb_shape, emb_half) = tensor(&set, "decoder/embeddings/weight");
    if multilingual {
        let at = EN_EOT as usize * d;
        emb.splice(at..at, std::iter::repeat_n(0.0, d));
        emb_shape[0] += 1;
        // English-only weights never predict a language token, so language detection
        // would be a guess among equals. Give <|de|> the embedding of <|0.00|> (the token
        // the model does predict after <|startoftranscript|>): detection must then say
        // "de", which checks that it reads the right logits and maps ids to codes.
        let (de, first_timestamp) = (MULTI_DE as usize, MULTI_TS0 as usize);
        let row: Vec<f32> = emb[first_timestamp * d..(first_timestamp + 1) * d].to_vec();
        emb[de * d..(de + 1) * d].copy_from_slice(&row);
    }
    let n_vocab = emb_shape[0];
    out.put(
        "model.decoder.embed_tokens.weight".into(),
        emb_shape,
        &emb,
        emb_half,
    );
    copy(
        &mut out,
        "decoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight".into(),
    );
    let mut layer = 0;
    while set
        .get(&format!("decoder/layer_{layer}/ffn/linear_0/weight"))
        .is_ok()
    {
        let (c, h) = (
            format!("decoder/layer_{layer}"),
            format!("model.decoder.layers.{layer}"),
        );
        self_attention_and_ffn(&mut out, &c, &h);
        norm(
            &mut out,
            &format!("{c}/attention/layer_norm"),
            &format!("{h}.encoder_attn_layer_norm"),
        );
        linear(
            &mut out,
            &format!("{c}/attention/linear_0"),
            &format!("{h}.encoder_attn.q_proj"),
        );
        split(
            &mut out,
            &format!("{c}/attention/linear_1"),
            &[
                (&format!("{h}.encoder_attn.k_proj"), false),
                (&format!("{h}.encoder_attn.v_proj"), true),
            ],
        );
        linear(
            &mut out,
            &format!("{c}/attention/linear_2"),
            &format!("{h}.encoder_attn.out_proj"),
        );
        layer += 1;
    }
    norm(&mut out, "decoder/layer_norm", "model.decoder.layer_norm");
    out.write(&dst.join("model.safetensors"));

    // Token ids from the English-only vocabulary, moved to the multilingual numbering.
    let shift = |id: u64| -> u64 {
        if multilingual && id >= EN_EOT as u64 {
            id + 1
        } else {
            id
        }
    };
    let ids = |key: &str| -> Vec<u64> {
        ct2_config[key]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .filter_map(|v| v.as_u64())
            .map(shift)
            .collect()
    };
    let mut suppress = ids("suppress_ids");
    if multilingual {
        suppress.push(EN_EOT as u64);
    }
    std::fs::write(
        dst.join("generation_config.json"),
        serde_json::to_vec_pretty(&json!({
            "alignment_heads": ct2_config["alignment_heads"],
            "suppress_tokens": suppress,
            "begin_suppress_tokens": ids("suppress_ids_begin"),
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_vec_pretty(&json!({
            "model_type": "whisper",
            "d_model": d,
            "encoder_attention_heads": heads,
            "decoder_attention_heads": heads,
            "vocab_size": n_vocab,
        }))
        .unwrap(),
    )
    .unwrap();
    if multilingual {
        let vocab = std::fs::read_to_string(src.join("vocabulary.txt")).unwrap();
        let mut lines: Vec<&str> = vocab.lines().collect();
        assert_eq!(lines[EN_EOT as usize], "<|endoftext|>");
        lines.insert(EN_EOT as usize, "Ġhark");
        assert_eq!(lines.len(), n_vocab);
        assert_eq!(lines[MULTI_DE as usize], "<|de|>");
        assert_eq!(lines[MULTI_TS0 as usize], "<|0.00|>");
        std::fs::write(dst.join("vocabulary.txt"), lines.join("\n") + "\n").unwrap();
    } else {
        std::fs::copy(src.join("tokenizer.json"), dst.join("tokenizer.json")).unwrap();
    }
}

fn jfk_request(model: &str, language: Option<&str>) -> TranscribeRequest {
    TranscribeRequest {
        path: fixtures().join("jfk.wav"),
        model: model.into(),
        language_code: language.map(str::to_string),
        punctuate: true,
        format_text: true,
        audio_start_from: None,
        audio_end_at: None,
    }
}

#[test]
fn safetensors_directory_transcribes_like_ctranslate2() {
    let work = tempfile::tempdir().unwrap();
    let hf = work.path().join("hf-tiny-en");
    write_hf_copy(&model_dir(), &hf, false);
    assert!(!hf.join("vocabulary.txt").exists());

    let data = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::new(data.path());
    let ct2 = registry.install(&model_dir(), Some("ct2")).unwrap();
    assert_eq!(ct2.format, ModelFormat::Ctranslate2);
    let info = registry.install(&hf, None).unwrap();
    assert_eq!(info.name, "whisper-tiny.en");
    assert_eq!(info.format, ModelFormat::Safetensors);
    assert!(!info.multilingual);

    let engine = WhisperEngine::new(data.path(), EngineOptions::default()).unwrap();
    let from_ct2 = engine.transcribe(&jfk_request("ct2", None)).unwrap();
    let from_hf = engine
        .transcribe(&jfk_request("whisper-tiny.en", None))
        .unwrap();
    assert!(wer(JFK_TEXT, &from_hf.text) <= 0.10, "{}", from_hf.text);
    // Same weights, same arithmetic: the same transcript, word for word and to the ms.
    assert_eq!(from_hf.text, from_ct2.text);
    assert_eq!(from_hf.words.len(), from_ct2.words.len());
    for (a, b) in from_hf.words.iter().zip(&from_ct2.words) {
        assert_eq!((&a.text, a.start, a.end), (&b.text, b.start, b.end));
    }
    assert_eq!(from_hf.language_code.as_deref(), Some("en"));
    assert_eq!(from_hf.model, "whisper-tiny.en");
}

#[test]
fn multilingual_vocabulary_detects_the_language_or_takes_the_given_one() {
    let work = tempfile::tempdir().unwrap();
    let multi = work.path().join("multi");
    write_hf_copy(&model_dir(), &multi, true);

    let data = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::new(data.path());
    let info = registry.install(&multi, None).unwrap();
    assert_eq!(info.name, "whisper-tiny");
    assert!(info.multilingual);
    let engine = WhisperEngine::new(data.path(), EngineOptions::default()).unwrap();
    let model = engine.load("whisper-tiny").unwrap();
    let sp = &model.tokenizer.specials;
    assert_eq!((sp.eot, sp.sot), (50257, 50258));
    assert_eq!(
        sp.languages.first().map(|(id, c)| (*id, c.as_str())),
        Some((50259, "en"))
    );
    assert_eq!(sp.languages.len(), 99);

    let detected = engine
        .transcribe(&jfk_request("whisper-tiny", None))
        .unwrap();
    println!(
        "detected {:?} ({:?}): {}",
        detected.language_code, detected.language_confidence, detected.text
    );
    assert_eq!(detected.language_code.as_deref(), Some("de"));
    let p = detected.language_confidence.unwrap();
    assert!(p > 0.9 && p <= 1.0, "{p}");

    // A requested language is used as given: no detection, no confidence.
    for code in ["en", "fr"] {
        let given = engine
            .transcribe(&jfk_request("whisper-tiny", Some(code)))
            .unwrap();
        assert_eq!(given.language_code.as_deref(), Some(code));
        assert_eq!(given.language_confidence, None);
        assert_word_times(&given.words, 0, 11_000);
    }
}
