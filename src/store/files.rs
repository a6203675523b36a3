//! Files keymint keeps on disk (the data directory, the SQLite database and its journal files, the admin
//! token) are for the service's own user only: created private, and narrowed when found wider.

use std::{fs, io, path::Path};

use tracing::warn;

use super::{Result, StoreError};

/// Group and others may do nothing.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` (and its parents) readable by the owner only, or narrows it to that if it exists wider.
pub fn private_dir(dir: &Path) -> Result<()> {
    let fail = |e: io::Error| StoreError::Config(format!("cannot create data dir {}: {e}", dir.display()));
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR);
    builder.create(dir).map_err(fail)?;
    narrow(dir, PRIVATE_DIR).map_err(fail)
}

/// Makes sure `path` exists and only its owner may read it. SQLite creates its `-wal` and `-shm` files with the
/// database file's mode, so a private database file keeps them private too.
pub fn private_file(path: &Path) -> Result<()> {
    let fail = |e: io::Error| StoreError::Config(format!("cannot secure {}: {e}", path.display()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_FILE);
    options.open(path).map_err(fail)?;
    narrow(path, PRIVATE_FILE).map_err(fail)
}

/// Narrows an existing file to owner-only if it is not already, and says so: a wider mode was a leak.
pub fn narrow_if_present(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(_) => narrow(path, PRIVATE_FILE)
            .map_err(|e| StoreError::Config(format!("cannot secure {}: {e}", path.display()))),
        Err(_) => Ok(()),
    }
}

#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let found = fs::metadata(path)?.permissions().mode() & 0o777;
    if found & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        warn!(path = %path.display(), was = format!("{found:o}"), now = format!("{mode:o}"),
            "narrowed the permissions of a file others could read");
    }
    Ok(())
}

#[cfg(not(unix))]
fn narrow(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn creates_private_and_narrows_what_it_finds_wider() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("a/data");
        private_dir(&dir).expect("created");
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("narrowed");
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("keymint.db");
        private_file(&file).expect("created");
        assert_eq!(mode(&file), 0o600);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        narrow_if_present(&file).expect("narrowed");
        assert_eq!(mode(&file), 0o600);
        narrow_if_present(&dir.join("absent")).expect("nothing to do");
    }
}
