//! Property tests: mutated safetensors headers, GGUF headers and GGUF metadata go through
//! lamina's parsers a few thousand times each and must end in a value or a typed error —
//! no panic, nothing read or allocated beyond what the file holds, no hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use lamina_core::Budget;
use lamina_families::AnyConfig;
use lamina_loader::gguf::{config, parse};
use lamina_loader::{ProgressSink, TensorFile};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// One mutation of a file: bytes overwritten, a range cut out, or the file truncated.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    Cut {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A little-endian u64 written at `at` (lengths and counts are u64 in both formats).
    Number {
        at: usize,
        value: u64,
    },
}

fn mutation(header: usize) -> impl Strategy<Value = Mutation> {
    let near = 0..header.max(1);
    prop_oneof![
        (near.clone(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (near.clone(), 1usize..16).prop_map(|(at, len)| Mutation::Cut { at, len }),
        near.clone().prop_map(|at| Mutation::Truncate { at }),
        (
            near,
            prop_oneof![
                Just(0u64),
                Just(u64::MAX),
                Just(1 << 31),
                Just((1 << 32) + 256),
                Just(1 << 62),
                0u64..4096
            ]
        )
            .prop_map(|(at, value)| Mutation::Number { at, value }),
    ]
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Overwrite { at, bytes } => {
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            Mutation::Cut { at, len } => {
                let end = (at + len).min(data.len());
                if *at < end {
                    data.drain(*at..end);
                }
            }
            Mutation::Truncate { at } => data.truncate(*at),
            Mutation::Number { at, value } => {
                for (i, b) in value.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    data
}

static CASE: AtomicUsize = AtomicUsize::new(0);

fn safetensors_sample() -> Vec<u8> {
    std::fs::read(fixtures().join("checkpoints/llama_tied_smollm/model.safetensors")).unwrap()
}

fn gguf_sample() -> Vec<u8> {
    std::fs::read(fixtures().join("gguf/tiny_quant.gguf")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A mutated safetensors file opens and reads, or is a typed error; what it yields
    /// never exceeds the file's own bytes.
    #[test]
    fn mutated_safetensors_files_fail_cleanly(mutations in proptest::collection::vec(mutation(600), 1..4)) {
        let data = apply(safetensors_sample(), &mutations);
        let path = std::env::temp_dir()
            .join(format!("lamina-hostile-{}-{}.safetensors", std::process::id(), CASE.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, &data).unwrap();
        let outcome = TensorFile::open(&path).and_then(|file| {
            let infos = file.tensors()?;
            let total: u64 = infos.iter().map(|t| t.bytes).sum();
            assert!(total <= data.len() as u64, "{total} bytes claimed by a {}-byte file", data.len());
            file.read(&ProgressSink::default()).map(|tensors| tensors.len())
        });
        std::fs::remove_file(&path).unwrap();
        if let Err(err) = outcome {
            prop_assert!(err.to_string().contains(".safetensors"), "{err}");
        }
    }

    /// A mutated GGUF header parses or is an error; every tensor it accepts lies inside
    /// the file, and the metadata it accepts yields a config or an error, and a config
    /// builds within a small budget or is refused.
    #[test]
    fn mutated_gguf_headers_fail_cleanly(mutations in proptest::collection::vec(mutation(1500), 1..4)) {
        let data = apply(gguf_sample(), &mutations);
        if let Ok(header) = parse(&data) {
            let total: u64 = header.tensors.iter().map(|t| t.bytes).sum();
            prop_assert!(total <= data.len() as u64);
            prop_assert!(header.tensors.len() <= data.len() / 32);
            if let Ok((_, config)) = config(&header, &data) {
                let _ = config.build(Budget { limit: Some(64 << 20), bits: 32 });
            }
        }
    }
}
