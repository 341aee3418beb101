//! Secret files: created 0600 and never overwritten; refused when others can read them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Reads a secret file, refusing one that group or others may access.
pub fn read_secret(path: &Path) -> Result<Zeroizing<String>> {
    let meta = fs::metadata(path).map_err(Error::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureMode {
            path: path.into(),
            mode,
        });
    }
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(Error::io(path))
}

/// Writes a new secret file with mode 0600; an existing file is never replaced.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Exists { path: path.into() },
            _ => Error::Io {
                path: path.into(),
                source: e,
            },
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_0600_and_refused_when_opened_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret(&path, "s3cret").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret(&path).unwrap().as_str(), "s3cret");
        assert!(matches!(
            write_secret(&path, "x"),
            Err(Error::Exists { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err();
        assert!(matches!(err, Error::InsecureMode { mode: 0o644, .. }));
        assert!(!err.to_string().contains("s3cret"));
    }
}
