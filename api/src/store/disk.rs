//! The disk under the store: whether an I/O error means "no space", how much space is free, and
//! the reserve.
//!
//! The reserve is a file of allocated blocks kept beside the store. When a write meets a full
//! disk, the writer deletes it: that room lets the engine reopen (redb rewrites its allocator
//! state after an interrupted commit) and keeps the worker's reports, leases and connector state
//! flowing while intake is refused. Intake resumes once the reserve could be allocated again with
//! as much again free beside it.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// Whether `e` says the write did not happen for want of space (ENOSPC, EDQUOT, EFBIG), as
/// opposed to a failure whose outcome is unknown.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Space free before intake resumes after a full disk, beside the reserve itself: as much as the
/// reserve again, and never less than 1 MiB.
const MIN_RESUME_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    pub const FILE_NAME: &'static str = "disk-reserve";

    pub fn new(tenant_dir: &Path, bytes: u64) -> Self {
        Self {
            path: tenant_dir.join(Self::FILE_NAME),
            bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Allocates the reserve's blocks (not a sparse file: they must be taken from the disk now).
    pub fn ensure(&self) -> io::Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        allocate(&file, self.bytes).inspect_err(|_| {
            // Whatever was allocated is given back: a half reserve would only hold space.
            let _ = std::fs::remove_file(&self.path);
        })?;
        file.sync_all()
    }

    /// Gives the reserve's space back to the store.
    pub fn release(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::warn!(
                bytes = self.bytes,
                "disk full: released the disk reserve so the store can reopen"
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::error!(error = ?e, "cannot release the disk reserve"),
        }
    }

    /// Whether there is room again: the reserve re-allocated, and as much again free.
    pub fn space_is_back(&self) -> bool {
        let needed = (2 * self.bytes).max(MIN_RESUME_BYTES + self.bytes);
        matches!(free_bytes(self.dir()), Ok(free) if free >= needed) && self.ensure().is_ok()
    }
}

fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        // A filesystem without fallocate: write the blocks.
        Err(rustix::io::Errno::OPNOTSUPP) => {
            use std::io::Write;
            let chunk = vec![0xA5u8; 64 * 1024];
            let mut w = io::BufWriter::new(file);
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            w.flush()
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_takes_real_blocks_and_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path(), 1 << 20);
        reserve.ensure().unwrap();
        let meta = std::fs::metadata(dir.path().join(Reserve::FILE_NAME)).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse");
        assert!(reserve.space_is_back(), "a roomy disk has space");
        reserve.release();
        assert!(!dir.path().join(Reserve::FILE_NAME).exists());
    }

    #[test]
    fn no_space_is_told_apart_from_other_failures() {
        for errno in [28, 122, 27] {
            assert!(is_no_space(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!is_no_space(&io::Error::from_raw_os_error(5)), "EIO");
        assert!(!is_no_space(&io::Error::other("lock")));
    }
}
