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
    check(&ClipTokenizer::from_dir(&tiny_model().join("tokenizer")).unwrap());
}

#[test]
fn tokenizer_json_matches_transformers() {
    check(&ClipTokenizer::from_dir(&fixtures().join("tokenizer-json")).unwrap());
}

#[test]
fn a_folder_without_tokenizer_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).err().expect("an error");
    assert!(err.to_string().contains("vocab.json"), "{err}");
}
