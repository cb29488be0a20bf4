//! Generated-input tests of the model weight readers (CTranslate2 `model.bin`,
//! safetensors): arbitrary bytes, and valid files with bytes changed or cut, are read
//! or refused with an error, never a panic. The coverage-guided half lives in `fuzz/`.

use crate::tensor_file::{read_ct2, read_safetensors, TensorSet};
use proptest::prelude::*;

fn ct2_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// A version-6 `model.bin` with an int8 tensor, its scale and an alias.
fn ct2_file() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&6u32.to_le_bytes());
    ct2_string(&mut b, "WhisperSpec");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    ct2_string(&mut b, "a/weight");
    b.push(2);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    b.push(1);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&[5, 250]);
    ct2_string(&mut b, "a/weight_scale");
    b.push(1);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&2f32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    ct2_string(&mut b, "b/weight");
    ct2_string(&mut b, "a/weight");
    b
}

fn safetensors_file() -> Vec<u8> {
    let header = br#"{"__metadata__":{},"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"I8","shape":[1,2],"data_offsets":[4,6]},"y_scale":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0, 60, 0, 192, 3, 4]);
    b.extend_from_slice(&0.5f32.to_le_bytes());
    b
}

fn exercise(set: &TensorSet) {
    for (name, tensor) in &set.tensors {
        let _ = tensor.scalar();
        let _ = set.f32_dequantized(name);
    }
}

fn read_all(bytes: &[u8]) {
    if let Ok(set) = read_ct2(bytes, true) {
        exercise(&set);
    }
    if let Ok(set) = read_ct2(bytes, false) {
        exercise(&set);
    }
    if let Ok(set) = read_safetensors(bytes) {
        exercise(&set);
    }
}

/// `file` with up to eight bytes replaced and then cut.
fn mutated(file: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = file.len();
    (prop::collection::vec((0..len, any::<u8>()), 0..8), 0..=len).prop_map(move |(changes, cut)| {
        let mut out = file.clone();
        for (at, byte) in changes {
            out[at] = byte;
        }
        out.truncate(cut);
        out
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_all(&bytes);
    }

    #[test]
    fn damaged_ct2_never_panics(bytes in mutated(ct2_file())) {
        read_all(&bytes);
    }

    #[test]
    fn damaged_safetensors_never_panics(bytes in mutated(safetensors_file())) {
        read_all(&bytes);
    }
}

#[test]
fn the_undamaged_files_read() {
    let ct2 = read_ct2(&ct2_file(), false).expect("ct2 reads");
    assert_eq!(
        ct2.f32_dequantized("b/weight").expect("alias"),
        vec![2.5, -3.0]
    );
    let st = read_safetensors(&safetensors_file()).expect("safetensors reads");
    assert_eq!(st.get("x").expect("x").to_f32(), vec![1.0, -2.0]);
}
