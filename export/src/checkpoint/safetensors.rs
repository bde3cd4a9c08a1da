//! safetensors files, memory-mapped and converted to float32.

use std::fs::File;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, DType, Tensor};

/// Read every floating-point tensor of a safetensors file, in file order. Integer buffers (which
/// some checkpoints carry, e.g. position ids) are skipped: the model has no use for them.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // SAFETY: the file is only read; a concurrent writer could change the bytes under us, which
    // can yield wrong numbers but not unsoundness beyond what a read() race gives.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        reason: e.to_string(),
    })?;
    let mut names: Vec<(usize, String)> = st
        .iter()
        .map(|(name, view)| (view.data().as_ptr() as usize, name.to_string()))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for (_, name) in names {
        let view = st.tensor(&name).map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            format: "safetensors",
            reason: format!("tensor `{name}`: {e}"),
        })?;
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL => {
                tracing::debug!(tensor = %name, "skipping integer tensor");
                continue;
            }
            other => {
                return Err(CheckpointError::DType {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let shape = view.shape().to_vec();
        let data = dtype.to_f32(view.data());
        out.push((name, Tensor::new(shape, data)));
    }
    Ok(out)
}
