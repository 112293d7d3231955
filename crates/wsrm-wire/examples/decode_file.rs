//! Decodes the files given on the command line and prints the JSON or the error line.
fn main() {
    for p in std::env::args().skip(1) {
        let b = bytes::Bytes::from(std::fs::read(&p).expect("read"));
        match wsrm_wire::decode(b, &wsrm_wire::Limits::default()) {
            Ok(d) => println!("{p}: {}", wsrm_wire::json::to_json(&d)),
            Err(e) => println!("{p}: {}", wsrm_wire::json::error_line(&e)),
        }
    }
}
