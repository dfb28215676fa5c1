//! JSONL datasets: the three row formats, detected per file; each malformed row an error
//! naming its line; chats and completions through the chat template; the prompt mask at
//! hand-computed positions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use lamina_loader::Tokenizer;
use lamina_train::{Batching, DataFormat, DatasetFolder, Encoder, JsonlSet, Record, TrainError};

fn chat_tokenizer() -> Tokenizer {
    let folder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat");
    Tokenizer::from_folder(&folder).unwrap()
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-datasets-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn row_error(lines: &[&str]) -> (usize, String) {
    let dir = temp(&format!("bad-{}", lines.len()));
    match JsonlSet::read(&write(&dir, "train.jsonl", lines)) {
        Err(TrainError::Dataset { line, reason, path }) => {
            assert!(path.ends_with("train.jsonl"));
            (line, reason)
        }
        other => panic!("expected a dataset error, got {other:?}"),
    }
}

const CHAT: &str =
    r#"{"messages": [{"role": "user", "content": "count"}, {"role": "assistant", "content": "Hello"}]}"#;
const COMPLETION: &str = r#"{"prompt": "count", "completion": "Hello"}"#;
const TEXT: &str = r#"{"text": "Hello count"}"#;

#[test]
fn each_format_is_detected_and_read() {
    let dir = temp("formats");
    for (line, format) in
        [(TEXT, DataFormat::Text), (COMPLETION, DataFormat::Completions), (CHAT, DataFormat::Chat)]
    {
        let set = JsonlSet::read(&write(&dir, "x.jsonl", &[line, "", line])).unwrap();
        assert_eq!(set.format, format);
        assert_eq!(
            set.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 3],
            "line numbers skip blank lines"
        );
    }
    let tools = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {}}}]}], "tools": [{"type": "function", "function": {"name": "get_weather"}}]}"#;
    let set = JsonlSet::read(&write(&dir, "tools.jsonl", &[tools])).unwrap();
    assert!(matches!(&set.records[0].1, Record::Chat { tools: Some(_), .. }));

    write(&dir, "train.jsonl", &[CHAT, CHAT]);
    write(&dir, "test.jsonl", &[TEXT]);
    let folder = DatasetFolder::read(&dir).unwrap();
    assert_eq!(folder.train.records.len(), 2);
    assert!(folder.valid.is_none());
    assert_eq!(folder.test.unwrap().format, DataFormat::Text);
    let empty = temp("no-train");
    assert!(matches!(DatasetFolder::read(&empty), Err(TrainError::Io { .. })));
}

#[test]
fn malformed_rows_are_errors_naming_their_line() {
    let cases: [(&[&str], usize, &str); 11] = [
        (&[TEXT, TEXT, "{not json"], 3, "not JSON"),
        (&[TEXT, COMPLETION], 2, "a completions row in a file of text rows"),
        (&[CHAT, "", TEXT], 3, "a text row in a file of chat rows"),
        (&[r#"{"text": 5}"#], 1, "`text` must be a string"),
        (&[r#"{"prompt": "a"}"#], 1, "`completion` is missing"),
        (&[r#"{"messages": []}"#], 1, "`messages` is empty"),
        (&[r#"{"messages": [{"role": "robot", "content": "x"}]}"#], 1, "role `robot`"),
        (&[r#"{"messages": [{"role": "user"}]}"#], 1, "messages[0] has no string `content`"),
        (
            &[r#"{"messages": [{"role": "user", "content": "x"}], "tools": {}}"#],
            1,
            "`tools` must be an array",
        ),
        (&[r#"{"input": "x"}"#], 1, "none of"),
        (&["[1, 2]"], 1, "JSON object"),
    ];
    for (lines, line, reason) in cases {
        let (got_line, got_reason) = row_error(lines);
        assert_eq!(got_line, line, "{lines:?}: {got_reason}");
        assert!(got_reason.contains(reason), "{lines:?}: `{got_reason}` lacks `{reason}`");
    }
    assert_eq!(row_error(&["", "  "]).1, "no rows");
}

#[test]
fn the_prompt_mask_covers_the_template_up_to_the_last_turn() {
    let tokenizer = chat_tokenizer();
    let dir = temp("mask");
    // "<|user|> count <|end|> <|assistant|> Hello <|end|> ": the prompt is the first four.
    let expected = vec![3, 12, 1, 4, 9, 1];
    for (name, line) in [("chat.jsonl", CHAT), ("completions.jsonl", COMPLETION)] {
        let set = JsonlSet::read(&write(&dir, name, &[line])).unwrap();
        let masked = Encoder::new(&tokenizer, true).unwrap().encode(&set).unwrap();
        assert_eq!(masked.sequences(), std::slice::from_ref(&expected));
        assert_eq!(masked.prompt_lens(), [4]);
        let batch = &masked.batches(1, 16, Batching::Pad, 0, None).unwrap()[0];
        assert_eq!(batch.labels.as_slice::<i32>(), &[-100, -100, -100, -100, 9, 1]);
        let whole = Encoder::new(&tokenizer, false).unwrap().encode(&set).unwrap();
        assert_eq!(whole.prompt_lens(), [0]);
        let batch = &whole.batches(1, 16, Batching::Pad, 0, None).unwrap()[0];
        assert_eq!(batch.labels.as_slice::<i32>(), &[3, 12, 1, 4, 9, 1]);
    }
    // A multi-turn chat: everything before the last assistant turn is prompt.
    let turns = r#"{"messages": [{"role": "system", "content": "You are"}, {"role": "user", "content": "count"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Tell me"}, {"role": "assistant", "content": "a story"}]}"#;
    let set = JsonlSet::read(&write(&dir, "turns.jsonl", &[turns])).unwrap();
    let masked = Encoder::new(&tokenizer, true).unwrap().encode(&set).unwrap();
    let ids = &masked.sequences()[0];
    assert_eq!(&ids[ids.len() - 3..], &[28, 29, 1], "a story <|end|>");
    assert_eq!(masked.prompt_lens()[0], ids.len() - 3);
    // Text rows: the tokenizer's encoding plus EOS, all predicted.
    let text = JsonlSet::read(&write(&dir, "text.jsonl", &[TEXT])).unwrap();
    let encoded = Encoder::new(&tokenizer, true).unwrap().encode(&text).unwrap();
    assert_eq!((encoded.sequences(), encoded.prompt_lens()), (&[vec![9, 12, 1]][..], &[0][..]));
}

#[test]
fn rows_the_encoder_cannot_render_name_their_line() {
    let tokenizer = chat_tokenizer();
    let dir = temp("render");
    let user_last = r#"{"messages": [{"role": "user", "content": "count"}]}"#;
    let set = JsonlSet::read(&write(&dir, "a.jsonl", &[CHAT, user_last])).unwrap();
    let err = Encoder::new(&tokenizer, true).unwrap().encode(&set).unwrap_err();
    assert!(
        matches!(&err, TrainError::Dataset { line: 2, reason, .. } if reason.contains("last message")),
        "{err}"
    );
    assert!(Encoder::new(&tokenizer, false).unwrap().encode(&set).is_ok(), "unmasked, any last turn trains");
    let folder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat");
    let plain = Tokenizer::from_files(&folder.join("tokenizer.json"), None).unwrap();
    let completions = JsonlSet::read(&write(&dir, "b.jsonl", &[COMPLETION])).unwrap();
    let err = Encoder::new(&plain, false).unwrap().encode(&completions).unwrap_err();
    assert!(
        matches!(&err, TrainError::Dataset { line: 1, reason, .. } if reason.contains("no chat template")),
        "{err}"
    );
}
