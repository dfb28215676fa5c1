//! Tensors MLX reads from the GGUF file straight into its own buffers. MLX 0.32's CPU
//! allocator cannot adopt a buffer (an array made from one copies it, then lets it go), so a
//! tensor first read into a `Vec` is held twice for a moment: Gemma 3 270M's 178 MB Q8_0
//! embedding lifted its peak RSS by as much. Here a reader serves MLX's `.npy` loader a
//! header for the tensor's shape, then the tensor's bytes from the file (`pread`, no
//! mapping); the array's `Load` primitive reads them into the array's buffer when it is
//! evaluated (on MLX's I/O threads).

use std::ffi::{CString, c_char, c_int, c_void};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mlx_rs::Array;

/// C's `whence` values for `seek` (the same on every platform MLX runs on).
const SEEK_SET: c_int = 0;
const SEEK_CUR: c_int = 1;
const SEEK_END: c_int = 2;

/// The stream MLX reads: the `.npy` header, then `len` bytes of `file` from `start`.
struct Source {
    file: File,
    header: Vec<u8>,
    start: u64,
    len: u64,
    position: AtomicU64,
    failed: Arc<AtomicBool>,
    label: CString,
}

impl Source {
    fn total(&self) -> u64 {
        self.header.len() as u64 + self.len
    }

    /// Fills `out` from position `at` of the stream; the bytes read (fewer past its end or
    /// where the file cannot be read, which also marks the stream failed).
    fn read_at(&self, out: &mut [u8], at: u64) -> usize {
        let header = self.header.len() as u64;
        let mut done = 0;
        if at < header {
            let from = &self.header[at as usize..];
            done = from.len().min(out.len());
            out[..done].copy_from_slice(&from[..done]);
        }
        let at = at + done as u64;
        if done < out.len() && at >= header {
            let into = at - header;
            let want = ((out.len() - done) as u64).min(self.len.saturating_sub(into)) as usize;
            match self.file.read_exact_at(&mut out[done..done + want], self.start + into) {
                Ok(()) => done += want,
                Err(_) => self.failed.store(true, Ordering::Relaxed),
            }
        }
        done
    }
}

/// numpy's `.npy` header (version 1.0) for a C-ordered u8 array of `shape`, padded so that
/// the data starts at a multiple of 64 bytes, in numpy's own words (MLX's loader reads the
/// type and the order at numpy's fixed places).
fn npy_header(shape: [i32; 2]) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, {}), }}", shape[0], shape[1]);
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// The `Source` behind a reader's context.
///
/// # Safety
/// `ctx` is the pointer `file_array` gave MLX, not yet freed.
unsafe fn source<'a>(ctx: *mut c_void) -> &'a Source {
    unsafe { &*ctx.cast::<Source>() }
}

unsafe extern "C" fn is_open(_: *mut c_void) -> bool {
    true
}

unsafe extern "C" fn good(ctx: *mut c_void) -> bool {
    !unsafe { source(ctx) }.failed.load(Ordering::Relaxed)
}

unsafe extern "C" fn tell(ctx: *mut c_void) -> usize {
    unsafe { source(ctx) }.position.load(Ordering::Relaxed) as usize
}

unsafe extern "C" fn seek(ctx: *mut c_void, off: i64, whence: c_int) -> c_int {
    let s = unsafe { source(ctx) };
    let base = match whence {
        SEEK_SET => 0,
        SEEK_CUR => s.position.load(Ordering::Relaxed) as i64,
        SEEK_END => s.total() as i64,
        _ => return -1,
    };
    match base.checked_add(off) {
        Some(to) if (0..=s.total() as i64).contains(&to) => {
            s.position.store(to as u64, Ordering::Relaxed);
            0
        }
        _ => -1,
    }
}

unsafe extern "C" fn read(ctx: *mut c_void, data: *mut c_char, n: usize) -> usize {
    let s = unsafe { source(ctx) };
    // SAFETY: MLX hands a buffer of `n` bytes to fill.
    let out = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), n) };
    let done = s.read_at(out, s.position.load(Ordering::Relaxed));
    s.position.fetch_add(done as u64, Ordering::Relaxed);
    done
}

unsafe extern "C" fn read_at_offset(ctx: *mut c_void, data: *mut c_char, n: usize, off: usize) -> usize {
    // SAFETY: as `read`.
    let out = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), n) };
    unsafe { source(ctx) }.read_at(out, off as u64)
}

unsafe extern "C" fn write(_: *mut c_void, _: *const c_char, _: usize) -> usize {
    0
}

unsafe extern "C" fn label(ctx: *mut c_void) -> *const c_char {
    unsafe { source(ctx) }.label.as_ptr()
}

unsafe extern "C" fn free(ctx: *mut c_void) {
    // SAFETY: MLX frees a reader's context once, when its last user (the array's `Load`
    // primitive) lets go.
    drop(unsafe { Box::from_raw(ctx.cast::<Source>()) });
}

/// A GGUF file whose tensors MLX reads as stored, and whether any of those reads failed.
/// MLX 0.32 reads an array's bytes on its I/O threads and does not pass a failure on (the
/// array would hold whatever its buffer held): check `failed` once the arrays are evaluated.
pub(crate) struct FileReads {
    file: File,
    failed: Arc<AtomicBool>,
}

impl FileReads {
    pub(crate) fn new(file: File) -> Self {
        Self { file, failed: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether a read came up short (the file shrank or failed while loading).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// A u8 array of `shape` holding bytes `[start, start + len)` of the file, read by MLX
    /// into its own buffer when evaluated.
    ///
    /// # Errors
    /// When `shape` does not hold `len` bytes, the file cannot be shared with the reader, or
    /// MLX refuses the stream.
    pub(crate) fn array(&self, start: u64, len: u64, shape: [i32; 2], name: &str) -> Result<Array, String> {
        let elements = u64::try_from(shape[0])
            .ok()
            .zip(u64::try_from(shape[1]).ok())
            .and_then(|(r, c)| r.checked_mul(c));
        if elements != Some(len) {
            return Err(format!("tensor `{name}`: {len} bytes do not fill the shape {shape:?}"));
        }
        let source = Box::new(Source {
            file: self.file.try_clone().map_err(|e| format!("tensor `{name}`: {e}"))?,
            header: npy_header(shape),
            start,
            len,
            position: AtomicU64::new(0),
            failed: Arc::clone(&self.failed),
            label: CString::new(name.replace('\0', "")).unwrap_or_default(),
        });
        let vtable = mlx_sys::mlx_io_vtable {
            is_open: Some(is_open),
            good: Some(good),
            tell: Some(tell),
            seek: Some(seek),
            read: Some(read),
            read_at_offset: Some(read_at_offset),
            write: Some(write),
            label: Some(label),
            free: Some(free),
        };
        // SAFETY: the reader owns `source` from here (freed through `free` when MLX lets go
        // of it); the array handle is returned as an Array or freed on failure; the stream
        // and our handle on the reader are freed after use.
        unsafe {
            let reader = mlx_sys::mlx_io_reader_new(Box::into_raw(source).cast(), vtable);
            if reader.ctx.is_null() {
                return Err(format!("tensor `{name}`: MLX could not make a reader"));
            }
            let mut res = mlx_sys::mlx_array_new();
            let stream = mlx_sys::mlx_default_cpu_stream_new();
            let status = mlx_sys::mlx_load_reader(&mut res, reader, stream);
            mlx_sys::mlx_stream_free(stream);
            mlx_sys::mlx_io_reader_free(reader);
            if status != 0 {
                mlx_sys::mlx_array_free(res);
                return Err(format!("tensor `{name}`: MLX could not read it"));
            }
            Ok(Array::from_ptr(res))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_read_their_bytes_from_the_file_and_short_reads_are_flagged() {
        let path = std::env::temp_dir().join(format!("lamina-file-reads-{}", std::process::id()));
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let reads = FileReads::new(File::open(&path).unwrap());
        let a = reads.array(100, 600, [20, 30], "t").unwrap();
        assert_eq!(a.shape(), &[20, 30]);
        assert_eq!(a.as_slice::<u8>(), &bytes[100..700]);
        assert!(!reads.failed());
        // A shape that does not hold the bytes is refused before anything is read.
        assert!(reads.array(0, 600, [7, 30], "t").is_err());
        // Bytes past the file's end: the evaluation comes up short and says so.
        let past = reads.array(900, 200, [10, 20], "t").unwrap();
        let _ = past.eval();
        assert!(reads.failed());
        std::fs::remove_file(&path).unwrap();
    }
}
