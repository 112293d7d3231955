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
    escape(b, s, false)
}

/// Appends an escaped attribute value (`&`, `<`, `>`, `"`).
#[inline]
pub(crate) fn attr(b: &mut BytesMut, s: &str) {
    escape(b, s, true)
}

/// Whether `c` is escaped in attribute values (`quote`) or character data.
#[inline(always)]
fn special(c: u8, quote: bool) -> bool {
    // every such byte is `&`, `<`, `>`, `"` or below 0x20
    (c < 0x20 && (c == b'\r' || (quote && (c == b'\t' || c == b'\n'))))
        || c == b'&'
        || c == b'<'
        || c == b'>'
        || (quote && c == b'"')
}

fn escape(b: &mut BytesMut, s: &str, quote: bool) {
    let bytes = s.as_bytes();
    // the usual value (identifiers, URIs) needs no escaping: one branch-free pass (vectorised)
    // instead of a branch per byte, then one copy
    if !bytes.iter().fold(false, |a, &c| a | special(c, quote)) {
        b.extend_from_slice(bytes);
        return;
    }
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' if quote => b"&quot;",
            b'\r' => b"&#xD;",
            b'\t' if quote => b"&#x9;",
            b'\n' if quote => b"&#xA;",
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
}
