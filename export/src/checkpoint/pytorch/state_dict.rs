//! The state dict in the unpickled object tree: its (name, tensor) entries, and the top-level
//! entries asked for beside it as JSON.

use std::rc::Rc;

use super::pickle::{global_name, Obj, TensorMeta, Value};
use super::{bad, Fail};

/// The (name, tensor) entries of the state dict, in insertion order.
pub(super) fn state_dict_entries(
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
pub(super) fn top_level_json(
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;

    use super::super::read_from;
    use super::super::test_pickles::zip_of;

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
}
