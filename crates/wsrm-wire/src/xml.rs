//! A thin, limit-enforcing cursor over quick-xml's namespace-aware slice reader.
//!
//! Everything here is streaming: no tree is built. Each start tag is classified by namespace
//! (`Ns`) once; names are borrowed from the input slice.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::NsReader;

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

/// A start tag.
pub(crate) struct El<'a> {
    pub ns: Ns,
    pub local: &'a [u8],
    pub start: BytesStart<'a>,
    /// Offset of `<`.
    pub pos: usize,
    /// Offset just after the start tag's `>`.
    pub content_start: usize,
    pub empty: bool,
}

impl El<'_> {
    pub(crate) fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local == local.as_bytes()
    }

    /// `{ns}local` for messages (allocates; error paths only).
    pub(crate) fn clark(&self, rd: &Rd<'_>) -> String {
        let ns = match rd.r.resolve_element(self.start.name()).0 {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
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

pub(crate) struct Rd<'a> {
    pub r: NsReader<&'a [u8]>,
    pub src: &'a [u8],
    /// Offset of `src` in the caller's buffer (a skipped BOM).
    pub base: usize,
    limits: &'a Limits,
    pub depth: usize,
    pending_end: bool,
    events: usize,
}

fn is_xml_ws(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}

pub(crate) fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

impl<'a> Rd<'a> {
    pub(crate) fn new(src: &'a [u8], base: usize, limits: &'a Limits) -> Self {
        let mut r = NsReader::from_reader(src);
        {
            let c = r.config_mut();
            c.check_end_names = true;
            c.expand_empty_elements = false;
            c.trim_text(false);
            c.allow_unmatched_ends = false;
            c.check_comments = true;
        }
        Rd {
            r,
            src,
            base,
            limits,
            depth: 0,
            pending_end: false,
            events: 0,
        }
    }

    pub(crate) fn limits(&self) -> &'a Limits {
        self.limits
    }

    pub(crate) fn pos(&self) -> usize {
        self.r.buffer_position() as usize
    }

    fn xml_err(&self, reason: impl Into<String>) -> DecodeErrorKind {
        DecodeErrorKind::Xml {
            offset: self.base + self.r.error_position() as usize,
            reason: reason.into(),
        }
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

    /// Next raw event with limits enforced. Comments are skipped; a DOCTYPE, a processing
    /// instruction or an XML declaration after the start are refused.
    pub(crate) fn next_raw(&mut self) -> Result<Raw<'a>, DecodeErrorKind> {
        if self.pending_end {
            self.pending_end = false;
            self.depth = self.depth.saturating_sub(1);
            let p = self.pos();
            return Ok(Raw::End { pos: p });
        }
        loop {
            let pos = self.pos();
            self.events += 1;
            let (res, ev) = match self.r.read_resolved_event() {
                Ok(x) => x,
                Err(e) => {
                    let reason = e.to_string();
                    return Err(self.xml_err(reason));
                }
            };
            match ev {
                Event::Start(start) => {
                    let ns = classify(&res);
                    return self.start(ns, start, pos, false).map(Raw::Start);
                }
                Event::Empty(start) => {
                    let ns = classify(&res);
                    return self.start(ns, start, pos, true).map(Raw::Start);
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Raw::End { pos });
                }
                Event::Text(_) => {
                    let end = self.pos();
                    return Ok(Raw::Text(self.src.get(pos..end).unwrap_or_default()));
                }
                Event::CData(_) => {
                    let end = self.pos();
                    // `<![CDATA[` … `]]>`
                    let inner = self
                        .src
                        .get(pos + 9..end.saturating_sub(3))
                        .unwrap_or_default();
                    return Ok(Raw::Text(inner));
                }
                Event::GeneralRef(r) => {
                    if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => return Ok(Raw::Char(c)),
                            _ => return Err(self.xml_err_at(pos, "invalid character reference")),
                        }
                    }
                    let name = std::str::from_utf8(&r).unwrap_or("");
                    match quick_xml::escape::resolve_predefined_entity(name) {
                        Some(s) => return Ok(Raw::Entity(s)),
                        None => {
                            return Err(self.xml_err_at(pos, format!(
                                "entity reference '&{name};' is not allowed (no DTD, no entity expansion)"
                            )))
                        }
                    }
                }
                Event::Comment(_) => continue,
                Event::Decl(d) => {
                    if pos != 0 {
                        return Err(self.xml_err_at(pos, "XML declaration not at the start"));
                    }
                    if let Some(enc) = d.encoding() {
                        let ok = matches!(&enc, Ok(v) if v.eq_ignore_ascii_case(b"utf-8"));
                        if !ok {
                            return Err(self.xml_err_at(pos, "only UTF-8 is accepted"));
                        }
                    }
                    continue;
                }
                Event::PI(_) => {
                    return Err(self.xml_err_at(pos, "processing instructions are not allowed"))
                }
                Event::DocType(_) => {
                    return Err(DecodeErrorKind::Doctype {
                        offset: self.base + pos,
                    })
                }
                Event::Eof => return Ok(Raw::Eof),
            }
        }
    }

    fn start(
        &mut self,
        ns: Result<Ns, ()>,
        start: BytesStart<'a>,
        pos: usize,
        empty: bool,
    ) -> Result<El<'a>, DecodeErrorKind> {
        let l = self.limits;
        self.depth += 1;
        if self.depth > l.max_depth {
            return Err(self.limit(LimitKind::Depth, l.max_depth, pos));
        }
        let qlen = start.name().as_ref().len();
        if qlen > l.max_name_len {
            return Err(self.limit(LimitKind::NameLength, l.max_name_len, pos));
        }
        let raw = start.attributes_raw();
        if raw.len() > l.max_attributes_len {
            return Err(self.limit(LimitKind::AttributesLength, l.max_attributes_len, pos));
        }
        // Cheap upper bound on the attribute count, exact count only when needed.
        if raw.iter().filter(|&&c| c == b'=').count() > l.max_attributes {
            let mut n = 0usize;
            for a in start.attributes() {
                if a.is_err() {
                    return Err(self.xml_err_at(pos, "malformed attribute"));
                }
                n += 1;
            }
            if n > l.max_attributes {
                return Err(self.limit(LimitKind::Attributes, l.max_attributes, pos));
            }
        }
        let ns = match ns {
            Ok(ns) => ns,
            Err(()) => {
                return Err(DecodeErrorKind::Xml {
                    offset: self.base + pos,
                    reason: format!(
                        "undeclared namespace prefix in <{}>",
                        String::from_utf8_lossy(start.name().as_ref())
                    ),
                })
            }
        };
        // local name borrowed from the input: `<` + [prefix ':'] local
        let name_start = pos + 1;
        let q = self
            .src
            .get(name_start..name_start + qlen)
            .unwrap_or_default();
        let local = match q.iter().position(|&c| c == b':') {
            Some(i) => q.get(i + 1..).unwrap_or_default(),
            None => q,
        };
        if empty {
            self.pending_end = true;
        }
        let content_start = self.pos();
        Ok(El {
            ns,
            local,
            start,
            pos,
            content_start,
            empty,
        })
    }

    /// Next child element of the current element; `None` when the current element ends (its
    /// end tag is consumed). Whitespace and comments are skipped; other text is an error.
    pub(crate) fn next_child(&mut self) -> PResult<Option<El<'a>>> {
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
            }
            return Ok(());
        }
        self.skip_to_depth(self.depth - 1).map(|_| ())
    }

    /// Reads events until the depth drops to `target`; returns the offset of the final end tag.
    pub(crate) fn skip_to_depth(&mut self, target: usize) -> PResult<usize> {
        loop {
            match self.next_raw()? {
                Raw::End { pos } => {
                    if self.depth == target {
                        return Ok(pos);
                    }
                }
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
                        let mut s = utf8(first)?.to_owned();
                        s.push_str(utf8(t)?);
                        acc = Some(s);
                    }
                    Some(s) => s.push_str(utf8(t)?),
                },
                Raw::Char(c) => {
                    let s = acc.get_or_insert_with(String::new);
                    if s.is_empty() && !first.is_empty() {
                        s.push_str(utf8(first)?);
                    }
                    s.push(c);
                    first = b"";
                }
                Raw::Entity(e) => {
                    let s = acc.get_or_insert_with(String::new);
                    if s.is_empty() && !first.is_empty() {
                        s.push_str(utf8(first)?);
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
            None => Ok(Cow::Borrowed(utf8(first)?)),
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
    /// the declarations of the element being read. Returns (namespace, local).
    pub(crate) fn resolve_qname(&self, value: &str) -> PResult<(String, String)> {
        let (res, local) = self.r.resolve_element(QName(value.as_bytes()));
        let ns = match res {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return bad(format!(
                    "QName '{}' uses undeclared prefix '{}'",
                    value,
                    String::from_utf8_lossy(&p)
                ))
            }
        };
        Ok((ns, String::from_utf8_lossy(local.as_ref()).into_owned()))
    }

    /// Classifies an attribute name's namespace.
    pub(crate) fn attr_ns(&self, key: QName<'_>) -> (Ns, Vec<u8>) {
        let (res, local) = self.r.resolve_attribute(key);
        let ns = match res {
            ResolveResult::Bound(n) => Ns::classify(n.as_ref()),
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(_) => Ns::Other,
        };
        (ns, local.as_ref().to_vec())
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

fn classify(res: &ResolveResult<'_>) -> Result<Ns, ()> {
    match res {
        ResolveResult::Bound(n) => Ok(Ns::classify(n.as_ref())),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(_) => Err(()),
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
