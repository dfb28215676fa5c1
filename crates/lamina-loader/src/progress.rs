//! Progress events a caller can subscribe to while a checkpoint loads.

use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedSender;

/// One step of loading.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// Files are being downloaded from the Hub.
    Fetching {
        /// The repository (`org/name@revision`).
        repo: String,
        /// Files to download.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Bytes of a file arrived from the Hub.
    Downloaded {
        /// The file's path in the repository.
        file: String,
        /// Bytes of it so far (resumed bytes included).
        bytes: u64,
        /// Its size.
        total: u64,
    },
    /// Headers are read: what will be loaded.
    Started {
        /// Files to read.
        files: usize,
        /// Tensors to read.
        tensors: usize,
        /// Bytes to read from disk.
        bytes: u64,
    },
    /// A file is being read.
    FileStarted {
        /// The file.
        path: PathBuf,
    },
    /// A tensor was copied into MLX.
    Tensor {
        /// Its key.
        name: String,
        /// Its bytes on disk.
        bytes: u64,
    },
    /// A file is done.
    FileDone {
        /// The file.
        path: PathBuf,
    },
    /// Every tensor is applied to the model.
    Done {
        /// Tensors applied.
        tensors: usize,
    },
}

/// Where progress goes: a channel the caller reads, or nowhere.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink {
    sender: Option<UnboundedSender<Progress>>,
}

impl ProgressSink {
    /// Sends events into `sender`.
    pub fn new(sender: UnboundedSender<Progress>) -> Self {
        ProgressSink { sender: Some(sender) }
    }

    /// Sends an event; a caller that stopped listening is not an error.
    pub fn send(&self, event: Progress) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(event);
        }
    }
}
