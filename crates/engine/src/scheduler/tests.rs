//! The scheduler on the `deepseek-v3` fixture, against transformers' greedy continuation
//! (`reference.json`'s `greedy_new_ids`): requests run concurrently in shared batches, with
//! staggered arrivals, prefix reuse and a client that leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use frugal_formats::ModelFiles;
use frugal_model::Model;

use super::*;

fn fixture() -> (ModelFiles, Tokenizer, serde_json::Value) {
    let dir = frugal_testdata::fixtures_dir().join("models/deepseek-v3");
    let files = ModelFiles::open(dir.to_str().unwrap()).unwrap();
    let tok = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (files, tok, reference)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn greedy(prompt: Vec<u32>, max_new: usize, sink: Box<dyn EventSink>) -> Request {
    Request {
        prompt,
        sampling: SamplingParams::greedy(),
        stop: StopCriteria {
            eos_token_ids: vec![1],
            max_new_tokens: Some(max_new),
            stop_strings: Vec::new(),
        },
        logprobs: None,
        skip_special_tokens: false,
        json_object: false,
        sink,
    }
}

/// Collects a request's events: (token ids, text, the Done event).
fn collect(rx: Receiver<Event>) -> (Vec<u32>, String, Event) {
    let (mut toks, mut text) = (Vec::new(), String::new());
    for ev in rx {
        match ev {
            Event::Token { id, text: t, .. } => {
                toks.push(id);
                text.push_str(&t);
            }
            Event::Done { text: ref t, .. } => {
                text.push_str(t);
                return (toks, text, ev);
            }
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
    panic!("no Done event");
}

#[test]
fn concurrent_requests_match_transformers_greedy() {
    let (files, tok, reference) = fixture();
    let model = Model::load(&files).unwrap();
    let prompt = ids(&reference["prompt_ids"]);
    let want = ids(&reference["greedy_new_ids"]);
    let want_text = reference["greedy_new_text"].as_str().unwrap();
    let mut config = SchedulerConfig::new(3, 256);
    // Small steps: prompts are prefilled in chunks interleaved with other sequences' decoding.
    config.max_step_tokens = 8;
    let (sched, handle) = Scheduler::new(&model, &tok, config);
    std::thread::scope(|s| {
        s.spawn(|| sched.run());
        let mut rxs = Vec::new();
        for k in 0..5 {
            let (tx, rx) = channel();
            handle
                .submit(greedy(prompt.clone(), want.len(), Box::new(tx)))
                .unwrap();
            rxs.push(rx);
            if k == 1 {
                // Let the first two start decoding before the rest arrive.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        // A different prompt in the same batches must not disturb the others.
        let (tx, rx_other) = channel();
        handle
            .submit(greedy(prompt[..9].to_vec(), 4, Box::new(tx)))
            .unwrap();
        for (k, rx) in rxs.into_iter().enumerate() {
            let (got, text, done) = collect(rx);
            assert_eq!(got, want, "request {k}");
            assert_eq!(text, want_text, "request {k}");
            let Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                ..
            } = done
            else {
                unreachable!()
            };
            assert_eq!(finish, FinishReason::Length);
            assert_eq!(
                (prompt_tokens, completion_tokens),
                (prompt.len(), want.len())
            );
        }
        assert_eq!(collect(rx_other).0.len(), 4);

        // The same prompt again: all but its last token come from the prefix cache, and the
        // answer is unchanged.
        let (tx, rx) = channel();
        handle
            .submit(greedy(prompt.clone(), want.len(), Box::new(tx)))
            .unwrap();
        let (got, _, done) = collect(rx);
        assert_eq!(got, want);
        let Event::Done { cached_tokens, .. } = done else {
            unreachable!()
        };
        assert_eq!(cached_tokens, prompt.len() - 1);
        // A longer prompt that extends a cached one (a chat's next turn) reuses it too.
        let mut longer = prompt.clone();
        longer.extend(&want[..8]);
        let (tx, rx) = channel();
        handle.submit(greedy(longer, 8, Box::new(tx))).unwrap();
        let (got, _, done) = collect(rx);
        assert_eq!(got, want[8..16]);
        let Event::Done { cached_tokens, .. } = done else {
            unreachable!()
        };
        assert!(cached_tokens >= prompt.len(), "{cached_tokens}");
        drop(handle);
    });
}

/// A sink whose client can leave.
struct Leaving {
    tx: Sender<Event>,
    gone: Arc<AtomicBool>,
}

impl EventSink for Leaving {
    fn send(&mut self, event: Event) -> bool {
        !self.gone.load(Ordering::SeqCst) && self.tx.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

#[test]
fn departed_client_frees_its_slot_and_pages() {
    let (files, tok, reference) = fixture();
    let model = Model::load(&files).unwrap();
    let prompt = ids(&reference["prompt_ids"]);
    // One slot: the second request can only run once the first is gone.
    let (sched, handle) = Scheduler::new(&model, &tok, SchedulerConfig::new(1, 4096));
    std::thread::scope(|s| {
        s.spawn(|| sched.run());
        let gone = Arc::new(AtomicBool::new(false));
        let (tx, rx1) = channel();
        let long = Leaving {
            tx,
            gone: gone.clone(),
        };
        handle
            .submit(greedy(prompt.clone(), 4000, Box::new(long)))
            .unwrap();
        // Wait for its first token, then leave.
        assert!(matches!(rx1.recv().unwrap(), Event::Token { .. }));
        let (tx, rx2) = channel();
        handle
            .submit(greedy(prompt.clone(), 3, Box::new(tx)))
            .unwrap();
        gone.store(true, Ordering::SeqCst);
        let (got, _, _) = collect(rx2);
        assert_eq!(got.len(), 3);
        let stats = handle.stats();
        assert_eq!(stats.cancelled.load(Ordering::Relaxed), 1);
        // Nothing is left running (the counters settle after the last step).
        drop(rx1);
        drop(handle);
    });
}

#[test]
fn refuses_what_cannot_run() {
    let (files, tok, _) = fixture();
    let model = Model::load(&files).unwrap();
    let mut config = SchedulerConfig::new(1, 32);
    config.max_queue = 0;
    let (sched, handle) = Scheduler::new(&model, &tok, config);
    let sink = || Box::new(channel().0) as Box<dyn EventSink>;
    assert_eq!(
        handle.submit(greedy(Vec::new(), 4, sink())),
        Err(SubmitError::EmptyPrompt)
    );
    assert_eq!(
        handle.submit(greedy(vec![5; 32], 4, sink())),
        Err(SubmitError::ContextOverflow {
            prompt: 32,
            ctx_size: 32
        })
    );
    assert!(matches!(
        handle.submit(greedy(vec![5; 30], 4, sink())),
        Err(SubmitError::TooManyTokens { .. })
    ));
    assert_eq!(
        handle.submit(greedy(vec![5; 3], 4, sink())),
        Err(SubmitError::QueueFull(0))
    );
    drop(sched);
    let mut h = handle.clone();
    h.config.max_queue = 10;
    assert_eq!(
        h.submit(greedy(vec![5; 3], 4, sink())),
        Err(SubmitError::Stopped)
    );
}

/// JSON mode: sampled outputs are JSON objects that serde_json parses (or, cut by the token
/// limit, never contain a byte that breaks the grammar before it).
#[test]
fn json_object_mode_outputs_parse() {
    let (files, tok, reference) = fixture();
    let model = Model::load(&files).unwrap();
    let prompt = ids(&reference["prompt_ids"]);
    let (sched, handle) = Scheduler::new(&model, &tok, SchedulerConfig::new(4, 1024));
    std::thread::scope(|s| {
        s.spawn(|| sched.run());
        let mut rxs = Vec::new();
        for seed in 0..8u64 {
            let (tx, rx) = channel();
            let mut req = greedy(prompt.clone(), 300, Box::new(tx));
            req.json_object = true;
            req.sampling = SamplingParams {
                do_sample: true,
                temperature: 1.0,
                seed: Some(seed),
                ..SamplingParams::greedy()
            };
            req.skip_special_tokens = true;
            handle.submit(req).unwrap();
            rxs.push(rx);
        }
        let mut complete = 0;
        for rx in rxs {
            let (_, text, done) = collect(rx);
            let Event::Done { finish, .. } = done else {
                unreachable!()
            };
            if finish == FinishReason::Eos {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
                assert!(v.is_object(), "{text:?}");
                complete += 1;
            } else {
                assert_eq!(finish, FinishReason::Length);
                assert!(text.trim_start().starts_with('{'), "{text:?}");
            }
        }
        eprintln!("{complete} of 8 JSON outputs closed within 300 tokens");
        assert!(complete > 0, "no output closed its object");
        drop(handle);
    });
}
