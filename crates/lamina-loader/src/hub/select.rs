//! Which files of a repository the loader needs.

/// The small files a checkpoint folder may have beside its weights, all optional but the
/// config.
pub(crate) const MODEL_FILES: [&str; 7] = [
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// The files a tokenizer is read from.
pub(crate) const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"];

/// What a repository holds, for loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A checkpoint folder: `config.json` and safetensors.
    Folder,
    /// One `.gguf` file.
    Gguf(String),
}

/// Decides between a folder and a GGUF file. `hint` is a file name or a quantization tag
/// (`Q4_K_M`), matched case-insensitively against the `.gguf` files.
pub(crate) fn layout<'a>(
    paths: impl Iterator<Item = &'a str> + Clone,
    hint: Option<&str>,
) -> Result<Layout, String> {
    let ggufs: Vec<&str> = paths.clone().filter(|p| p.to_ascii_lowercase().ends_with(".gguf")).collect();
    if let Some(hint) = hint {
        if let Some(exact) = paths.clone().find(|p| *p == hint) {
            return Ok(Layout::Gguf(exact.to_owned()));
        }
        let tag = hint.to_ascii_lowercase();
        let matching: Vec<&str> =
            ggufs.iter().copied().filter(|p| p.to_ascii_lowercase().contains(&tag)).collect();
        return match matching.as_slice() {
            [one] => Ok(Layout::Gguf((*one).to_owned())),
            [] => Err(format!(
                "no file `{hint}`, nor a .gguf file whose name holds it (.gguf files: {})",
                list(&ggufs)
            )),
            many => Err(format!("`{hint}` matches several .gguf files: {}; name one", list(many))),
        };
    }
    if paths.clone().any(|p| p == "config.json") {
        return Ok(Layout::Folder);
    }
    match ggufs.as_slice() {
        [one] => Ok(Layout::Gguf((*one).to_owned())),
        [] => Err("neither config.json nor a .gguf file".into()),
        many => Err(format!(
            "several .gguf files ({}); pick one with `org/name:FILE` or a tag like `:Q4_K_M`",
            list(many)
        )),
    }
}

/// The weight files of a folder: the shards an index names, else every top-level
/// `model*.safetensors` (as the loader reads them).
pub(crate) fn weight_files<'a>(
    paths: impl Iterator<Item = &'a str>,
    index_shards: Option<&[String]>,
) -> Vec<String> {
    match index_shards {
        Some(shards) => shards.to_vec(),
        None => paths
            .filter(|p| !p.contains('/') && p.starts_with("model") && p.ends_with(".safetensors"))
            .map(str::to_owned)
            .collect(),
    }
}

fn list(paths: &[&str]) -> String {
    if paths.is_empty() { "none".to_owned() } else { paths.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_gguf_files_are_told_apart() {
        let folder = ["config.json", "model.safetensors", "README.md"];
        assert_eq!(layout(folder.iter().copied(), None), Ok(Layout::Folder));
        let gguf = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf"];
        assert!(layout(gguf.iter().copied(), None).unwrap_err().contains("several"));
        assert_eq!(layout(gguf.iter().copied(), Some("q4_k_m")), Ok(Layout::Gguf("m-Q4_K_M.gguf".into())));
        assert_eq!(layout(gguf.iter().copied(), Some("m-Q8_0.gguf")), Ok(Layout::Gguf("m-Q8_0.gguf".into())));
        assert!(layout(gguf.iter().copied(), Some("Q5_K")).unwrap_err().contains("no file"));
        assert!(layout(gguf.iter().copied(), Some("m-Q")).unwrap_err().contains("several"));
        assert_eq!(layout(["only.gguf"].iter().copied(), None), Ok(Layout::Gguf("only.gguf".into())));
        assert!(layout(["README.md"].iter().copied(), None).is_err());
    }

    #[test]
    fn weights_from_the_index_or_the_folder() {
        let paths = [
            "model-1.safetensors",
            "model-2.safetensors",
            "consolidated.safetensors",
            "sub/model.safetensors",
        ];
        assert_eq!(weight_files(paths.iter().copied(), None), ["model-1.safetensors", "model-2.safetensors"]);
        let shards = vec!["model-2.safetensors".to_owned()];
        assert_eq!(weight_files(paths.iter().copied(), Some(&shards)), ["model-2.safetensors"]);
    }
}
