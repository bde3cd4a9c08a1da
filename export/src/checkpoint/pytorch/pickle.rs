//! The restricted pickle machine: the values it builds, the globals a checkpoint may name (none
//! ever imported or run), and the unpickler, which interprets only the opcodes a state dict needs.

use std::collections::HashMap;
use std::rc::Rc;

use super::storage::check_view;
use super::{bad, Fail};
use crate::checkpoint::DType;

/// A value on the unpickler stack. Containers live in an arena and are referred to by index, so
/// memo references share (and see mutations of) one object as in Python, cloning is O(1), and
/// dropping deeply nested input cannot recurse.
#[derive(Clone, Debug)]
pub(super) enum Value {
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
    pub(super) fn kind(&self) -> &'static str {
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
pub(super) enum Obj {
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
pub(super) struct Dict {
    pub(super) items: Vec<(Value, Value)>,
    index: HashMap<DictKey, usize>,
    pub(super) class: Option<&'static str>,
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

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.index.get(&DictKey::Str(Rc::from(key)))?;
        Some(&self.items[i].1)
    }
}

/// The globals a checkpoint may name. None of them is ever imported or run: REDUCE on one of the
/// callables is interpreted here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Global {
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
pub(super) enum StorageType {
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
pub(super) fn global_name(g: Global) -> String {
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
pub(super) struct Storage {
    pub(super) kind: StorageType,
    pub(super) key: Rc<str>,
    pub(super) numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage, in elements.
#[derive(Debug)]
pub(super) struct TensorMeta {
    pub(super) storage: Rc<Storage>,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
    pub(super) numel: usize,
}

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

pub(super) struct Unpickler<'a> {
    input: Input<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Obj>,
}

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Unpickler {
            input: Input { data, pos: 0 },
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objects: Vec::new(),
        }
    }

    /// Run to STOP; returns the top-level value and the container arena it refers into.
    pub(super) fn load(mut self) -> Result<(Value, Vec<Obj>), Fail> {
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

#[cfg(test)]
mod tests {
    use super::super::test_pickles::{format_reason, pickle_only, unsafe_reason};

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
}
