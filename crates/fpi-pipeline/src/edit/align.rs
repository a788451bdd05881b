//! Which tokens of two prompts correspond, as Prompt-to-Prompt aligns them: words (split on spaces) to token
//! positions, the replacement mapper of a word swap, and the refinement mapper of words added or removed.

use std::ops::Range;

/// Token positions per prompt: position 0 is the start token, so a prompt's tokens start at 1.
pub const POSITIONS: usize = 77;

/// A prompt split on spaces, with each word's token positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Words {
    /// The words, as split on single spaces.
    pub words: Vec<String>,
    /// Each word's token positions among the 77.
    pub positions: Vec<Range<usize>>,
    /// The prompt's tokens (no start or end token).
    pub ids: Vec<u32>,
}

impl Words {
    /// `prompt`'s words, given a tokenizer of single words and the prompt's tokens (`ids`); the tokens of a
    /// prompt are those of its words in turn, as CLIP's tokenizer never joins text across a space.
    pub fn new<E>(prompt: &str, ids: Vec<u32>, tokenize: impl Fn(&str) -> Result<Vec<u32>, E>) -> Result<Self, E> {
        let words: Vec<String> = prompt.split(' ').map(str::to_owned).collect();
        let mut positions = Vec::with_capacity(words.len());
        let mut next = 1;
        for word in &words {
            let count = tokenize(word)?.len();
            positions.push(next..next + count);
            next += count;
        }
        Ok(Self { words, positions, ids })
    }

    /// The token positions of every occurrence of `word`.
    pub fn positions_of(&self, word: &str) -> Vec<usize> {
        self.words.iter().zip(&self.positions).filter(|(w, _)| *w == word).flat_map(|(_, p)| p.clone()).collect()
    }
}

/// The replacement mapper `M` `[77 × 77]` (row-major) of a word swap: the target's cross-attention maps are the
/// source's times `M`. Unchanged words map one to one; a replaced word's source tokens map to its target tokens,
/// one to one when the counts agree, else each source token spreads its weight evenly over the target's tokens.
/// The prompts must have the same number of words.
pub fn replacement_mapper(source: &Words, target: &Words) -> Vec<f32> {
    let n = POSITIONS;
    let mut mapper = vec![0f32; n * n];
    let swaps: Vec<(Range<usize>, Range<usize>)> = (0..source.words.len())
        .filter(|&w| source.words[w] != target.words[w])
        .map(|w| (source.positions[w].clone(), target.positions[w].clone()))
        .collect();
    let (mut i, mut j, mut next) = (0, 0, 0);
    while i < n && j < n {
        match swaps.get(next) {
            Some((from, to)) if from.start == i => {
                for s in from.clone() {
                    if from.len() == to.len() {
                        mapper[s * n + to.start + (s - from.start)] = 1.0;
                    } else {
                        for t in to.clone() {
                            mapper[s * n + t] = 1.0 / to.len() as f32;
                        }
                    }
                }
                next += 1;
                i += from.len();
                j += to.len();
            }
            Some(_) => {
                mapper[i * n + j] = 1.0;
                i += 1;
                j += 1;
            }
            // After the last swap Prompt-to-Prompt maps the remaining positions to themselves (by the target's
            // position), which also covers the padding.
            None => {
                mapper[j * n + j] = 1.0;
                i += 1;
                j += 1;
            }
        }
    }
    mapper
}

/// The refinement mapper of prompts whose words were added or removed: for each of the target's 77 positions, the
/// source position whose map it takes, and its weight (1: take the source's map; 0: a new token, keep its own).
/// Tokens are aligned globally (Needleman–Wunsch: match +1, mismatch −1, gap 0), start and end tokens included.
pub fn refinement_mapper(source: &[u32], target: &[u32], start: u32, end: u32) -> (Vec<usize>, Vec<f32>) {
    let framed = |ids: &[u32]| [&[start][..], ids, &[end]].concat();
    let (x, y) = (framed(source), framed(target));
    let aligned = align(&x, &y);
    let mut mapper = Vec::with_capacity(POSITIONS);
    let mut alphas = Vec::with_capacity(POSITIONS);
    for source_position in aligned.iter().take(POSITIONS) {
        // A new token takes (with weight 0) the last position's map, as Prompt-to-Prompt's index −1 does.
        mapper.push(source_position.unwrap_or(POSITIONS - 1));
        alphas.push(if source_position.is_some() { 1.0 } else { 0.0 });
    }
    // Positions past the target's tokens (padding) follow on from the target's length.
    let tail = y.len();
    for k in 0..POSITIONS - mapper.len() {
        mapper.push(tail + k);
        alphas.push(1.0);
    }
    (mapper, alphas)
}

/// For each element of `y`, the element of `x` it is aligned with (or `None` for an insertion), by global
/// alignment with match +1, mismatch −1 and gap 0; ties prefer a gap in `x`, then a gap in `y`, then the diagonal.
fn align(x: &[u32], y: &[u32]) -> Vec<Option<usize>> {
    let (rows, cols) = (x.len() + 1, y.len() + 1);
    let mut score = vec![0i32; rows * cols];
    // 1: from the left (a target token with no source), 2: from above (a source token dropped), 3: diagonal.
    let mut from = vec![0u8; rows * cols];
    from[1..cols].fill(1);
    for i in 1..rows {
        from[i * cols] = 2;
    }
    for i in 1..rows {
        for j in 1..cols {
            let left = score[i * cols + j - 1];
            let up = score[(i - 1) * cols + j];
            let diag = score[(i - 1) * cols + j - 1] + if x[i - 1] == y[j - 1] { 1 } else { -1 };
            let best = left.max(up).max(diag);
            score[i * cols + j] = best;
            from[i * cols + j] = if best == left {
                1
            } else if best == up {
                2
            } else {
                3
            };
        }
    }
    let mut mapping = Vec::with_capacity(y.len());
    let (mut i, mut j) = (x.len(), y.len());
    while i > 0 || j > 0 {
        match from[i * cols + j] {
            3 => {
                i -= 1;
                j -= 1;
                mapping.push(Some(i));
            }
            1 => {
                j -= 1;
                mapping.push(None);
            }
            _ => i -= 1,
        }
    }
    mapping.reverse();
    mapping
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer of single words: each word is as many tokens as it has characters over 5, plus 1.
    fn tokens(word: &str) -> Result<Vec<u32>, ()> {
        Ok((0..1 + word.len() / 6).map(|k| word.bytes().map(u32::from).sum::<u32>() * 10 + k as u32).collect())
    }

    fn words(prompt: &str) -> Words {
        let ids = prompt.split(' ').flat_map(|w| tokens(w).unwrap()).collect();
        Words::new(prompt, ids, tokens).unwrap()
    }

    #[test]
    fn words_take_consecutive_positions_from_1() {
        let w = words("a cat obscura");
        assert_eq!(w.positions, vec![1..2, 2..3, 3..5]);
        assert_eq!(w.positions_of("obscura"), vec![3, 4]);
        assert_eq!(words("a cat and a dog").positions_of("a"), vec![1, 4]);
    }

    #[test]
    fn a_swap_of_equal_token_counts_maps_one_to_one() {
        let m = replacement_mapper(&words("a man with a camera"), &words("a man with a guitar"));
        for i in 0..POSITIONS {
            let row = &m[i * POSITIONS..(i + 1) * POSITIONS];
            let expected: Vec<f32> = (0..POSITIONS).map(|j| if i == j { 1.0 } else { 0.0 }).collect();
            assert_eq!(row, &expected[..], "row {i}");
        }
    }

    #[test]
    fn a_swap_to_more_tokens_spreads_the_weight() {
        // "cat" is 1 token, "hippopotamus" 3: source position 2 spreads over target positions 2, 3, 4.
        let m = replacement_mapper(&words("a cat here"), &words("a hippopotamus here"));
        let at = |i: usize, j: usize| m[i * POSITIONS + j];
        assert_eq!((at(0, 0), at(1, 1)), (1.0, 1.0));
        for j in 2..5 {
            assert!((at(2, j) - 1.0 / 3.0).abs() < 1e-7);
        }
        // After the last swap positions map to themselves by the target's position.
        assert_eq!((at(5, 5), at(6, 6)), (1.0, 1.0));
        assert_eq!(at(3, 5), 0.0);
    }

    #[test]
    fn refinement_keeps_aligned_tokens_and_marks_new_ones() {
        let (bos, eos) = (1, 2);
        let (mapper, alphas) = refinement_mapper(&[10, 11, 12], &[10, 11, 20, 12], bos, eos);
        // Target: bos 10 11 20 12 eos → source positions 0 1 2 - 3 4.
        assert_eq!(&mapper[..6], &[0, 1, 2, POSITIONS - 1, 3, 4]);
        assert_eq!(&alphas[..6], &[1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        assert_eq!((mapper[6], mapper[76]), (6, 76));
        assert!(alphas[6..].iter().all(|&a| a == 1.0));
    }
}
