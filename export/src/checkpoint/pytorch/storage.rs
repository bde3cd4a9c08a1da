//! Storages and the tensors viewing them: views are checked against their storage, storages read
//! once from the archive, and each tensor gathered from its strided view as float32.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::rc::Rc;

use zip::result::ZipError;
use zip::ZipArchive;

use super::pickle::{Storage, StorageType, TensorMeta};
use super::{bad, Fail};
use crate::checkpoint::{DType, Tensor};

/// Views may repeat storage elements (stride 0, e.g. `expand`); cap what such a view may inflate
/// to, so a tiny file cannot demand a huge output.
const MAX_EXPANDED_ELEMENTS: usize = 1 << 24;

/// Check that a strided view stays inside its storage; returns its element count.
pub(super) fn check_view(
    storage_numel: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Result<usize, Fail> {
    if shape.len() != stride.len() {
        return bad(format!(
            "tensor has {} sizes but {} strides",
            shape.len(),
            stride.len()
        ));
    }
    let overflow = || Fail::Format("tensor size overflows".into());
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;
    if numel == 0 {
        return Ok(0);
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| x.checked_add(last))
            .ok_or_else(overflow)?;
    }
    if last >= storage_numel {
        return bad(format!(
            "tensor view (offset {offset}, shape {shape:?}, stride {stride:?}) reaches element {last} \
             of a storage of {storage_numel}"
        ));
    }
    if numel > storage_numel && numel > MAX_EXPANDED_ELEMENTS {
        return bad(format!(
            "tensor view of {numel} elements repeats a storage of {storage_numel}"
        ));
    }
    Ok(numel)
}

/// Storage bytes, read once per storage and kept only while later tensors still view them.
pub(super) struct Storages<'z, R: Read + Seek> {
    zip: &'z mut ZipArchive<R>,
    prefix: String,
    file_len: u64,
    uses: HashMap<Rc<str>, usize>,
    cache: HashMap<Rc<str>, Vec<u8>>,
}

impl<'z, R: Read + Seek> Storages<'z, R> {
    pub(super) fn new(
        zip: &'z mut ZipArchive<R>,
        prefix: String,
        file_len: u64,
        entries: &[(String, Rc<TensorMeta>)],
    ) -> Self {
        let mut uses = HashMap::new();
        for (_, t) in entries {
            *uses.entry(t.storage.key.clone()).or_insert(0) += 1;
        }
        Storages {
            zip,
            prefix,
            file_len,
            uses,
            cache: HashMap::new(),
        }
    }

    /// The float32 tensor of one entry, or None for an integer buffer.
    pub(super) fn tensor(
        &mut self,
        path: &Path,
        name: &str,
        meta: &TensorMeta,
    ) -> Result<Option<Tensor>, Fail> {
        let key = meta.storage.key.clone();
        let dtype = match meta.storage.kind {
            StorageType::Float(d) => d,
            StorageType::Integer(ty) => {
                tracing::debug!(file = %path.display(), tensor = name, dtype = ty, "skipping non-float tensor");
                self.release(&key);
                return Ok(None);
            }
            StorageType::Unsupported(ty) => {
                return Err(Fail::DType {
                    name: name.to_string(),
                    dtype: ty.to_string(),
                });
            }
        };
        let bytes = match self.cache.remove(&key) {
            Some(b) => b,
            None => self.read_storage(&meta.storage, dtype)?,
        };
        let data = gather(meta, dtype, &bytes)
            .map_err(|f| Fail::Format(format!("tensor `{name}`: {}", fail_reason(f))))?;
        if self.release(&key) {
            self.cache.insert(key, bytes);
        }
        Ok(Some(Tensor::new(meta.shape.clone(), data)))
    }

    /// Count one use of a storage; true while later entries still need it.
    fn release(&mut self, key: &Rc<str>) -> bool {
        match self.uses.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            _ => {
                self.uses.remove(key);
                false
            }
        }
    }

    fn read_storage(&mut self, storage: &Storage, dtype: DType) -> Result<Vec<u8>, Fail> {
        let name = format!("{}data/{}", self.prefix, storage.key);
        let expected = storage
            .numel
            .checked_mul(dtype.size())
            .and_then(|n| u64::try_from(n).ok());
        let Some(expected) = expected else {
            return bad(format!("storage {name} size overflows"));
        };
        let entry = self.zip.by_name(&name).map_err(|e| match e {
            ZipError::FileNotFound => Fail::Format(format!("missing storage entry {name}")),
            other => Fail::zip(other),
        })?;
        if entry.size() != expected {
            return bad(format!(
                "storage {name} holds {} bytes, its tensors need {expected}",
                entry.size()
            ));
        }
        // Allocate by what the file can back, not by what the header claims; reading one byte
        // past `expected` lets the zip reader reach the end and verify the CRC.
        let cap = expected.min(self.file_len);
        let mut buf = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
        entry
            .take(expected.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(Fail::entry_io)?;
        if buf.len() as u64 != expected {
            return bad(format!(
                "storage {name} holds {} bytes, its tensors need {expected}",
                buf.len()
            ));
        }
        Ok(buf)
    }
}

fn fail_reason(f: Fail) -> String {
    match f {
        Fail::Format(r) | Fail::Unsafe(r) => r,
        Fail::Io(e) => e.to_string(),
        Fail::DType { dtype, .. } => dtype,
    }
}

/// The elements of a strided view in row-major order, as float32.
fn gather(meta: &TensorMeta, dtype: DType, bytes: &[u8]) -> Result<Vec<f32>, Fail> {
    let es = dtype.size();
    if meta.storage.numel.checked_mul(es) != Some(bytes.len()) {
        return bad("storage size disagrees between tensors sharing it");
    }
    if meta.numel == 0 {
        return Ok(Vec::new());
    }
    if is_contiguous(&meta.shape, &meta.stride) {
        let range = meta.offset * es..(meta.offset + meta.numel) * es;
        let Some(slice) = bytes.get(range) else {
            return bad("view exceeds its storage");
        };
        return Ok(dtype.to_f32(slice));
    }
    let mut out = Vec::with_capacity(meta.numel);
    let mut index = vec![0usize; meta.shape.len()];
    for _ in 0..meta.numel {
        let at = meta.offset
            + index
                .iter()
                .zip(&meta.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let Some(elem) = bytes.get(at * es..(at + 1) * es) else {
            return bad("view exceeds its storage");
        };
        out.push(element_to_f32(dtype, elem));
        // Advance the row-major multi-index (last dimension fastest).
        for (i, &d) in index.iter_mut().zip(&meta.shape).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    Ok(out)
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

fn element_to_f32(dtype: DType, b: &[u8]) -> f32 {
    match (dtype, b) {
        (DType::F32, &[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
        (DType::F64, &[a, b, c, d, e, f, g, h]) => {
            f64::from_le_bytes([a, b, c, d, e, f, g, h]) as f32
        }
        (DType::F16, &[a, b]) => half::f16::from_le_bytes([a, b]).to_f32(),
        (DType::BF16, &[a, b]) => half::bf16::from_le_bytes([a, b]).to_f32(),
        _ => f32::NAN, // unreachable: callers slice exactly dtype.size() bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_pickles::{
        floats, format_reason, read_bytes, tensor_file, tensor_pickle, zip_of,
    };
    use crate::checkpoint::{CheckpointError, Tensor};

    #[test]
    fn strided_view_with_offset() {
        let data = floats(&[0., 1., 2., 3., 4., 5., 6., 7.]);
        // Elements 1, 3, 5 and 2, 4, 6: a [2, 3] view with strides (1, 2) starting at 1.
        let out = read_bytes(tensor_file(8, 1, &[2, 3], &[1, 2], &data)).expect("valid");
        assert_eq!(
            out,
            vec![(
                "w".into(),
                Tensor::new(vec![2, 3], vec![1., 3., 5., 2., 4., 6.])
            )]
        );
        // The last element reachable: offset 7 of 8.
        let out = read_bytes(tensor_file(8, 7, &[], &[], &data)).expect("valid scalar");
        assert_eq!(out[0].1, Tensor::new(vec![], vec![7.]));
    }

    #[test]
    fn views_outside_the_storage_are_refused() {
        let data = floats(&[0.; 6]);
        let cases: &[(i64, &[i64], &[i64], &str)] = &[
            (0, &[7], &[1], "reaches element 6"),
            (1, &[6], &[1], "reaches element 6"),
            (6, &[], &[], "reaches element 6"),
            (0, &[2, 3], &[3, 2], "reaches element 7"),
            (0, &[2], &[1, 1], "2 strides"),
            (0, &[-1], &[1], "out of range"),
            (0, &[2], &[-1], "out of range"),
            (-1, &[1], &[1], "out of range"),
            (0, &[1 << 40, 1 << 40], &[0, 0], "overflows"),
            (0, &[4], &[i64::MAX], "overflows"),
            (0, &[1 << 30, 2], &[0, 1], "repeats a storage"),
        ];
        for &(offset, size, stride, want) in cases {
            let reason = format_reason(read_bytes(tensor_file(6, offset, size, stride, &data)));
            assert!(reason.contains(want), "{size:?}/{stride:?}: {reason}");
        }
    }

    #[test]
    fn storage_size_must_match_its_entry() {
        // A huge claimed numel must fail on the entry size before anything is allocated.
        for numel in [5, 7, 1 << 40, i64::MAX] {
            let reason = format_reason(read_bytes(tensor_file(
                numel,
                0,
                &[1],
                &[1],
                &floats(&[0.; 6]),
            )));
            assert!(
                reason.contains("storage archive/data/0"),
                "{numel}: {reason}"
            );
        }
    }

    #[test]
    fn small_expanded_views_are_read() {
        let out =
            read_bytes(tensor_file(2, 0, &[3, 2], &[0, 1], &floats(&[1., 2.]))).expect("valid");
        assert_eq!(out[0].1.data, vec![1., 2., 1., 2., 1., 2.]);
    }

    #[test]
    fn integer_storages_are_skipped_and_complex_refused() {
        let pkl = tensor_pickle("LongStorage", 2, 0, &[2], &[1]);
        let zip = zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &[0; 16])]);
        assert_eq!(read_bytes(zip).expect("valid"), vec![]);
        let pkl = tensor_pickle("ComplexFloatStorage", 2, 0, &[2], &[1]);
        let zip = zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &[0; 16])]);
        match read_bytes(zip) {
            Err(CheckpointError::DType { name, dtype, .. }) => {
                assert_eq!((&*name, &*dtype), ("w", "complex64"))
            }
            other => panic!("expected a dtype error, got {other:?}"),
        }
    }
}
