//! pytorch `.bin` state dicts (torch.save zip format) read with a restricted unpickler.
//!
//! A torch.save zip holds `<prefix>/data.pkl`, a pickle of the state dict whose tensors refer to
//! raw storages `<prefix>/data/<key>` through persistent ids. Python's pickle would import and call
//! whatever the file names; this reader interprets only the opcodes a state dict needs and a short
//! list of globals, none of which runs code: tensors are rebuilt from their metadata here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use zip::result::ZipError;
use zip::ZipArchive;

use super::{CheckpointError, DType, Tensor};

const FORMAT: &str = "pytorch checkpoint";
/// data.pkl of a state dict is small (about 100 bytes per tensor); anything far larger is bogus.
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Views may repeat storage elements (stride 0, e.g. `expand`); cap what such a view may inflate
/// to, so a tiny file cannot demand a huge output.
const MAX_EXPANDED_ELEMENTS: usize = 1 << 24;

/// Read every tensor of a torch.save zip-format state dict, converted to float32, in file order.
/// Integer and bool buffers (e.g. `position_ids`) are skipped: the model has no use for them.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Ok(read_checkpoint(path, &[])?.tensors)
}

/// A training checkpoint: its weights, and the top-level entries asked for beside them.
#[derive(Debug)]
pub struct Checkpoint {
    /// The state dict's float tensors (the top level, or its `state_dict` / `model` entry).
    pub tensors: Vec<(String, Tensor)>,
    /// The asked-for top-level entries that exist, as JSON (see [`read_checkpoint`]).
    pub entries: serde_json::Map<String, serde_json::Value>,
}

/// Read a torch.save file's weights like [`read`], and the top-level entries named by `keys`
/// (e.g. fairseq's `cfg` or `args`) as JSON: dicts and instances of the allowed data classes
/// (an `argparse.Namespace`, say) become objects (with a `__class__` member for classes other
/// than Namespace), lists and tuples arrays, tensors and bytes `null`. Only the weights' storages
/// are read; tensors anywhere else (optimizer state) stay unread metadata.
pub fn read_checkpoint(path: &Path, keys: &[&str]) -> Result<Checkpoint, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // Buffered for the many small reads of the zip directory; storages are read in large chunks.
    read_from(path, BufReader::new(file), keys).map_err(|f| f.at(path))
}

/// The reader behind [`read_checkpoint`]; `path` only names the file in errors.
fn read_from<R: Read + Seek>(
    path: &Path,
    mut reader: R,
    keys: &[&str],
) -> Result<Checkpoint, Fail> {
    let file_len = check_magic(&mut reader)?;
    let mut zip = ZipArchive::new(reader).map_err(Fail::zip)?;
    let prefix = record_prefix(&zip)?;
    check_byteorder(&mut zip, &prefix)?;
    let pickle = read_entry(&mut zip, &format!("{prefix}data.pkl"), MAX_PICKLE_BYTES)?;
    let (root, objects) = Unpickler::new(&pickle).load()?;
    let entries = state_dict_entries(&objects, &root)?;
    let json = top_level_json(&objects, &root, keys)?;
    drop(objects);
    let mut storages = Storages::new(&mut zip, prefix, file_len, &entries);
    let mut out = Vec::with_capacity(entries.len());
    for (name, meta) in entries {
        if let Some(t) = storages.tensor(path, &name, &meta)? {
            out.push((name, t));
        }
    }
    Ok(Checkpoint {
        tensors: out,
        entries: json,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Internal error, turned into a [`CheckpointError`] naming the file at the API boundary.
#[derive(Debug)]
enum Fail {
    Io(std::io::Error),
    Format(String),
    Unsafe(String),
    DType { name: String, dtype: String },
}

impl Fail {
    fn at(self, path: &Path) -> CheckpointError {
        let path = path.to_path_buf();
        match self {
            Fail::Io(source) => CheckpointError::Io { path, source },
            Fail::Format(reason) => CheckpointError::Format {
                path,
                format: FORMAT,
                reason,
            },
            Fail::Unsafe(reason) => CheckpointError::Unsafe { path, reason },
            Fail::DType { name, dtype } => CheckpointError::DType { path, name, dtype },
        }
    }

    fn zip(e: ZipError) -> Self {
        match e {
            ZipError::Io(e) => Fail::entry_io(e),
            other => Fail::Format(format!("bad zip archive: {other}")),
        }
    }

    /// Reading a zip entry fails with InvalidData / UnexpectedEof on corrupt content: that is a
    /// format problem, not an I/O one.
    fn entry_io(e: std::io::Error) -> Self {
        use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        match e.kind() {
            InvalidData | InvalidInput | UnexpectedEof => {
                Fail::Format(format!("corrupt zip data: {e}"))
            }
            _ => Fail::Io(e),
        }
    }
}

fn bad<T>(reason: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Format(reason.into()))
}

// ---------------------------------------------------------------------------------------------
// Zip container

/// Check the leading bytes: torch.save zips start with a local file header, the legacy (torch <
/// 1.6) format with a pickle. Returns the file length.
fn check_magic<R: Read + Seek>(reader: &mut R) -> Result<u64, Fail> {
    let len = reader.seek(SeekFrom::End(0)).map_err(Fail::Io)?;
    reader.seek(SeekFrom::Start(0)).map_err(Fail::Io)?;
    let mut head = Vec::with_capacity(4);
    reader
        .by_ref()
        .take(4)
        .read_to_end(&mut head)
        .map_err(Fail::Io)?;
    reader.seek(SeekFrom::Start(0)).map_err(Fail::Io)?;
    match head.as_slice() {
        [b'P', b'K', 3, 4] => Ok(len),
        [0x80, proto, ..] if *proto <= 5 => bad(
            "legacy (torch < 1.6) serialization format, which is not supported; re-save it with \
             a newer torch: torch.save(torch.load(f), f)",
        ),
        _ => bad("not a torch.save zip archive"),
    }
}

/// The folder holding `data.pkl` (torch names it after the file, e.g. `archive/`), with its slash.
fn record_prefix<R: Read + Seek>(zip: &ZipArchive<R>) -> Result<String, Fail> {
    let mut found = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.trim_end_matches("data.pkl").to_string());
    match (found.next(), found.next()) {
        (Some(prefix), None) => Ok(prefix),
        (None, _) => bad("no data.pkl in the archive"),
        (Some(_), Some(_)) => bad("several data.pkl entries in the archive"),
    }
}

/// Storages are raw native-endian bytes; refuse big-endian files rather than misread them.
fn check_byteorder<R: Read + Seek>(zip: &mut ZipArchive<R>, prefix: &str) -> Result<(), Fail> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(()); // older torch versions write no byteorder record: little-endian
    }
    let order = read_entry(zip, &name, 16)?;
    match order.as_slice() {
        b"little" => Ok(()),
        other => bad(format!(
            "byte order {:?} is not supported (only little-endian)",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Read a whole zip entry of at most `limit` bytes.
fn read_entry<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, Fail> {
    let entry = zip.by_name(name).map_err(|e| match e {
        ZipError::FileNotFound => Fail::Format(format!("missing entry {name}")),
        other => Fail::zip(other),
    })?;
    if entry.size() > limit {
        return bad(format!(
            "entry {name} is {} bytes, more than the {limit} allowed",
            entry.size()
        ));
    }
    let mut buf = Vec::new();
    // The declared size may lie: never read past the limit whatever the entry decompresses to.
    entry
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(Fail::entry_io)?;
    if buf.len() as u64 > limit {
        return bad(format!(
            "entry {name} is larger than the {limit} bytes allowed"
        ));
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Pickle values

/// A value on the unpickler stack. Containers live in an arena and are referred to by index, so
/// memo references share (and see mutations of) one object as in Python, cloning is O(1), and
/// dropping deeply nested input cannot recurse.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes,
    Global(Global),
    Obj(usize),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorMeta>),
}

impl Value {
    /// What the value is, with its article, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes => "a bytes",
            Value::Global(_) => "a global",
            Value::Obj(_) => "a container",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

#[derive(Debug)]
enum Obj {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Dict),
}

/// An insertion-ordered dict. Only str and int keys are hashed (all a state dict uses); other
/// keys are kept without de-duplication.
///
/// An instance of an allowed class ([`Global::Class`], `argparse.Namespace`) is a dict too: its
/// class name, and its attributes (the state BUILD gives it) or items as entries. Nothing of the
/// class is ever imported or run; the instance is data.
#[derive(Debug, Default)]
struct Dict {
    items: Vec<(Value, Value)>,
    index: HashMap<DictKey, usize>,
    class: Option<&'static str>,
}

#[derive(Debug, Hash, PartialEq, Eq)]
enum DictKey {
    Str(Rc<str>),
    Int(i64),
}

impl Dict {
    fn insert(&mut self, key: Value, value: Value) {
        let hashed = match &key {
            Value::Str(s) => Some(DictKey::Str(s.clone())),
            Value::Int(i) => Some(DictKey::Int(*i)),
            _ => None,
        };
        if let Some(k) = hashed {
            if let Some(&i) = self.index.get(&k) {
                self.items[i].1 = value; // like Python: a repeated key keeps its first position
                return;
            }
            self.index.insert(k, self.items.len());
        }
        self.items.push((key, value));
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.index.get(&DictKey::Str(Rc::from(key)))?;
        Some(&self.items[i].1)
    }
}

/// The globals a checkpoint may name. None of them is ever imported or run: REDUCE on one of the
/// callables is interpreted here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    /// A `torch.<X>Storage` class: only a tag for the element type in persistent ids.
    Storage(StorageType),
    /// A class of plain data (`argparse.Namespace`) or of training bookkeeping that fairseq
    /// checkpoints carry beside the weights ([`DATA_CLASSES`]): constructing it (REDUCE, NEWOBJ)
    /// makes an inert instance holding whatever state the pickle gives it.
    Class(&'static str),
    /// A type named only as a value inside such bookkeeping ([`TYPE_NAMES`], e.g. omegaconf's
    /// `ref_type: typing.Any`): never callable.
    TypeName(&'static str),
    /// `copyreg._reconstructor(cls, object, None)`, how protocols 0 and 1 build an instance of
    /// `cls`: allowed only for a [`Global::Class`].
    Reconstructor,
    /// `_codecs.encode(text, "latin1")`: how protocol 2 spells a `bytes` value (a numpy scalar's
    /// data, say). Interpreted as bytes, whose content is never needed.
    Encode,
}

/// Classes whose instances are read as inert data: `argparse.Namespace` (fairseq's old `args`)
/// and the classes of fairseq's training state (`extra_state` meters, hydra/omegaconf config
/// nodes, numpy scalars in logged values). None is imported or constructed; an instance is a
/// dict of the state the pickle gives it. Any other global is refused by name.
const DATA_CLASSES: &[&str] = &[
    "argparse.Namespace",
    "fairseq.logging.meters.AverageMeter",
    "fairseq.logging.meters.SumMeter",
    "fairseq.logging.meters.ConcatTensorMeter",
    "fairseq.logging.meters.TimeMeter",
    "fairseq.logging.meters.StopwatchMeter",
    "fairseq.logging.meters.MetersDict",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
];

/// Types that appear as values in omegaconf metadata (`ref_type`, `object_type`, `key_type`).
const TYPE_NAMES: &[&str] = &[
    "typing.Any",
    "builtins.object",
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
];

/// The table entry spelling `module.name`, if any.
fn find_name(table: &[&'static str], module: &str, name: &str) -> Option<&'static str> {
    table.iter().copied().find(|full| {
        full.len() == module.len() + 1 + name.len()
            && full.starts_with(module)
            && full[module.len()..].starts_with('.')
            && full.ends_with(name)
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageType {
    Float(DType),
    /// Integer and bool storages: their tensors are skipped.
    Integer(&'static str),
    /// Complex and quantized storages: an error if a state dict entry uses one.
    Unsupported(&'static str),
}

const STORAGE_TYPES: &[(&str, StorageType)] = &[
    ("FloatStorage", StorageType::Float(DType::F32)),
    ("HalfStorage", StorageType::Float(DType::F16)),
    ("BFloat16Storage", StorageType::Float(DType::BF16)),
    ("DoubleStorage", StorageType::Float(DType::F64)),
    ("LongStorage", StorageType::Integer("int64")),
    ("IntStorage", StorageType::Integer("int32")),
    ("ShortStorage", StorageType::Integer("int16")),
    ("CharStorage", StorageType::Integer("int8")),
    ("ByteStorage", StorageType::Integer("uint8")),
    ("BoolStorage", StorageType::Integer("bool")),
    ("ComplexHalfStorage", StorageType::Unsupported("complex32")),
    ("ComplexFloatStorage", StorageType::Unsupported("complex64")),
    (
        "ComplexDoubleStorage",
        StorageType::Unsupported("complex128"),
    ),
    ("QUInt8Storage", StorageType::Unsupported("quint8")),
    ("QInt8Storage", StorageType::Unsupported("qint8")),
    ("QInt32Storage", StorageType::Unsupported("qint32")),
    ("QUInt4x2Storage", StorageType::Unsupported("quint4x2")),
    ("QUInt2x4Storage", StorageType::Unsupported("quint2x4")),
];

fn resolve_global(module: &str, name: &str) -> Result<Global, Fail> {
    let global = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch", _) => STORAGE_TYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| Global::Storage(*t)),
        ("copyreg", "_reconstructor") => Some(Global::Reconstructor),
        ("_codecs", "encode") => Some(Global::Encode),
        _ => find_name(DATA_CLASSES, module, name)
            .map(Global::Class)
            .or_else(|| find_name(TYPE_NAMES, module, name).map(Global::TypeName)),
    };
    global.ok_or_else(|| {
        let (module, name) = (module.escape_debug(), name.escape_debug());
        Fail::Unsafe(format!("global {module}.{name} is not allowed"))
    })
}

/// A global's name, for messages.
fn global_name(g: Global) -> String {
    match g {
        Global::OrderedDict => "collections.OrderedDict".into(),
        Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
        Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
        Global::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state".into(),
        Global::Storage(_) => "a torch storage class".into(),
        Global::Class(name) | Global::TypeName(name) => name.into(),
        Global::Reconstructor => "copyreg._reconstructor".into(),
        Global::Encode => "_codecs.encode".into(),
    }
}

/// A storage named by a persistent id: `('storage', torch.<X>Storage, key, location, numel)`.
#[derive(Debug)]
struct Storage {
    kind: StorageType,
    key: Rc<str>,
    numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage, in elements.
#[derive(Debug)]
struct TensorMeta {
    storage: Rc<Storage>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    numel: usize,
}

// ---------------------------------------------------------------------------------------------
// Unpickler

/// Opcode names, for messages about refused opcodes.
fn opcode_name(op: u8) -> String {
    let name = match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return format!("unknown opcode 0x{op:02x}"),
    };
    format!("opcode {name}")
}

/// A bounds-checked cursor over the pickle bytes.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return bad(format!(
                "pickle ends early (wanted {n} bytes at offset {})",
                self.pos
            ));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Fail> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Fail> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Fail> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length prefix, which must fit in what is left of the input.
    fn length(&mut self, n: u64) -> Result<usize, Fail> {
        match usize::try_from(n) {
            Ok(n) if n <= self.data.len() - self.pos => Ok(n),
            _ => bad(format!(
                "length {n} at offset {} runs past the end of the pickle",
                self.pos
            )),
        }
    }

    /// A newline-terminated text argument (GLOBAL).
    fn line(&mut self) -> Result<&'a str, Fail> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return bad("pickle ends inside a text line");
        };
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| Fail::Format("GLOBAL name is not UTF-8".into()))
    }

    fn utf8(&mut self, n: usize) -> Result<Rc<str>, Fail> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Rc::from(s)),
            Err(_) => bad(format!("string at offset {} is not UTF-8", self.pos - n)),
        }
    }
}

struct Unpickler<'a> {
    input: Input<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Obj>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            input: Input { data, pos: 0 },
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objects: Vec::new(),
        }
    }

    /// Run to STOP; returns the top-level value and the container arena it refers into.
    fn load(mut self) -> Result<(Value, Vec<Obj>), Fail> {
        loop {
            let at = self.input.pos;
            let op = self.input.u8()?;
            if op == b'.' {
                let root = self.pop()?;
                return Ok((root, self.objects));
            }
            self.step(op).map_err(|e| match e {
                Fail::Format(r) => {
                    Fail::Format(format!("pickle {} at offset {at}: {r}", opcode_name(op)))
                }
                other => other,
            })?;
        }
    }

    fn step(&mut self, op: u8) -> Result<(), Fail> {
        match op {
            0x80 => self.proto(),
            0x95 => self.input.u64().map(drop), // FRAME: framing is only a read-ahead hint
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'}' => self.push_obj(Obj::Dict(Dict::default())),
            b']' => self.push_obj(Obj::List(Vec::new())),
            b')' => self.push_obj(Obj::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = self.pop_n(n)?;
                self.push_obj(Obj::Tuple(items))
            }
            b'q' => {
                let i = self.input.u8()?;
                self.put(u32::from(i))
            }
            b'r' => {
                let i = self.input.u32()?;
                self.put(i)
            }
            0x94 => {
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| Fail::Format("memo is full".into()))?;
                self.put(i)
            }
            b'h' => {
                let i = self.input.u8()?;
                self.get(u32::from(i))
            }
            b'j' => {
                let i = self.input.u32()?;
                self.get(i)
            }
            b'J' => {
                let v = i32::from_le_bytes(self.input.array()?);
                self.push(Value::Int(i64::from(v)))
            }
            b'K' => {
                let v = self.input.u8()?;
                self.push(Value::Int(i64::from(v)))
            }
            b'M' => {
                let v = self.input.u16()?;
                self.push(Value::Int(i64::from(v)))
            }
            0x8a => self.long1(),
            b'G' => {
                let v = f64::from_be_bytes(self.input.array()?);
                self.push(Value::Float(v))
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'X' => {
                let n = self.input.u32()?;
                self.unicode(u64::from(n))
            }
            0x8c => {
                let n = self.input.u8()?;
                self.unicode(u64::from(n))
            }
            0x8d => {
                let n = self.input.u64()?;
                self.unicode(n)
            }
            b'C' => {
                let n = self.input.u8()?;
                self.bytes(u64::from(n))
            }
            b'B' => {
                let n = self.input.u32()?;
                self.bytes(u64::from(n))
            }
            b'c' => {
                let module = self.input.line()?;
                let name = self.input.line()?;
                self.push(Value::Global(resolve_global(module, name)?))
            }
            0x93 => self.stack_global(),
            b'Q' => self.persistent_load(),
            b'R' => self.reduce(),
            0x81 => self.newobj(false),
            0x92 => self.newobj(true),
            b'b' => self.build(),
            b's' => self.setitem(),
            b'u' => self.setitems(),
            b'a' => {
                let v = self.pop()?;
                self.list_mut()?.push(v);
                Ok(())
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_mut()?.extend(items);
                Ok(())
            }
            other => Err(Fail::Unsafe(format!(
                "{} is not allowed",
                opcode_name(other)
            ))),
        }
    }

    // --- stack and memo

    fn push(&mut self, v: Value) -> Result<(), Fail> {
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> Result<(), Fail> {
        self.objects.push(obj);
        self.push(Value::Obj(self.objects.len() - 1))
    }

    fn pop(&mut self) -> Result<Value, Fail> {
        // A MARK above the top means the pickle pops into a marked region: malformed.
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return bad("stack underflow (pop past a MARK)");
        }
        self.stack
            .pop()
            .ok_or_else(|| Fail::Format("stack underflow".into()))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, Fail> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return bad("stack underflow");
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, Fail> {
        match self.marks.pop() {
            Some(mark) if mark <= self.stack.len() => Ok(self.stack.split_off(mark)),
            _ => bad("no MARK on the stack"),
        }
    }

    fn top(&self) -> Result<&Value, Fail> {
        match (self.stack.last(), self.marks.last()) {
            (Some(_), Some(&m)) if m >= self.stack.len() => bad("stack underflow (top is a MARK)"),
            (Some(v), _) => Ok(v),
            (None, _) => bad("stack underflow"),
        }
    }

    fn put(&mut self, i: u32) -> Result<(), Fail> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn get(&mut self, i: u32) -> Result<(), Fail> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| Fail::Format(format!("memo {i} is not set")))?;
        self.push(v)
    }

    // --- scalars

    fn proto(&mut self) -> Result<(), Fail> {
        let v = self.input.u8()?;
        if v > 5 {
            return bad(format!("pickle protocol {v} is not supported"));
        }
        Ok(())
    }

    /// LONG1: a little-endian two's-complement integer of n bytes; only 64-bit values are needed.
    fn long1(&mut self) -> Result<(), Fail> {
        let n = usize::from(self.input.u8()?);
        let bytes = self.input.take(n)?;
        if n > 8 {
            return bad(format!("{n}-byte integer is too large"));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut buf = [fill; 8];
        buf[..n].copy_from_slice(bytes);
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }

    fn unicode(&mut self, n: u64) -> Result<(), Fail> {
        let n = self.input.length(n)?;
        let s = self.input.utf8(n)?;
        self.push(Value::Str(s))
    }

    fn bytes(&mut self, n: u64) -> Result<(), Fail> {
        let n = self.input.length(n)?;
        self.input.take(n)?;
        self.push(Value::Bytes)
    }

    fn stack_global(&mut self) -> Result<(), Fail> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (&module, &name) {
            (Value::Str(m), Value::Str(n)) => {
                let g = resolve_global(m, n)?;
                self.push(Value::Global(g))
            }
            _ => bad(format!(
                "STACK_GLOBAL on {} and {}",
                module.kind(),
                name.kind()
            )),
        }
    }

    // --- containers

    fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }

    fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Obj::Tuple(items) => Some(items),
            _ => None,
        }
    }

    fn top_obj_mut(&mut self) -> Result<&mut Obj, Fail> {
        match self.top()? {
            Value::Obj(i) => {
                let i = *i;
                self.objects
                    .get_mut(i)
                    .ok_or_else(|| Fail::Format("dangling object".into()))
            }
            other => bad(format!(
                "expected a container on the stack, found {}",
                other.kind()
            )),
        }
    }

    fn list_mut(&mut self) -> Result<&mut Vec<Value>, Fail> {
        match self.top_obj_mut()? {
            Obj::List(items) => Ok(items),
            _ => bad("APPEND to something other than a list"),
        }
    }

    fn dict_mut(&mut self) -> Result<&mut Dict, Fail> {
        match self.top_obj_mut()? {
            Obj::Dict(d) => Ok(d),
            _ => bad("SETITEM on something other than a dict"),
        }
    }

    fn setitem(&mut self) -> Result<(), Fail> {
        let value = self.pop()?;
        let key = self.pop()?;
        self.dict_mut()?.insert(key, value);
        Ok(())
    }

    fn setitems(&mut self) -> Result<(), Fail> {
        let items = self.pop_mark()?;
        if items.len() % 2 != 0 {
            return bad("SETITEMS with an odd number of items");
        }
        let dict = self.dict_mut()?;
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            dict.insert(k, v);
        }
        Ok(())
    }

    /// BUILD sets an object's state (`__setstate__`). A state dict's OrderedDict gets its
    /// `_metadata` attribute this way; tensors may get Python attributes. Both are irrelevant.
    /// An instance of an allowed class takes a dict state (or the dict of a `(state, slots)`
    /// pair) as its attributes: that is how an `argparse.Namespace` gets its fields.
    fn build(&mut self) -> Result<(), Fail> {
        let state = self.pop()?;
        let target = match self.top()? {
            Value::Tensor(_) => return Ok(()),
            v @ Value::Obj(i) if matches!(self.obj(v), Some(Obj::Dict(_))) => *i,
            other => {
                return Err(Fail::Unsafe(format!(
                    "BUILD on {} is not allowed",
                    other.kind()
                )))
            }
        };
        let Some(Obj::Dict(d)) = self.objects.get(target) else {
            return Ok(());
        };
        if d.class.is_none() {
            return Ok(());
        }
        let state = match self.obj(&state) {
            Some(Obj::Tuple(items)) => items.first().cloned().unwrap_or(Value::None),
            _ => state,
        };
        let items = match self.obj(&state) {
            Some(Obj::Dict(s)) => s.items.clone(),
            _ => return Ok(()), // other states (numpy's tuples, None) are not needed
        };
        if let Some(Obj::Dict(d)) = self.objects.get_mut(target) {
            for (k, v) in items {
                d.insert(k, v);
            }
        }
        Ok(())
    }

    /// An inert instance of an allowed class.
    fn instance(&mut self, class: &'static str) -> Value {
        self.objects.push(Obj::Dict(Dict {
            class: Some(class),
            ..Dict::default()
        }));
        Value::Obj(self.objects.len() - 1)
    }

    /// NEWOBJ (`cls.__new__(cls, *args)`) and NEWOBJ_EX (with kwargs): only for allowed classes,
    /// whose instance is made here without running anything.
    fn newobj(&mut self, with_kwargs: bool) -> Result<(), Fail> {
        if with_kwargs {
            self.pop()?;
        }
        let _args = self.pop()?;
        let cls = self.pop()?;
        match cls {
            Value::Global(Global::Class(class)) => {
                let v = self.instance(class);
                self.push(v)
            }
            Value::Global(g) => Err(Fail::Unsafe(format!(
                "constructing {} is not allowed",
                global_name(g)
            ))),
            other => Err(Fail::Unsafe(format!(
                "NEWOBJ on {} is not allowed",
                other.kind()
            ))),
        }
    }

    // --- torch

    fn persistent_load(&mut self) -> Result<(), Fail> {
        let pid = self.pop()?;
        let storage = self.storage_from_pid(&pid)?;
        self.push(Value::Storage(Rc::new(storage)))
    }

    fn storage_from_pid(&self, pid: &Value) -> Result<Storage, Fail> {
        let Some(items) = self.tuple(pid) else {
            return bad(format!("persistent id is {}, not a tuple", pid.kind()));
        };
        match items {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), Value::Str(_location), numel]
                if &**tag == "storage" =>
            {
                let numel = to_usize(numel, "storage size")?;
                Ok(Storage {
                    kind: *kind,
                    key: key.clone(),
                    numel,
                })
            }
            _ => bad("persistent id is not ('storage', torch.<type>Storage, key, location, numel)"),
        }
    }

    fn reduce(&mut self) -> Result<(), Fail> {
        let args = self.pop()?;
        let func = self.pop()?;
        let Value::Global(func) = func else {
            return Err(Fail::Unsafe(format!(
                "REDUCE on {} is not allowed",
                func.kind()
            )));
        };
        let Some(args) = self.tuple(&args).map(<[Value]>::to_vec) else {
            return bad(format!("REDUCE arguments are {}, not a tuple", args.kind()));
        };
        let result = self.call(func, &args)?;
        self.push(result)
    }

    /// Interpret a call of an allowed global.
    fn call(&mut self, func: Global, args: &[Value]) -> Result<Value, Fail> {
        match (func, args) {
            (Global::OrderedDict, []) => {
                self.objects.push(Obj::Dict(Dict::default()));
                Ok(Value::Obj(self.objects.len() - 1))
            }
            (Global::OrderedDict, _) => bad("OrderedDict() with arguments"),
            (
                Global::RebuildTensorV2,
                [storage, offset, size, stride, _grad, _hooks, _meta @ ..],
            ) if args.len() <= 7 => self
                .rebuild_tensor(storage, offset, size, stride)
                .map(|t| Value::Tensor(Rc::new(t))),
            (Global::RebuildTensorV2, _) => {
                bad(format!("_rebuild_tensor_v2 with {} arguments", args.len()))
            }
            (Global::RebuildParameter, [t @ Value::Tensor(_), _, _])
            | (Global::RebuildParameterWithState, [t @ Value::Tensor(_), _, _, _]) => Ok(t.clone()),
            (Global::RebuildParameter | Global::RebuildParameterWithState, _) => {
                bad("parameter rebuilt from something other than a tensor")
            }
            (Global::Storage(_), _) => Err(Fail::Unsafe(
                "calling a storage class is not allowed".into(),
            )),
            (Global::Class(class), _) => Ok(self.instance(class)),
            (Global::Reconstructor, [Value::Global(Global::Class(class)), _, _]) => {
                Ok(self.instance(class))
            }
            (Global::Reconstructor, [Value::Global(g), ..]) => Err(Fail::Unsafe(format!(
                "constructing {} is not allowed",
                global_name(*g)
            ))),
            (Global::Reconstructor, _) => bad("copyreg._reconstructor without a class"),
            (Global::TypeName(name), _) => {
                Err(Fail::Unsafe(format!("calling {name} is not allowed")))
            }
            (Global::Encode, [Value::Str(_), Value::Str(_)]) => Ok(Value::Bytes),
            (Global::Encode, _) => bad("_codecs.encode on something other than text"),
        }
    }

    fn rebuild_tensor(
        &self,
        storage: &Value,
        offset: &Value,
        size: &Value,
        stride: &Value,
    ) -> Result<TensorMeta, Fail> {
        let Value::Storage(storage) = storage else {
            return bad(format!("tensor storage is {}", storage.kind()));
        };
        let offset = to_usize(offset, "storage offset")?;
        let shape = self.usize_tuple(size, "size")?;
        let stride = self.usize_tuple(stride, "stride")?;
        let numel = check_view(storage.numel, offset, &shape, &stride)?;
        Ok(TensorMeta {
            storage: storage.clone(),
            offset,
            shape,
            stride,
            numel,
        })
    }

    fn usize_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>, Fail> {
        let Some(items) = self.tuple(v) else {
            return bad(format!("tensor {what} is {}, not a tuple", v.kind()));
        };
        items.iter().map(|i| to_usize(i, what)).collect()
    }
}

fn to_usize(v: &Value, what: &str) -> Result<usize, Fail> {
    match v {
        Value::Int(i) => {
            usize::try_from(*i).map_err(|_| Fail::Format(format!("{what} {i} is out of range")))
        }
        other => bad(format!("{what} is {}, not an int", other.kind())),
    }
}

/// Check that a strided view stays inside its storage; returns its element count.
fn check_view(
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

// ---------------------------------------------------------------------------------------------
// State dict

/// The (name, tensor) entries of the state dict, in insertion order.
fn state_dict_entries(
    objects: &[Obj],
    root: &Value,
) -> Result<Vec<(String, Rc<TensorMeta>)>, Fail> {
    let as_dict = |v: &Value| match v {
        Value::Obj(i) => match objects.get(*i) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        },
        _ => None,
    };
    let Some(top) = as_dict(root) else {
        return bad(format!(
            "the pickle holds {}, not a state dict",
            root.kind()
        ));
    };
    let all_tensors = top.items.iter().all(|(_, v)| matches!(v, Value::Tensor(_)));
    // Training checkpoints nest the weights beside other things: {"state_dict": ..., "epoch": ...}.
    let nested = ["state_dict", "model"]
        .iter()
        .find_map(|k| top.get(k).and_then(as_dict));
    let dict = match (all_tensors, nested) {
        (true, _) => top,
        (false, Some(d)) => d,
        (false, None) => {
            return bad(
                "the top-level dict holds non-tensors and no \"state_dict\" or \"model\" dict",
            )
        }
    };
    dict.items
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => Ok((name.to_string(), t.clone())),
            (Value::Str(name), other) => bad(format!(
                "state dict entry `{name}` is {}, not a tensor",
                other.kind()
            )),
            (other, _) => bad(format!("state dict key is {}, not a str", other.kind())),
        })
        .collect()
}

/// Most JSON values one checkpoint's configuration may expand to (memo references can make a
/// small pickle describe a huge tree), and how deeply it may nest.
const MAX_JSON_VALUES: usize = 1 << 20;
const MAX_JSON_DEPTH: usize = 64;

/// The top-level entries named by `keys`, as JSON.
fn top_level_json(
    objects: &[Obj],
    root: &Value,
    keys: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, Fail> {
    let mut out = serde_json::Map::new();
    let Some(Obj::Dict(top)) = (match root {
        Value::Obj(i) => objects.get(*i),
        _ => None,
    }) else {
        return Ok(out);
    };
    let mut budget = MAX_JSON_VALUES;
    for key in keys {
        if let Some(v) = top.get(key) {
            out.insert(key.to_string(), to_json(objects, v, &mut budget, 0)?);
        }
    }
    Ok(out)
}

fn to_json(
    objects: &[Obj],
    v: &Value,
    budget: &mut usize,
    depth: usize,
) -> Result<serde_json::Value, Fail> {
    use serde_json::Value as J;
    if depth > MAX_JSON_DEPTH {
        return bad(format!(
            "configuration nests deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    *budget = budget.checked_sub(1).ok_or_else(|| {
        Fail::Format(format!(
            "configuration has more than {MAX_JSON_VALUES} values"
        ))
    })?;
    Ok(match v {
        Value::None | Value::Bytes | Value::Storage(_) | Value::Tensor(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.to_string()),
        Value::Global(g) => J::String(global_name(*g)),
        Value::Obj(i) => match objects.get(*i) {
            Some(Obj::List(items) | Obj::Tuple(items)) => J::Array(
                items
                    .iter()
                    .map(|x| to_json(objects, x, budget, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Some(Obj::Dict(d)) => {
                let mut m = serde_json::Map::new();
                if let Some(class) = d.class.filter(|c| *c != "argparse.Namespace") {
                    m.insert("__class__".into(), J::String(class.into()));
                }
                for (k, x) in &d.items {
                    let key = match k {
                        Value::Str(s) => s.to_string(),
                        Value::Int(i) => i.to_string(),
                        _ => continue,
                    };
                    m.insert(key, to_json(objects, x, budget, depth + 1)?);
                }
                J::Object(m)
            }
            None => J::Null,
        },
    })
}

/// Storage bytes, read once per storage and kept only while later tensors still view them.
struct Storages<'z, R: Read + Seek> {
    zip: &'z mut ZipArchive<R>,
    prefix: String,
    file_len: u64,
    uses: HashMap<Rc<str>, usize>,
    cache: HashMap<Rc<str>, Vec<u8>>,
}

impl<'z, R: Read + Seek> Storages<'z, R> {
    fn new(
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
    fn tensor(
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
    //! Hand-built pickles for the edge cases torch.save never writes, and a mutation fuzz test.
    //! Real torch.save files are tested in `export/tests/pytorch_reader.rs`.

    use std::io::{Cursor, Write};

    use super::*;

    fn read_bytes(bytes: Vec<u8>) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        let path = Path::new("test.bin");
        read_from(path, Cursor::new(bytes), &[])
            .map(|c| c.tensors)
            .map_err(|f| f.at(path))
    }

    fn unicode(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    fn int(v: i64) -> Vec<u8> {
        match v {
            0..=255 => vec![b'K', v as u8],
            _ if i32::try_from(v).is_ok() => [&[b'J'][..], &(v as i32).to_le_bytes()].concat(),
            _ => [&[0x8a, 8][..], &v.to_le_bytes()].concat(),
        }
    }

    fn int_tuple(vs: &[i64]) -> Vec<u8> {
        let mut out = vec![b'('];
        for &v in vs {
            out.extend(int(v));
        }
        out.push(b't');
        out
    }

    /// `{"w": _rebuild_tensor_v2(storage '0' of `numel` elements, offset, size, stride, False, None)}`.
    fn tensor_pickle(
        class: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> Vec<u8> {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(unicode("w"));
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.extend(unicode("storage"));
        p.extend(format!("ctorch\n{class}\n").as_bytes());
        p.extend(unicode("0"));
        p.extend(unicode("cpu"));
        p.extend(int(numel));
        p.extend(b"tQ");
        p.extend(int(offset));
        p.extend(int_tuple(size));
        p.extend(int_tuple(stride));
        p.extend(b"\x89Nt");
        p.extend(b"Ru.");
        p
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(*name, opts).expect("zip entry");
            w.write_all(data).expect("zip write");
        }
        w.finish().expect("zip finish").into_inner()
    }

    fn floats(vs: &[f32]) -> Vec<u8> {
        vs.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn tensor_file(numel: i64, offset: i64, size: &[i64], stride: &[i64], data: &[u8]) -> Vec<u8> {
        let pkl = tensor_pickle("FloatStorage", numel, offset, size, stride);
        zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", data)])
    }

    fn format_reason(r: Result<Vec<(String, Tensor)>, CheckpointError>) -> String {
        match r {
            Err(CheckpointError::Format { reason, path, .. }) => {
                assert_eq!(path, Path::new("test.bin"));
                reason
            }
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    fn unsafe_reason(r: Result<Vec<(String, Tensor)>, CheckpointError>) -> String {
        match r {
            Err(CheckpointError::Unsafe { reason, .. }) => reason,
            other => panic!("expected an unsafe error, got {other:?}"),
        }
    }

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

    fn pickle_only(pkl: &[u8]) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        read_bytes(zip_of(&[("archive/data.pkl", pkl)]))
    }

    #[test]
    fn refused_opcodes_and_calls_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x02}N0.", "opcode POP"),
            (b"\x80\x02])\x81.", "NEWOBJ on a container"),
            (
                b"\x80\x02ccollections\nOrderedDict\n)\x81.",
                "constructing collections.OrderedDict",
            ),
            (
                b"\x80\x02ccopyreg\n_reconstructor\n(ctorch._utils\n_rebuild_parameter\nNNtR.",
                "constructing torch._utils._rebuild_parameter",
            ),
            (b"\x80\x02ctyping\nAny\n)R.", "calling typing.Any"),
            (b"\x80\x02}\xff.", "unknown opcode 0xff"),
            (b"\x80\x02cbuiltins\ngetattr\n.", "global builtins.getattr"),
            (b"\x80\x02ctorch\nload\n.", "global torch.load"),
            (
                b"\x80\x02ctorch\nFloatStorage\n)R.",
                "calling a storage class",
            ),
            (b"\x80\x02])R.", "REDUCE on a container"),
            (b"\x80\x02]}b.", "BUILD on a container"),
            (b"\x80\x04\x8c\x02os\x8c\x06system\x93.", "global os.system"),
        ];
        for (pkl, want) in cases {
            let reason = unsafe_reason(pickle_only(pkl));
            assert!(reason.contains(want), "{want}: {reason}");
        }
    }

    #[test]
    fn namespaces_and_plain_values_are_read_as_json() {
        // pickle.dumps({"args": Namespace(a=1, b=True, c=0.5, d="x", e=None, f=[1, (2, 3)],
        // w2v_args=Namespace(g=False)), "model": {}}, protocol=2)
        let pkl: &[u8] = b"\x80\x02}q\x00(X\x04\x00\x00\x00argsq\x01cargparse\nNamespace\nq\x02)\x81q\x03}q\x04(X\x01\x00\x00\x00aq\x05K\x01X\x01\x00\x00\x00bq\x06\x88X\x01\x00\x00\x00cq\x07G?\xe0\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00dq\x08X\x01\x00\x00\x00xq\tX\x01\x00\x00\x00eq\nNX\x01\x00\x00\x00fq\x0b]q\x0c(K\x01K\x02K\x03\x86q\reX\x08\x00\x00\x00w2v_argsq\x0eh\x02)\x81q\x0f}q\x10X\x01\x00\x00\x00gq\x11\x89sbubX\x05\x00\x00\x00modelq\x12}q\x13u.";
        let zip = zip_of(&[("archive/data.pkl", pkl)]);
        let c = read_from(Path::new("t.pt"), Cursor::new(zip), &["args", "cfg"]).expect("valid");
        assert!(c.tensors.is_empty());
        assert_eq!(
            serde_json::Value::Object(c.entries),
            serde_json::json!({"args": {"a": 1, "b": true, "c": 0.5, "d": "x", "e": null,
                "f": [1, [2, 3]], "w2v_args": {"g": false}}})
        );
    }

    #[test]
    fn malformed_pickles_are_format_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x02.", "stack underflow"),
            (b"\x80\x02(.", "stack underflow"),
            (b"\x80\x02}(K\x01u.", "odd number"),
            (b"\x80\x02}h\x05.", "memo 5 is not set"),
            (b"\x80\x02X\xff\xff\xff\xff", "runs past the end"),
            (
                b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
                "runs past the end",
            ),
            (b"\x80\x02}", "pickle ends early"),
            (
                b"\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.",
                "too large",
            ),
            (b"\x80\x06}.", "protocol 6"),
            (b"\x80\x02K\x01.", "holds an int"),
            (b"\x80\x02}X\x01\x00\x00\x00aK\x01s.", "no \"state_dict\""),
            (
                b"\x80\x02ccollections\nOrderedDict\n(K\x01tR.",
                "OrderedDict() with arguments",
            ),
            (
                b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.",
                "0 arguments",
            ),
        ];
        for (pkl, want) in cases {
            let reason = format_reason(pickle_only(pkl));
            assert!(reason.contains(want), "{want}: {reason}");
        }
    }

    #[test]
    fn deep_nesting_and_memo_reuse_stay_cheap() {
        // 200k nested lists: dropping them must not recurse.
        let n = 200_000;
        let mut pkl = b"\x80\x02".to_vec();
        pkl.extend(std::iter::repeat_n(b']', n));
        pkl.extend(std::iter::repeat_n(b'a', n - 1));
        pkl.push(b'.');
        assert!(format_reason(pickle_only(&pkl)).contains("holds a container"));
        // Each step pairs the memoized value with itself: a 2^100000-leaf tree if copied.
        let mut pkl = b"\x80\x02]q\x00".to_vec();
        for _ in 0..100_000 {
            pkl.extend(b"h\x00h\x00\x86q\x00");
        }
        pkl.push(b'.');
        assert!(format_reason(pickle_only(&pkl)).contains("holds a container"));
    }

    #[test]
    fn archive_layout_errors() {
        let pkl = tensor_pickle("FloatStorage", 1, 0, &[1], &[1]);
        let reason = format_reason(read_bytes(zip_of(&[("archive/other.pkl", &pkl)])));
        assert!(reason.contains("no data.pkl"), "{reason}");
        let two = zip_of(&[("a/data.pkl", &pkl), ("b/data.pkl", &pkl)]);
        assert!(format_reason(read_bytes(two)).contains("several data.pkl"));
        let big = zip_of(&[
            ("a/data.pkl", &pkl),
            ("a/byteorder", b"big"),
            ("a/data/0", &[0; 4]),
        ]);
        assert!(format_reason(read_bytes(big)).contains("byte order"));
        let bare = zip_of(&[("data.pkl", &pkl), ("data/0", &floats(&[3.]))]);
        assert_eq!(read_bytes(bare).expect("no prefix")[0].1.data, vec![3.]);
        assert!(format_reason(read_bytes(Vec::new())).contains("not a torch.save zip"));
    }

    // --- mutation fuzzing -----------------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Bytes that steer a pickle towards interesting states: opcodes and boundary values.
    const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff()tq hjrKJMX\x8a\x85\x86\x87RQsub.}]";

    fn mutate(rng: &mut XorShift, data: &mut Vec<u8>) {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len() + 1);
            match rng.below(6) {
                0 if at < data.len() => data[at] ^= 1 << rng.below(8),
                1 if at < data.len() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
                2 => data.truncate(at),
                3 => {
                    let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                    data.splice(at..at, bytes);
                }
                4 => {
                    let end = (at + 1 + rng.below(16)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                _ => {
                    // Repeat a chunk: duplicated opcodes and arguments.
                    let end = (at + 1 + rng.below(32)).min(data.len());
                    let chunk = data[at.min(end)..end].to_vec();
                    data.splice(at..at, chunk);
                }
            }
        }
    }

    /// Every entry of a fixture, to rebuild it around a mutated data.pkl (a fresh CRC, so the
    /// mutation reaches the unpickler).
    fn entries(file: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut zip = ZipArchive::new(Cursor::new(file)).expect("fixture is a zip");
        (0..zip.len())
            .map(|i| {
                let mut e = zip.by_index(i).expect("fixture entry");
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).expect("fixture entry data");
                (e.name().to_string(), buf)
            })
            .collect()
    }

    #[test]
    fn mutated_files_never_panic() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pickle");
        let names = [
            "float_types.bin",
            "views.bin",
            "module.bin",
            "params.bin",
            "nested_state_dict.bin",
            "proto4.bin",
            "deflate.bin",
        ];
        let files: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                std::fs::read(dir.join(n)).expect("fixture (tools/fixtures/gen_pickle_cases.py)")
            })
            .collect();
        let unpacked: Vec<_> = files.iter().map(|f| entries(f)).collect();
        let mut outcomes = [0u64; 2];
        // W2V_FUZZ_ITERATIONS / W2V_FUZZ_SEED allow longer runs by hand.
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let iterations = env("W2V_FUZZ_ITERATIONS").unwrap_or(5000);
        let mut rng = XorShift(env("W2V_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15).max(1));
        for iteration in 0..iterations {
            let which = rng.below(files.len());
            let bytes = if iteration % 2 == 0 {
                let mut f = files[which].clone();
                mutate(&mut rng, &mut f);
                f
            } else {
                let mut es = unpacked[which].clone();
                let pkl = es
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("data.pkl"))
                    .expect("data.pkl");
                mutate(&mut rng, &mut pkl.1);
                let refs: Vec<(&str, &[u8])> =
                    es.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
                zip_of(&refs)
            };
            let result = std::panic::catch_unwind(|| read_bytes(bytes.clone()));
            match result {
                Ok(r) => outcomes[usize::from(r.is_ok())] += 1,
                Err(_) => {
                    let dump =
                        std::env::temp_dir().join(format!("w2v-pickle-fuzz-{iteration}.bin"));
                    let _ = std::fs::write(&dump, &bytes);
                    panic!(
                        "iteration {iteration} ({}) panicked; input saved to {}",
                        names[which],
                        dump.display()
                    );
                }
            }
        }
        // Most mutations must be caught, but some (e.g. in tensor data) still read fine.
        eprintln!(
            "mutations: {} errors, {} read fine",
            outcomes[0], outcomes[1]
        );
        assert!(
            outcomes[0] > 1000 && outcomes[1] > 50,
            "errors/ok: {outcomes:?}"
        );
    }
}
