//! Profiling helper: decodes one file N times, or DOM-parses it (`dom`), or only tokenizes it
//! with quick-xml (`raw`), or encodes its decoded message (`encode`):
//! `cargo run --release --example loop_decode FILE N [dom|raw|encode]`.
fn main() {
    let mut a = std::env::args().skip(1);
    let path = a.next().expect("file");
    let n: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mode = a.next().unwrap_or_default();
    let dom = mode == "dom";
    let raw = mode == "raw";
    let enc = mode == "encode";
    let b = bytes::Bytes::from(std::fs::read(path).expect("read"));
    let text = String::from_utf8(b.to_vec()).expect("utf8");
    let limits = wsrm_wire::Limits::default();
    let msg = wsrm_wire::decode(b.clone(), &wsrm_wire::Limits::default()).expect("decode");
    let framing = wsrm_wire::Framing::new(msg.soap, msg.addressing);
    let mut out = bytes::BytesMut::with_capacity(4096);
    let t = std::time::Instant::now();
    let mut k = 0usize;
    for _ in 0..n {
        if enc {
            out.clear();
            wsrm_wire::encode_into(&msg.message, &framing, &mut out).expect("encode");
            k += out.len();
        } else if raw {
            let mut r = quick_xml::Reader::from_reader(&b[..]);
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Eof) | Err(_) => break,
                    Ok(_) => k += 1,
                }
            }
        } else if dom {
            k += roxmltree::Document::parse(&text)
                .expect("dom")
                .root()
                .children()
                .count();
        } else {
            k += wsrm_wire::decode(b.clone(), &limits)
                .expect("decode")
                .header_count;
        }
    }
    println!("{k} {:?}/op", t.elapsed() / n as u32);
}
