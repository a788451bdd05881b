//! Writing outputs: all or nothing, so an existing file is never left half-written.

use std::io::Write;
use std::path::Path;

/// The folder `path` is in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = folder(path);
    let name = path.file_name().ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// Fails early, before any long work, if `path` cannot be written (missing folder, a directory in the way).
pub fn check_writable(path: &Path) -> Result<(), String> {
    let dir = folder(path);
    if !dir.is_dir() {
        return Err(format!("{}: folder {} does not exist", path.display(), dir.display()));
    }
    if path.is_dir() {
        return Err(format!("{}: is a directory", path.display()));
    }
    Ok(())
}

/// Reads a whole file with its path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}
