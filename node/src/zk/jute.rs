//! Jute, ZooKeeper's record encoding: big-endian integers, booleans as one byte, buffers and
//! strings as an i32 length (-1 for null) and bytes, vectors as an i32 count and elements.
//! Pure: a [`Reader`] over a frame's bytes and a [`Writer`] into a `Vec`. Every length is
//! checked against the bytes left before anything is allocated, so no input can make the
//! decoder allocate more than the frame it was given.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JuteError {
    /// The record needs more bytes than the frame has.
    Truncated { wanted: usize, left: usize },
    /// A length or count that is negative (other than null) or larger than what is left.
    BadLength(i64),
    /// A string that is not UTF-8.
    NotUtf8,
    /// Bytes left over after the record.
    Trailing(usize),
}

impl fmt::Display for JuteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JuteError::Truncated { wanted, left } => {
                write!(
                    f,
                    "record truncated: {wanted} more bytes wanted, {left} left"
                )
            }
            JuteError::BadLength(n) => write!(f, "impossible length or count {n}"),
            JuteError::NotUtf8 => write!(f, "string is not UTF-8"),
            JuteError::Trailing(n) => write!(f, "{n} bytes after the end of the record"),
        }
    }
}

impl std::error::Error for JuteError {}

pub type Result<T> = std::result::Result<T, JuteError>;

pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn left(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(JuteError::Truncated {
                wanted: n,
                left: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Jute writes a boolean as one byte; any non-zero byte reads as true, as Java's does.
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length of `min_each`-byte elements: -1 (null) is `None`; anything that cannot fit in
    /// what is left is an error before any allocation.
    fn length(&mut self, min_each: usize) -> Result<Option<usize>> {
        let n = self.i32()?;
        if n == -1 {
            return Ok(None);
        }
        let Ok(n) = usize::try_from(n) else {
            return Err(JuteError::BadLength(n.into()));
        };
        if n.saturating_mul(min_each.max(1)) > self.bytes.len() {
            return Err(JuteError::BadLength(n as i64));
        }
        Ok(Some(n))
    }

    /// A buffer; null reads as empty, as ZooKeeper's server treats it.
    pub fn buffer(&mut self) -> Result<Vec<u8>> {
        match self.length(1)? {
            None => Ok(Vec::new()),
            Some(n) => Ok(self.take(n)?.to_vec()),
        }
    }

    /// A string; null reads as empty.
    pub fn string(&mut self) -> Result<String> {
        let bytes = self.buffer()?;
        String::from_utf8(bytes).map_err(|_| JuteError::NotUtf8)
    }

    /// A vector whose elements take at least `min_each` bytes each; null reads as empty.
    pub fn vec<T>(
        &mut self,
        min_each: usize,
        mut element: impl FnMut(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.length(min_each)?.unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(element(self)?);
        }
        Ok(out)
    }

    pub fn strings(&mut self) -> Result<Vec<String>> {
        self.vec(4, Reader::string)
    }

    /// The record must end here.
    pub fn finish(&self) -> Result<()> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(JuteError::Trailing(n)),
        }
    }
}

#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.bytes.push(u8::from(v));
        self
    }

    pub fn buffer(&mut self, v: &[u8]) -> &mut Self {
        self.i32(len_i32(v.len()));
        self.bytes.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.buffer(v.as_bytes())
    }

    pub fn vec<T>(&mut self, items: &[T], mut element: impl FnMut(&mut Writer, &T)) -> &mut Self {
        self.i32(len_i32(items.len()));
        for item in items {
            element(self, item);
        }
        self
    }

    pub fn strings(&mut self, items: &[String]) -> &mut Self {
        self.vec(items, |w, s| {
            w.string(s);
        })
    }
}

/// Lengths we write come from records bounded far below 2 GiB (frames are capped).
fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let mut w = Writer::new();
        w.i32(-7)
            .i64(1 << 40)
            .bool(true)
            .buffer(b"abc")
            .string("/a/b")
            .strings(&["x".into(), "yz".into()]);
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.i32(), Ok(-7));
        assert_eq!(r.i64(), Ok(1 << 40));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.buffer(), Ok(b"abc".to_vec()));
        assert_eq!(r.string(), Ok("/a/b".into()));
        assert_eq!(r.strings(), Ok(vec!["x".into(), "yz".into()]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn null_reads_as_empty() {
        let mut w = Writer::new();
        w.i32(-1).i32(-1);
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.buffer(), Ok(Vec::new()));
        assert_eq!(r.strings(), Ok(Vec::new()));
    }

    #[test]
    fn lengths_beyond_the_frame_are_refused_before_allocating() {
        let mut w = Writer::new();
        w.i32(i32::MAX).bytes.extend_from_slice(b"short");
        assert_eq!(
            Reader::new(&w.bytes).buffer(),
            Err(JuteError::BadLength(i32::MAX as i64))
        );
        let mut w = Writer::new();
        w.i32(1_000_000);
        assert!(Reader::new(&w.bytes).strings().is_err());
        let mut w = Writer::new();
        w.i32(-2);
        assert_eq!(
            Reader::new(&w.bytes).buffer(),
            Err(JuteError::BadLength(-2))
        );
        assert!(matches!(
            Reader::new(&[0, 0]).i32(),
            Err(JuteError::Truncated { wanted: 4, left: 2 })
        ));
        assert_eq!(Reader::new(&[1]).finish(), Err(JuteError::Trailing(1)));
    }
}
