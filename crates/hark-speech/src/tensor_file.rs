//! Readers for the two on-disk weight formats: CTranslate2 `model.bin` (binary versions
//! 1–6) and Hugging Face `*.safetensors`. Both yield named tensors converted to f32,
//! and both refuse truncated or inconsistent files with an error instead of panicking.

use crate::error::ModelError;
use crate::kernels::f16_to_f32;
use std::collections::HashMap;

/// Element type as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    F32,
    F16,
    BF16,
    I8,
    I16,
    I32,
}

impl StoredType {
    fn item_size(self) -> usize {
        match self {
            StoredType::F32 | StoredType::I32 => 4,
            StoredType::F16 | StoredType::BF16 | StoredType::I16 => 2,
            StoredType::I8 => 1,
        }
    }
}

/// One tensor as read from disk: shape plus its raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub dtype: StoredType,
    pub bytes: Vec<u8>,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Values converted to f32 (no scale applied).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        match self.dtype {
            StoredType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoredType::F16 => b
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            StoredType::BF16 => b
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            StoredType::I8 => b.iter().map(|v| *v as i8 as f32).collect(),
            StoredType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            StoredType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        }
    }

    /// The scalar value of a rank-0 (or single-element) tensor.
    pub fn scalar(&self) -> Option<f64> {
        if self.numel() != 1 {
            return None;
        }
        self.to_f32().first().map(|v| *v as f64)
    }
}

/// Tensors by name, with the file's aliases already resolved to copies of their targets.
#[derive(Debug, Default)]
pub struct TensorSet {
    pub tensors: HashMap<String, StoredTensor>,
    /// CTranslate2 `spec_name` ("WhisperSpec") or "safetensors".
    pub spec_name: String,
}

impl TensorSet {
    pub fn get(&self, name: &str) -> Result<&StoredTensor, ModelError> {
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// A tensor as f32, dequantising CTranslate2 int8/int16 weights with their
    /// `<name>_scale` companion (value = stored / scale, per output row or per tensor).
    pub fn f32_dequantized(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let t = self.get(name)?;
        let mut values = t.to_f32();
        if matches!(t.dtype, StoredType::I8 | StoredType::I16) {
            let scale = self.get(&format!("{name}_scale"))?.to_f32();
            let rows = t.shape.first().copied().unwrap_or(1).max(1);
            let per_row = values.len() / rows;
            if scale.len() == 1 {
                let s = scale[0];
                if s == 0.0 {
                    return Err(ModelError::Invalid(format!("zero scale for {name}")));
                }
                values.iter_mut().for_each(|v| *v /= s);
            } else if scale.len() == rows {
                for (r, chunk) in values.chunks_mut(per_row.max(1)).enumerate() {
                    let s = scale.get(r).copied().unwrap_or(1.0);
                    if s != 0.0 {
                        chunk.iter_mut().for_each(|v| *v /= s);
                    }
                }
            } else {
                return Err(ModelError::Invalid(format!(
                    "scale of {name} has {} values for {rows} rows",
                    scale.len()
                )));
            }
        }
        Ok(values)
    }
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).ok_or(ModelError::Truncated)?;
        let slice = self.data.get(self.pos..end).ok_or(ModelError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// u16 length including the trailing NUL, then the bytes.
    fn string(&mut self) -> Result<String, ModelError> {
        let len = self.u16()? as usize;
        if len == 0 {
            return Err(ModelError::Invalid("empty string in model.bin".into()));
        }
        let bytes = self.take(len)?;
        let text = &bytes[..len - 1];
        String::from_utf8(text.to_vec())
            .map_err(|_| ModelError::Invalid("non-UTF-8 name in model.bin".into()))
    }
}

const CT2_MAX_BINARY_VERSION: u32 = 6;

/// Parse a CTranslate2 `model.bin`. With `headers_only`, payloads are skipped (for
/// quick inspection of shapes when naming a model).
pub fn read_ct2(data: &[u8], headers_only: bool) -> Result<TensorSet, ModelError> {
    let mut cur = Cursor { data, pos: 0 };
    let version = cur.u32()?;
    if version == 0 || version > CT2_MAX_BINARY_VERSION {
        return Err(ModelError::Invalid(format!(
            "unsupported CTranslate2 binary version {version}"
        )));
    }
    let spec_name = if version >= 2 {
        let name = cur.string()?;
        let _revision = cur.u32()?;
        name
    } else {
        String::new()
    };
    let count = cur.u32()? as usize;
    let mut tensors = HashMap::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = cur.string()?;
        let rank = cur.u8()? as usize;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(cur.u32()? as usize);
        }
        let (dtype, num_bytes) = if version >= 4 {
            let id = cur.u8()?;
            let dtype = match id {
                0 => StoredType::F32,
                1 => StoredType::I8,
                2 => StoredType::I16,
                3 => StoredType::I32,
                4 => StoredType::F16,
                5 => StoredType::BF16,
                other => {
                    return Err(ModelError::Invalid(format!(
                        "unknown dtype id {other} for {name}"
                    )))
                }
            };
            (dtype, cur.u32()? as usize)
        } else {
            let item = cur.u8()?;
            let dtype = match item {
                4 => StoredType::F32,
                2 => StoredType::I16,
                1 => StoredType::I8,
                other => {
                    return Err(ModelError::Invalid(format!(
                        "unknown item size {other} for {name}"
                    )))
                }
            };
            let elements = cur.u32()? as usize;
            (
                dtype,
                elements
                    .checked_mul(item as usize)
                    .ok_or(ModelError::Truncated)?,
            )
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .ok_or(ModelError::Truncated)?;
        if numel.checked_mul(dtype.item_size()) != Some(num_bytes) {
            return Err(ModelError::Invalid(format!(
                "{name}: {num_bytes} bytes do not match shape {shape:?}"
            )));
        }
        let payload = cur.take(num_bytes)?;
        let bytes = if headers_only {
            Vec::new()
        } else {
            payload.to_vec()
        };
        tensors.insert(
            name,
            StoredTensor {
                shape,
                dtype,
                bytes,
            },
        );
    }
    if version >= 3 {
        let aliases = cur.u32()? as usize;
        for _ in 0..aliases {
            let alias = cur.string()?;
            let target = cur.string()?;
            for suffix in ["", "_scale", "_zero"] {
                if let Some(t) = tensors.get(&format!("{target}{suffix}")).cloned() {
                    tensors.insert(format!("{alias}{suffix}"), t);
                }
            }
        }
    }
    Ok(TensorSet { tensors, spec_name })
}

/// Parse a `.safetensors` file: u64 header length, JSON header, then the data block.
pub fn read_safetensors(data: &[u8]) -> Result<TensorSet, ModelError> {
    let mut cur = Cursor { data, pos: 0 };
    let header_len =
        u64::from_le_bytes(cur.take(8)?.try_into().map_err(|_| ModelError::Truncated)?);
    let header_len = usize::try_from(header_len).map_err(|_| ModelError::Truncated)?;
    let header = cur.take(header_len)?;
    let base = cur.pos;
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| ModelError::Invalid(format!("safetensors header: {e}")))?;
    let map = json
        .as_object()
        .ok_or_else(|| ModelError::Invalid("safetensors header is not an object".into()))?;
    let mut tensors = HashMap::new();
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = match info.get("dtype").and_then(|v| v.as_str()) {
            Some("F32") => StoredType::F32,
            Some("F16") => StoredType::F16,
            Some("BF16") => StoredType::BF16,
            Some("I8") => StoredType::I8,
            Some("I16") => StoredType::I16,
            Some("I32") => StoredType::I32,
            other => {
                return Err(ModelError::Invalid(format!(
                    "{name}: unsupported dtype {other:?}"
                )))
            }
        };
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| ModelError::Invalid(format!("{name}: no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| ModelError::Invalid(format!("{name}: bad shape")))?;
        let offsets = info
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| ModelError::Invalid(format!("{name}: no data_offsets")))?;
        let start = offsets[0].as_u64().unwrap_or(u64::MAX) as usize;
        let end = offsets[1].as_u64().unwrap_or(0) as usize;
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .ok_or(ModelError::Truncated)?;
        if end < start || numel.checked_mul(dtype.item_size()) != Some(end - start) {
            return Err(ModelError::Invalid(format!(
                "{name}: offsets do not match shape"
            )));
        }
        let bytes = data
            .get(base.saturating_add(start)..base.saturating_add(end))
            .ok_or(ModelError::Truncated)?
            .to_vec();
        tensors.insert(
            name.clone(),
            StoredTensor {
                shape,
                dtype,
                bytes,
            },
        );
    }
    Ok(TensorSet {
        tensors,
        spec_name: "safetensors".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct2_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tiny_ct2() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        ct2_string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        ct2_string(&mut b, "a/weight");
        b.push(2);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&0x3c00u16.to_le_bytes());
        b.extend_from_slice(&0xc000u16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        ct2_string(&mut b, "b/weight");
        ct2_string(&mut b, "a/weight");
        b
    }

    #[test]
    fn reads_ct2_with_alias() {
        let set = read_ct2(&tiny_ct2(), false).unwrap();
        assert_eq!(set.spec_name, "WhisperSpec");
        assert_eq!(set.get("a/weight").unwrap().to_f32(), vec![1.0, -2.0]);
        assert_eq!(set.get("b/weight").unwrap().shape, vec![1, 2]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = tiny_ct2();
        for cut in 0..full.len() {
            assert!(read_ct2(&full[..cut], false).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn reads_safetensors() {
        let header = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-1f32).to_le_bytes());
        let set = read_safetensors(&b).unwrap();
        assert_eq!(set.get("x").unwrap().to_f32(), vec![1.5, -1.0]);
        assert!(read_safetensors(&b[..b.len() - 1]).is_err());
        assert!(read_safetensors(&[1, 2, 3]).is_err());
    }
}
