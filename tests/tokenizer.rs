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
