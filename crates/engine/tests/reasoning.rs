//! Reasoning parser: specification tests.
//!
//! There is no runnable independent reference here (vLLM's parsers need vLLM and a tokenizer;
//! transformers has no reasoning parser), so the expected splits are written from the documented
//! behaviour: vLLM's `deepseek_r1` / `qwen3` parsers split at the first `</think>`, drop a
//! `<think>` in the output, keep the text between tags verbatim ([`Whitespace::Verbatim`]) and
//! make an unclosed block all reasoning; DeepSeek's API presents both fields without the
//! whitespace around the tags ([`Whitespace::Trim`]). Every example is also streamed in every
//! 2-way split, char by char and in random k-way splits, which must give the same result.
//! Generation prompts come from the real chat templates in the shared reference configs.

use frugal_engine::chat_template::ChatTemplate;
use frugal_engine::reasoning::{
    parse_complete, prompt_opens_think, Delta, Parsed, ReasoningParser, ReasoningStyle, Whitespace,
};
use frugal_testdata::reference_dir;
use serde_json::{json, Map, Value};

const BOS_DS: &str = "<｜begin▁of▁sentence｜>";
const EOS_DS: &str = "<｜end▁of▁sentence｜>";
const EOS_QWEN: &str = "<|im_end|>";

struct Case {
    name: &'static str,
    style: ReasoningStyle,
    prompt_opens: bool,
    whitespace: Whitespace,
    output: &'static str,
    reasoning: &'static str,
    content: &'static str,
    unclosed: bool,
}

const THINK: ReasoningStyle = ReasoningStyle::Think;
const TRIM: Whitespace = Whitespace::Trim;
const VERB: Whitespace = Whitespace::Verbatim;

fn cases() -> Vec<Case> {
    let c = |name, style, prompt_opens, whitespace, output, reasoning, content, unclosed| Case {
        name,
        style,
        prompt_opens,
        whitespace,
        output,
        reasoning,
        content,
        unclosed,
    };
    vec![
        // DeepSeek-R1 / R1-Distill: the prompt ends with `<think>\n`.
        c(
            "r1",
            THINK,
            true,
            TRIM,
            "Okay, the user asks 2+2 🤔.\nThat is 4.\n</think>\n\nThe answer is **4**.",
            "Okay, the user asks 2+2 🤔.\nThat is 4.",
            "The answer is **4**.",
            false,
        ),
        c(
            "r1 repeats <think>",
            THINK,
            true,
            TRIM,
            "<think>\n思考: a<b, c</d.\n\n</think>\n\n答案: 是。",
            "思考: a<b, c</d.",
            "答案: 是。",
            false,
        ),
        c(
            "r1 whitespace inside reasoning kept",
            THINK,
            true,
            TRIM,
            "\nfirst\n\n  second \n</think>answer\n\n",
            "first\n\n  second",
            "answer\n\n",
            false,
        ),
        c(
            "r1 unclosed at token limit",
            THINK,
            true,
            TRIM,
            "Let me think about 日本語 </th",
            "Let me think about 日本語 </th",
            "",
            true,
        ),
        c(
            "r1 unclosed trailing whitespace",
            THINK,
            true,
            TRIM,
            "Hmm.\n\n",
            "Hmm.",
            "",
            true,
        ),
        c("r1 empty output", THINK, true, TRIM, "", "", "", true),
        c(
            "r1 tags after the block are content",
            THINK,
            true,
            TRIM,
            "r</think>\n\nUse <think> and </think> tags.",
            "r",
            "Use <think> and </think> tags.",
            false,
        ),
        c(
            "r1 <think> later in reasoning is text",
            THINK,
            true,
            TRIM,
            "I see <think> here</think>x",
            "I see <think> here",
            "x",
            false,
        ),
        // Older R1 / Qwen3 enable_thinking=true: the model opens the block.
        c(
            "qwen3 thinking",
            THINK,
            false,
            TRIM,
            "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?",
            "The user greets me.",
            "Hello! How can I help?",
            false,
        ),
        c(
            "qwen3 empty think",
            THINK,
            false,
            TRIM,
            "<think>\n\n</think>\n\nHello",
            "",
            "Hello",
            false,
        ),
        c(
            "old r1 leading newline",
            THINK,
            false,
            TRIM,
            "\n<think>\nr\n</think>\n\na",
            "r",
            "a",
            false,
        ),
        c(
            "content before <think>",
            THINK,
            false,
            TRIM,
            "Sure. <think>x</think>\ny",
            "x",
            "Sure. y",
            false,
        ),
        c(
            "model-opened block unclosed",
            THINK,
            false,
            TRIM,
            "<think>\nstill going",
            "still going",
            "",
            true,
        ),
        // Qwen3 enable_thinking=false / a model that never opens a block: all content, verbatim.
        c(
            "qwen3 no thinking",
            THINK,
            false,
            TRIM,
            "  Hello! a < b, x</think> and <thi",
            "",
            "  Hello! a < b, x</think> and <thi",
            false,
        ),
        c(
            "no thinking only whitespace",
            THINK,
            false,
            TRIM,
            "\n\n",
            "",
            "\n\n",
            false,
        ),
        // DeepSeek-V3: no reasoning at all.
        c(
            "v3 passthrough",
            ReasoningStyle::None,
            false,
            TRIM,
            "\n<think>\nnot reasoning</think>\n\n",
            "",
            "\n<think>\nnot reasoning</think>\n\n",
            false,
        ),
        // vLLM-style verbatim whitespace.
        c(
            "verbatim model-opened",
            THINK,
            false,
            VERB,
            "<think>\nabc\n</think>\n\nxyz",
            "\nabc\n",
            "\n\nxyz",
            false,
        ),
        c(
            "verbatim prompt-opened",
            THINK,
            true,
            VERB,
            "abc\n</think>\n\nxyz",
            "abc\n",
            "\n\nxyz",
            false,
        ),
        c(
            "verbatim repeated <think>",
            THINK,
            true,
            VERB,
            "<think>\nabc</think>",
            "\nabc",
            "",
            false,
        ),
        c(
            "verbatim unclosed",
            THINK,
            true,
            VERB,
            "abc \n",
            "abc \n",
            "",
            true,
        ),
    ]
}

/// Streams `pieces` through a fresh parser.
fn stream(case: &Case, pieces: &[&str]) -> Parsed {
    let mut parser =
        ReasoningParser::new(case.style, case.prompt_opens).with_whitespace(case.whitespace);
    let mut parsed = Parsed::default();
    for piece in pieces {
        let deltas = parser.push(piece);
        for d in &deltas {
            let text = match d {
                Delta::Reasoning(s) | Delta::Content(s) => s,
            };
            assert!(!text.is_empty(), "{}: empty delta", case.name);
        }
        parsed.extend(deltas);
    }
    let finish = parser.finish();
    parsed.extend(finish.deltas);
    parsed.unclosed = finish.unclosed;
    parsed
}

fn expected(case: &Case) -> Parsed {
    Parsed {
        reasoning: case.reasoning.to_owned(),
        content: case.content.to_owned(),
        unclosed: case.unclosed,
    }
}

#[test]
fn one_shot_splits() {
    for case in cases() {
        let got = parse_complete(case.style, case.prompt_opens, case.whitespace, case.output);
        assert_eq!(got, expected(&case), "case `{}`", case.name);
    }
}

#[test]
fn every_two_way_split() {
    for case in cases() {
        let text = case.output;
        for (i, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let got = stream(&case, &[&text[..i], &text[i..]]);
            assert_eq!(
                got,
                expected(&case),
                "case `{}` split at byte {i}",
                case.name
            );
        }
    }
}

#[test]
fn char_by_char() {
    for case in cases() {
        let mut pieces = Vec::new();
        let mut rest = case.output;
        while let Some(c) = rest.chars().next() {
            let (a, b) = rest.split_at(c.len_utf8());
            pieces.push(a);
            rest = b;
        }
        assert_eq!(
            stream(&case, &pieces),
            expected(&case),
            "case `{}`",
            case.name
        );
    }
}

/// SplitMix64, enough for choosing split points reproducibly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn random_k_way_splits() {
    let mut rng = SplitMix(0x5eed);
    for case in cases() {
        let text = case.output;
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        for round in 0..300 {
            let k = 1 + (rng.next() % 8) as usize;
            let mut cuts: Vec<usize> = (0..k)
                .map(|_| bounds[(rng.next() % bounds.len() as u64) as usize])
                .collect();
            cuts.push(0);
            cuts.push(text.len());
            cuts.sort_unstable();
            // Repeated cuts give empty pieces, which a detokenizer can also produce.
            let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            assert_eq!(
                stream(&case, &pieces),
                expected(&case),
                "case `{}` round {round} pieces {pieces:?}",
                case.name
            );
        }
    }
}

/// Text that cannot be part of a tag is emitted at once; only a possible tag prefix (and, in
/// trim mode, whitespace that may precede `</think>`) is held.
#[test]
fn holds_back_only_possible_tags() {
    let mut p = ReasoningParser::new(THINK, true);
    assert!(p.in_reasoning());
    assert_eq!(p.push("abc"), vec![Delta::Reasoning("abc".into())]);
    assert_eq!(p.push(" </th"), vec![]);
    assert_eq!(p.push("ink>"), vec![]);
    assert!(!p.in_reasoning());
    assert_eq!(p.push("\n\n"), vec![]);
    assert_eq!(p.push("Ans"), vec![Delta::Content("Ans".into())]);
    assert_eq!(p.push(" <think>"), vec![Delta::Content(" <think>".into())]);
    let finish = p.finish();
    assert_eq!((finish.deltas, finish.unclosed), (vec![], false));

    let mut p = ReasoningParser::new(THINK, true).with_whitespace(VERB);
    assert_eq!(p.push("abc </th"), vec![Delta::Reasoning("abc ".into())]);
    assert_eq!(p.push("is"), vec![Delta::Reasoning("</this".into())]);
    assert_eq!(
        p.push("</think>\n\nx"),
        vec![Delta::Content("\n\nx".into())]
    );

    let mut p = ReasoningParser::new(THINK, false);
    assert!(!p.in_reasoning());
    assert_eq!(p.push("Hi <"), vec![Delta::Content("Hi ".into())]);
    assert_eq!(p.push("b>"), vec![Delta::Content("<b>".into())]);
    assert_eq!(p.push("<think>r"), vec![Delta::Reasoning("r".into())]);
    let finish = p.finish();
    assert_eq!((finish.deltas, finish.unclosed), (vec![], true));

    let mut p = ReasoningParser::new(ReasoningStyle::None, true);
    assert_eq!(p.push("<thi"), vec![Delta::Content("<thi".into())]);
}

#[test]
fn prompt_detection_strings() {
    assert!(prompt_opens_think("<｜Assistant｜><think>\n"));
    assert!(prompt_opens_think("x<think>"));
    assert!(prompt_opens_think("x<think> \n\t"));
    assert!(!prompt_opens_think("<think>\n\n</think>\n\n"));
    assert!(!prompt_opens_think("<|im_start|>assistant\n"));
    assert!(!prompt_opens_think(""));
}

fn read_reference(rel: &str) -> String {
    let path = reference_dir().join("configs").join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read reference {}: {e}", path.display()))
}

fn render(template: &str, bos: Option<&str>, eos: Option<&str>, extra: Value) -> String {
    let template = ChatTemplate::new(template, bos, eos).expect("reference template compiles");
    let messages = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "What is 2+2?"}),
    ];
    let extra: Map<String, Value> = match extra {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    template
        .render_json(&messages, true, None, &extra)
        .expect("reference template renders")
}

#[test]
fn real_templates_decide_prompt_opens_think() {
    let r1 = read_reference("deepseek-ai__DeepSeek-R1/chat_template.jinja");
    let prompt = render(&r1, Some(BOS_DS), Some(EOS_DS), json!({}));
    assert!(
        prompt.ends_with("<｜Assistant｜><think>\n"),
        "R1 prompt: {prompt:?}"
    );
    assert!(prompt_opens_think(&prompt));

    let distill = read_reference("deepseek-ai__DeepSeek-R1-Distill-Llama-8B/chat_template.jinja");
    let prompt = render(&distill, Some(BOS_DS), Some(EOS_DS), json!({}));
    assert!(
        prompt.ends_with("<think>\n"),
        "R1-Distill prompt: {prompt:?}"
    );
    assert!(prompt_opens_think(&prompt));

    let qwen3 = read_reference("Qwen__Qwen3-1.7B/chat_template.jinja");
    let on = render(
        &qwen3,
        None,
        Some(EOS_QWEN),
        json!({"enable_thinking": true}),
    );
    assert!(
        on.ends_with("<|im_start|>assistant\n"),
        "Qwen3 thinking prompt: {on:?}"
    );
    assert!(!prompt_opens_think(&on));
    let default = render(&qwen3, None, Some(EOS_QWEN), json!({}));
    assert_eq!(default, on, "Qwen3 thinks by default");
    let off = render(
        &qwen3,
        None,
        Some(EOS_QWEN),
        json!({"enable_thinking": false}),
    );
    assert!(
        off.ends_with("<think>\n\n</think>\n\n"),
        "Qwen3 no-thinking prompt: {off:?}"
    );
    assert!(!prompt_opens_think(&off));

    let v3_config: Value = serde_json::from_str(&read_reference(
        "deepseek-ai__DeepSeek-V3/tokenizer_config.json",
    ))
    .expect("V3 tokenizer_config.json is JSON");
    let v3 = v3_config["chat_template"]
        .as_str()
        .expect("V3 has a chat_template string");
    let prompt = render(v3, Some(BOS_DS), Some(EOS_DS), json!({}));
    assert!(prompt.ends_with("<｜Assistant｜>"), "V3 prompt: {prompt:?}");
    assert!(!prompt_opens_think(&prompt));
}

/// The detected flag drives the parser: the same R1-style output after an R1 prompt is
/// reasoning first, after a Qwen3 no-thinking prompt it is plain content.
#[test]
fn detected_flag_drives_the_split() {
    let r1 = read_reference("deepseek-ai__DeepSeek-R1/chat_template.jinja");
    let opens = prompt_opens_think(&render(&r1, Some(BOS_DS), Some(EOS_DS), json!({})));
    let got = parse_complete(THINK, opens, TRIM, "2+2=4.\n</think>\n\n**4**");
    assert_eq!(
        (got.reasoning.as_str(), got.content.as_str()),
        ("2+2=4.", "**4**")
    );

    let qwen3 = read_reference("Qwen__Qwen3-1.7B/chat_template.jinja");
    let off = render(
        &qwen3,
        None,
        Some(EOS_QWEN),
        json!({"enable_thinking": false}),
    );
    let got = parse_complete(THINK, prompt_opens_think(&off), TRIM, "4");
    assert_eq!(
        got,
        Parsed {
            reasoning: String::new(),
            content: "4".into(),
            unclosed: false
        }
    );
}
