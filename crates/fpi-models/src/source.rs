//! Where a model folder's files come from: a directory on disk, or (on the web) files the user picked or
//! downloaded. Files are named by `/`-separated paths relative to the folder (`unet/config.json`) and read in
//! byte ranges, so weights can stream tensor by tensor without holding a whole file in memory.

use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Read access to the files of a model folder.
#[allow(async_fn_in_trait)] // futures are awaited in place (the web's are not `Send`)
pub trait ModelSource {
    /// How `path` is named in messages: the file's path on disk, or the picked file's relative path.
    fn display(&self, path: &str) -> PathBuf;
    /// Whether `path` is a file, or (for a folder name) holds files.
    fn exists(&self, path: &str) -> bool;
    /// The file's length in bytes.
    fn len(&self, path: &str) -> Result<u64>;
    /// Bytes `range` of the file; fewer only where the file ends first.
    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// The whole file (for small files: configs, the tokenizer).
    async fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        let len = self.len(path)?;
        self.read(path, 0..len).await
    }

    /// The whole file as UTF-8 text.
    async fn read_text(&self, path: &str) -> Result<String, Error> {
        String::from_utf8(self.read_all(path).await?).map_err(|_| Error::NotText { path: self.display(path) })
    }
}

/// A model folder on disk.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug, Clone)]
pub struct Directory {
    /// The model folder.
    pub root: PathBuf,
}

#[cfg(not(target_family = "wasm"))]
impl ModelSource for Directory {
    fn display(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn exists(&self, path: &str) -> bool {
        self.root.join(path).exists()
    }

    fn len(&self, path: &str) -> Result<u64> {
        let full = self.display(path);
        std::fs::metadata(&full).map(|m| m.len()).map_err(|e| Error::io(&full, e))
    }

    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let full = self.display(path);
        let mut file = std::fs::File::open(&full).map_err(|e| Error::io(&full, e))?;
        file.seek(SeekFrom::Start(range.start)).map_err(|e| Error::io(&full, e))?;
        let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
        file.take(range.end - range.start).read_to_end(&mut bytes).map_err(|e| Error::io(&full, e))?;
        Ok(bytes)
    }
}
