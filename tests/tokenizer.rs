//! Token ids against transformers' `CLIPTokenizer` (tests/fixtures/tokens.json), from both tokenizer file layouts.

mod common;

use common::*;
use fpi_models::tokenizer::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<u32>,
    truncated: bool,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check(tokenizer: &ClipTokenizer) {
    let cases = cases();
    assert!(cases.len() >= 10);
    assert!(cases.iter().any(|c| c.truncated));
    for case in cases {
        let tokens = tokenizer.encode(&case.prompt).unwrap();
        assert_eq!(tokens.ids, case.ids, "prompt {:?}", case.prompt);
        assert_eq!(tokens.dropped > 0, case.truncated, "prompt {:?}", case.prompt);
    }
}

#[test]
fn vocab_and_merges_match_transformers() {
    check(&pollster::block_on(folder(&tiny_model()).load_tokenizer()).unwrap());
}

#[test]
fn tokenizer_json_matches_transformers() {
    let path = fixtures().join("tokenizer-json/tokenizer.json");
    check(&ClipTokenizer::from_tokenizer_json(&std::fs::read(&path).unwrap(), &path).unwrap());
}

#[test]
fn a_folder_without_tokenizer_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokenizer")).unwrap();
    let err = pollster::block_on(folder(dir.path()).load_tokenizer()).err().expect("an error");
    assert!(err.to_string().contains("vocab.json"), "{err}");
}

/// The error of loading the tokenizer of a copy of the tiny model's, with `file` rewritten by `edit`.
fn load_edited(file: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (fpi_models::Error, tempfile::TempDir) {
    let dir = copy_part("tokenizer");
    let path = dir.path().join("tokenizer").join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    let err = pollster::block_on(folder(dir.path()).load_tokenizer()).err().expect("loading must fail");
    (err, dir)
}

#[test]
fn a_merges_line_that_is_not_a_pair_names_merges_txt_and_the_line() {
    let (err, _dir) = load_edited("merges.txt", |bytes| bytes.extend_from_slice(b"a b c\n"));
    assert!(matches!(&err, fpi_models::Error::Tokenizer { path, .. } if path.ends_with("merges.txt")), "{err}");
    assert!(err.to_string().contains("is not a pair of tokens: \"a b c\""), "{err}");
}

/// The BPE builder's errors come from merges that the vocabulary lacks: they are the merge list's.
#[test]
fn a_merge_outside_the_vocabulary_names_merges_txt() {
    let (err, _dir) = load_edited("merges.txt", |bytes| bytes.extend_from_slice(b"qzxq xqzq\n"));
    assert!(matches!(&err, fpi_models::Error::Tokenizer { path, .. } if path.ends_with("merges.txt")), "{err}");
    assert!(err.to_string().contains("qzxq"), "{err}");
}

#[test]
fn a_vocabulary_that_is_not_utf8_is_named() {
    let (err, _dir) = load_edited("vocab.json", |bytes| bytes.insert(1, 0xff));
    assert!(matches!(&err, fpi_models::Error::NotText { path } if path.ends_with("vocab.json")), "{err}");
    assert!(err.to_string().ends_with("vocab.json: not UTF-8 text"), "{err}");
}
