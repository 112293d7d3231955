//! Low-level envelope writing: constant fragments are pre-escaped byte strings, dynamic text
//! is escaped on the way into the `BytesMut`.

use bytes::{BufMut, BytesMut};

/// Appends raw bytes.
#[inline]
pub(crate) fn raw(b: &mut BytesMut, s: &str) {
    b.extend_from_slice(s.as_bytes());
}

/// Appends escaped character data (`&`, `<`, `>`).
#[inline]
pub(crate) fn text(b: &mut BytesMut, s: &str) {
    escape::<false>(b, s)
}

/// Appends an escaped attribute value (`&`, `<`, `>`, `"`).
#[inline]
pub(crate) fn attr(b: &mut BytesMut, s: &str) {
    escape::<true>(b, s)
}

/// Whether `c` is escaped in attribute values (`QUOTE`) or character data: `&`, `<`, `>`,
/// carriage return, and in attribute values also `"`, tab and line feed. Branch-free (`|` of
/// comparisons), so that a loop over it is vectorised.
#[inline(always)]
fn special<const QUOTE: bool>(c: u8) -> bool {
    let text = (c == b'&') | (c == b'<') | (c == b'>') | (c == b'\r');
    if QUOTE {
        text | (c == b'"') | (c == b'\t') | (c == b'\n')
    } else {
        text
    }
}

/// Whether any byte of `bytes` is [`special`]: whole 16-byte blocks into 16 lanes without
/// early exit (vectorised: a few instructions per block). The tail is the last 16 bytes
/// (overlapping, which does not matter for the test), or a zero-padded copy of a shorter value.
#[inline(always)]
fn any_special<const QUOTE: bool>(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn lanes<const QUOTE: bool>(acc: &mut [u8; 16], block: &[u8; 16]) {
        for (l, &c) in acc.iter_mut().zip(block) {
            *l |= u8::from(special::<QUOTE>(c));
        }
    }
    let mut acc = [0u8; 16];
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if let Ok(block) = <&[u8; 16]>::try_from(block) {
            lanes::<QUOTE>(&mut acc, block);
        }
    }
    if !blocks.remainder().is_empty() {
        let mut last = [0u8; 16];
        match bytes.len().checked_sub(16).and_then(|k| bytes.get(k..)) {
            Some(tail) => last.copy_from_slice(tail),
            None => {
                if let Some(head) = last.get_mut(..bytes.len()) {
                    head.copy_from_slice(bytes);
                }
            }
        }
        lanes::<QUOTE>(&mut acc, &last);
    }
    acc.iter().fold(0u8, |a, &l| a | l) != 0
}

fn escape<const QUOTE: bool>(b: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    // the usual value (identifiers, URIs) needs no escaping: one vectorised test, one copy
    if !any_special::<QUOTE>(bytes) {
        b.extend_from_slice(bytes);
        return;
    }
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
            b.extend_from_slice(chunk);
        }
        b.extend_from_slice(rep);
        last = i + 1;
    }
    if let Some(chunk) = bytes.get(last..) {
        b.extend_from_slice(chunk);
    }
}

/// Appends a decimal number.
#[inline]
pub(crate) fn num(b: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    if let Some(s) = buf.get(i..) {
        b.put_slice(s);
    }
}

/// `<p:name>` + escaped text + `</p:name>`.
#[inline]
pub(crate) fn elem_text(b: &mut BytesMut, open: &str, value: &str, close: &str) {
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
