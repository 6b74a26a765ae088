//! A minimal protobuf wire-format reader: the fields of a message one at a time,
//! borrowed from the input. The pprof and Push decoders walk messages with it instead
//! of materialising them, so that they can check their limits before allocating.
//!
//! In: bytes of one message. Out: `(field number, Value)` pairs. Must not: allocate,
//! copy, or panic on any input (a malformed message is a `WireError`).

/// A malformed protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("protobuf: {0}")]
pub struct WireError(pub &'static str);

/// One field's value, as the wire type gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: a string, bytes, a message or a packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The value as an integer (varint or fixed), or an error naming `what`.
    pub fn int(self, what: &'static str) -> Result<u64, WireError> {
        match self {
            Value::Varint(v) | Value::Fixed64(v) => Ok(v),
            Value::Fixed32(v) => Ok(u64::from(v)),
            Value::Bytes(_) => Err(WireError(what)),
        }
    }

    /// The value as length-delimited bytes, or an error naming `what`.
    pub fn bytes(self, what: &'static str) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError(what)),
        }
    }

    /// The integers of a repeated scalar field: one unpacked value, or a packed run of
    /// varints. `f` is called for each; it may stop the walk by returning an error.
    pub fn each_int<E: From<WireError>>(self, mut f: impl FnMut(u64) -> Result<(), E>) -> Result<(), E> {
        match self {
            Value::Bytes(mut b) => {
                while !b.is_empty() {
                    f(varint(&mut b)?)?;
                }
                Ok(())
            }
            other => f(other.int("repeated integer")?),
        }
    }
}

/// Reads a varint from the front of `buf`, advancing it.
pub fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut out = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(WireError("truncated varint"))?;
        *buf = rest;
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(out);
        }
    }
    Err(WireError("varint longer than 10 bytes"))
}

/// The fields of one message, in wire order.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// Walks the fields of the message in `buf`.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = varint(&mut self.buf)?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError("field number out of range"))?;
        if number == 0 {
            return Err(WireError("field number 0"));
        }
        let take = |buf: &mut &'a [u8], n: usize| -> Result<&'a [u8], WireError> {
            if buf.len() < n {
                return Err(WireError("truncated field"));
            }
            let (head, rest) = buf.split_at(n);
            *buf = rest;
            Ok(head)
        };
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.buf)?),
            1 => {
                let b = take(&mut self.buf, 8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| WireError("fixed64"))?))
            }
            2 => {
                let len = usize::try_from(varint(&mut self.buf)?).map_err(|_| WireError("length out of range"))?;
                Value::Bytes(take(&mut self.buf, len)?)
            }
            5 => {
                let b = take(&mut self.buf, 4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| WireError("fixed32"))?))
            }
            _ => return Err(WireError("unsupported wire type (groups are not used by pprof or Push)")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // Stop after the first error: the rest cannot be framed.
            self.buf = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn reads_what_prost_writes() {
        let msg = pprof::protos::Location {
            id: 300,
            mapping_id: 1,
            address: u64::MAX,
            line: vec![pprof::protos::Line { function_id: 7, line: -1 }],
            is_folded: true,
        };
        let bytes = msg.encode_to_vec();
        let got: Vec<(u32, Value)> = fields(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(got[0], (1, Value::Varint(300)));
        assert_eq!(got[2], (3, Value::Varint(u64::MAX)));
        let line: Vec<_> = fields(got[3].1.bytes("line").unwrap()).collect::<Result<_, _>>().unwrap();
        assert_eq!(line[0], (1, Value::Varint(7)));
        let mut ids = Vec::new();
        Value::Bytes(&[1, 0x96, 0x01])
            .each_int::<WireError>(|v| {
                ids.push(v);
                Ok(())
            })
            .unwrap();
        assert_eq!(ids, [1, 150]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[0x0a, 0x05, 1][..], &[0xff; 12], &[0x0b], &[0x00], &[0x09, 1, 2]] {
            assert!(fields(bad).any(|f| f.is_err()), "{bad:?}");
        }
    }
}
