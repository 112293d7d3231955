//! Making an application body self-contained: the namespace declarations it inherits from the
//! `Envelope`/`Body` elements (gSOAP declares every namespace on the `Envelope`) are copied onto
//! its top-level element(s), so the body can be stored, delivered or echoed on its own.

use bytes::{Bytes, BytesMut};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Returns `body` (the raw content of `s:Body`, as in [`crate::Decoded::body_bytes`]) with the
/// declarations of `namespaces` (see [`crate::Decoded::body_namespaces`]) that it uses added to
/// each top-level element that does not declare the prefix itself.
///
/// A prefix counts as used when it appears in an element or attribute name anywhere in that
/// element's subtree, or as the prefix of an `xsi:type` value (gSOAP writes typed bodies).
/// Unused declarations are not copied. Without anything to add the input is returned as is
/// (zero-copy); input that is not well-formed XML is returned unchanged too (the decoder has
/// already checked it, so that only happens for bytes that did not come from it).
///
/// ```
/// use bytes::Bytes;
/// let body = Bytes::from_static(b"<p:p>message-1</p:p>");
/// let ns = vec![
///     ("p".to_string(), "urn:wsrm:payload".to_string()),
///     ("xsd".to_string(), "http://www.w3.org/2001/XMLSchema".to_string()),
/// ];
/// let out = wsrm_wire::self_contained_body(&body, &ns);
/// assert_eq!(&out[..], &b"<p:p xmlns:p=\"urn:wsrm:payload\">message-1</p:p>"[..]);
/// ```
pub fn self_contained_body(body: &Bytes, namespaces: &[(String, String)]) -> Bytes {
    if namespaces.is_empty() || body.is_empty() {
        return body.clone();
    }
    match insertions(body, namespaces) {
        Some(ins) if !ins.is_empty() => {
            let extra: usize = ins.iter().map(|(_, s)| s.len()).sum();
            let mut out = BytesMut::with_capacity(body.len() + extra);
            let mut at = 0;
            for (pos, decls) in &ins {
                if let Some(chunk) = body.get(at..*pos) {
                    out.extend_from_slice(chunk);
                }
                out.extend_from_slice(decls.as_bytes());
                at = *pos;
            }
            if let Some(rest) = body.get(at..) {
                out.extend_from_slice(rest);
            }
            out.freeze()
        }
        _ => body.clone(),
    }
}

/// One top-level element being scanned.
struct Top {
    /// Byte offset where declarations are inserted (before `>` or `/>` of its start tag).
    insert_at: usize,
    /// Prefixes the element declares itself (`""` = default namespace).
    declared: Vec<Vec<u8>>,
    /// Prefixes used in its subtree (`""` = an unprefixed element).
    used: Vec<Vec<u8>>,
}

fn insertions(body: &[u8], namespaces: &[(String, String)]) -> Option<Vec<(usize, String)>> {
    let mut r = Reader::from_reader(body);
    r.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut top: Option<Top> = None;
    let mut out = Vec::new();
    loop {
        let before = usize::try_from(r.buffer_position()).ok()?;
        let ev = r.read_event().ok()?;
        let after = usize::try_from(r.buffer_position()).ok()?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                if depth == 0 {
                    let tag = body.get(before..after)?;
                    let end = if empty { 2 } else { 1 };
                    let mut insert_at = after.checked_sub(end)?;
                    // `<a:b />`: keep the declarations before the whitespace-free `/>`
                    while insert_at > before
                        && tag
                            .get(insert_at - before - 1)
                            .is_some_and(|c| c.is_ascii_whitespace())
                    {
                        insert_at -= 1;
                    }
                    top = Some(Top {
                        insert_at,
                        declared: declarations(e),
                        used: Vec::new(),
                    });
                }
                if let Some(t) = top.as_mut() {
                    uses(e, &mut t.used);
                }
                if empty {
                    if depth == 0 {
                        if let Some(t) = top.take() {
                            push_insertion(&mut out, t, namespaces);
                        }
                    }
                } else {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    if let Some(t) = top.take() {
                        push_insertion(&mut out, t, namespaces);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (depth == 0).then_some(out)
}

fn push_insertion(out: &mut Vec<(usize, String)>, t: Top, namespaces: &[(String, String)]) {
    // the innermost (last) declaration of a prefix wins, as the reader reports them in order
    let winners = namespaces
        .iter()
        .enumerate()
        .filter(|(i, (p, _))| !namespaces.iter().skip(i + 1).any(|(q, _)| q == p));
    let mut decls = String::new();
    for (_, (prefix, uri)) in winners {
        let p = prefix.as_bytes();
        if prefix == "xml" || !t.used.iter().any(|u| u == p) || t.declared.iter().any(|d| d == p) {
            continue;
        }
        if prefix.is_empty() {
            decls.push_str(" xmlns=\"");
        } else {
            decls.push_str(" xmlns:");
            decls.push_str(prefix);
            decls.push_str("=\"");
        }
        escape_attr(uri, &mut decls);
        decls.push('"');
    }
    if !decls.is_empty() {
        out.push((t.insert_at, decls));
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Prefixes declared on an element (`""` for `xmlns=`).
fn declarations(e: &BytesStart<'_>) -> Vec<Vec<u8>> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .filter_map(|a| {
            let k = a.key.as_ref();
            if k == b"xmlns" {
                Some(Vec::new())
            } else {
                k.strip_prefix(b"xmlns:").map(<[u8]>::to_vec)
            }
        })
        .collect()
}

fn add(used: &mut Vec<Vec<u8>>, p: &[u8]) {
    if !used.iter().any(|u| u == p) {
        used.push(p.to_vec());
    }
}

fn prefix_of(qname: &[u8]) -> Option<&[u8]> {
    qname
        .iter()
        .position(|&c| c == b':')
        .and_then(|i| qname.get(..i))
}

/// Records the prefixes an element uses (its name, its attribute names, `xsi:type` values).
fn uses(e: &BytesStart<'_>, used: &mut Vec<Vec<u8>>) {
    add(used, prefix_of(e.name().as_ref()).unwrap_or(b""));
    for a in e.attributes().with_checks(false).flatten() {
        let k = a.key.as_ref();
        if k == b"xmlns" || k.starts_with(b"xmlns:") {
            continue;
        }
        if let Some(p) = prefix_of(k) {
            add(used, p);
            if k.ends_with(b":type") {
                if let Some(vp) = prefix_of(a.value.as_ref()) {
                    add(used, vp.trim_ascii());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(p, u)| (p.to_string(), u.to_string()))
            .collect()
    }

    fn run(body: &'static str, pairs: &[(&str, &str)]) -> String {
        let out = self_contained_body(&Bytes::from_static(body.as_bytes()), &ns(pairs));
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn gsoap_payload_gets_its_prefix_only() {
        let pairs = [
            ("SOAP-ENV", "http://www.w3.org/2003/05/soap-envelope"),
            ("xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("p", "urn:wsrm:payload"),
        ];
        assert_eq!(
            run("<p:p>message-1</p:p>", &pairs),
            "<p:p xmlns:p=\"urn:wsrm:payload\">message-1</p:p>"
        );
    }

    #[test]
    fn nested_attribute_and_xsi_type_prefixes_are_declared() {
        let pairs = [
            ("xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("xsd", "http://www.w3.org/2001/XMLSchema"),
            ("p", "urn:p"),
            ("q", "urn:q"),
        ];
        assert_eq!(
            run("<p:a><q:b xsi:type=\"xsd:string\">x</q:b></p:a>", &pairs),
            "<p:a xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:p=\"urn:p\" \
             xmlns:q=\"urn:q\"><q:b xsi:type=\"xsd:string\">x</q:b></p:a>"
        );
    }

    #[test]
    fn several_top_level_elements_empty_tags_and_own_declarations() {
        let pairs = [("p", "urn:p"), ("", "urn:default")];
        assert_eq!(
            run(
                "<p:a/> <p:b xmlns:p=\"urn:own\"/><c /><p:d a=\"1\"></p:d>",
                &pairs
            ),
            "<p:a xmlns:p=\"urn:p\"/> <p:b xmlns:p=\"urn:own\"/><c xmlns=\"urn:default\" />\
             <p:d a=\"1\" xmlns:p=\"urn:p\"></p:d>"
        );
    }

    #[test]
    fn innermost_declaration_wins_and_uri_is_escaped() {
        let pairs = [("p", "urn:outer"), ("p", "urn:a&\"b")];
        assert_eq!(
            run("<p:a/>", &pairs),
            "<p:a xmlns:p=\"urn:a&amp;&quot;b\"/>"
        );
    }

    #[test]
    fn nothing_to_add_is_zero_copy_and_bad_xml_is_unchanged() {
        let body = Bytes::from_static(b"<a xmlns=\"urn:x\">t</a>");
        let out = self_contained_body(&body, &ns(&[("p", "urn:p")]));
        assert_eq!(out.as_ptr(), body.as_ptr());
        assert_eq!(
            run("<p:a><p:b></p:a>", &[("p", "urn:p")]),
            "<p:a><p:b></p:a>"
        );
        assert_eq!(run("", &[("p", "urn:p")]), "");
        assert_eq!(run("just text", &[("p", "urn:p")]), "just text");
    }
}
