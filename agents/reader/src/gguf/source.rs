//! The bounded reader under the header parser: every count and length is checked against what
//! is left of the file before anything is allocated, skipped or kept.

use std::io::{self, Read};

use super::header::{TensorInfo, Value};
use super::{GgufError, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_KEPT_ARRAY, MAX_KEPT_STRING, MAX_TENSOR_NAME, ggml_type};

/// GGUF metadata value type ids.
pub(super) mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// Bytes of one element of a fixed-size type.
    pub fn fixed_size(t: u32) -> Option<u64> {
        match t {
            U8 | I8 | BOOL => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            _ => None,
        }
    }
}

/// A reader that knows its position and how much of the file is left.
pub(super) struct Source<R> {
    pub(super) inner: R,
    pub(super) pos: u64,
    pub(super) len: u64,
}

impl<R: Read> Source<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    pub(super) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        let n = buf.len() as u64;
        if n > self.left() {
            return Err(GgufError::Truncated { offset: self.len, what: what.to_string() });
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(GgufError::Truncated { offset: self.pos, what: what.to_string() })
            }
            Err(source) => Err(GgufError::Io { offset: self.pos, what: what.to_string(), source }),
        }
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Fails unless `count` items of at least `min_each` bytes fit in the rest of the file.
    pub(super) fn check_count(&self, at: u64, what: &str, count: u64, min_each: u64) -> Result<(), GgufError> {
        let needed = count.saturating_mul(min_each);
        if needed > self.left() {
            return Err(GgufError::PastEnd {
                offset: at,
                what: what.to_string(),
                value: count,
                needed,
                left: self.left(),
            });
        }
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated { offset: self.len, what: what.to_string() });
        }
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|source| GgufError::Io {
            offset: self.pos,
            what: what.to_string(),
            source,
        })?;
        self.pos += copied;
        if copied < n {
            return Err(GgufError::Truncated { offset: self.pos, what: what.to_string() });
        }
        Ok(())
    }

    /// Reads a length-prefixed string of at most `max` bytes, which must fit in the file.
    pub(super) fn string(&mut self, what: &str, max: u64) -> Result<String, GgufError> {
        match self.string_or_len(what, max, true)? {
            Ok(s) => Ok(s),
            // Unreachable in practice: `reject_long` turns long strings into errors.
            Err(len) => Err(GgufError::Invalid {
                offset: self.pos,
                what: what.to_string(),
                detail: format!("{len} bytes long"),
            }),
        }
    }

    /// Reads a string, or skips it and returns its length when it is longer than `max`.
    fn string_or_len(&mut self, what: &str, max: u64, reject_long: bool) -> Result<Result<String, u64>, GgufError> {
        let at = self.pos;
        let len = self.u64(&format!("the length of {what}"))?;
        if len > self.left() {
            return Err(GgufError::PastEnd {
                offset: at,
                what: format!("the length of {what}"),
                value: len,
                needed: len,
                left: self.left(),
            });
        }
        if len > max {
            if reject_long {
                return Err(GgufError::Invalid {
                    offset: at,
                    what: format!("the length of {what}"),
                    detail: format!("{len} bytes is longer than the {max} allowed"),
                });
            }
            self.skip(len, what)?;
            return Ok(Err(len));
        }
        // `len <= max` and `len <= left`: the allocation is small and backed by the file.
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, what)?;
        Ok(Ok(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn scalar(&mut self, t: u32, what: &str) -> Result<Value, GgufError> {
        Ok(match t {
            vt::U8 => Value::UInt(u64::from(u8::from_le_bytes(self.array(what)?))),
            vt::I8 => Value::Int(i64::from(i8::from_le_bytes(self.array(what)?))),
            vt::U16 => Value::UInt(u64::from(u16::from_le_bytes(self.array(what)?))),
            vt::I16 => Value::Int(i64::from(i16::from_le_bytes(self.array(what)?))),
            vt::U32 => Value::UInt(u64::from(u32::from_le_bytes(self.array(what)?))),
            vt::I32 => Value::Int(i64::from(i32::from_le_bytes(self.array(what)?))),
            vt::F32 => Value::Float(f64::from(f32::from_le_bytes(self.array(what)?))),
            vt::BOOL => Value::Bool(u8::from_le_bytes(self.array(what)?) != 0),
            vt::U64 => Value::UInt(u64::from_le_bytes(self.array(what)?)),
            vt::I64 => Value::Int(i64::from_le_bytes(self.array(what)?)),
            vt::F64 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            _ => {
                return Err(GgufError::Invalid {
                    offset: self.pos,
                    what: what.to_string(),
                    detail: format!("{t} is not a fixed-size value type"),
                });
            }
        })
    }

    pub(super) fn value(&mut self, t: u32, type_at: u64, key: &str, depth: u32) -> Result<Value, GgufError> {
        let what = format!("the value of key `{key}`");
        match t {
            vt::STRING => Ok(match self.string_or_len(&what, MAX_KEPT_STRING, false)? {
                Ok(s) => Value::Str(s),
                Err(len) => Value::LongStr(len),
            }),
            vt::ARRAY => self.array_value(key, depth),
            t if vt::fixed_size(t).is_some() => self.scalar(t, &what),
            _ => Err(GgufError::Invalid {
                offset: type_at,
                what: format!("the value type of key `{key}`"),
                detail: format!("{t} is not a GGUF value type (0–12)"),
            }),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Value, GgufError> {
        let type_at = self.pos;
        let elem_type = self.u32(&format!("the element type of array `{key}`"))?;
        let len_at = self.pos;
        let what_len = format!("the length of array `{key}`");
        let len = self.u64(&what_len)?;
        if let Some(size) = vt::fixed_size(elem_type) {
            self.check_count(len_at, &what_len, len, size)?;
            let integer = !matches!(elem_type, vt::F32 | vt::F64 | vt::BOOL);
            if integer && len <= MAX_KEPT_ARRAY {
                let mut ints = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    match self.scalar(elem_type, &format!("an element of array `{key}`"))? {
                        Value::UInt(v) => ints.push(i64::try_from(v).unwrap_or(i64::MAX)),
                        Value::Int(v) => ints.push(v),
                        _ => {}
                    }
                }
                return Ok(Value::Array { elem_type, len, ints: Some(ints) });
            }
            self.skip(len * size, &format!("the elements of array `{key}`"))?;
            return Ok(Value::Array { elem_type, len, ints: None });
        }
        match elem_type {
            vt::STRING => {
                // Each element is at least its 8-byte length; this bounds the loop by the file.
                self.check_count(len_at, &what_len, len, 8)?;
                for i in 0..len {
                    // Vocabulary entries are only skipped: their count is all the Reader needs.
                    let _skipped = self.string_or_len(&format!("element {i} of array `{key}`"), 0, false)?;
                }
            }
            vt::ARRAY => {
                if depth + 1 >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Invalid {
                        offset: type_at,
                        what: format!("array `{key}`"),
                        detail: format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
                    });
                }
                self.check_count(len_at, &what_len, len, 12)?;
                for _ in 0..len {
                    self.array_value(key, depth + 1)?;
                }
            }
            _ => {
                return Err(GgufError::Invalid {
                    offset: type_at,
                    what: format!("the element type of array `{key}`"),
                    detail: format!("{elem_type} is not a GGUF value type (0–12)"),
                });
            }
        }
        Ok(Value::Array { elem_type, len, ints: None })
    }

    pub(super) fn tensor_info(&mut self, index: u64) -> Result<TensorInfo, GgufError> {
        let name = self.string(&format!("the name of tensor {index}"), MAX_TENSOR_NAME)?;
        let dims_at = self.pos;
        let n_dims = self.u32(&format!("the dimension count of tensor `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Invalid {
                offset: dims_at,
                what: format!("the dimension count of tensor `{name}`"),
                detail: format!("{n_dims} is not between 1 and {MAX_DIMS}"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.u64(&format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_at = self.pos;
        let ggml_type_id = self.u32(&format!("the type of tensor `{name}`"))?;
        let offset = self.u64(&format!("the data offset of tensor `{name}`"))?;

        let ty = ggml_type(ggml_type_id).ok_or_else(|| GgufError::Invalid {
            offset: type_at,
            what: format!("the type of tensor `{name}`"),
            detail: format!("{ggml_type_id} is not a ggml type this reader knows"),
        })?;
        let invalid = |detail: String| GgufError::Invalid {
            offset: dims_at,
            what: format!("the shape of tensor `{name}`"),
            detail,
        };
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| invalid(format!("{dims:?} has more elements than fit in 64 bits")))?;
        let ne0 = dims.first().copied().unwrap_or(0);
        if ne0 % ty.block_elements != 0 {
            return Err(invalid(format!(
                "the first dimension {ne0} is not a multiple of the {}-element blocks of {}",
                ty.block_elements, ty.name
            )));
        }
        let rows = dims.iter().skip(1).try_fold(1u64, |acc, d| acc.checked_mul(*d));
        let bytes = rows
            .and_then(|r| (ne0 / ty.block_elements).checked_mul(ty.block_bytes)?.checked_mul(r))
            .ok_or_else(|| invalid(format!("{dims:?} of {} needs more bytes than fit in 64 bits", ty.name)))?;
        Ok(TensorInfo { name, dims, ggml_type: ggml_type_id, offset, elements, bytes })
    }
}
