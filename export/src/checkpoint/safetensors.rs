//! safetensors files, converted to float32.
//!
//! The header is validated by the `safetensors` crate over a memory map (which touches only the
//! header's pages); each tensor is then read with a positioned read straight into its own
//! buffer. Reading through the map instead would keep every weight resident twice (the mapped
//! pages and the float32 copy) until the map is dropped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, DType, Tensor};

/// Read every floating-point tensor of a safetensors file, in file order. Integer buffers (which
/// some checkpoints carry, e.g. position ids) are skipped: the model has no use for them.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let format = |reason: String| CheckpointError::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        reason,
    };
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // SAFETY: the map is only read, and only its header; a concurrent writer could change the
    // bytes under us, which can yield a wrong header but not unsoundness beyond a read() race.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&map).map_err(|e| format(e.to_string()))?;
    drop(map);
    let data_start = 8 + header_len as u64;

    let mut entries: Vec<(String, usize, usize, Dtype, Vec<usize>)> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (b, e) = info.data_offsets;
            (name, b, e, info.dtype, info.shape.clone())
        })
        .collect();
    entries.sort_by_key(|e| e.1);

    let mut out = Vec::with_capacity(entries.len());
    let mut bytes = Vec::new();
    for (name, begin, end, dtype, shape) in entries {
        let dtype = match dtype {
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
        // validate() has checked that offsets tile the data section and match shape × dtype.
        bytes.resize(end - begin, 0);
        file.read_exact_at(&mut bytes, data_start + begin as u64)
            .map_err(|e| format(format!("tensor `{name}`: {e}")))?;
        out.push((name, Tensor::new(shape, dtype.to_f32(&bytes))));
    }
    Ok(out)
}
