//! Low-level envelope writing: constant fragments are pre-escaped byte strings, dynamic text
//! is escaped on the way into the `BytesMut`.

use bytes::BytesMut;

/// Where the writer appends: the caller's `BytesMut` (`encode_into`, and `encode` for the
/// unusual messages), or a `Vec` allocated at the exact size of a per-message envelope (a
/// `Bytes` from a `Vec` whose length is its capacity costs no second allocation and none of
/// `BytesMut::freeze`'s bookkeeping).
pub(crate) trait Out {
    /// Appends bytes.
    fn put(&mut self, s: &[u8]);
    /// The length written so far.
    fn written(&self) -> usize;
    /// Cuts back to `len` bytes.
    fn cut(&mut self, len: usize);
}

/// `Out` for growable byte buffers with `extend_from_slice`, `len` and `truncate`.
macro_rules! out_for_buffer {
    ($($t:ty),*) => {$(
        impl Out for $t {
            #[inline(always)]
            fn put(&mut self, s: &[u8]) {
                self.extend_from_slice(s);
            }
            #[inline(always)]
            fn written(&self) -> usize {
                self.len()
            }
            #[inline(always)]
            fn cut(&mut self, len: usize) {
                self.truncate(len);
            }
        }
    )*};
}

out_for_buffer!(BytesMut, Vec<u8>);

/// Appends raw bytes.
#[inline]
pub(crate) fn raw(b: &mut impl Out, s: &str) {
    b.put(s.as_bytes());
}

/// Appends escaped character data (`&`, `<`, `>`). Not inlined: the callers write the
/// constant markup around it inline.
#[inline(never)]
pub(crate) fn text(b: &mut impl Out, s: &str) {
    escape::<false>(b, s)
}

/// Appends an escaped attribute value (`&`, `<`, `>`, `"`).
#[inline]
pub(crate) fn attr(b: &mut impl Out, s: &str) {
    escape::<true>(b, s)
}

/// Whether `c` is escaped in attribute values (`QUOTE`) or character data: `&`, `<`, `>`,
/// carriage return, and in attribute values also `"`, tab and line feed. Branch-free (`|` of
/// comparisons), so that a loop over it is vectorised.
#[inline(always)]
fn special<const QUOTE: bool>(c: u8) -> bool {
    // zero exactly for a special byte: `<` and `>` differ in one bit (0x3C, 0x3E); a minimum
    // of differences vectorises to one compare per block (no pairing of lanes)
    let text = ((c & !2) ^ b'<').min(c ^ b'&').min(c ^ b'\r');
    if QUOTE {
        text.min(c ^ b'"').min(c ^ b'\t').min(c ^ b'\n') == 0
    } else {
        text == 0
    }
}

/// Whether any byte of `block` is [`special`]: 16 lanes compared at once into a 16-bit mask
/// (a few vector instructions and a move of the mask).
#[inline(always)]
fn block_special<const QUOTE: bool>(block: &[u8; 16]) -> bool {
    let mut m = 0u16;
    for (i, &c) in block.iter().enumerate() {
        m |= u16::from(special::<QUOTE>(c)) << i;
    }
    m != 0
}

/// Whether any byte of `bytes` is [`special`]: whole 16-byte blocks, then the last 16 bytes
/// (overlapping, which does not matter for the test); a value of 8 to 15 bytes as one block of
/// its first and last 8 bytes; shorter ones byte by byte. The loop over blocks leaves at the
/// first block with a special byte, which also keeps the compiler from vectorising across
/// blocks (gathering bytes lane by lane) instead of within one.
#[inline(always)]
fn any_special<const QUOTE: bool>(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n >= 16 {
        let mut blocks = bytes.chunks_exact(16);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; 16]>::try_from(block) {
                if block_special::<QUOTE>(block) {
                    return true;
                }
            }
        }
        if blocks.remainder().is_empty() {
            return false;
        }
        match bytes.get(n - 16..).map(<&[u8; 16]>::try_from) {
            Some(Ok(last)) => block_special::<QUOTE>(last),
            _ => true,
        }
    } else if n >= 8 {
        let head = bytes.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok());
        let tail = bytes.get(n - 8..).and_then(|t| <[u8; 8]>::try_from(t).ok());
        match (head, tail) {
            (Some(h), Some(t)) => {
                let block = (u128::from(u64::from_le_bytes(h))
                    | (u128::from(u64::from_le_bytes(t)) << 64))
                    .to_le_bytes();
                block_special::<QUOTE>(&block)
            }
            _ => true,
        }
    } else {
        bytes.iter().fold(false, |a, &c| a | special::<QUOTE>(c))
    }
}

/// The usual value (identifiers, URIs) needs no escaping: one vectorised test and one copy,
/// inline in the caller; the escaping loop is out of line.
#[inline(always)]
fn escape<const QUOTE: bool>(b: &mut impl Out, s: &str) {
    let bytes = s.as_bytes();
    if any_special::<QUOTE>(bytes) {
        escape_slow::<QUOTE>(b, bytes);
    } else {
        b.put(bytes);
    }
}

#[cold]
#[inline(never)]
fn escape_slow<const QUOTE: bool>(b: &mut impl Out, bytes: &[u8]) {
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' if QUOTE => b"&quot;",
            b'\r' => b"&#xD;",
            b'\t' if QUOTE => b"&#x9;",
            b'\n' if QUOTE => b"&#xA;",
            _ => continue,
        };
        if let Some(chunk) = bytes.get(last..i) {
            b.put(chunk);
        }
        b.put(rep);
        last = i + 1;
    }
    if let Some(chunk) = bytes.get(last..) {
        b.put(chunk);
    }
}

/// `10^k` for `k` in `0..20`.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut k = 1;
    while k < 20 {
        t[k] = t[k - 1] * 10;
        k += 1;
    }
    t
};

/// Per index of the highest set bit `h` (bit length `h + 1`): an estimate `t` of the number of
/// digits, floor(log10(2^(h+1))) (1233 / 4096 ≈ log10(2)), which is the answer or one less,
/// and `10^t`, from which on it is one more.
const DIGITS_BY_BIT: [(u64, u64); 64] = {
    let mut t = [(0u64, 0u64); 64];
    let mut h = 0;
    while h < 64 {
        let est = ((h + 1) * 1233) >> 12;
        t[h] = (est as u64, POW10[est]);
        h += 1;
    }
    t
};

/// The number of decimal digits of `n` (from its bit length by a table: no division, no
/// loop, no multiplication).
#[inline(always)]
pub(crate) fn digits(n: u64) -> usize {
    let m = n | 1;
    let h = 63 - m.leading_zeros() as usize;
    match DIGITS_BY_BIT.get(h) {
        Some(&(t, p)) => (t + u64::from(m >= p)) as usize,
        None => 1,
    }
}

/// `"00"`, `"01"`, …, `"99"`: two digits per table lookup.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut k = 0;
    while k < 100 {
        t[2 * k] = b'0' + (k / 10) as u8;
        t[2 * k + 1] = b'0' + (k % 10) as u8;
        k += 1;
    }
    t
};

/// Appends a decimal number: its digits formatted (two at a time) into a 20-byte array, which
/// is appended whole (a copy of constant length, no call of `memcpy`) and cut to the digits.
/// Every number the writer writes is followed by more than 20 bytes, so with the buffer
/// reserved at the message's size the 20 bytes fit.
///
/// A number below 10^8 (every message number and range bound in practice) is formatted
/// without a loop: [`eight_digit_values`] gives its 8 digits with leading zeros in one word,
/// which is shifted to drop them (their count is that of the word's low zero bytes) and
/// appended whole (8 bytes) and cut to the digits.
#[inline(always)]
pub(crate) fn num(b: &mut impl Out, n: u64) {
    // one digit (`Lower="1"`, `BufferRemaining` 8): one byte
    if n < 10 {
        b.put(&[b'0' + n as u8]);
        return;
    }
    if n < 100_000_000 {
        // the digit values (0 to 9 per byte), the first digit in the lowest byte: the leading
        // zero digits are the zero bytes at the low end (n >= 10: some byte is not zero), so
        // their count comes from the trailing zero bits, without counting digits
        let raw = eight_digit_values(n);
        let shift = raw.trailing_zeros() & !7;
        let len = b.written() + 8 - (shift / 8) as usize;
        let word = (raw | 0x3030_3030_3030_3030) >> shift;
        b.put(&word.to_le_bytes());
        b.cut(len);
        return;
    }
    num_long(b, n);
}

/// The 8 decimal digits of `n < 10^8` (with leading zeros) as values 0 to 9 in one
/// little-endian word, the first digit in the lowest byte (`| 0x30` per byte makes them
/// ASCII): split into halves of 4 digits, each into pairs, each into digits, all lanes of one
/// word at once (a multiplication and shift by a reciprocal per step, exact for the lane
/// values involved).
#[inline(always)]
fn eight_digit_values(n: u64) -> u64 {
    // 32-bit lanes: the first 4 digits, the last 4
    let x = (n / 10_000) | ((n % 10_000) << 32);
    // 16-bit lanes: x / 100 and x % 100 per 32-bit lane ((x · 5243) >> 19 = x / 100 for x < 43,699)
    let hi = ((x * 5243) >> 19) & 0x0000_007F_0000_007F;
    let pairs = hi | ((x - hi * 100) << 16);
    // 8-bit lanes: p / 10 and p % 10 per 16-bit lane ((p · 103) >> 10 = p / 10 for p < 179)
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    tens | ((pairs - tens * 10) << 8)
}

/// [`num`] for any number: formatted two digits at a time.
#[inline(never)]
fn num_long(b: &mut impl Out, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = digits(n);
    let len = b.written() + i;
    while n >= 100 {
        let r = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        if let (Some(out), Some(pair)) = (buf.get_mut(i..i + 2), PAIRS.get(r..r + 2)) {
            out.copy_from_slice(pair);
        }
    }
    if n >= 10 {
        let r = n as usize * 2;
        if let (Some(out), Some(pair)) = (buf.get_mut(..2), PAIRS.get(r..r + 2)) {
            out.copy_from_slice(pair);
        }
    } else if let Some(d) = buf.get_mut(0) {
        *d = b'0' + n as u8;
    }
    b.put(&buf);
    b.cut(len);
}

/// Appends a value as character data: as it is when `PLAIN` (the caller checked that it needs
/// no escaping), else escaped.
#[inline(always)]
pub(crate) fn value<const PLAIN: bool>(b: &mut impl Out, s: &str) {
    if PLAIN {
        raw(b, s)
    } else {
        text(b, s)
    }
}

/// Whether `s` is written as character data as it is (no `&`, `<`, `>` or carriage return).
#[inline(always)]
pub(crate) fn needs_no_escaping(s: &str) -> bool {
    !any_special::<false>(s.as_bytes())
}

/// `<p:name>` + escaped text + `</p:name>` (inline, so that the constant markup is copied
/// without a call).
#[inline(always)]
pub(crate) fn elem_text(b: &mut impl Out, open: &str, value: &str, close: &str) {
    raw(b, open);
    text(b, value);
    raw(b, close);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_numbers() {
        let mut b = BytesMut::new();
        text(&mut b, "a<b&c>\"d\"");
        raw(&mut b, "|");
        attr(&mut b, "x\"y&");
        raw(&mut b, "|");
        num(&mut b, 0);
        raw(&mut b, "|");
        num(&mut b, u64::MAX);
        assert_eq!(
            &b[..],
            b"a&lt;b&amp;c&gt;\"d\"|x&quot;y&amp;|0|18446744073709551615"
        );
        let mut b = BytesMut::new();
        text(&mut b, "a\r\t\nb");
        raw(&mut b, "|");
        attr(&mut b, "a\r\t\nb");
        raw(&mut b, "|");
        text(
            &mut b,
            "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b\u{1}é",
        );
        assert_eq!(
            &b[..],
            "a&#xD;\t\nb|a&#xD;&#x9;&#xA;b|urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b\u{1}é"
                .as_bytes()
        );
    }

    #[test]
    fn digits_and_numbers_at_every_width() {
        let mut ns = vec![0, 1, 9, u64::MAX];
        for k in 1..20u32 {
            ns.extend([10u64.pow(k) - 1, 10u64.pow(k), 10u64.pow(k) + 1]);
        }
        ns.extend((0..100_000).map(|k| k * 997));
        for n in ns {
            assert_eq!(digits(n), n.to_string().len(), "{n}");
            let mut b = BytesMut::new();
            num(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
    }

    /// The block-wise test finds a special byte at every position of values of every length
    /// around the block size (whole blocks, overlapping tail, padded short value).
    #[test]
    fn special_bytes_found_at_every_position() {
        for len in 0..50 {
            for at in 0..len {
                for c in ['&', '<', '>', '\r', '"', '\t', '\n'] {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    let quote_only = matches!(c, '"' | '\t' | '\n');
                    assert_eq!(any_special::<false>(s.as_bytes()), !quote_only, "{s:?}");
                    assert!(any_special::<true>(s.as_bytes()), "{s:?}");
                }
            }
            let s = "y".repeat(len);
            assert!(!any_special::<false>(s.as_bytes()) && !any_special::<true>(s.as_bytes()));
        }
    }
}
