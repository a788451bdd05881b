//! Reading inputs and writing outputs: errors name the path, and outputs are written all or nothing, so an
//! existing file is never left half-written.

use std::io::Write;
use std::path::Path;

use crate::failure::{Failure, at};

/// The folder `path` is in (`.` for a bare file name).
pub fn folder(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A hidden file beside `path` with `suffix`, unique to this process.
fn beside(path: &Path, suffix: &str) -> Result<std::path::PathBuf, Failure> {
    let name = path.file_name().ok_or_else(|| at(path, "not a file path"))?;
    Ok(folder(path).join(format!(".{}.{}.{suffix}", name.to_string_lossy(), std::process::id())))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = beside(path, "tmp")?;
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        at(path, e)
    })
}

/// Fails early, before any long work, if `path` cannot be written: its folder is missing or read-only, or a
/// directory is in the way. It creates and removes a probe file beside `path`, as the final write will.
pub fn check_writable(path: &Path) -> Result<(), Failure> {
    let dir = folder(path);
    if !dir.is_dir() {
        return Err(at(path, format_args!("folder {} does not exist", dir.display())));
    }
    if path.is_dir() {
        return Err(at(path, "is a directory"));
    }
    let probe = beside(path, "probe")?;
    std::fs::File::create_new(&probe).map_err(|e| at(path, format_args!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| at(path, e))
}
