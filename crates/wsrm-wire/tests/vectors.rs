//! Conformance vectors: every `tests/vectors/*.xml` has either a `.json` file (the expected
//! `wsrm decode` JSON) or an `.err` file (expected error code and fault). Adding a vector is
//! adding files. `WSRM_BLESS=1 cargo test -p wsrm-wire --test vectors` writes missing
//! expectation files (review them before committing).

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use wsrm_wire::{decode, json::to_json, Limits};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn err_text(e: &wsrm_wire::DecodeError) -> String {
    format!("code: {}\nfault: {}\n", e.code(), e.fault_name())
}

#[test]
fn vectors() {
    let bless = std::env::var_os("WSRM_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .expect("vectors dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "only {} vectors", files.len());
    let mut failures = Vec::new();
    for xml in &files {
        let name = xml.file_name().unwrap().to_string_lossy().into_owned();
        let input = Bytes::from(std::fs::read(xml).unwrap());
        let result = decode(input.clone(), &Limits::default());
        let json_path = xml.with_extension("json");
        let err_path = xml.with_extension("err");
        if json_path.exists() {
            let expected: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: bad json: {e}"));
            match &result {
                Ok(d) => {
                    let got = to_json(d);
                    if got != expected {
                        failures.push(format!(
                            "{name}: decode differs\n got: {}\nwant: {}",
                            serde_json::to_string_pretty(&got).unwrap(),
                            serde_json::to_string_pretty(&expected).unwrap()
                        ));
                        continue;
                    }
                    // the application body is a zero-copy slice of the input
                    if !d.body_bytes.is_empty() {
                        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
                        assert!(
                            range.contains(&(d.body_bytes.as_ptr() as usize)),
                            "{name}: body copied"
                        );
                    }
                    // writer output round-trips through the reader
                    let again = common::reencode(d);
                    let want = common::normalized(&d.message, d.addressing);
                    if again.message != want {
                        failures.push(format!(
                            "{name}: round trip differs\n got: {:?}\nwant: {:?}",
                            again.message, want
                        ));
                    }
                }
                Err(e) => failures.push(format!("{name}: expected success, got {e}")),
            }
        } else if err_path.exists() {
            let expected = std::fs::read_to_string(&err_path).unwrap();
            match &result {
                Ok(d) => failures.push(format!("{name}: expected error, decoded {}", to_json(d))),
                Err(e) => {
                    if err_text(e) != expected {
                        failures.push(format!(
                            "{name}: error differs\n got: {}want: {}({e})",
                            err_text(e),
                            expected
                        ));
                    }
                }
            }
        } else if bless {
            match &result {
                Ok(d) => std::fs::write(
                    &json_path,
                    serde_json::to_string_pretty(&to_json(d)).unwrap() + "\n",
                )
                .unwrap(),
                Err(e) => std::fs::write(&err_path, err_text(e)).unwrap(),
            }
        } else {
            failures.push(format!("{name}: no .json or .err expectation"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
