//! The Zarr v2 view that both readers build (groups, arrays, chunk refs) and
//! its Kerchunk version-1 JSON encoding.
//!
//! The metadata documents inside the references (`.zarray`, `.zattrs`) are
//! written by hand rather than through `serde_json::Value`: attribute values
//! may be NaN or ±Infinity, which zarr's Python JSON reader accepts as bare
//! tokens but `serde_json` cannot represent.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// An attribute (or fill) value. Lists hold scalars of one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    List(Vec<Value>),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Writes the value as JSON; non-finite floats as the bare tokens
    /// `NaN`/`Infinity`/`-Infinity` (what Python's `json` reads and writes).
    fn write(&self, out: &mut String) {
        match self {
            Value::Str(s) => write_str(out, s),
            Value::Int(i) => write!(out, "{i}").unwrap(),
            Value::UInt(u) => write!(out, "{u}").unwrap(),
            Value::Float(f) => write_float(out, *f, false),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialise"));
}

/// Finite floats in the shortest form that reads back to the same f64.
/// Non-finite ones as bare tokens, or quoted as zarr v2 wants for `fill_value`.
fn write_float(out: &mut String, f: f64, quoted_non_finite: bool) {
    let token = if f.is_nan() {
        "NaN"
    } else if f == f64::INFINITY {
        "Infinity"
    } else if f == f64::NEG_INFINITY {
        "-Infinity"
    } else {
        // serde_json writes exponents as `1e+20`, as Python's json does.
        out.push_str(&serde_json::Number::from_f64(f).expect("finite").to_string());
        return;
    };
    if quoted_non_finite {
        write!(out, "\"{token}\"").unwrap();
    } else {
        out.push_str(token);
    }
}

pub(crate) type Attrs = Vec<(String, Value)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Int,
    UInt,
    Float,
    /// Fixed-length bytes (`|S<n>`): netCDF NC_CHAR is `|S1`.
    Bytes,
    /// Variable-length UTF-8 strings (`|O` with the `vlen-utf8` codec): NC_STRING.
    VlenStr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dtype {
    pub kind: Kind,
    pub size: usize,
    pub big_endian: bool,
}

impl Dtype {
    pub(crate) fn zarr(&self) -> String {
        let (kind, size) = match self.kind {
            Kind::Int => ('i', self.size),
            Kind::UInt => ('u', self.size),
            Kind::Float => ('f', self.size),
            Kind::Bytes => ('S', self.size),
            Kind::VlenStr => return "|O".into(),
        };
        let order = if self.size == 1 || self.kind == Kind::Bytes {
            '|'
        } else if self.big_endian {
            '>'
        } else {
            '<'
        };
        format!("{order}{kind}{size}")
    }

    /// Decodes one element (in this dtype's byte order) to a value.
    pub(crate) fn decode(&self, b: &[u8]) -> Option<Value> {
        if b.len() != self.size {
            return None;
        }
        let mut buf = [0u8; 8];
        if self.big_endian {
            buf[8 - self.size..].copy_from_slice(b);
            buf.reverse();
        } else {
            buf[..self.size].copy_from_slice(b);
        }
        let bits = u64::from_le_bytes(buf);
        Some(match (self.kind, self.size) {
            (Kind::Float, 4) => Value::Float(f32::from_bits(bits as u32) as f64),
            (Kind::Float, 8) => Value::Float(f64::from_bits(bits)),
            (Kind::Int, n @ (1 | 2 | 4 | 8)) => {
                let shift = 64 - 8 * n as u32;
                Value::Int(((bits << shift) as i64) >> shift)
            }
            (Kind::UInt, 1 | 2 | 4 | 8) => Value::UInt(bits),
            _ => return None,
        })
    }

    /// Decodes every element of `bytes` to f64 (for time axes).
    pub(crate) fn decode_f64s(&self, bytes: &[u8]) -> Option<Vec<f64>> {
        bytes
            .chunks_exact(self.size)
            .map(|b| match self.decode(b)? {
                Value::Float(f) => Some(f),
                Value::Int(i) => Some(i as f64),
                Value::UInt(u) => Some(u as f64),
                _ => None,
            })
            .collect()
    }

    /// Encodes f64 values in this dtype; None when a value does not fit exactly
    /// (an integer dtype given a fraction).
    pub(crate) fn encode_f64s(&self, values: &[f64]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(values.len() * self.size);
        for &v in values {
            let mut le = match (self.kind, self.size) {
                (Kind::Float, 4) => (v as f32).to_le_bytes().to_vec(),
                (Kind::Float, 8) => v.to_le_bytes().to_vec(),
                (Kind::Int, n) if v.fract() == 0.0 && v.abs() < 2f64.powi(8 * n as i32 - 1) => {
                    (v as i64).to_le_bytes()[..n].to_vec()
                }
                (Kind::UInt, n) if v.fract() == 0.0 && v >= 0.0 && v < 2f64.powi(8 * n as i32) => {
                    (v as u64).to_le_bytes()[..n].to_vec()
                }
                _ => return None,
            };
            if self.big_endian {
                le.reverse();
            }
            out.extend_from_slice(&le);
        }
        Some(out)
    }
}

/// One numcodecs codec: `id` then its parameters, in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Codec {
    pub id: Cow<'static, str>,
    pub params: Vec<(Cow<'static, str>, Value)>,
}

impl Codec {
    pub(crate) fn new(id: &'static str) -> Codec {
        Codec { id: Cow::Borrowed(id), params: Vec::new() }
    }
    pub(crate) fn with(mut self, key: &'static str, value: Value) -> Codec {
        self.params.push((Cow::Borrowed(key), value));
        self
    }
}

/// Where one chunk's (encoded) bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Chunk {
    /// The URL is not cached: a cached tree gets it back from `set_url`.
    Ref {
        #[serde(skip)]
        url: Arc<str>,
        offset: u64,
        length: u64,
    },
    Inline(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Array {
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub dtype: Dtype,
    /// Zarr `fill_value`: what missing chunks read as (None: null).
    pub fill_value: Option<Value>,
    /// Applied in order on encode (the HDF5 pipeline order); zarr's
    /// `compressor` stays null, as in Python kerchunk.
    pub filters: Vec<Codec>,
    pub dims: Vec<String>,
    pub attrs: Attrs,
    /// Keyed by chunk index; BTreeMap order is C order of the chunk grid.
    pub chunk_refs: BTreeMap<Vec<u64>, Chunk>,
    /// Decoded values (C order, in `dtype`'s byte order) when they were read:
    /// time axes (for combining) and small arrays. Never serialised.
    pub values: Option<Vec<u8>>,
}

impl Array {
    pub(crate) fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub(crate) fn nbytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.size as u64
    }

    /// Number of chunks in the full grid.
    pub(crate) fn grid_len(&self) -> u64 {
        self.shape.iter().zip(&self.chunks).map(|(s, c)| s.div_ceil(*c)).product()
    }

    fn zarray(&self) -> String {
        let mut s = String::from("{\"shape\":");
        write_u64s(&mut s, &self.shape);
        s.push_str(",\"chunks\":");
        write_u64s(&mut s, &self.chunks);
        s.push_str(",\"dtype\":");
        write_str(&mut s, &self.dtype.zarr());
        s.push_str(",\"fill_value\":");
        match &self.fill_value {
            None => s.push_str("null"),
            Some(Value::Float(f)) => write_float(&mut s, *f, true),
            Some(v) => v.write(&mut s),
        }
        s.push_str(",\"order\":\"C\",\"filters\":");
        if self.filters.is_empty() {
            s.push_str("null");
        } else {
            s.push('[');
            for (i, codec) in self.filters.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{\"id\":");
                write_str(&mut s, &codec.id);
                for (k, v) in &codec.params {
                    s.push(',');
                    write_str(&mut s, k);
                    s.push(':');
                    v.write(&mut s);
                }
                s.push('}');
            }
            s.push(']');
        }
        s.push_str(",\"dimension_separator\":\".\",\"compressor\":null,\"zarr_format\":2}");
        s
    }

    fn zattrs(&self) -> String {
        let dims = Value::List(self.dims.iter().map(|d| Value::Str(d.clone())).collect());
        let mut all = vec![("_ARRAY_DIMENSIONS".to_string(), dims)];
        all.extend(self.attrs.iter().filter(|(k, _)| k != "_ARRAY_DIMENSIONS").cloned());
        attrs_json(&all)
    }
}

fn write_u64s(out: &mut String, v: &[u64]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{x}").unwrap();
    }
    out.push(']');
}

pub(crate) fn attrs_json(attrs: &[(String, Value)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write_str(&mut s, k);
        s.push(':');
        v.write(&mut s);
    }
    s.push('}');
    s
}

/// Chunk key: indices joined by "."; a scalar's only chunk is "0".
pub(crate) fn chunk_key(index: &[u64]) -> String {
    if index.is_empty() {
        return "0".into();
    }
    index.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Groups (path "" is the root) and arrays (path "var" or "group/var").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub groups: BTreeMap<String, Attrs>,
    pub arrays: BTreeMap<String, Array>,
    /// Variables that could not be referenced, with the reason (never
    /// dropped silently: callers report them).
    pub skipped: BTreeMap<String, String>,
    /// Kerchunk `templates` (name → default value), for URLs like `{{u}}/x.nc`.
    pub templates: BTreeMap<String, String>,
}

impl Tree {
    /// Points every chunk reference at `url` (a per-file tree has one target).
    pub(crate) fn set_url(&mut self, url: &Arc<str>) {
        for array in self.arrays.values_mut() {
            for chunk in array.chunk_refs.values_mut() {
                if let Chunk::Ref { url: u, .. } = chunk {
                    *u = url.clone();
                }
            }
        }
    }

    /// Kerchunk version-1 JSON: groups first, then each array's `.zarray`,
    /// `.zattrs` and chunks in C order; one reference per line.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut out = String::from("{\"version\":1,");
        if !self.templates.is_empty() {
            out.push_str("\"templates\":{");
            for (i, (k, v)) in self.templates.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, k);
                out.push(':');
                write_str(&mut out, v);
            }
            out.push_str("},");
        }
        out.push_str("\"refs\":{");
        let mut first = true;
        let mut entry = |out: &mut String, key: &str, value: &str| {
            out.push_str(if first { "\n" } else { ",\n" });
            first = false;
            write_str(out, key);
            out.push(':');
            out.push_str(value);
        };
        let quoted = |s: &str| serde_json::to_string(s).expect("strings always serialise");
        for (path, attrs) in &self.groups {
            let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
            entry(&mut out, &format!("{prefix}.zgroup"), &quoted("{\"zarr_format\":2}"));
            entry(&mut out, &format!("{prefix}.zattrs"), &quoted(&attrs_json(attrs)));
        }
        for (path, array) in &self.arrays {
            entry(&mut out, &format!("{path}/.zarray"), &quoted(&array.zarray()));
            entry(&mut out, &format!("{path}/.zattrs"), &quoted(&array.zattrs()));
            for (index, chunk) in &array.chunk_refs {
                let value = match chunk {
                    Chunk::Ref { url, offset, length } => format!("[{},{offset},{length}]", quoted(url)),
                    Chunk::Inline(bytes) => quoted(&inline_text(bytes)),
                };
                entry(&mut out, &format!("{path}/{}", chunk_key(index)), &value);
            }
        }
        out.push_str("\n}}\n");
        out.into_bytes()
    }
}

/// Inline chunk text as fsspec reads it: printable ASCII verbatim, anything
/// else as `base64:` (also text that itself starts with "base64:").
fn inline_text(bytes: &[u8]) -> String {
    let printable = bytes.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t');
    if printable && !bytes.starts_with(b"base64:") {
        String::from_utf8(bytes.to_vec()).expect("ASCII")
    } else {
        format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// numcodecs `vlen-utf8` encoding: item count, then each item's byte length
/// and bytes, all lengths u32 little-endian.
pub(crate) fn encode_vlen_utf8(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_strings_and_decoding() {
        let f4 = Dtype { kind: Kind::Float, size: 4, big_endian: true };
        assert_eq!(f4.zarr(), ">f4");
        assert_eq!(f4.decode(&1.5f32.to_be_bytes()), Some(Value::Float(1.5)));
        let i1 = Dtype { kind: Kind::Int, size: 1, big_endian: true };
        assert_eq!(i1.zarr(), "|i1");
        assert_eq!(i1.decode(&[0xff]), Some(Value::Int(-1)));
        let i2 = Dtype { kind: Kind::Int, size: 2, big_endian: false };
        assert_eq!(i2.decode(&(-300i16).to_le_bytes()), Some(Value::Int(-300)));
        assert_eq!(Dtype { kind: Kind::Bytes, size: 1, big_endian: false }.zarr(), "|S1");
        assert_eq!(i2.encode_f64s(&[1.5]), None);
        assert_eq!(i2.encode_f64s(&[-2.0]), Some((-2i16).to_le_bytes().to_vec()));
    }

    #[test]
    fn values_write_python_json() {
        let mut s = String::new();
        Value::List(vec![Value::Float(f64::NAN), Value::Float(1e20), Value::Int(-3)]).write(&mut s);
        assert_eq!(s, "[NaN,1e+20,-3]");
        assert_eq!(inline_text(b"abc"), "abc");
        assert_eq!(inline_text(&[0, 1]), "base64:AAE=");
        assert_eq!(chunk_key(&[]), "0");
        assert_eq!(chunk_key(&[1, 0, 2]), "1.0.2");
    }
}
