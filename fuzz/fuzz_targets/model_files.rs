//! Fuzzes the model weight readers (CTranslate2 `model.bin`, safetensors): a model
//! directory may come from anywhere, and a hostile or truncated file must be refused
//! with an error, never a panic or an allocation out of proportion to its size.
#![no_main]

use hark_speech::tensor_file::{read_ct2, read_safetensors, TensorSet};
use libfuzzer_sys::fuzz_target;

fn exercise(set: &TensorSet) {
    for (name, tensor) in &set.tensors {
        let _ = tensor.numel();
        let _ = tensor.scalar();
        let _ = set.f32_dequantized(name);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = read_ct2(data, true) {
        assert!(set.tensors.values().all(|t| t.bytes.is_empty()));
    }
    if let Ok(set) = read_ct2(data, false) {
        exercise(&set);
    }
    if let Ok(set) = read_safetensors(data) {
        exercise(&set);
    }
});
