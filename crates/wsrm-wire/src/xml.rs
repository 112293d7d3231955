//! A thin, limit-enforcing cursor over quick-xml's namespace-aware slice reader.
//!
//! Everything here is streaming: no tree is built. Namespace declarations are kept on a small
//! stack, each URI classified (`Ns`) once when declared; each start tag's attributes are
//! scanned once; names are borrowed from the input slice.

use std::borrow::Cow;

use memchr::{memchr, memchr2, memchr3, memmem};
use quick_xml::name::QName;

use crate::error::{DecodeErrorKind, LimitKind};
use crate::ns::Ns;
use crate::Limits;

/// Parse failure inside a structure: either fatal (XML-level, limits) or "this structure is
/// malformed" (the caller turns the reason into the right typed error).
#[derive(Debug)]
pub(crate) enum PErr {
    Fatal(DecodeErrorKind),
    Bad(String),
}

impl From<DecodeErrorKind> for PErr {
    fn from(k: DecodeErrorKind) -> Self {
        PErr::Fatal(k)
    }
}

pub(crate) type PResult<T> = Result<T, PErr>;

pub(crate) fn bad<T>(reason: impl Into<String>) -> PResult<T> {
    Err(PErr::Bad(reason.into()))
}

/// A start tag (everything borrowed from the input).
pub(crate) struct El<'a> {
    pub ns: Ns,
    /// Qualified name as written.
    pub qname: &'a [u8],
    pub local: &'a [u8],
    /// The raw attribute area of the tag.
    pub attrs: &'a [u8],
    /// Offset of `<`.
    pub pos: usize,
    /// Offset just after the start tag's `>`.
    pub content_start: usize,
    pub empty: bool,
    /// Whether a prefixed `mustUnderstand`/`actor`/`role` attribute is present (the header
    /// reader looks at the attributes again only then).
    pub soap_attrs: bool,
}

/// How many attributes (other than namespace declarations) of a start tag the reader keeps.
const REC_ATTRS: usize = 4;

/// The attributes other than namespace declarations of a start tag: the ones recorded when
/// the tag was read, or a new scan (see [`Rd::attrs`]).
pub(crate) enum AttrIter<'r, 'a> {
    Recorded(std::slice::Iter<'r, (&'a [u8], &'a [u8])>),
    Scan(Attrs<'a>),
}

impl<'a> Iterator for AttrIter<'_, 'a> {
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            AttrIter::Recorded(it) => it.next().map(|kv| Ok(*kv)),
            AttrIter::Scan(it) => loop {
                match it.next()? {
                    Ok((k, _)) if k == b"xmlns" || k.starts_with(b"xmlns:") => {}
                    other => return Some(other),
                }
            },
        }
    }
}

/// A minimal, allocation-free scanner of a start tag's attribute area:
/// `name = "value"` pairs, quotes `"` or `'`, no `<` in values, whitespace between pairs.
pub(crate) struct Attrs<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the tag ends, when scanning from the name to the end of the input: the offset of
    /// the `>` (or of the `/` of `/>`) and whether it is an empty-element tag.
    end: Option<(usize, bool)>,
    /// The classified URI of the last attribute returned, when it is a namespace declaration
    /// of one of the known namespaces (recognised in place, see [`known_uri`]).
    known: Option<Ns>,
}

impl<'a> Attrs<'a> {
    fn new(b: &'a [u8]) -> Self {
        Attrs {
            b,
            i: 0,
            end: None,
            known: None,
        }
    }
}

/// The length of a short attribute value (up to 7 bytes, no reference) at the start of
/// `rest` ending with the quote `q`, by a plain loop (values such as `"1"` or `"41"`: cheaper
/// than setting up a vectorised search); `None` = longer or not plain, search.
fn short_value(rest: &[u8], q: u8) -> Option<usize> {
    for (k, &c) in rest.iter().take(8).enumerate() {
        if c == q {
            return Some(k);
        }
        if c == b'<' || c == b'&' {
            return None;
        }
    }
    None
}

/// A known namespace URI at the start of `rest` directly followed by the closing quote `q`:
/// its length and class. Known URIs contain no quote, `<` or `&`, so the value is complete and
/// well-formed without searching for its end.
fn known_uri(rest: &[u8], q: u8) -> Option<(usize, Ns)> {
    // the lengths of the known URIs (see `Ns::classify`), ascending
    for len in [36, 39, 40, 41, 42, 44, 48] {
        if rest.get(len) == Some(&q) {
            // a quote at `len`: the value ends there or earlier (values hold no quote)
            return match Ns::classify(rest.get(..len)?) {
                Ns::Other | Ns::None => None,
                ns => Some((len, ns)),
            };
        }
    }
    None
}

/// An attribute area that is exactly one default namespace declaration closing the tag,
/// ` xmlns="URI">`, with a URI without `"`, `<` or `&` (no reference to resolve): the URI and
/// the offset of the `>` (= the length of the area, as the general scan reports it).
fn default_decl_only(tail: &[u8]) -> Option<(&[u8], usize)> {
    const OPEN: &[u8] = b" xmlns=\"";
    let rest = tail.strip_prefix(OPEN)?;
    // URIs are short: a plain loop (no vectorised search set-up)
    let len = rest.iter().position(|&c| matches!(c, b'"' | b'<' | b'&'))?;
    if rest.get(len) != Some(&b'"') || rest.get(len + 1) != Some(&b'>') {
        return None;
    }
    Some((rest.get(..len)?, OPEN.len() + len + 1))
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            // found right after the last value
            return None;
        }
        let b = self.b;
        let mut i = self.i;
        self.known = None;
        while b.get(i).is_some_and(|&c| is_ws(c)) {
            i += 1;
        }
        if i >= b.len() {
            self.i = i;
            return None;
        }
        // on error, stop iterating
        self.i = b.len();
        match b.get(i) {
            Some(b'>') => {
                self.end = Some((i, false));
                return None;
            }
            Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                self.end = Some((i, true));
                return None;
            }
            _ => {}
        }
        let ks = i;
        let (end, _, _, ok) = scan_name(b, ks);
        i = end;
        let key = b.get(ks..i).unwrap_or_default();
        if key.is_empty() {
            return Some(Err("attribute without a name"));
        }
        if !ok {
            return Some(Err("invalid attribute name"));
        }
        while b.get(i).is_some_and(|&c| is_ws(c)) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Some(Err("attribute without a value"));
        }
        i += 1;
        while b.get(i).is_some_and(|&c| is_ws(c)) {
            i += 1;
        }
        let q = match b.get(i) {
            Some(&q) if q == b'"' || q == b'\'' => q,
            _ => return Some(Err("unquoted attribute value")),
        };
        i += 1;
        let vs = i;
        let rest = b.get(vs..).unwrap_or_default();
        let mut from = 0;
        let known = if key.starts_with(b"xmlns") {
            known_uri(rest, q)
        } else {
            None
        };
        let len = if let Some((len, ns)) = known {
            self.known = Some(ns);
            len
        } else if let Some(len) = short_value(rest, q) {
            len
        } else {
            loop {
                let tail = rest.get(from..).unwrap_or_default();
                match memchr3(q, b'<', b'&', tail).map(|k| (k + from, tail.get(k))) {
                    Some((len, Some(&c))) if c == q => break len,
                    Some((at, Some(b'&'))) => match ref_len(rest.get(at..).unwrap_or_default()) {
                        Some(n) => from = at + n,
                        None => return Some(Err("malformed reference in attribute value")),
                    },
                    Some(_) => return Some(Err("'<' in attribute value")),
                    None => return Some(Err("unterminated attribute value")),
                }
            }
        };
        let value = rest.get(..len).unwrap_or_default();
        i = vs + len + 1;
        match b.get(i) {
            // the end of the tag right after the value (the usual last attribute)
            Some(b'>') => self.end = Some((i, false)),
            Some(b'/') if b.get(i + 1) == Some(&b'>') => self.end = Some((i, true)),
            Some(&c) if !is_ws(c) && c != b'/' => {
                return Some(Err("missing whitespace between attributes"))
            }
            _ => {}
        }
        self.i = i;
        Some(Ok((key, value)))
    }
}

/// The length of the reference at the start of `rest` (`&…;`) if it is a predefined entity or
/// a valid character reference.
fn ref_len(rest: &[u8]) -> Option<usize> {
    let window = rest.get(..rest.len().min(64))?;
    let semi = memchr(b';', window)?;
    let name = window.get(1..semi)?;
    let ok = match name.strip_prefix(b"#") {
        Some(num) => {
            let (digits, radix) = match num.strip_prefix(b"x") {
                Some(h) => (h, 16),
                None => (num, 10),
            };
            std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|d| u32::from_str_radix(d, radix).ok())
                .and_then(char::from_u32)
                .is_some_and(|c| c != '\0')
        }
        None => matches!(name, b"lt" | b"gt" | b"amp" | b"apos" | b"quot"),
    };
    ok.then_some(semi + 1)
}

/// The value of an attribute with references resolved (predefined entities and character
/// references only).
pub(crate) fn attr_value(v: &[u8]) -> Result<Cow<'_, str>, String> {
    let s = std::str::from_utf8(v).map_err(|_| "attribute value is not UTF-8".to_string())?;
    if !s.contains('&') {
        return Ok(Cow::Borrowed(s));
    }
    quick_xml::escape::unescape(s).map_err(|e| e.to_string())
}

impl<'a> El<'a> {
    pub(crate) fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local == local.as_bytes()
    }

    /// `{ns}local` for messages (allocates; error paths only).
    pub(crate) fn clark(&self, rd: &Rd<'_>) -> String {
        let q = self.qname;
        let prefix = q.iter().position(|&c| c == b':').and_then(|i| q.get(..i));
        let ns = rd
            .lookup(prefix.unwrap_or_default())
            .map(|b| String::from_utf8_lossy(rd.uri_of(&b)).into_owned())
            .unwrap_or_default();
        format!("{{{}}}{}", ns, String::from_utf8_lossy(self.local))
    }
}

pub(crate) enum Raw<'a> {
    Start(El<'a>),
    End { pos: usize },
    Text(&'a [u8]),
    Char(char),
    Entity(&'static str),
    Eof,
}

/// One in-scope namespace declaration.
#[derive(Default, Clone, Copy)]
pub(crate) struct Binding<'a> {
    /// Empty for the default namespace.
    prefix: &'a [u8],
    /// The URI as written; see `owned`.
    uri: &'a [u8],
    /// The URI contained a reference: the index of its resolved form in `Rd::owned_uris`
    /// (rare; everything else stays borrowed and `Copy`).
    owned: Option<usize>,
    ns: Ns,
    depth: usize,
}

/// A stack kept inline up to `N` entries and spilled to a `Vec` beyond (deeper nesting than
/// ordinary messages have, or limits above the defaults): no allocation per message.
pub(crate) struct Stack<T, const N: usize> {
    inline: [T; N],
    len: usize,
    more: Vec<T>,
}

impl<T: Default + Copy, const N: usize> Stack<T, N> {
    fn new() -> Self {
        Stack {
            inline: [T::default(); N],
            len: 0,
            more: Vec::new(),
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn push(&mut self, v: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = v,
            None => self.more.push(v),
        }
        self.len += 1;
    }

    #[inline(always)]
    fn last(&self) -> Option<T> {
        // empty: index usize::MAX, not inline, and `more` is empty
        match self.inline.get(self.len.wrapping_sub(1)) {
            Some(v) => Some(*v),
            None => self.more.last().copied(),
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<T> {
        if self.len > N {
            self.len -= 1;
            self.more.pop()
        } else {
            let v = self.inline.get(self.len.checked_sub(1)?).copied();
            self.len -= 1;
            v
        }
    }

    /// The topmost entry for which `f` holds.
    #[inline(always)]
    fn rfind(&self, f: impl Fn(&T) -> bool) -> Option<T> {
        if self.len <= N {
            // the common case: a plain slice search
            let v = self.inline.get(..self.len).unwrap_or_default();
            return v.iter().rev().find(|x| f(x)).copied();
        }
        self.iter().rev().find(|x| f(x)).copied()
    }

    /// Bottom to top.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        let n = self.len.min(N);
        self.inline
            .get(..n)
            .unwrap_or_default()
            .iter()
            .chain(self.more.iter())
    }
}

pub(crate) struct Rd<'a> {
    /// Offset of the next unread byte of `src`.
    i: usize,
    bindings: Stack<Binding<'a>, 8>,
    /// Resolved URIs of the bindings whose URI contained a reference, in declaration order.
    owned_uris: Vec<Vec<u8>>,
    /// The attributes other than namespace declarations of the last start tag with an
    /// attribute area (at `last_attrs_pos`), as recorded while that tag was scanned: callers
    /// look at a tag's attributes right after reading it, without scanning them again.
    last_attrs: [(&'a [u8], &'a [u8]); REC_ATTRS],
    /// How many there were (more than `REC_ATTRS`: not all recorded, scan again).
    last_attrs_n: usize,
    last_attrs_pos: usize,
    /// Names of the open elements (end tags are matched here, without copying).
    open: Stack<&'a [u8], 16>,

    pending_pop: bool,
    pub src: &'a [u8],
    /// `src` as text (validated once; values are sliced from it without re-validation).
    text_src: &'a str,
    /// Offset of `src` in the caller's buffer (a skipped BOM).
    pub base: usize,
    limits: &'a Limits,
    pub depth: usize,
    pending_end: bool,
    /// Whether shapes of the writer are matched directly (see `reader/fast.rs`; `false` only
    /// to compare both ways, [`crate::decode_without_fast_path`]).
    pub fast: bool,
}

/// Whether a short byte string contains `x` (a plain loop: `contains` calls `memchr`, whose
/// set-up costs more than the search on names and short values).
fn has_byte(b: &[u8], x: u8) -> bool {
    for &c in b {
        if c == x {
            return true;
        }
    }
    false
}

/// Equality of short byte strings (prefixes): a plain loop, no `memcmp` call.
pub(crate) fn eq_short(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Equality of element names (end tags against the open element): up to 16 bytes as two
/// overlapping word compares (4 or 8 bytes each) instead of a call of `memcmp`.
#[inline(always)]
fn eq_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        return a.first_chunk::<8>() == b.first_chunk::<8>()
            && a.last_chunk::<8>() == b.last_chunk::<8>();
    }
    if (4..8).contains(&n) {
        return a.first_chunk::<4>() == b.first_chunk::<4>()
            && a.last_chunk::<4>() == b.last_chunk::<4>();
    }
    if n < 4 {
        return eq_short(a, b);
    }
    a == b
}

/// Byte classes while scanning an element name.
const C_NAME: u8 = 0;
const C_WS: u8 = 1;
const C_SLASH: u8 = 2;
const C_GT: u8 = 3;
const C_BAD: u8 = 4;
/// End of input (not a table entry).
const C_END: u8 = 5;
const C_COLON: u8 = 6;

/// A name starting at `b[from]`: (end offset, class of the byte that ended it, offset of the
/// colon relative to `from` if any, whether it is a namespace-well-formed QName).
fn scan_name(b: &[u8], from: usize) -> (usize, u8, Option<usize>, bool) {
    fn start(c: Option<&u8>) -> bool {
        c.is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
    }
    let mut j = from;
    let mut colon = None;
    let mut ok = start(b.get(from));
    loop {
        let mut class = C_END;
        while let Some(&c) = b.get(j) {
            class = NAME_CLASS[c as usize];
            if class != C_NAME {
                break;
            }
            j += 1;
        }
        if class == C_COLON {
            // at most one colon, followed by a name start character
            ok &= colon.is_none() && start(b.get(j + 1));
            colon.get_or_insert(j - from);
            j += 1;
            continue;
        }
        return (j, class, colon, ok);
    }
}

/// Checks the whole input once for C0 control characters other than tab, line feed and
/// carriage return (not XML characters; WCF's reader refuses them too). Returns the offset of
/// the first one. Branch-free chunks keep this cheap (a few hundred instructions for 1 KiB).
pub(crate) fn check_chars(src: &[u8]) -> Option<usize> {
    // the common case: no byte below 0x20 anywhere (not even whitespace), told by one pass
    // with a single reduction at the end
    if min_byte(src) >= 0x20 {
        return None;
    }
    check_chars_chunked(src)
}

/// The smallest byte of `src` (`u8::MAX` when empty): 128-byte blocks folded into a 128-byte
/// accumulator (vectorised to a load and a byte minimum per vector, no reduction and no
/// branch per block), the tail as the last 128 bytes (overlapping; the minimum is the same),
/// one reduction at the end.
fn min_byte(src: &[u8]) -> u8 {
    const W: usize = 128;
    fn fold(acc: &mut [u8; W], block: &[u8; W]) {
        for (a, &c) in acc.iter_mut().zip(block) {
            *a = (*a).min(c);
        }
    }
    let mut acc = [u8::MAX; W];
    let (blocks, rest) = src.as_chunks::<W>();
    for block in blocks {
        fold(&mut acc, block);
    }
    if !rest.is_empty() {
        match src.last_chunk::<W>() {
            Some(block) => fold(&mut acc, block),
            None => return rest.iter().fold(u8::MAX, |m, &c| m.min(c)),
        }
    }
    acc.iter().fold(u8::MAX, |m, &c| m.min(c))
}

/// [`check_chars`] by 256-byte chunks: the position of the first control character when
/// bytes below 0x20 occur (whitespace or not).
fn check_chars_chunked(src: &[u8]) -> Option<usize> {
    fn bad(c: u8) -> bool {
        c < 0x20 && c != b'\t' && c != b'\n' && c != b'\r'
    }
    // 256 bytes: the horizontal reduction of the vectorised minimum is paid once per chunk
    const CHUNK: usize = 256;
    let mut base = 0;
    for chunk in src.chunks(CHUNK) {
        // the smallest byte, without early exit (vectorised): no byte below 0x20 = no control
        // character, the common case
        let min = chunk.iter().fold(u8::MAX, |m, &c| m.min(c));
        // tab, line feed, carriage return (indentation) are below 0x20 too: look for a bad
        // byte without early exit (vectorised) before searching for its position
        if min < 0x20 && chunk.iter().fold(false, |a, &c| a | bad(c)) {
            if let Some(i) = chunk.iter().position(|&c| bad(c)) {
                return Some(base + i);
            }
        }
        base += CHUNK;
    }
    None
}

/// XML name characters are `C_NAME` (ASCII: letters, digits, `_ : - .`; every non-ASCII byte is
/// let through, UTF-8 validity is checked where names are used).
static NAME_CLASS: [u8; 256] = {
    let mut t = [C_BAD; 256];
    let mut k = 0;
    while k < 256 {
        let c = k as u8;
        if c.is_ascii_alphanumeric() || c >= 0x80 || matches!(c, b'_' | b'-' | b'.') {
            t[k] = C_NAME;
        }
        k += 1;
    }
    t[b':' as usize] = C_COLON;
    t[b' ' as usize] = C_WS;
    t[b'\t' as usize] = C_WS;
    t[b'\r' as usize] = C_WS;
    t[b'\n' as usize] = C_WS;
    t[b'/' as usize] = C_SLASH;
    t[b'>' as usize] = C_GT;
    t
};

/// An XML NCName (a name without a colon) made of name characters.
pub(crate) fn is_ncname(n: &[u8]) -> bool {
    is_qname(n)
        && n.iter()
            .all(|&c| c != b':' && NAME_CLASS[c as usize] == C_NAME)
}

/// A namespace-well-formed QName made of name characters (`NAME_CLASS`): `prefix:local` or
/// `local`, each part starting with a letter, `_` or a non-ASCII byte.
pub(crate) fn is_qname(q: &[u8]) -> bool {
    fn start(c: Option<&u8>) -> bool {
        c.is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
    }
    if !start(q.first()) {
        return false;
    }
    // names are short: a plain loop beats a vectorised search here
    match q.iter().position(|&c| c == b':') {
        None => true,
        Some(i) => start(q.get(i + 1)) && !q.get(i + 1..).is_some_and(|l| has_byte(l, b':')),
    }
}

fn is_xml_ws(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}

pub(crate) fn trim_xml(s: &str) -> &str {
    let b = s.as_bytes();
    // the usual value: nothing to trim (both ends tested, no search)
    if b.first().is_some_and(|&c| !is_ws(c)) && b.last().is_some_and(|&c| !is_ws(c)) {
        return s;
    }
    let start = b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_ws(c)).map_or(start, |k| k + 1);
    // whitespace is ASCII: both ends are character boundaries
    s.get(start..end).unwrap_or_default()
}

impl<'a> Rd<'a> {
    pub(crate) fn new(text_src: &'a str, base: usize, limits: &'a Limits) -> Self {
        let src = text_src.as_bytes();
        Rd {
            text_src,
            i: 0,
            bindings: Stack::new(),
            owned_uris: Vec::new(),
            last_attrs: [(b"", b""); REC_ATTRS],
            last_attrs_n: 0,
            last_attrs_pos: usize::MAX,
            open: Stack::new(),
            pending_pop: false,
            src,
            base,
            limits,
            depth: 0,
            pending_end: false,
            fast: true,
        }
    }

    pub(crate) fn limits(&self) -> &'a Limits {
        self.limits
    }

    pub(crate) fn pos(&self) -> usize {
        self.i
    }

    /// `b` (a slice of the input) as text, without validating it again.
    fn str_at(&self, b: &'a [u8]) -> PResult<&'a str> {
        let off = (b.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        match self.text_src.get(off..off.wrapping_add(b.len())) {
            Some(t) if t.as_bytes().as_ptr() == b.as_ptr() => Ok(t),
            _ => utf8(b),
        }
    }

    /// The value of an attribute of the input with references resolved (like [`attr_value`],
    /// without validating the UTF-8 again).
    pub(crate) fn attr_value(&self, v: &'a [u8]) -> Result<Cow<'a, str>, String> {
        let s = self
            .str_at(v)
            .map_err(|_| "attribute value is not UTF-8".to_string())?;
        if !has_byte(v, b'&') {
            return Ok(Cow::Borrowed(s));
        }
        quick_xml::escape::unescape(s).map_err(|e| e.to_string())
    }

    fn xml_err_at(&self, pos: usize, reason: impl Into<String>) -> DecodeErrorKind {
        DecodeErrorKind::Xml {
            offset: self.base + pos,
            reason: reason.into(),
        }
    }

    fn limit(&self, what: LimitKind, limit: usize, offset: usize) -> DecodeErrorKind {
        DecodeErrorKind::LimitExceeded {
            what,
            limit,
            offset: self.base + offset,
        }
    }

    /// Drops the namespace declarations of the elements deeper than the current depth.
    #[inline(always)]
    fn pop_bindings(&mut self) {
        let d = self.depth;
        while self.bindings.last().is_some_and(|b| b.depth > d) {
            if self.bindings.pop().is_some_and(|b| b.owned.is_some()) {
                self.owned_uris.pop();
            }
        }
    }

    /// Next raw event with limits enforced. Comments are skipped; a DOCTYPE, a processing
    /// instruction or an XML declaration after the start are refused.
    pub(crate) fn next_raw(&mut self) -> Result<Raw<'a>, DecodeErrorKind> {
        if self.pending_pop {
            self.pending_pop = false;
            self.pop_bindings();
        }
        if self.pending_end {
            self.pending_end = false;
            self.depth = self.depth.saturating_sub(1);
            self.pending_pop = true;
            let p = self.pos();
            return Ok(Raw::End { pos: p });
        }
        loop {
            let pos = self.i;
            let src = self.src;
            let rest = src.get(pos..).unwrap_or_default();
            let Some(&first) = rest.first() else {
                return Ok(Raw::Eof);
            };
            if first == b'&' {
                return self.reference(pos, rest);
            }
            if first != b'<' {
                // character data up to the next markup or reference
                let len = memchr2(b'<', b'&', rest).unwrap_or(rest.len());
                self.i = pos + len;
                return Ok(Raw::Text(rest.get(..len).unwrap_or_default()));
            }
            match rest.get(1) {
                Some(b'/') => {
                    // fast path: `</name>` closing the innermost open element
                    let expected = self.open.last().unwrap_or_default();
                    let n = expected.len();
                    let fast = !expected.is_empty()
                        && rest.get(2..2 + n).is_some_and(|g| eq_name(g, expected))
                        && rest.get(2 + n) == Some(&b'>');
                    let (gt, name) = if fast {
                        (2 + n, expected)
                    } else {
                        let Some(gt) = memchr(b'>', rest) else {
                            return Err(
                                self.xml_err_at(pos, "unclosed end tag (truncated document)")
                            );
                        };
                        let inner = rest.get(2..gt).unwrap_or_default();
                        let name_len = inner.iter().rposition(|&c| !is_ws(c)).map_or(0, |k| k + 1);
                        let name = inner.get(..name_len).unwrap_or_default();
                        if name.is_empty() || name.iter().any(|&c| is_ws(c)) {
                            return Err(self.xml_err_at(pos, "malformed end tag"));
                        }
                        (gt, name)
                    };
                    self.i = pos + gt + 1;
                    match self.open.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return Err(self.xml_err_at(
                                pos,
                                format!(
                                    "end tag </{}> does not match <{}>",
                                    String::from_utf8_lossy(name),
                                    String::from_utf8_lossy(open)
                                ),
                            ))
                        }
                        None => return Err(self.xml_err_at(pos, "end tag without start tag")),
                    }
                    self.depth = self.depth.saturating_sub(1);
                    self.pending_pop = true;
                    return Ok(Raw::End { pos });
                }
                Some(b'!') => {
                    if rest.starts_with(b"<!--") {
                        let body = rest.get(4..).unwrap_or_default();
                        let Some(k) = memmem::find(body, b"-->") else {
                            return Err(
                                self.xml_err_at(pos, "unclosed comment (truncated document)")
                            );
                        };
                        let text = body.get(..k).unwrap_or_default();
                        if memmem::find(text, b"--").is_some() || text.last() == Some(&b'-') {
                            return Err(self.xml_err_at(pos, "'--' inside a comment"));
                        }
                        self.i = pos + 4 + k + 3;
                        continue;
                    }
                    if rest.starts_with(b"<![CDATA[") {
                        let body = rest.get(9..).unwrap_or_default();
                        let Some(k) = memmem::find(body, b"]]>") else {
                            return Err(
                                self.xml_err_at(pos, "unclosed CDATA section (truncated document)")
                            );
                        };
                        self.i = pos + 9 + k + 3;
                        return Ok(Raw::Text(body.get(..k).unwrap_or_default()));
                    }
                    if rest
                        .get(2..9)
                        .is_some_and(|d| d.eq_ignore_ascii_case(b"DOCTYPE"))
                    {
                        return Err(DecodeErrorKind::Doctype {
                            offset: self.base + pos,
                        });
                    }
                    return Err(self.xml_err_at(pos, "unexpected '<!' markup"));
                }
                Some(b'?') => {
                    let body = rest.get(2..).unwrap_or_default();
                    let Some(k) = memmem::find(body, b"?>") else {
                        return Err(self.xml_err_at(
                            pos,
                            "unclosed processing instruction (truncated document)",
                        ));
                    };
                    let text = body.get(..k).unwrap_or_default();
                    let is_decl = text.starts_with(b"xml") && text.get(3).is_none_or(|&c| is_ws(c));
                    if !is_decl {
                        return Err(self.xml_err_at(pos, "processing instructions are not allowed"));
                    }
                    if pos != 0 {
                        return Err(self.xml_err_at(pos, "XML declaration not at the start"));
                    }
                    for a in Attrs::new(text.get(3..).unwrap_or_default()) {
                        match a {
                            Ok((b"encoding", v)) if !v.eq_ignore_ascii_case(b"utf-8") => {
                                return Err(self.xml_err_at(pos, "only UTF-8 is accepted"))
                            }
                            Ok(_) => {}
                            Err(e) => {
                                return Err(
                                    self.xml_err_at(pos, format!("malformed XML declaration: {e}"))
                                )
                            }
                        }
                    }
                    self.i = pos + 2 + k + 2;
                    continue;
                }
                _ => {
                    return self.start_tag(pos, rest).map(Raw::Start);
                }
            }
        }
    }

    /// The start tag at `pos` (`rest` starts with `<` and a character other than `/`, `!`,
    /// `?`): the name, then (if any) the attribute area up to the first `>` outside quoted
    /// attribute values.
    fn start_tag(&mut self, pos: usize, rest: &'a [u8]) -> Result<El<'a>, DecodeErrorKind> {
        let (j, class, colon, ok) = scan_name(rest, 1);
        let name = rest.get(1..j).unwrap_or_default();
        if !ok {
            return Err(self.xml_err_at(pos, "malformed element name"));
        }
        let (empty, gt) = match class {
            C_GT => (false, j),
            C_SLASH if rest.get(j + 1) == Some(&b'>') => (true, j + 1),
            C_WS => {
                // attributes: scanned once, up to the end of the tag
                let tail = rest.get(j..).unwrap_or_default();
                return self.start(name, colon, tail, pos, None);
            }
            C_END => return Err(self.xml_err_at(pos, "unclosed start tag (truncated document)")),
            _ => return Err(self.xml_err_at(pos, "malformed element name")),
        };
        self.i = pos + gt + 1;
        self.start(name, colon, b"", pos, Some(empty))
    }

    /// A character or predefined entity reference at `pos` (`rest` starts with `&`).
    fn reference(&mut self, pos: usize, rest: &'a [u8]) -> Result<Raw<'a>, DecodeErrorKind> {
        // the longest legal reference is `&#x10FFFF;`; entity names are bounded likewise
        let window = rest.get(..rest.len().min(64)).unwrap_or_default();
        let Some(semi) = memchr(b';', window) else {
            return Err(self.xml_err_at(pos, "unterminated reference"));
        };
        let name = window.get(1..semi).unwrap_or_default();
        self.i = pos + semi + 1;
        if let Some(num) = name.strip_prefix(b"#") {
            let (digits, radix) = match num.strip_prefix(b"x") {
                Some(h) => (h, 16),
                None => (num, 10),
            };
            let c = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|d| u32::from_str_radix(d, radix).ok())
                .and_then(char::from_u32)
                .filter(|&c| c != '\0');
            return match c {
                Some(c) => Ok(Raw::Char(c)),
                None => Err(self.xml_err_at(pos, "invalid character reference")),
            };
        }
        match name {
            b"lt" => Ok(Raw::Entity("<")),
            b"gt" => Ok(Raw::Entity(">")),
            b"amp" => Ok(Raw::Entity("&")),
            b"apos" => Ok(Raw::Entity("'")),
            b"quot" => Ok(Raw::Entity("\"")),
            _ => Err(self.xml_err_at(
                pos,
                format!(
                    "entity reference '&{};' is not allowed (no DTD, no entity expansion)",
                    String::from_utf8_lossy(name)
                ),
            )),
        }
    }

    /// The unread input as text, when no synthetic event (the end of an empty element, the
    /// release of namespace bindings) is pending: where a fast path may start matching.
    pub(crate) fn unread(&self) -> Option<&'a str> {
        if self.pending_pop || self.pending_end {
            return None;
        }
        self.text_src.get(self.i..)
    }

    /// After a fast path matched `n` bytes of [`Self::unread`] (complete elements that leave
    /// no namespace binding behind): the end tag of the current element must follow; it is
    /// consumed as [`Self::next_child`] consumes it. `false` (nothing consumed) otherwise.
    pub(crate) fn close_after(&mut self, n: usize) -> bool {
        if self.pending_pop || self.pending_end {
            return false;
        }
        let pos = self.i + n;
        let rest = self.src.get(pos..).unwrap_or_default();
        let expected = self.open.last().unwrap_or_default();
        let len = expected.len();
        let closes = rest.get(..2) == Some(b"</")
            && len > 0
            && rest.get(2..2 + len).is_some_and(|g| eq_name(g, expected))
            && rest.get(2 + len) == Some(&b'>');
        if !closes {
            return false;
        }
        self.i = pos + len + 3;
        self.open.pop();
        self.depth = self.depth.saturating_sub(1);
        self.pending_pop = true;
        true
    }

    /// After the header blocks: the rest of the input is exactly the writer's end of an
    /// envelope without body content, `<s:Body/></s:Envelope>` (`s` bound to the envelope's
    /// namespace), then at most whitespace. If so it is consumed (the document is complete);
    /// else `false` with nothing consumed. Reading it event by event gives the same: an empty
    /// `Body` in the envelope's namespace within the depth and name limits, the envelope's
    /// end tag, the end of input.
    pub(crate) fn fast_empty_body_end(&mut self) -> bool {
        const END: &[u8] = b"<s:Body/></s:Envelope>";
        if self.pending_end || self.depth != 1 || self.open.len() != 1 {
            return false;
        }
        let rest = self.src.get(self.i..).unwrap_or_default();
        let Some(tail) = rest.strip_prefix(END) else {
            return false;
        };
        let env_ns = self.lookup(b"s").map(|b| b.ns);
        if self.open.last() != Some(b"s:Envelope")
            || !is_xml_ws(tail)
            || !matches!(env_ns, Some(Ns::Soap11 | Ns::Soap12))
            || self.limits.max_depth < 2
            || self.limits.max_name_len < 10
        {
            return false;
        }
        self.pending_pop = false;
        self.pop_bindings();
        self.i = self.src.len();
        self.open.pop();
        self.depth = 0;
        true
    }

    /// The start tag `<s:Body>` (no attributes) right at the current position, read as
    /// [`Self::next_child`] reads it: pending bindings released, `s` resolved, the element
    /// opened (depth, open names, position), the same `El`. `None`, with nothing consumed, for
    /// anything else (whitespace or a comment before it, attributes, another name, a pending
    /// end) or when a limit would be hit; `None` after releasing pending bindings (which
    /// `next_child` does first too) when `s` is not bound.
    pub(crate) fn fast_body_start(&mut self) -> Option<El<'a>> {
        const TAG: &[u8] = b"<s:Body>";
        if self.pending_end {
            return None;
        }
        let pos = self.i;
        let tag = self.src.get(pos..pos + TAG.len())?;
        let l = self.limits;
        if tag != TAG || self.depth >= l.max_depth || l.max_name_len < TAG.len() - 2 {
            return None;
        }
        if self.pending_pop {
            self.pending_pop = false;
            self.pop_bindings();
        }
        let ns = self.lookup(b"s")?.ns;
        let q = tag.get(1..TAG.len() - 1)?;
        self.depth += 1;
        self.i = pos + TAG.len();
        self.open.push(q);
        Some(El {
            ns,
            qname: q,
            local: q.get(2..)?,
            attrs: b"",
            pos,
            content_start: self.i,
            empty: false,
            soap_attrs: false,
        })
    }

    /// The usual first element of an application body, `<p xmlns="urn:…">` (a name without
    /// a colon and one default namespace declaration, see `default_decl_only`), right at the
    /// current position, read as [`Self::next_raw`] reads it: the binding declared, the
    /// attributes recorded (none), the element opened, the same `El`. `None`, with nothing
    /// consumed, for anything else, with a synthetic event pending, or when a limit would be
    /// hit.
    pub(crate) fn fast_default_ns_start(&mut self) -> Option<El<'a>> {
        if self.pending_end || self.pending_pop {
            return None;
        }
        let pos = self.i;
        let rest = self.src.get(pos..)?;
        if rest.first() != Some(&b'<') {
            return None;
        }
        let (j, class, colon, ok) = scan_name(rest, 1);
        if !ok || class != C_WS || colon.is_some() {
            return None;
        }
        let q = rest.get(1..j)?;
        let tail = rest.get(j..)?;
        let (value, end) = default_decl_only(tail)?;
        let attrs = tail.get(..end)?;
        let l = self.limits;
        if self.depth >= l.max_depth
            || q.len() > l.max_name_len
            || l.max_attributes < 1
            || end > l.max_attributes_len
        {
            return None;
        }
        let depth = self.depth + 1;
        let ns = Ns::classify(value);
        self.depth = depth;
        self.bindings.push(Binding {
            prefix: b"",
            uri: value,
            owned: None,
            ns,
            depth,
        });
        self.last_attrs_n = 0;
        self.last_attrs_pos = pos;
        self.i = pos + 1 + q.len() + end + 1;
        self.open.push(q);
        Some(El {
            ns,
            qname: q,
            local: q,
            attrs,
            pos,
            content_start: self.i,
            empty: false,
            soap_attrs: false,
        })
    }

    /// After the Body: the rest of the input is exactly the end tag of the innermost open
    /// element (the envelope's), then at most whitespace. If so it is consumed as
    /// [`Self::next_child`] (which finds no further child) and reading on to the end of input
    /// consume it (the document is complete); else `false` with nothing consumed.
    pub(crate) fn fast_document_end(&mut self) -> bool {
        if self.pending_end {
            return false;
        }
        let Some(expected) = self.open.last() else {
            return false;
        };
        let n = expected.len();
        let rest = self.src.get(self.i..).unwrap_or_default();
        let closes = n > 0
            && rest.get(..2) == Some(b"</")
            && rest.get(2..2 + n).is_some_and(|g| eq_name(g, expected))
            && rest.get(2 + n) == Some(&b'>');
        if !closes || !is_xml_ws(rest.get(n + 3..).unwrap_or_default()) {
            return false;
        }
        self.open.pop();
        self.depth = self.depth.saturating_sub(1);
        self.pending_pop = false;
        self.pop_bindings();
        self.i = self.src.len();
        true
    }

    /// The start of a document exactly as the writer (and WCF) writes it,
    /// `<s:Envelope xmlns:s="SOAP" xmlns:a="WS-Addressing"><s:Header>` with known URIs, read at
    /// once into the state reading the two start tags one by one leaves (bindings, open
    /// elements, depth, position); returns the envelope's namespace and the `Header` element.
    /// `None`, with nothing consumed, for any other start, or when a limit might be hit.
    pub(crate) fn fast_prolog(&mut self) -> Option<(Ns, El<'a>)> {
        if self.i != 0
            || self.depth != 0
            || self.bindings.len() != 0
            || self.open.len() != 0
            || self.pending_pop
            || self.pending_end
        {
            return None;
        }
        const ENV: &[u8] = b"<s:Envelope";
        const HEADER: &[u8] = b"<s:Header>";
        let src = self.src;
        // the four prologs told apart by the byte after `http://` of each URI, then compared
        // whole (one comparison instead of one per declaration and candidate URI)
        let (prolog, soap, wsa) = crate::ns::envelope_start_candidate(src)?;
        let soap_len = soap.namespace().len();
        let (env_ns, a_ns) = (Ns::of_soap(soap), Ns::of_wsa(wsa));
        if !src.starts_with(prolog) {
            return None;
        }
        // ` xmlns:s="` is 10 bytes, `" xmlns:a="` 11
        let s_start = ENV.len() + 10;
        let s_uri = src.get(s_start..s_start + soap_len)?;
        let a_start = s_start + soap_len + 11;
        let a_uri = src.get(a_start..prolog.len() - HEADER.len() - 2)?;
        let k = prolog.len() - HEADER.len() - 1;
        // the attribute area ends at the `>` of the envelope's start tag
        let area = k - ENV.len();
        let l = self.limits;
        if l.max_depth < 2
            || l.max_name_len < ENV.len() - 1
            || l.max_attributes < 2
            || area > l.max_attributes_len
        {
            return None;
        }
        let header_pos = k + 1;
        self.bindings.push(Binding {
            prefix: b"s",
            uri: s_uri,
            owned: None,
            ns: env_ns,
            depth: 1,
        });
        self.bindings.push(Binding {
            prefix: b"a",
            uri: a_uri,
            owned: None,
            ns: a_ns,
            depth: 1,
        });
        // what reading the envelope's start tag records (no attributes but declarations)
        self.last_attrs_n = 0;
        self.last_attrs_pos = 0;
        self.open.push(src.get(1..ENV.len())?);
        let header = src.get(header_pos + 1..header_pos + HEADER.len() - 1)?;
        self.open.push(header);
        self.depth = 2;
        self.i = header_pos + HEADER.len();
        Some((
            env_ns,
            El {
                ns: env_ns,
                qname: header,
                local: header.get(2..)?,
                attrs: b"",
                pos: header_pos,
                content_start: self.i,
                empty: false,
                soap_attrs: false,
            },
        ))
    }

    /// The namespace class `prefix` is bound to (`None`: not bound).
    pub(crate) fn prefix_ns(&self, prefix: &[u8]) -> Option<Ns> {
        self.lookup(prefix).map(|b| b.ns)
    }

    /// The namespace declarations in scope, innermost last, as (prefix, URI); prefix empty =
    /// default namespace.
    pub(crate) fn in_scope(&self) -> impl DoubleEndedIterator<Item = (&'a [u8], &[u8])> + '_ {
        self.bindings.iter().map(|b| (b.prefix, self.uri_of(b)))
    }

    /// Whether every namespace declaration in scope satisfies `implied(prefix, class)` (the
    /// class of a URI is that of its resolved form, so for a known namespace it stands for
    /// the URI itself).
    pub(crate) fn all_in_scope(&self, implied: impl Fn(&[u8], Ns) -> bool) -> bool {
        self.bindings.iter().all(|b| implied(b.prefix, b.ns))
    }

    /// The URI of a binding in scope (references resolved).
    pub(crate) fn uri_of(&self, b: &Binding<'a>) -> &[u8] {
        match b.owned {
            None => b.uri,
            Some(k) => self.owned_uris.get(k).map_or(b.uri, |v| v.as_slice()),
        }
    }

    /// The binding of `prefix` (empty = default namespace), innermost first.
    #[inline(always)]
    pub(crate) fn lookup(&self, prefix: &[u8]) -> Option<Binding<'a>> {
        self.bindings.rfind(|b| eq_short(b.prefix, prefix))
    }

    /// The attributes other than namespace declarations of `el`: those recorded when it was
    /// read if it is the last tag read with attributes (the usual case), else scanned again.
    pub(crate) fn attrs(&self, el: &El<'a>) -> AttrIter<'_, 'a> {
        match self.last_attrs.get(..self.last_attrs_n) {
            Some(rec) if el.pos == self.last_attrs_pos => AttrIter::Recorded(rec.iter()),
            _ => AttrIter::Scan(Attrs::new(el.attrs)),
        }
    }

    /// A start tag at `pos` named `q`. `simple` = `Some(empty)` for a tag without attributes
    /// (the tokenizer has consumed it); `None` when `tail` (the input after the name) starts
    /// with the attributes: they are scanned here, up to the end of the tag.
    fn start(
        &mut self,
        q: &'a [u8],
        colon: Option<usize>,
        tail: &'a [u8],
        pos: usize,
        simple: Option<bool>,
    ) -> Result<El<'a>, DecodeErrorKind> {
        let l = self.limits;
        self.depth += 1;
        if self.depth > l.max_depth {
            return Err(self.limit(LimitKind::Depth, l.max_depth, pos));
        }
        if q.len() > l.max_name_len {
            return Err(self.limit(LimitKind::NameLength, l.max_name_len, pos));
        }
        // one pass over the attributes: well-formedness, count, duplicates, declarations
        let depth = self.depth;
        let mut n = 0usize;
        let mut soap_attrs = false;
        // prefixes of prefixed attributes, checked once the tag's declarations are known
        let mut attr_prefixes: [&[u8]; 4] = [b""; 4];
        let mut n_prefixed = 0usize;
        let mut prefix_overflow = false;
        let (attrs, empty) = if let Some(empty) = simple {
            (&b""[..], empty)
        } else if let Some((value, end)) = default_decl_only(tail)
            .filter(|&(_, end)| self.fast && l.max_attributes >= 1 && end <= l.max_attributes_len)
        {
            // the usual first element of an application body, `<p xmlns="urn:…">`: what the
            // loop below does for this one declaration, without scanning for it
            self.bindings.push(Binding {
                prefix: b"",
                uri: value,
                owned: None,
                ns: Ns::classify(value),
                depth,
            });
            self.last_attrs_n = 0;
            self.last_attrs_pos = pos;
            self.i = pos + 1 + q.len() + end + 1;
            (tail.get(..end).unwrap_or_default(), false)
        } else {
            let mut seen: [&[u8]; 8] = [b""; 8];
            let mut seen_more: Vec<&[u8]> = Vec::new();
            // recorded in place: invalid until the tag has been scanned completely
            self.last_attrs_pos = usize::MAX;
            let mut n_rec = 0usize;
            let mut it = Attrs::new(tail);
            while let Some(a) = it.next() {
                let (key, value) = match a {
                    Ok(kv) => kv,
                    Err(e) => return Err(self.xml_err_at(pos, format!("malformed attribute: {e}"))),
                };
                if it.i > l.max_attributes_len {
                    return Err(self.limit(LimitKind::AttributesLength, l.max_attributes_len, pos));
                }
                n += 1;
                if n > l.max_attributes {
                    return Err(self.limit(LimitKind::Attributes, l.max_attributes, pos));
                }
                let prev = seen.get(..(n - 1).min(8)).unwrap_or_default();
                if prev.contains(&key) || seen_more.contains(&key) {
                    return Err(self.xml_err_at(pos, "duplicate attribute"));
                }
                match seen.get_mut(n - 1) {
                    Some(slot) => *slot = key,
                    None => seen_more.push(key),
                }
                let prefix: &'a [u8] = if key == b"xmlns" {
                    b""
                } else if let Some(p) = key.strip_prefix(b"xmlns:") {
                    if p.is_empty() || p == b"xmlns" || value.is_empty() {
                        return Err(self.xml_err_at(pos, "invalid namespace declaration"));
                    }
                    p
                } else {
                    if let Some(slot) = self.last_attrs.get_mut(n_rec) {
                        *slot = (key, value);
                    }
                    n_rec += 1;
                    if let Some(i) = key.iter().position(|&c| c == b':') {
                        let local = key.get(i + 1..).unwrap_or_default();
                        if matches!(local, b"mustUnderstand" | b"actor" | b"role") {
                            soap_attrs = true;
                        }
                        let p = key.get(..i).unwrap_or_default();
                        if p != b"xml" {
                            match attr_prefixes.get_mut(n_prefixed) {
                                Some(slot) => *slot = p,
                                None => prefix_overflow = true,
                            }
                            n_prefixed += 1;
                        }
                    }
                    continue;
                };
                // a known URI contains no reference: only other URIs are searched for `&`
                let mut ns = match it.known {
                    Some(ns) => ns,
                    None => Ns::classify(value),
                };
                let owned = if ns == Ns::Other && has_byte(value, b'&') {
                    match attr_value(value) {
                        Ok(v) => {
                            let v = v.into_owned().into_bytes();
                            ns = Ns::classify(&v);
                            Some(v)
                        }
                        Err(e) => {
                            return Err(self.xml_err_at(pos, format!("bad namespace URI: {e}")))
                        }
                    }
                } else {
                    None
                };
                if prefix == b"xml" && ns != Ns::Xml {
                    return Err(self.xml_err_at(pos, "the xml prefix cannot be rebound"));
                }
                let is_owned = owned.map(|v| {
                    self.owned_uris.push(v);
                    self.owned_uris.len() - 1
                });
                self.bindings.push(Binding {
                    prefix,
                    uri: value,
                    owned: is_owned,
                    ns,
                    depth,
                });
            }
            let Some((end, empty)) = it.end else {
                return Err(self.xml_err_at(pos, "unclosed start tag (truncated document)"));
            };
            self.last_attrs_n = n_rec;
            self.last_attrs_pos = pos;
            if end > l.max_attributes_len {
                return Err(self.limit(LimitKind::AttributesLength, l.max_attributes_len, pos));
            }
            // `<` + name + attributes + `>` or `/>`
            self.i = pos + 1 + q.len() + end + if empty { 2 } else { 1 };
            (tail.get(..end).unwrap_or_default(), empty)
        };
        // every attribute prefix must be declared (in scope or on this tag)
        let undeclared = |p: &[u8]| p != b"xml" && self.lookup(p).is_none();
        if prefix_overflow {
            for (key, _) in Attrs::new(attrs).flatten() {
                if let Some(i) = key.iter().position(|&c| c == b':') {
                    if !key.starts_with(b"xmlns:") && undeclared(key.get(..i).unwrap_or_default()) {
                        return Err(
                            self.xml_err_at(pos, "undeclared namespace prefix on an attribute")
                        );
                    }
                }
            }
        } else if attr_prefixes.iter().take(n_prefixed).any(|p| undeclared(p)) {
            return Err(self.xml_err_at(pos, "undeclared namespace prefix on an attribute"));
        }
        // resolve the element name
        let (prefix, local) = match colon {
            Some(i) => (
                q.get(..i).unwrap_or_default(),
                q.get(i + 1..).unwrap_or_default(),
            ),
            None => (&b""[..], q),
        };
        let ns = match self.lookup(prefix) {
            Some(b) => b.ns,
            None if prefix.is_empty() => Ns::None,
            None => {
                return Err(DecodeErrorKind::Xml {
                    offset: self.base + pos,
                    reason: format!(
                        "undeclared namespace prefix in <{}>",
                        String::from_utf8_lossy(q)
                    ),
                })
            }
        };
        if empty {
            self.pending_end = true;
        } else {
            self.open.push(q);
        }
        let content_start = self.pos();
        Ok(El {
            ns,
            qname: q,
            local,
            attrs,
            pos,
            content_start,
            empty,
            soap_attrs,
        })
    }

    /// Next child element of the current element; `None` when the current element ends (its
    /// end tag is consumed). Whitespace and comments are skipped; other text is an error.
    pub(crate) fn next_child(&mut self) -> PResult<Option<El<'a>>> {
        // fast path: a start tag right here (no pending synthetic end): read directly, not
        // through `Raw`
        if !self.pending_end {
            let pos = self.i;
            let rest = self.src.get(pos..).unwrap_or_default();
            if rest.first() == Some(&b'<')
                && !matches!(rest.get(1), Some(b'/' | b'!' | b'?') | None)
            {
                if self.pending_pop {
                    self.pending_pop = false;
                    self.pop_bindings();
                }
                return Ok(Some(self.start_tag(pos, rest)?));
            }
            // likewise the end tag of the innermost open element
            let expected = self.open.last().unwrap_or_default();
            let n = expected.len();
            if rest.get(..2) == Some(b"</")
                && n > 0
                && rest.get(2..2 + n).is_some_and(|g| eq_name(g, expected))
                && rest.get(2 + n) == Some(&b'>')
            {
                if self.pending_pop {
                    self.pop_bindings();
                }
                self.i = pos + n + 3;
                self.open.pop();
                self.depth = self.depth.saturating_sub(1);
                self.pending_pop = true;
                return Ok(None);
            }
        }
        loop {
            match self.next_raw()? {
                Raw::Start(el) => return Ok(Some(el)),
                Raw::End { .. } => return Ok(None),
                Raw::Text(t) => {
                    if !is_xml_ws(t) {
                        return bad("unexpected text content");
                    }
                }
                Raw::Char(_) | Raw::Entity(_) => return bad("unexpected text content"),
                Raw::Eof => return Err(self.eof().into()),
            }
        }
    }

    pub(crate) fn eof(&self) -> DecodeErrorKind {
        DecodeErrorKind::Xml {
            offset: self.base + self.src.len(),
            reason: "unexpected end of input (truncated document)".into(),
        }
    }

    /// Skips the rest of `el` (whose start was just read).
    pub(crate) fn skip(&mut self, el: &El<'a>) -> PResult<()> {
        if el.empty {
            // consume the synthetic end
            if self.pending_end {
                self.pending_end = false;
                self.depth = self.depth.saturating_sub(1);
                self.pending_pop = true;
            }
            return Ok(());
        }
        self.skip_to_depth(self.depth - 1).map(|_| ())
    }

    /// Reads events until the depth drops to `target`; returns the offset of the final end tag.
    pub(crate) fn skip_to_depth(&mut self, target: usize) -> PResult<usize> {
        loop {
            match self.next_raw()? {
                Raw::End { pos } if self.depth == target => return Ok(pos),
                Raw::Eof => return Err(self.eof().into()),
                _ => {}
            }
        }
    }

    /// The text content of `el` (simple content: no child elements), not trimmed.
    pub(crate) fn text(&mut self, el: &El<'a>) -> PResult<Cow<'a, str>> {
        if el.empty {
            self.skip(el)?;
            return Ok(Cow::Borrowed(""));
        }
        let max = self.limits.max_text_len;
        // fast path: plain character data directly followed by this element's end tag
        if !self.pending_pop && !self.pending_end {
            let start = self.i;
            let rest = self.src.get(start..).unwrap_or_default();
            let len = memchr2(b'<', b'&', rest).unwrap_or(rest.len());
            let name = self.open.last().unwrap_or_default();
            let n = name.len();
            let after = rest.get(len..).unwrap_or_default();
            if len <= max
                && n > 0
                && after.get(..2) == Some(b"</")
                && after.get(2..2 + n) == Some(name)
                && after.get(2 + n) == Some(&b'>')
                && self.open.len() == self.depth
            {
                // `start..start + len` lies before a `<`: character boundaries at both ends
                let t = match self.text_src.get(start..start + len) {
                    Some(t) => t,
                    None => self.str_at(rest.get(..len).unwrap_or_default())?,
                };
                self.open.pop();
                self.i = start + len + n + 3;
                self.depth = self.depth.saturating_sub(1);
                self.pending_pop = true;
                return Ok(Cow::Borrowed(t));
            }
        }
        let mut acc: Option<String> = None;
        let mut first: &'a [u8] = b"";
        loop {
            match self.next_raw()? {
                Raw::End { .. } => break,
                Raw::Eof => return Err(self.eof().into()),
                Raw::Start(_) => return bad("unexpected element in a simple value"),
                Raw::Text(t) => match &mut acc {
                    None if first.is_empty() => first = t,
                    None => {
                        let mut s = self.str_at(first)?.to_owned();
                        s.push_str(self.str_at(t)?);
                        acc = Some(s);
                    }
                    Some(s) => s.push_str(self.str_at(t)?),
                },
                Raw::Char(c) => {
                    let s = acc.get_or_insert_with(String::new);
                    if s.is_empty() && !first.is_empty() {
                        s.push_str(self.str_at(first)?);
                    }
                    s.push(c);
                    first = b"";
                }
                Raw::Entity(e) => {
                    let s = acc.get_or_insert_with(String::new);
                    if s.is_empty() && !first.is_empty() {
                        s.push_str(self.str_at(first)?);
                    }
                    s.push_str(e);
                    first = b"";
                }
            }
            let len = acc.as_ref().map_or(first.len(), |s| s.len());
            if len > max {
                return Err(self
                    .limit(LimitKind::TextLength, max, el.content_start)
                    .into());
            }
        }
        match acc {
            Some(s) => Ok(Cow::Owned(s)),
            None => Ok(Cow::Borrowed(self.str_at(first)?)),
        }
    }

    /// Trimmed text content.
    pub(crate) fn trimmed(&mut self, el: &El<'a>) -> PResult<Cow<'a, str>> {
        Ok(match self.text(el)? {
            Cow::Borrowed(s) => Cow::Borrowed(trim_xml(s)),
            Cow::Owned(s) => {
                let t = trim_xml(&s);
                if t.len() == s.len() {
                    Cow::Owned(s)
                } else {
                    Cow::Owned(t.to_owned())
                }
            }
        })
    }

    /// Resolves a QName value (`p:local` or `local`) against the namespaces in scope, including
    /// the declarations of the element just read. Returns (namespace, local).
    pub(crate) fn resolve_qname(&self, value: &str) -> PResult<(String, String)> {
        let (prefix, local) = match value.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", value),
        };
        let ns = match self.lookup(prefix.as_bytes()) {
            Some(b) => String::from_utf8_lossy(self.uri_of(&b)).into_owned(),
            None if prefix.is_empty() => String::new(),
            None if prefix == "xml" => crate::ns::XML.to_owned(),
            None => return bad(format!("QName '{value}' uses undeclared prefix '{prefix}'")),
        };
        Ok((ns, local.to_owned()))
    }

    /// Classifies an attribute name's namespace (unprefixed attributes have none).
    pub(crate) fn attr_ns(&self, key: QName<'_>) -> Ns {
        let k = key.as_ref();
        match k.iter().position(|&c| c == b':') {
            None => Ns::None,
            Some(i) => {
                let p = k.get(..i).unwrap_or_default();
                if p == b"xml" {
                    return Ns::Xml;
                }
                self.lookup(p).map_or(Ns::Other, |b| b.ns)
            }
        }
    }

    /// Skips opaque content (an application body) until the depth drops to `target`; returns
    /// the offset of the end tag that gets there (consumed). Only the structure is checked:
    /// tags are well-formed names that nest and match, comments, CDATA sections, processing
    /// instructions and DOCTYPE are handled as everywhere else, and the depth, name-length and
    /// tag-length limits hold, references must be predefined or character references.
    /// Attributes and namespace prefixes inside are not interpreted (WCF parses a body only
    /// when the application reads it). Text is skipped with one `memchr2` per markup.
    pub(crate) fn skip_opaque(&mut self, target: usize) -> PResult<usize> {
        let l = self.limits;
        loop {
            let pos = if self.pending_pop || self.pending_end {
                None
            } else {
                let i = self.i;
                let rest = self.src.get(i..).unwrap_or_default();
                // markup right here (tags without text between them): no search
                let next = if rest.first() == Some(&b'<') {
                    Some(0)
                } else {
                    memchr2(b'<', b'&', rest)
                };
                match next {
                    Some(k) if rest.get(k) == Some(&b'&') => {
                        // references are checked (no entity expansion), their value dropped
                        self.reference(i + k, rest.get(k..).unwrap_or_default())?;
                        continue;
                    }
                    Some(k) => Some(i + k),
                    None => return Err(self.eof().into()),
                }
            };
            if let Some(p) = pos {
                // an end tag closing the innermost open element (the usual case): here, not
                // through the strict path
                let t = self.src.get(p..).unwrap_or_default();
                let expected = self.open.last().unwrap_or_default();
                let n = expected.len();
                if t.get(1) == Some(&b'/')
                    && n > 0
                    && t.get(2..2 + n).is_some_and(|g| eq_name(g, expected))
                    && t.get(2 + n) == Some(&b'>')
                {
                    self.i = p + n + 3;
                    self.open.pop();
                    self.depth = self.depth.saturating_sub(1);
                    self.pop_bindings();
                    if self.depth == target {
                        return Ok(p);
                    }
                    continue;
                }
            }
            let light = pos.and_then(|p| {
                let t = self.src.get(p..).unwrap_or_default();
                match t.get(1) {
                    Some(b'/' | b'!' | b'?') | None => None,
                    Some(_) => Some((p, t)),
                }
            });
            let Some((pos, t)) = light else {
                // end tags, comments, CDATA, PIs, DOCTYPE and pending events: the strict path
                if let Some(p) = pos {
                    self.i = p;
                }
                match self.next_raw()? {
                    Raw::End { pos } if self.depth == target => return Ok(pos),
                    Raw::Start(el) if el.empty => self.skip(&el)?,
                    Raw::Eof => return Err(self.eof().into()),
                    _ => {}
                }
                continue;
            };
            // a start tag: its name, then the first `>` outside quoted values
            let (j, class, _, ok) = scan_name(t, 1);
            if !ok {
                return Err(self.xml_err_at(pos, "malformed element name").into());
            }
            if j - 1 > l.max_name_len {
                return Err(self
                    .limit(LimitKind::NameLength, l.max_name_len, pos)
                    .into());
            }
            let (empty, gt) = match class {
                C_GT => (false, j),
                C_SLASH if t.get(j + 1) == Some(&b'>') => (true, j + 1),
                C_WS => {
                    let mut k = j;
                    let gt = loop {
                        let tail = t.get(k..).unwrap_or_default();
                        let Some(m) = memchr3(b'>', b'"', b'\'', tail) else {
                            return Err(self.eof().into());
                        };
                        let at = k + m;
                        let q = t.get(at).copied().unwrap_or(b'>');
                        if q == b'>' {
                            break at;
                        }
                        match memchr(q, t.get(at + 1..).unwrap_or_default()) {
                            Some(e) => k = at + 1 + e + 1,
                            None => return Err(self.eof().into()),
                        }
                    };
                    if gt - j > l.max_attributes_len {
                        return Err(self
                            .limit(LimitKind::AttributesLength, l.max_attributes_len, pos)
                            .into());
                    }
                    (t.get(gt - 1) == Some(&b'/'), gt)
                }
                C_END => return Err(self.eof().into()),
                _ => return Err(self.xml_err_at(pos, "malformed element name").into()),
            };
            if self.depth + 1 > l.max_depth {
                return Err(self.limit(LimitKind::Depth, l.max_depth, pos).into());
            }
            self.i = pos + gt + 1;
            if !empty {
                self.depth += 1;
                self.open.push(t.get(1..j).unwrap_or_default());
            }
        }
    }

    /// Walks the content of the current element (after its start tag) to its end, checking
    /// well-formedness and limits. Returns the offset of the end tag.
    pub(crate) fn walk_to_end(&mut self, el: &El<'a>) -> PResult<usize> {
        if el.empty {
            self.skip(el)?;
            return Ok(el.content_start);
        }
        self.skip_to_depth(self.depth - 1)
    }
}

pub(crate) fn utf8(b: &[u8]) -> PResult<&str> {
    std::str::from_utf8(b).map_err(|_| {
        PErr::Fatal(DecodeErrorKind::Xml {
            offset: 0,
            reason: "text is not valid UTF-8".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologs_spell_the_namespaces() {
        use crate::ns::{AddressingVersion, SoapVersion};
        for (i, (soap, wsa)) in [
            (SoapVersion::Soap12, AddressingVersion::Wsa10),
            (SoapVersion::Soap12, AddressingVersion::Wsa200408),
            (SoapVersion::Soap11, AddressingVersion::Wsa10),
            (SoapVersion::Soap11, AddressingVersion::Wsa200408),
        ]
        .into_iter()
        .enumerate()
        {
            let (prolog, s, a) = crate::ns::ENVELOPE_STARTS[i];
            let want = format!(
                "<s:Envelope xmlns:s=\"{}\" xmlns:a=\"{}\"><s:Header>",
                soap.namespace(),
                wsa.namespace()
            );
            assert_eq!(prolog, want.as_bytes());
            assert_eq!((s, a), (soap, wsa));
            assert_eq!(Ns::of_soap(s), Ns::classify(soap.namespace().as_bytes()));
            assert_eq!(Ns::of_wsa(a), Ns::classify(wsa.namespace().as_bytes()));
            assert_eq!(
                crate::ns::envelope_start_candidate(prolog),
                Some((prolog, soap, wsa))
            );
        }
    }

    #[test]
    fn eq_name_agrees_with_slice_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|k| b'a' + k % 26).collect();
            assert!(eq_name(&a, &a.clone()));
            for m in [n.wrapping_sub(1), n + 1] {
                let b: Vec<u8> = (0..m as u8).map(|k| b'a' + k % 26).collect();
                assert_eq!(eq_name(&a, &b), a == b);
            }
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!eq_name(&a, &b), "{n} {at}");
            }
        }
    }

    /// The first control character, byte by byte (what `check_chars` must return).
    fn first_control(src: &[u8]) -> Option<usize> {
        src.iter()
            .position(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
    }

    #[test]
    fn check_chars_agrees_with_a_byte_by_byte_search() {
        // xorshift: reproducible without a dependency
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // every length around the block sizes, each single byte below 0x20 (and 0x20, 0x7f,
        // 0x80, 0xff) at the start, the end, block boundaries and in the overlapped tail
        for len in [
            0usize, 1, 2, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 383, 384, 385, 1586,
        ] {
            for c in (0u8..=0x20).chain([0x7f, 0x80, 0xff]) {
                for at in [
                    0,
                    1,
                    63,
                    64,
                    127,
                    128,
                    129,
                    255,
                    256,
                    257,
                    len / 2,
                    len.wrapping_sub(1),
                    len.wrapping_sub(50),
                ] {
                    if at < len {
                        let mut v = vec![b'x'; len];
                        v[at] = c;
                        cases.push(v);
                    }
                }
            }
        }
        // random lengths and bytes: mostly printable, some whitespace, a few control bytes
        for _ in 0..4000 {
            let len = (next() % 900) as usize;
            let rate = next() % 4;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    match r % 1000 {
                        0..=2 if rate > 0 => (r >> 16) as u8 % 0x20,
                        3..=30 if rate > 1 => [b'\t', b'\n', b'\r'][(r >> 16) as usize % 3],
                        _ => 0x20 + (r >> 16) as u8 % 0xe0,
                    }
                })
                .collect();
            cases.push(v);
        }
        for v in &cases {
            assert_eq!(check_chars(v), first_control(v), "{v:?}");
            assert_eq!(min_byte(v), v.iter().copied().min().unwrap_or(u8::MAX));
        }
    }

    #[test]
    fn known_uri_only_for_a_whole_known_value() {
        for (uri, ns) in [
            (crate::ns::SOAP11, Ns::Soap11),
            (crate::ns::SOAP12, Ns::Soap12),
            (crate::ns::WSA200408, Ns::Wsa04),
            (crate::ns::WSA10, Ns::Wsa10),
            (crate::ns::RM10, Ns::Rm10),
            (crate::ns::RM11, Ns::Rm11),
            (crate::ns::NETRM, Ns::NetRm),
            (crate::ns::XML, Ns::Xml),
        ] {
            for q in [b'"', b'\''] {
                let mut v = uri.as_bytes().to_vec();
                v.push(q);
                v.extend_from_slice(b" x='1'>");
                assert_eq!(known_uri(&v, q), Some((uri.len(), ns)), "{uri}");
                // the other quote character does not end the value
                let other = if q == b'"' { b'\'' } else { b'"' };
                assert_eq!(known_uri(&v, other), None, "{uri}");
                // longer value, shorter value
                let mut longer = uri.as_bytes().to_vec();
                longer.extend_from_slice(b"/x");
                longer.push(q);
                assert_eq!(known_uri(&longer, q), None, "{uri}");
                let short = uri.as_bytes().get(..uri.len() - 1).unwrap_or_default();
                let mut shorter = short.to_vec();
                shorter.push(q);
                shorter.extend_from_slice(b"              >");
                assert_eq!(known_uri(&shorter, q), None, "{uri}");
            }
        }
        assert_eq!(known_uri(b"urn:x\" a='1'>", b'"'), None);
    }

    #[test]
    fn attrs_report_known_namespaces() {
        let tag = br#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:x="urn:x" a="1">"#;
        let mut it = Attrs::new(tag);
        let (k, v) = it.next().and_then(|r| r.ok()).unwrap_or_default();
        assert_eq!((k, v), (&b"xmlns:s"[..], crate::ns::SOAP12.as_bytes()));
        assert_eq!(it.known, Some(Ns::Soap12));
        let (k, v) = it.next().and_then(|r| r.ok()).unwrap_or_default();
        assert_eq!((k, v), (&b"xmlns:x"[..], &b"urn:x"[..]));
        assert_eq!(it.known, None);
        let (k, v) = it.next().and_then(|r| r.ok()).unwrap_or_default();
        assert_eq!((k, v), (&b"a"[..], &b"1"[..]));
        assert!(it.next().is_none());
        assert_eq!(it.end, Some((tag.len() - 1, false)));
    }
}
