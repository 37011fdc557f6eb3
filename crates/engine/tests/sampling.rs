//! Sampling, stop conditions and the generation loop.
//!
//! - The filtered distributions equal those of transformers' own logits processors
//!   (`fixtures/sampling/refs.json`, written by `fixtures/sampling/make_sampling_refs.py` with
//!   `RepetitionPenaltyLogitsProcessor`, `TemperatureLogitsWarper`, `TopKLogitsWarper`,
//!   `TopPLogitsWarper`, `MinPLogitsWarper`): same surviving tokens, probabilities within 1e-6.
//! - Draws follow the distribution (chi-square over 20k samples) and a seed fixes the sequence.
//! - `Generation` runs end to end on a scripted fake model with the DeepSeek-V3 fixture tokenizer;
//!   its text is compared with `Tokenizer::decode` of the same ids (itself checked against the
//!   `tokenizers` library in the tokenizer tests).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use frugal_engine::generation::{
    FinishReason, Generation, GenerationError, GenerationEvent, StopCriteria, StopStrings,
};
use frugal_engine::sampling::{Sampler, SamplingError, SamplingParams};
use frugal_engine::tokenizer::Tokenizer;
use frugal_formats::hf::GenerationConfig;
use serde_json::Value;

fn fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir()
}

fn params(do_sample: bool) -> SamplingParams {
    SamplingParams {
        do_sample,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repetition_penalty: 1.0,
        seed: Some(1234),
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a number list")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

#[test]
fn distributions_match_transformers_processors() {
    let text = std::fs::read_to_string(fixtures().join("sampling/refs.json"))
        .expect("fixtures/sampling/refs.json is committed");
    let refs: Value = serde_json::from_str(&text).expect("refs.json is JSON");
    let cases = refs["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15, "expected the reference cases");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let p = &case["params"];
        let num = |key: &str, default: f64| p.get(key).and_then(Value::as_f64).unwrap_or(default);
        let sp = SamplingParams {
            do_sample: p["do_sample"].as_bool().expect("do_sample"),
            temperature: num("temperature", 1.0) as f32,
            top_k: num("top_k", 0.0) as usize,
            top_p: num("top_p", 1.0) as f32,
            min_p: num("min_p", 0.0) as f32,
            repetition_penalty: num("repetition_penalty", 1.0) as f32,
            seed: Some(0),
        };
        let mut sampler = Sampler::new(sp).unwrap_or_else(|e| panic!("{name}: {e}"));
        let logits = f32s(&case["logits"]);
        let history: Vec<u32> = case["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        if let Some(argmax) = case.get("argmax") {
            let id = sampler
                .sample(&mut logits.clone(), &history)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(id as u64, argmax.as_u64().expect("argmax"), "{name}");
            continue;
        }
        let expected = case["probs"].as_array().expect("probs");
        let mut scratch = logits.clone();
        let dist = sampler
            .distribution(&mut scratch, &history)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut ours = vec![0.0f64; logits.len()];
        for c in dist {
            ours[c.id as usize] = c.prob;
        }
        for (id, (want, got)) in expected.iter().zip(&ours).enumerate() {
            let want = want.as_f64().expect("prob");
            assert_eq!(
                want > 0.0,
                *got > 0.0,
                "{name}: token {id} survives in transformers: {}, here: {}",
                want > 0.0,
                *got > 0.0
            );
            assert!(
                (want - got).abs() < 1e-6,
                "{name}: token {id}: transformers {want}, ours {got}"
            );
        }
        // Most likely first.
        assert!(dist.windows(2).all(|w| w[0].prob >= w[1].prob), "{name}");
    }
}

/// Pearson's chi-square statistic of `counts` against `probs`.
fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .filter(|(_, p)| **p > 0.0)
        .map(|(&c, &p)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

fn draw(sampler: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    let mut scratch = logits.to_vec();
    (0..n)
        .map(|_| {
            scratch.copy_from_slice(logits);
            sampler.sample(&mut scratch, &[]).expect("valid logits")
        })
        .collect()
}

#[test]
fn samples_follow_the_distribution() {
    let probs = [0.5, 0.2, 0.15, 0.1, 0.05];
    let logits: Vec<f32> = probs.iter().map(|p: &f64| p.ln() as f32 + 3.0).collect();
    let n = 20_000;
    let mut sampler = Sampler::new(params(true)).expect("valid params");
    let mut counts = [0usize; 5];
    for id in draw(&mut sampler, &logits, n) {
        counts[id as usize] += 1;
    }
    // 4 degrees of freedom: P(chi² > 18.47) = 0.001 for a correct sampler.
    let chi = chi_square(&counts, &probs);
    assert!(chi < 18.47, "chi-square {chi} for counts {counts:?}");
    // And a sampler stuck on one token, or uniform, is far off.
    assert!(chi_square(&[n, 0, 0, 0, 0], &probs) > 1000.0);
    assert!(chi_square(&[n / 5; 5], &probs) > 1000.0);

    // top-k 3 renormalises over the three most likely and never draws the others.
    let mut sampler = Sampler::new(SamplingParams {
        top_k: 3,
        ..params(true)
    })
    .expect("valid params");
    let mut counts = [0usize; 5];
    for id in draw(&mut sampler, &logits, n) {
        counts[id as usize] += 1;
    }
    assert_eq!(counts[3] + counts[4], 0, "{counts:?}");
    let kept = [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0.0, 0.0];
    let chi = chi_square(&counts, &kept);
    // 2 degrees of freedom: P(chi² > 13.82) = 0.001.
    assert!(chi < 13.82, "chi-square {chi} for counts {counts:?}");
}

#[test]
fn a_seed_fixes_the_sequence() {
    let logits: Vec<f32> = (0..64).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let seeded = |seed| {
        Sampler::new(SamplingParams {
            seed: Some(seed),
            ..params(true)
        })
    };
    let a = draw(&mut seeded(42).expect("valid"), &logits, 200);
    let b = draw(&mut seeded(42).expect("valid"), &logits, 200);
    let c = draw(&mut seeded(43).expect("valid"), &logits, 200);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut s = seeded(7).expect("valid");
    let first = draw(&mut s, &logits, 50);
    s.reseed(7);
    assert_eq!(draw(&mut s, &logits, 50), first);
}

#[test]
fn greedy_takes_the_lowest_id_among_ties_and_ignores_warpers() {
    let mut logits = vec![0.0, 2.0, 5.0, 5.0, 1.0];
    // do_sample false: temperature/top-k are not applied, argmax is.
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.3,
        top_k: 1,
        ..params(false)
    })
    .expect("valid");
    assert_eq!(s.sample(&mut logits.clone(), &[]).expect("ok"), 2);
    // temperature 0 with do_sample true is greedy too.
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.0,
        ..params(true)
    })
    .expect("valid");
    assert_eq!(s.sample(&mut logits, &[]).expect("ok"), 2);
}

#[test]
fn settings_from_generation_config() {
    let gc = |json: &str| {
        GenerationConfig::from_value(
            Path::new("generation_config.json"),
            &serde_json::from_str(json).expect("json"),
        )
        .expect("a valid generation config")
    };
    // DeepSeek-R1's generation_config.json; transformers adds its default top_k 50.
    let r1 = SamplingParams::from_generation_config(&gc(
        r#"{"bos_token_id": 0, "eos_token_id": 1, "do_sample": true, "temperature": 0.6, "top_p": 0.95}"#,
    ))
    .expect("valid");
    assert!(r1.do_sample && !r1.is_greedy());
    assert_eq!(
        (r1.temperature, r1.top_p, r1.top_k, r1.min_p),
        (0.6, 0.95, 50, 0.0)
    );
    assert_eq!(r1.repetition_penalty, 1.0);
    // The fixture checkpoint's file says the same.
    let file =
        GenerationConfig::from_file(&fixtures().join("models/deepseek-v3/generation_config.json"))
            .expect("fixture generation_config.json");
    assert_eq!(
        SamplingParams::from_generation_config(&file).expect("valid"),
        r1
    );
    let stop = StopCriteria::from_generation_config(&file);
    assert_eq!(stop.eos_token_ids, vec![1]);
    // Nothing set: greedy, as transformers.
    let plain = SamplingParams::from_generation_config(&gc("{}")).expect("valid");
    assert!(plain.is_greedy());
    assert_eq!(plain, SamplingParams::default());
    // Several EOS ids and max_new_tokens carry over; top_k -1 is "off".
    let g = gc(r#"{"eos_token_id": [7, 9], "max_new_tokens": 12, "top_k": -1, "do_sample": true}"#);
    let stop = StopCriteria::from_generation_config(&g);
    assert_eq!(
        (stop.eos_token_ids.as_slice(), stop.max_new_tokens),
        (&[7, 9][..], Some(12))
    );
    assert_eq!(
        SamplingParams::from_generation_config(&g)
            .expect("valid")
            .top_k,
        0
    );
}

#[test]
fn bad_settings_name_the_field() {
    let cases: [(&str, &str); 8] = [
        (r#"{"temperature": -0.5}"#, "temperature"),
        (r#"{"top_p": 0}"#, "top_p"),
        (r#"{"top_p": 1.5}"#, "top_p"),
        (r#"{"min_p": -0.1}"#, "min_p"),
        (r#"{"min_p": 2}"#, "min_p"),
        (r#"{"repetition_penalty": 0}"#, "repetition_penalty"),
        (r#"{"repetition_penalty": -1.2}"#, "repetition_penalty"),
        (r#"{"top_k": -5}"#, "top_k"),
    ];
    for (json, field) in cases {
        let gc = GenerationConfig::from_value(
            Path::new("g.json"),
            &serde_json::from_str(json).expect("json"),
        )
        .expect("parses");
        match SamplingParams::from_generation_config(&gc) {
            Err(e @ SamplingError::InvalidParam { field: f, .. }) => {
                assert_eq!(f, field, "{json}");
                assert!(e.to_string().contains(field), "{e}");
            }
            other => panic!("{json}: expected an error naming {field}, got {other:?}"),
        }
    }
    let nan = SamplingParams {
        temperature: f32::NAN,
        ..params(true)
    };
    assert!(matches!(
        Sampler::new(nan),
        Err(SamplingError::InvalidParam {
            field: "temperature",
            ..
        })
    ));
}

#[test]
fn bad_logits_are_errors() {
    let mut s = Sampler::new(SamplingParams {
        repetition_penalty: 1.2,
        ..params(true)
    })
    .expect("valid");
    assert!(matches!(
        s.sample(&mut [], &[]),
        Err(SamplingError::EmptyLogits)
    ));
    assert!(matches!(
        s.sample(&mut [0.0, f32::NAN], &[]),
        Err(SamplingError::NonFiniteLogit { index: 1, .. })
    ));
    assert!(matches!(
        s.sample(&mut [f32::NEG_INFINITY; 3], &[]),
        Err(SamplingError::AllMasked { vocab: 3 })
    ));
    assert!(matches!(
        s.sample(&mut [0.0, 1.0], &[0, 5]),
        Err(SamplingError::HistoryTokenOutOfRange { id: 5, vocab: 2 })
    ));
    // -inf is a mask, not an error.
    assert_eq!(s.sample(&mut [f32::NEG_INFINITY, 0.0], &[]).expect("ok"), 1);
}

#[test]
fn stop_strings_across_pieces() {
    let stops = |v: &[&str]| StopStrings::new(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut m = stops(&["STOP"]);
    let mut out = String::new();
    for piece in ["Hel", "lo S", "T", "OP and more"] {
        let scan = m.push(piece);
        out.push_str(&scan.text);
        if let Some(i) = scan.matched {
            assert_eq!(i, 0);
            assert_eq!(out, "Hello ");
            break;
        }
        // Never releases a possible start of the stop string.
        assert!(!out.ends_with('S') && !out.ends_with("ST"), "{out:?}");
    }
    assert_eq!(out, "Hello ");
    assert_eq!(m.push("more").text, "", "nothing after a match");

    // A false start is released once it cannot be a stop string any more.
    let mut m = stops(&["abc"]);
    assert_eq!(m.push("xaab").text, "xa");
    assert_eq!(m.push("d").text, "abd");
    assert_eq!(m.push("ab").text, "");
    assert_eq!(m.finish(), "ab");

    // The earliest match wins; multi-byte characters split nowhere.
    let mut m = stops(&["world", "é!"]);
    let scan = m.push("café! hello world");
    assert_eq!((scan.text.as_str(), scan.matched), ("caf", Some(1)));
    let mut m = stops(&["éé"]);
    assert_eq!(m.push("aé").text, "a");
    assert_eq!(m.push("x").text, "éx");
}

/// A fake model that emits `script` in order (greedy) and records the inputs it was fed.
fn scripted<'a>(
    script: &'a [u32],
    vocab: usize,
    calls: &'a RefCell<Vec<Vec<u32>>>,
) -> impl FnMut(&[u32]) -> Result<Vec<f32>, std::io::Error> + 'a {
    move |input: &[u32]| {
        calls.borrow_mut().push(input.to_vec());
        let step = calls.borrow().len() - 1;
        let mut logits = vec![0.0f32; vocab];
        if let Some(&next) = script.get(step) {
            logits[next as usize] = 10.0;
        }
        Ok(logits)
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_tokenizer_json(fixtures().join("models/deepseek-v3/tokenizer.json"))
        .expect("fixture tokenizer")
}

fn greedy() -> Sampler {
    Sampler::new(params(false)).expect("valid")
}

#[test]
fn generation_stops_on_any_eos_and_streams_text() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompt = tok.encode("Say hello.", true).expect("encode");
    let answer = tok.encode("Hello, wörld! 你好", false).expect("encode");
    let eot = tok
        .token_to_id("<|EOT|>")
        .expect("<|EOT|> in the DeepSeek vocabulary");
    for eos in [1, eot] {
        let mut script = answer.clone();
        script.push(eos);
        script.push(5); // never reached
        let calls = RefCell::new(Vec::new());
        let stop = StopCriteria {
            eos_token_ids: vec![1, eot],
            ..Default::default()
        };
        let gen = Generation::new(
            scripted(&script, vocab, &calls),
            &tok,
            greedy(),
            stop,
            &prompt,
            4096,
        )
        .expect("fits");
        let events: Vec<GenerationEvent> = gen.map(|e| e.expect("no error")).collect();
        let tokens: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Token(id) => Some(*id),
                _ => None,
            })
            .collect();
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(tokens, script[..answer.len() + 1]);
        assert_eq!(text, tok.decode(&answer, true).expect("decode"));
        assert_eq!(text, "Hello, wörld! 你好");
        assert_eq!(
            events.last(),
            Some(&GenerationEvent::Finished(FinishReason::Eos))
        );
        // Prefill with the whole prompt, then one token per call.
        let calls = calls.into_inner();
        assert_eq!(calls[0], prompt);
        assert!(calls[1..].iter().zip(&script).all(|(c, &id)| c == &[id]));
        assert_eq!(calls.len(), answer.len() + 1);
    }
}

#[test]
fn generation_stops_at_max_tokens_and_full_context() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompt = tok.encode("Count:", false).expect("encode");
    let script = tok
        .encode(" one two three four five six seven", false)
        .expect("encode");
    let calls = RefCell::new(Vec::new());
    let stop = StopCriteria {
        eos_token_ids: vec![1],
        max_new_tokens: Some(4),
        ..Default::default()
    };
    let out = Generation::new(
        scripted(&script, vocab, &calls),
        &tok,
        greedy(),
        stop,
        &prompt,
        4096,
    )
    .expect("fits")
    .run()
    .expect("runs");
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.tokens, script[..4]);
    assert_eq!(out.text, tok.decode(&script[..4], true).expect("decode"));

    // The context bounds prompt plus generated tokens.
    let calls = RefCell::new(Vec::new());
    let context = prompt.len() + 3;
    let out = Generation::new(
        scripted(&script, vocab, &calls),
        &tok,
        greedy(),
        StopCriteria::default(),
        &prompt,
        context,
    )
    .expect("fits")
    .run()
    .expect("runs");
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.tokens, script[..3]);
}

#[test]
fn generation_trims_a_stop_string_spanning_tokens() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    let prompt = tok.encode("Q: 6*7?", false).expect("encode");
    let stop_string = "\n\nUser:";
    let script = tok
        .encode("The answer is 42.\n\nUser: thanks", false)
        .expect("encode");
    // The stop string must really span several tokens for this test to mean anything.
    for &id in &script {
        let piece = tok.decode(&[id], false).expect("decode");
        assert!(
            !piece.contains(stop_string),
            "token {id} {piece:?} holds the whole stop string"
        );
    }
    let calls = RefCell::new(Vec::new());
    let stop = StopCriteria {
        eos_token_ids: vec![1],
        stop_strings: vec!["never".into(), stop_string.into()],
        ..Default::default()
    };
    let gen = Generation::new(
        scripted(&script, vocab, &calls),
        &tok,
        greedy(),
        stop,
        &prompt,
        4096,
    )
    .expect("fits");
    let mut text = String::new();
    let mut finish = None;
    for event in gen {
        match event.expect("no error") {
            GenerationEvent::Text(t) => {
                text.push_str(&t);
                assert!(
                    !text.contains('\n'),
                    "released part of the stop string: {text:?}"
                );
            }
            GenerationEvent::Finished(f) => finish = Some(f),
            GenerationEvent::Token(_) => {}
        }
    }
    assert_eq!(text, "The answer is 42.");
    assert_eq!(finish, Some(FinishReason::StopString(stop_string.into())));
    // It stopped as soon as the stop string was complete, before " thanks".
    let generated = calls.borrow().len();
    let upto = tok.decode(&script[..generated], false).expect("decode");
    assert!(upto.ends_with(stop_string), "{upto:?}");
}

#[test]
fn generation_refuses_a_prompt_that_fills_the_context() {
    let tok = tokenizer();
    let prompt = tok
        .encode("a prompt of several tokens", false)
        .expect("encode");
    let calls = RefCell::new(Vec::new());
    let err = Generation::new(
        scripted(&[], 10, &calls),
        &tok,
        greedy(),
        StopCriteria::default(),
        &prompt,
        prompt.len(),
    )
    .err()
    .expect("a prompt as long as the context is refused");
    assert!(
        matches!(err, GenerationError::PromptTooLong { prompt: p, context: c } if p == prompt.len() && c == prompt.len()),
        "{err}"
    );
    assert!(err.to_string().contains("context"), "{err}");
    assert!(calls.borrow().is_empty(), "the model was called");
    assert!(matches!(
        Generation::new(
            scripted(&[], 10, &calls),
            &tok,
            greedy(),
            StopCriteria::default(),
            &[],
            8
        )
        .err(),
        Some(GenerationError::EmptyPrompt)
    ));
    let empty_stop = StopCriteria {
        stop_strings: vec![String::new()],
        ..Default::default()
    };
    assert!(matches!(
        Generation::new(
            scripted(&[], 10, &calls),
            &tok,
            greedy(),
            empty_stop,
            &prompt,
            100
        )
        .err(),
        Some(GenerationError::EmptyStopString { index: 0 })
    ));
}

#[test]
fn generation_reports_model_and_logit_errors() {
    let tok = tokenizer();
    let prompt = [5u32, 6, 7];
    let failing = |_: &[u32]| -> Result<Vec<f32>, std::io::Error> {
        Err(std::io::Error::other("out of memory"))
    };
    let mut gen = Generation::new(
        failing,
        &tok,
        greedy(),
        StopCriteria::default(),
        &prompt,
        100,
    )
    .expect("fits");
    let err = gen.next().expect("an event").expect_err("the model failed");
    assert!(err.to_string().contains("out of memory"), "{err}");
    assert!(gen.next().is_none(), "nothing after an error");
    // Logits shorter than the history's ids: the penalty cannot apply.
    let short = |_: &[u32]| -> Result<Vec<f32>, std::io::Error> { Ok(vec![0.0; 4]) };
    let sampler = Sampler::new(SamplingParams {
        repetition_penalty: 1.1,
        ..params(true)
    })
    .expect("valid");
    let mut gen =
        Generation::new(short, &tok, sampler, StopCriteria::default(), &prompt, 100).expect("fits");
    assert!(matches!(
        gen.next(),
        Some(Err(GenerationError::Sampling(
            SamplingError::HistoryTokenOutOfRange { id: 5, .. }
        )))
    ));
}

#[test]
fn sampled_generation_is_reproducible() {
    let tok = tokenizer();
    let vocab = tok.vocab_size();
    // Logits depend on the last token only: a deterministic toy language model.
    let model = |input: &[u32]| -> Result<Vec<f32>, std::io::Error> {
        let last = *input.last().expect("non-empty input") as usize;
        Ok((0..vocab)
            .map(|i| (((i * 31 + last * 17) % 97) as f32) * 0.05)
            .collect())
    };
    let run = |seed| {
        let sampler = Sampler::new(SamplingParams {
            do_sample: true,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.01,
            repetition_penalty: 1.1,
            seed: Some(seed),
        })
        .expect("valid");
        let stop = StopCriteria {
            max_new_tokens: Some(32),
            ..Default::default()
        };
        Generation::new(model, &tok, sampler, stop, &[0, 100, 200], 4096)
            .expect("fits")
            .run()
            .expect("runs")
    };
    let a = run(11);
    assert_eq!(a.tokens.len(), 32);
    assert_eq!(a, run(11));
    assert_ne!(a.tokens, run(12).tokens);
    assert_eq!(a.text, tok.decode(&a.tokens, true).expect("decode"));
}
